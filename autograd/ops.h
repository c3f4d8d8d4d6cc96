/* Declarations of every op descriptor listed in ops.def (tg_op_add, tg_op_matmul, ...). */
#ifndef TAPEGRAD_AUTOGRAD_OPS_H
#define TAPEGRAD_AUTOGRAD_OPS_H

#include "internal.h"

#define TG_OP(name) extern const tg_op tg_op_##name;
#include "ops.def"
#undef TG_OP

#endif
