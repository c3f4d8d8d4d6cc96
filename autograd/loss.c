/* loss.c — ops to be written here. */
#include "internal.h"
