/* tapegrad — neural-network modules built from autograd ops (to be written). */
#ifndef TAPEGRAD_NN_H
#define TAPEGRAD_NN_H

#include "autograd.h"

#endif
