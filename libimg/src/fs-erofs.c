/*
 * fs-erofs.c -- the EROFS writer's row in the file system table.
 *
 * Spec: Linux Documentation/filesystems/erofs.rst (uncompressed images:
 * compact/extended inodes, FLAT_PLAIN/FLAT_INLINE, superblock checksum).
 * The work is split by phase: fs-erofs-plan.c lays everything out,
 * fs-erofs-emit.c writes it (in file order); fs-erofs-layout.h describes the
 * layout. The only row that takes streamed data in place.
 */
#include <stdio.h>

#include "fs-erofs-layout.h"
#include "fs-private.h"
#include <img/repro.h>

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

/* The row's plan: the whole layout (fs-erofs-plan.c) in p->format. */
static int erofs_plan_row(struct img_ctx *ctx, struct img_tree *tree,
                          const struct img_fs_opts *opts, struct img_fs_plan **out)
{
	struct img_erofs_plan *ep;
	int r = img_erofs_plan(ctx, tree, opts, &ep);

	if (r < 0)
		return r;
	r = img_fs_plan_new(ctx, tree, opts, img_erofs_plan_bytes(ep), out);
	if (r < 0) {
		img_erofs_plan_free(ep);
		return r;
	}
	(*out)->format = ep;
	return 0;
}

static void erofs_plan_free_row(struct img_fs_plan *plan)
{
	if (plan)
		img_erofs_plan_free(plan->format);
	img_fs_plan_free(plan);
}

static void erofs_volume_id(const struct img_fs_plan *plan, char *out, size_t len)
{
	const struct img_erofs_plan *ep = plan->format;
	char text[37];

	img_uuid_unparse(ep->uuid, text);
	snprintf(out, len, "%s", text);
}

static int erofs_emit_row(struct img_fs_plan *plan, struct img_dev *dev)
{
	const struct img_fs_compress *c = plan->opts.compress;

	if (c) {
		struct img_erofs_compress_opts zo = {
			.alg = c->alg && !strcmp(c->alg, "lz4") ? IMG_EROFS_LZ4 : IMG_EROFS_LZ4HC,
			.level = c->level,
			.threads = c->threads ? c->threads : 2,
		};
		int r = img_erofs_compress(plan->ctx, plan->format, dev, &zo);

		if (r < 0)
			return r;
		/* the plan shrank: the size the recipe cuts the output to */
		plan->opts.size = img_erofs_plan_bytes(plan->format);
	}
	return img_erofs_emit(plan->ctx, plan->format, dev, 0);
}

/* File data from block 1 on, whole blocks, in canonical order (fs-erofs-layout.h). */
static const struct img_fs_stream erofs_stream = {
	.start = EROFS_BLKSZ,
	.align = EROFS_BLKSZ,
	.body = img_erofs_default_body,
};

/* Data a sorted stream wrote in place: kept if the plan put it there. */
static int erofs_place(struct img_fs_plan *plan, struct img_node *node, uint64_t off, uint64_t span)
{
	struct img_erofs_inode *e = img_erofs_inode_of(plan->format, node);

	if (e->startblk * EROFS_BLKSZ != off || node->size - e->tail != span)
		return 0;
	e->data_in_place = 1;
	return 1;
}

static int erofs_write_data_row(struct img_fs_plan *plan, struct img_dev *dev,
                                struct img_node *node, uint64_t off, const void *buf, size_t len)
{
	return img_erofs_write_data(plan->format, dev, node, off, buf, len);
}

static int erofs_plan_writes_row(struct img_fs_plan *plan, struct img_dev *dev)
{
	if (plan->opts.compress)
		return -EINVAL; /* compressed while emitting: nothing to plan ahead */
	return img_erofs_plan_writes(plan->ctx, plan->format, dev);
}

const struct img_fs_ops img_fs_erofs = {
	.name = "erofs",
	.plan = erofs_plan_row,
	.planned_size = img_fs_plan_size,
	.volume_id = erofs_volume_id,
	.emit = erofs_emit_row,
	.plan_free = erofs_plan_free_row,
	.stream = &erofs_stream,
	.place = erofs_place,
	.write_data = erofs_write_data_row,
	.estimate = erofs_estimate,
	.write = erofs_write,
	.plan_writes = erofs_plan_writes_row,
};
