/* state.c — the state dict (named tensors plus metadata), to be written here. */
#include "internal.h"
