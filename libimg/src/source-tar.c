/* source-tar.c -- tar streams into a tree (being written). */
#include "private.h"
