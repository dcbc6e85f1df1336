/*
 * dev.h -- byte-addressed block devices: where every image is written.
 *
 * A device is an ops table behind a handle. dev.c owns range checks, the
 * fallbacks for optional ops and a sticky error flag: after the first failed
 * write every later call fails too, so a writer can check once at the end.
 *
 * Backends:
 *   raw    a sparse regular file; holes stay holes (write_zeroes punches)
 *   qcow2  a qcow2 v3 image written directly (see qcow2.h)
 *   slice  a window (offset, length) onto a parent device: partitions
 *   mem    a buffer in memory, for tests
 *
 * Calling sequence for a writer:
 *   img_dev_raw_create(ctx, path, size, &dev);      or img_dev_qcow2_create()
 *   img_dev_plan(dev, off, len); ...                 optional: what will be written
 *   img_dev_plan_done(dev);
 *   img_dev_pwrite(dev, buf, len, off); ...          any order, any offsets
 *   img_dev_copy_from_fd(dev, fd, src_off, len, off); file data, in-kernel
 *   img_dev_finish(dev);                             final metadata + fsync
 *   img_dev_sha256(dev, digest);                     the file's hash, if known
 *   img_dev_unref(dev);
 * A device dropped without img_dev_finish() may be incomplete: the caller
 * removes the file.
 */
#ifndef IMG_DEV_H
#define IMG_DEV_H

#include <stddef.h>
#include <stdint.h>
#include <img/context.h>

