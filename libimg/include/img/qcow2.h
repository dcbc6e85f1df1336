/*
 * qcow2.h -- the qcow2 v3 backend of img_dev: write images directly, read
 * existing ones, create overlays.
 *
 * Writing: random-access pwrite/pread straight into the image; unwritten
 * ranges read as zeros; clusters only ever written with zeros stay
 * unallocated; the same sequence of writes gives the same bytes. With
 * compression the clusters are compressed when the device is finished.
 * Given a plan (img_dev_plan, dev.h; uncompressed only) the tables go in
 * front of the data and the data clusters in guest order, so written in
 * plan order the file goes out front to back and img_dev_sha256() knows
 * its hash; every planned cluster is allocated, and non-zero data outside
 * the plan is refused.
 *
 * Reading: img_dev_qcow2_open() validates every header field and table it
 * reads and refuses what is inconsistent. A backing file is never opened
 * unless IMG_QCOW2_ALLOW_BACKING is given.
 */
#ifndef IMG_QCOW2_H
#define IMG_QCOW2_H

#include <stdint.h>
#include <img/context.h>
#include <img/dev.h>

#ifdef __cplusplus
extern "C" {
#endif

enum img_qcow2_compression {
	IMG_QCOW2_COMPRESS_NONE = 0,
	IMG_QCOW2_COMPRESS_ZSTD = 1,
	IMG_QCOW2_COMPRESS_ZLIB = 2,
};

struct img_qcow2_opts {
	uint64_t size;         /* virtual disk size in bytes (required) */
	unsigned cluster_bits; /* 9..21; 0 = 16 (64 KiB) */
	enum img_qcow2_compression compression;
	int level;        /* compression level; 0 = library default */
	unsigned threads; /* compression threads; 0 = online CPUs */
};

/* Create @path (truncating it) and return a writable qcow2 device. */
IMG_EXPORT int img_dev_qcow2_create(struct img_ctx *ctx, const char *path,
                                    const struct img_qcow2_opts *opts, struct img_dev **out);

#define IMG_QCOW2_ALLOW_BACKING 0x1u

/* Open an existing qcow2 read-only. */
IMG_EXPORT int img_dev_qcow2_open(struct img_ctx *ctx, const char *path, unsigned flags,
                                  struct img_dev **out);

/* Facts about a qcow2 file, read without opening any backing file. */
struct img_qcow2_info {
	uint32_t version;
	uint64_t virtual_size;
	unsigned cluster_bits;
	int compression_type;    /* 0 zlib, 1 zstd */
	char backing_file[1024]; /* "" when none */
	char backing_format[32];
};
IMG_EXPORT int img_qcow2_probe(struct img_ctx *ctx, const char *path, struct img_qcow2_info *info);

/*
 * Create an overlay @path backed by @backing (made absolute) of format
 * @backing_fmt ("qcow2", "raw", or a vdisk.h format: "vpc", "vdi", "vmdk"),
 * same virtual size as the backing image.
 */
IMG_EXPORT int img_qcow2_create_overlay(struct img_ctx *ctx, const char *path, const char *backing,
                                        const char *backing_fmt);

/*
 * Open any disk image read-only: qcow2 or a vdisk.h format by its magic,
 * otherwise raw.
 * @flags as for img_dev_qcow2_open().
 */
IMG_EXPORT int img_dev_open_image(struct img_ctx *ctx, const char *path, unsigned flags,
                                  struct img_dev **out);

#ifdef __cplusplus
}
#endif
#endif
