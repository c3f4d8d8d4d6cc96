/* tapegrad — optimizers over lists of tensors (to be written). */
#ifndef TAPEGRAD_OPTIM_H
#define TAPEGRAD_OPTIM_H

#include "tensor.h"

#endif