#ifdef __cplusplus
extern "C" {
#endif

struct img_dev;

/*
 * The backend ops table. pread, pwrite and flush are required; the others
 * may be NULL and dev.c falls back (write_zeroes -> pwrite of zeros,
 * copy_from_fd -> pread from the fd + pwrite, write_data -> pwrite,
 * finish -> flush, destroy -> nothing). The size is not an op: it is given
 * to img_dev_new(). Offsets and lengths are already range-checked by dev.c.
 * Return 0 or a negative errno, and put the detail on the device's context
 * (img_dev_ctx()) with img_set_error().
 */
struct img_dev_ops {
	const char *name;
	int (*pread)(struct img_dev *dev, void *buf, size_t len, uint64_t off);
	int (*pwrite)(struct img_dev *dev, const void *buf, size_t len, uint64_t off);
	int (*write_zeroes)(struct img_dev *dev, uint64_t off, uint64_t len);
	int (*copy_from_fd)(struct img_dev *dev, int fd, uint64_t src_off, uint64_t len,
	                    uint64_t dst_off);
	int (*flush)(struct img_dev *dev);
	/* File data from memory, written once: may be written behind. NULL: pwrite. */
	int (*write_data)(struct img_dev *dev, const void *buf, size_t len, uint64_t off);
	/* Write final metadata (qcow2 tables, compression), then fsync. */
	int (*finish)(struct img_dev *dev);
	/* Release everything the backend holds. */
	void (*destroy)(struct img_dev *dev);
	/* Before the first write: [off, off+len) will be written (dev.c has
	 * checked the order and the range). NULL: the plan is ignored. */
	int (*plan)(struct img_dev *dev, uint64_t off, uint64_t len);
	/* The plan is complete, writes follow. NULL: nothing to do. */
	int (*plan_done)(struct img_dev *dev);
};

/* Flags for img_dev_new(). */
#define IMG_DEV_READONLY 0x1u

/*
 * For backends: allocate a device of @priv_size extra bytes (reached with
 * img_dev_priv()), virtual size @size. Refcount 1.
 */
IMG_EXPORT int img_dev_new(struct img_ctx *ctx, const struct img_dev_ops *ops, uint64_t size,
                           unsigned flags, size_t priv_size, struct img_dev **out);
IMG_EXPORT void *img_dev_priv(struct img_dev *dev);
IMG_EXPORT struct img_ctx *img_dev_ctx(const struct img_dev *dev);

IMG_EXPORT struct img_dev *img_dev_ref(struct img_dev *dev);
/* Drop a reference; the last one destroys the device. NULL allowed. */
IMG_EXPORT void img_dev_unref(struct img_dev *dev);

IMG_EXPORT uint64_t img_dev_size(const struct img_dev *dev);
IMG_EXPORT const char *img_dev_backend(const struct img_dev *dev);
IMG_EXPORT int img_dev_readonly(const struct img_dev *dev);

/*
 * The plan: before the first write, a writer that knows its layout declares
 * every range it will write, img_dev_plan() once per range, ascending and
 * not overlapping, then img_dev_plan_done(); the writes follow (in any
 * order, but in plan order the output goes out in file order). A backend
 * may lay its file out for it: qcow2 (uncompressed) puts all its tables in
 * front of the data and the data clusters in guest order, so the file is
 * written front to back and hashed on the way (img_dev_sha256), and refuses
 * non-zero data outside the plan; so do dynamic VHD, VDI and monolithicSparse
 * VMDK (vdisk.h: slots in virtual order, tables in front). Backends that
 * cannot use a plan ignore it (raw, mem, compressed qcow2, fixed VHD,
 * streamOptimized VMDK: the last two are written in order anyway, and the
 * compressed formats compress in the order the writes come). A slice forwards it to
 * its parent at its offset; its img_dev_plan_done() completes the parent's
 * plan, so a device with several slices is planned on the parent itself.
 * -EINVAL (message set, sticky) for a range out of order, overlapping the
 * one before, beyond the end, or any plan call after a write or after
 * img_dev_plan_done(); a write between img_dev_plan() and
 * img_dev_plan_done() fails too. A range of length 0 is ignored.
 */
IMG_EXPORT int img_dev_plan(struct img_dev *dev, uint64_t off, uint64_t len);
IMG_EXPORT int img_dev_plan_done(struct img_dev *dev);

/* Read @len bytes at @off. Reads past the end fail with -EINVAL. */
IMG_EXPORT int img_dev_pread(struct img_dev *dev, void *buf, size_t len, uint64_t off);
IMG_EXPORT int img_dev_pwrite(struct img_dev *dev, const void *buf, size_t len, uint64_t off);
/* Make [off, off+len) read as zeros; backends keep it unallocated if they can. */
IMG_EXPORT int img_dev_write_zeroes(struct img_dev *dev, uint64_t off, uint64_t len);
/*
 * File data from @buf (copied before return): like img_dev_pwrite, but the
 * backend may gather it with the data around it and write it behind (the
 * raw and qcow2 backends do, with O_DIRECT); reads of the device still see
 * it at once. For bytes written once, not for metadata rewritten in place.
 */
IMG_EXPORT int img_dev_write_data(struct img_dev *dev, const void *buf, size_t len, uint64_t off);
/*
 * Copy @len bytes from @fd at @src_off to the device at @dst_off: written
 * behind like img_dev_write_data where the backend can, else with
 * copy_file_range. A short source is an error (-EIO: "input changed while
 * reading").
 */
IMG_EXPORT int img_dev_copy_from_fd(struct img_dev *dev, int fd, uint64_t src_off, uint64_t len,
                                    uint64_t dst_off);
IMG_EXPORT int img_dev_flush(struct img_dev *dev);
/* Complete the device (final metadata, fsync). Once only; then only unref. */
IMG_EXPORT int img_dev_finish(struct img_dev *dev);
/*
 * After img_dev_finish(): the SHA-256 of the output file, taken on the bytes
 * as they were written (holes as zeros), so nobody has to read it back. 0;
 * -ENODATA when the backend cannot say (it wrote out of order, or has no
 * file): hash the file instead. No message is set.
 */
IMG_EXPORT int img_dev_sha256(struct img_dev *dev, uint8_t out[32]);
/* The first error any call on this device met (0 if none). */
IMG_EXPORT int img_dev_error(const struct img_dev *dev);

/* Constructors. */

/* Raw sparse file: created (truncated) at @path with @size bytes. */
IMG_EXPORT int img_dev_raw_create(struct img_ctx *ctx, const char *path, uint64_t size,
                                  struct img_dev **out);
/* Raw file opened read-only (size = file size). */
IMG_EXPORT int img_dev_raw_open(struct img_ctx *ctx, const char *path, struct img_dev **out);
/* Raw device over an fd the caller keeps owning (not closed by the device). */
IMG_EXPORT int img_dev_raw_from_fd(struct img_ctx *ctx, int fd, uint64_t size, unsigned flags,
                                   struct img_dev **out);
/* Memory device of @size zero bytes. */
IMG_EXPORT int img_dev_mem_new(struct img_ctx *ctx, uint64_t size, struct img_dev **out);
/* The buffer behind a mem device (borrowed). */
IMG_EXPORT const uint8_t *img_dev_mem_data(const struct img_dev *dev);
/* A window [off, off+len) of @parent; takes a reference on the parent. */
IMG_EXPORT int img_dev_slice_new(struct img_dev *parent, uint64_t off, uint64_t len,
                                 struct img_dev **out);

#ifdef __cplusplus
}
#endif
#endif
