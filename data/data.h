/* tapegrad — files: safetensors checkpoints, idx datasets, PNG images (to be written). */
#ifndef TAPEGRAD_DATA_H
#define TAPEGRAD_DATA_H

#include "tensor.h"

#endif
