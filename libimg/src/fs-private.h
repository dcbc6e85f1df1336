/*
 * fs-private.h -- what the rows of the file system table (fs.h) share,
 * private to libimg: the plan every row hands out.
 *
 * A row that lays its file system out ahead (erofs) keeps its own plan in
 * @format; a row that only sizes ahead and writes in one go (ext4, vfat)
 * plans with img_fs_plan_sized() and emits with its write op.
 */
#ifndef IMG_FS_PRIVATE_H
#define IMG_FS_PRIVATE_H

#include "private.h"
#include <img/fs.h>

struct img_fs_plan {
	struct img_ctx *ctx;
	struct img_tree *tree;
	struct img_fs_opts opts; /* strings point at the copies below; .size set */
	char *label, *id_role, *spill_dir;
	void *format; /* the row's own plan, or NULL */
};

/* A plan of @tree with a copy of @opts, of @size bytes (opts->size ignored). */
int img_fs_plan_new(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *opts,
                    uint64_t size, struct img_fs_plan **out);
/* Frees the plan, not @format (the row frees that first). NULL is fine. */
void img_fs_plan_free(struct img_fs_plan *plan);
uint64_t img_fs_plan_size(const struct img_fs_plan *plan);
/* The plan of a row that sizes ahead only: opts->size, else @fs's estimate. */
int img_fs_plan_sized(const struct img_fs_ops *fs, struct img_ctx *ctx, struct img_tree *tree,
                      const struct img_fs_opts *opts, struct img_fs_plan **out);
/* Emit for such a row: its write op on @dev with the planned options. */
int img_fs_emit_whole(const struct img_fs_ops *fs, struct img_fs_plan *plan, struct img_dev *dev);

#endif
