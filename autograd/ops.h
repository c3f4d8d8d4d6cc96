/* The op registry's declarations and TG_OP_DEFINE, with which a family file defines each of
 * its op descriptors. Every file that defines an op includes this header. */
#ifndef TAPEGRAD_AUTOGRAD_OPS_H
#define TAPEGRAD_AUTOGRAD_OPS_H

#include "internal.h"

/* For every TG_OP(name) line of ops.def: the descriptor's declaration, and the constant that
 * TG_OP_DEFINE(name) checks for. */
#define TG_OP(name)                                                                                \
    extern const tg_op tg_op_##name;                                                               \
    enum { TG_OP_line_in_ops_def_for_##name = 1 };
#include "ops.def"
#undef TG_OP

/* Defines the descriptor of a registered op: TG_OP_DEFINE(matmul) = {.name = "matmul", ...};
 * An op without its TG_OP(name) line in ops.def does not compile, so it cannot drop out of the
 * gradcheck suite unnoticed: GCC stops with "'TG_OP_line_in_ops_def_for_<name>' undeclared",
 * clang with "use of undeclared identifier 'TG_OP_line_in_ops_def_for_<name>'". */
#if TG_ISA_BASE
#define TG_OP_DEFINE(name)                                                                         \
    _Static_assert(TG_OP_line_in_ops_def_for_##name, "TG_OP(" #name ") in ops.def");               \
    const tg_op tg_op_##name
#else
/* The AVX2 and AVX-512 compilations of a family file (tensor/isa.h) define no descriptor: the
 * base compilation's holds the dispatching forward and backward. Unused, the compiler drops it
 * and the checks and cases it names. */
#define TG_OP_DEFINE(name)                                                                         \
    _Static_assert(TG_OP_line_in_ops_def_for_##name, "TG_OP(" #name ") in ops.def");               \
    __attribute__((unused)) static const tg_op tg_isa_unused_op_##name
#endif

/* A descriptor written out by hand (const tg_op tg_op_x = ...) bypasses that check. Compilers
 * that have -Wmissing-variable-declarations (clang, as in the fuzz build; GCC from 14) catch it
 * when unregistered: in the files that include this header, the only non-static variables are
 * the descriptors, all declared above, so any other is an error. */
#if defined(__clang__)
#pragma clang diagnostic error "-Wmissing-variable-declarations"
#elif defined(__GNUC__) && __GNUC__ >= 14
#pragma GCC diagnostic error "-Wmissing-variable-declarations"
#endif

#endif
