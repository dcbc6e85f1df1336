/*
 * dio.h -- write-behind of copied file data through O_DIRECT (dio.c), for
 * the file backends (dev-raw.c, dev-qcow2-write.c). Internal to libimg.
 *
 * Calling sequence: img_dio_new() on the open output; img_dio_copy() for
 * file data at host offsets, img_dio_write() for file data from memory;
 * img_dio_fence() before any other read or write of the output's
 * bytes; img_dio_drain() before the final tables and fsync; img_dio_free().
 * Not thread-safe: one caller thread (the writer thread is internal).
 */
#ifndef IMG_DIO_H
#define IMG_DIO_H

#include "private.h"

struct img_dio;

/*
 * A direct writer for @fd (kept open by the caller; @name for messages).
 * *out = NULL, and 0, when this file system takes no O_DIRECT or the
 * context says not to (img_ctx_set_direct_io): the caller then writes
 * through the page cache. -ENOMEM otherwise.
 */
int img_dio_new(struct img_ctx *ctx, int fd, const char *name, struct img_dio **out);

/* Copy @len bytes of @fd at @src to host offset @dst. Message set on failure. */
int img_dio_copy(struct img_dio *d, int fd, uint64_t src, uint64_t len, uint64_t dst);

/* Write @len bytes of @buf at host offset @dst (copied before return). */
int img_dio_write(struct img_dio *d, const void *buf, uint64_t len, uint64_t dst);

/* Before touching host bytes [off, off+len) another way: wait for direct writes there. */
int img_dio_fence(struct img_dio *d, uint64_t off, uint64_t len);

/* Everything written; the first write failure (message set). NULL @d: 0. */
int img_dio_drain(struct img_dio *d);

/* Drain (errors dropped: call img_dio_drain first), stop the thread, free. NULL is fine. */
void img_dio_free(struct img_dio *d);

#endif
