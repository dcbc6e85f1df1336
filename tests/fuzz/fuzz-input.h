/*
 * fuzz-input.h -- for the fuzz targets whose code under test takes a path:
 * the input bytes in a memfd, named by its /proc/self/fd path.
 */
#ifndef FUZZ_INPUT_H
#define FUZZ_INPUT_H

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "private.h"

/* The memfd holding @data (-1 if it cannot be made); its path into @path. */
static inline int fuzz_input_file(const char *name, const uint8_t *data, size_t size, char *path,
                                  size_t len)
{
	int fd = memfd_create(name, MFD_CLOEXEC);

	if (fd < 0)
		return -1;
	if (img_pwrite_full(fd, data, size, 0) < 0) {
		close(fd);
		return -1;
	}
	snprintf(path, len, "/proc/self/fd/%d", fd);
	return fd;
}

#endif
