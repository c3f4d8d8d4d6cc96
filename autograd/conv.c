/* conv.c — ops to be written here. */
#include "internal.h"
