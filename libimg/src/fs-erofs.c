/*
 * fs-erofs.c -- the EROFS writer's row in the file system table.
 *
 * Spec: Linux Documentation/filesystems/erofs.rst (uncompressed images:
 * compact/extended inodes, FLAT_PLAIN/FLAT_INLINE, superblock checksum).
 * The work is split by phase: fs-erofs-plan.c lays everything out,
 * fs-erofs-emit.c writes it; fs-erofs.h describes the layout.
 */
#include "fs-erofs.h"

static int erofs_estimate(struct img_ctx *ctx, struct img_tree *tree,
                          const struct img_fs_opts *opts, uint64_t *size)
{
	struct img_erofs_plan *p;
	int r = img_erofs_plan(ctx, tree, opts, &p);

	if (r < 0)
		return r;
	/* Read-only: free space would be dead weight, so opts->extra is ignored. */
	*size = img_erofs_plan_bytes(p);
	img_erofs_plan_free(p);
	return 0;
}

static int erofs_write(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *opts,
                       struct img_dev *dev)
{
	struct img_erofs_plan *p;
	int r = img_erofs_plan(ctx, tree, opts, &p);

	if (r < 0)
		return r;
	r = img_erofs_emit(ctx, p, dev, 0);
	img_erofs_plan_free(p);
	return r;
}

const struct img_fs_ops img_fs_erofs = {
	.name = "erofs",
	.estimate = erofs_estimate,
	.write = erofs_write,
};
