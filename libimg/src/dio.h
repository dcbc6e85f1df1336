/*
 * dio.h -- the output's writer (dio.c): write-behind through O_DIRECT, and
 * the output's SHA-256 taken as it is written, for the file backends
 * (dev-raw.c, dev-qcow2-write.c, dev-vdisk-engine.c). Internal to libimg.
 *
 * Calling sequence: img_dio_new() on a new (all-hole) output; img_dio_copy()
 * for file data at host offsets, img_dio_write() for file data from memory,
 * img_dio_pwrite() for metadata, img_dio_zero() for holes; reads between
 * img_dio_read_fence() and img_dio_read_overlay(); img_dio_fence() before any
 * other write of the output's bytes (the hash cannot know of those: a backend
 * that makes them does not ask for img_dio_digest); img_dio_drain() before
 * the final tables and fsync; img_dio_digest() once everything is written;
 * img_dio_free(). Not thread-safe: one caller thread (the writer thread is
 * internal).
 */
#ifndef IMG_DIO_H
#define IMG_DIO_H

#include "private.h"

struct img_dio;

/*
 * A writer for @fd (kept open by the caller; @name for messages), direct
 * where the file system takes O_DIRECT, else the same buffers written
 * through the page cache. *out = NULL, and 0, when the context says not to
 * (img_ctx_set_direct_io): the caller then writes through the page cache
 * itself (and nothing is hashed on the way). -ENOMEM otherwise.
 */
int img_dio_new(struct img_ctx *ctx, int fd, const char *name, struct img_dio **out);

/* Copy @len bytes of @fd at @src to host offset @dst. Message set on failure. */
int img_dio_copy(struct img_dio *d, int fd, uint64_t src, uint64_t len, uint64_t dst);

/* Write @len bytes of @buf at host offset @dst (copied before return). */
int img_dio_write(struct img_dio *d, const void *buf, uint64_t len, uint64_t dst);

/*
 * Metadata: @len bytes of @buf at @dst, copied before return. In order it
 * joins the runs; behind the frontier it is written now, through the page
 * cache, after the runs under it.
 */
int img_dio_pwrite(struct img_dio *d, const void *buf, uint64_t len, uint64_t dst);

/*
 * Host bytes [off, off+len) are to read as zeros. 1: done (in order, the new
 * file's hole stays a hole, or short zeros join the run); 0: the caller
 * punches the hole itself (runs under it are written by then); <0 error.
 */
int img_dio_zero(struct img_dio *d, uint64_t off, uint64_t len);

/* Before touching host bytes [off, off+len) another way: wait for direct writes there. */
int img_dio_fence(struct img_dio *d, uint64_t off, uint64_t len);

/*
 * Reading [off, off+len): img_dio_read_fence() first (waits for the runs
 * handed to the writer there), then the caller's pread, then
 * img_dio_read_overlay() puts the run still being gathered on top. NULL @d:
 * nothing to do.
 */
int img_dio_read_fence(struct img_dio *d, uint64_t off, uint64_t len);
void img_dio_read_overlay(struct img_dio *d, void *buf, uint64_t len, uint64_t off);

/* Everything written; the first write failure (message set). NULL @d: 0. */
int img_dio_drain(struct img_dio *d);

/*
 * The SHA-256 of the whole file, @size bytes (drains first): 0 when every
 * write came in order (the hash was taken as the bytes went out, holes as
 * zeros); -ENODATA when not (or no @d, or a build without a manifest,
 * whose writer takes no hash): read the file back. Once only.
 */
int img_dio_digest(struct img_dio *d, uint64_t size, uint8_t out[32]);

/* Drain (errors dropped: call img_dio_drain first), stop the thread, free. NULL is fine. */
void img_dio_free(struct img_dio *d);

#endif
