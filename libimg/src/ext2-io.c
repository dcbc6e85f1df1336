/* ext2-io.c -- not written yet (see the open issues). */
#include "private.h"
