/* tapegrad — the whole public API in one include. */
#ifndef TAPEGRAD_H
#define TAPEGRAD_H

#include "tensor.h"
#include "autograd.h"
#include "nn.h"
#include "optim.h"
#include "data.h"

#endif
