/*
 * fs.h -- file system writers behind one ops table.
 *
 * Each format (ext4, erofs, fat32) is one fs-<name>.c with one row in the
 * table in fs.c. A writer first estimates the size its tree needs (so the
 * device can be sized before anything is written), then writes the whole
 * file system onto a device in one pass: plan the layout, emit it, copy the
 * file data in-kernel into its final place.
 *
 * Calling sequence:
 *   const struct img_fs_ops *fs = img_fs_find("ext4");
 *   fs->estimate(ctx, tree, &opts, &size);
 *   ... create a device of at least size bytes ...
 *   fs->write(ctx, tree, &opts, dev);
 */
#ifndef IMG_FS_H
#define IMG_FS_H

#include <stdint.h>
#include <img/context.h>
#include <img/dev.h>
#include <img/tree.h>

#ifdef __cplusplus
extern "C" {
#endif

struct img_fs_opts {
	const char *label;   /* volume label */
	const char *id_role; /* repro role for UUID/volume ID, e.g. "root" */
	const uint8_t *uuid; /* this UUID instead (16 bytes; EROFS), or NULL */
	uint64_t size;       /* exact size in bytes; 0 = the estimate */
	uint64_t extra;      /* free space added to the estimate */
	unsigned flags;
};

struct img_fs_ops {
	const char *name;
	/* Bytes the tree needs with opts->extra free space (opts->size ignored). */
	int (*estimate)(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *opts,
	                uint64_t *size);
	/* Write the file system on the whole of @dev (whose size is the fs size). */
	int (*write)(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *opts,
	             struct img_dev *dev);
};

/* The writer called @name, or NULL. */
IMG_EXPORT const struct img_fs_ops *img_fs_find(const char *name);

#ifdef __cplusplus
}
#endif
#endif
