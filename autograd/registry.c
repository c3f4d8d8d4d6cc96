/* The op registry: every differentiable op, so that the gradcheck suite tests each one from
 * the same table that defines it. Adding an op means adding its TG_OP line to ops.def (its
 * TG_OP_DEFINE does not compile without it); the suite fails an op that has neither gradcheck
 * cases nor a stated reason. */
#include "internal.h"

#include "ops.h"

const tg_op *const tg_op_registry[] = {
#define TG_OP(name) &tg_op_##name,
#include "ops.def"
#undef TG_OP
    NULL,
};
