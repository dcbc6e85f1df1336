/* tree.c -- being written. */
#include "private.h"
