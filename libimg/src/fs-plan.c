/*
 * fs-plan.c -- the plan every row of the file system table hands out
 * (fs-private.h): the tree, a copy of the options and the size, and for a
 * row that sizes ahead only, plan = estimate and emit = its write op.
 */
#include <stdlib.h>

#include "fs-private.h"

int img_fs_plan_new(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *opts,
                    uint64_t size, struct img_fs_plan **out)
{
	struct img_fs_plan *p = calloc(1, sizeof(*p));

	if (!p)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	if (opts)
		p->opts = *opts;
	if ((p->opts.label && !(p->label = img_strdup(p->opts.label))) ||
	    (p->opts.id_role && !(p->id_role = img_strdup(p->opts.id_role))) ||
	    (p->opts.spill_dir && !(p->spill_dir = img_strdup(p->opts.spill_dir)))) {
		img_fs_plan_free(p);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	p->ctx = ctx;
	p->tree = tree;
	p->opts.label = p->label;
	p->opts.id_role = p->id_role;
	p->opts.spill_dir = p->spill_dir;
	p->opts.size = size;
	*out = p;
	return 0;
}

void img_fs_plan_free(struct img_fs_plan *plan)
{
	if (!plan)
		return;
	free(plan->label);
	free(plan->id_role);
	free(plan->spill_dir);
	free(plan);
}

uint64_t img_fs_plan_size(const struct img_fs_plan *plan)
{
	return plan->opts.size;
}

int img_fs_plan_sized(const struct img_fs_ops *fs, struct img_ctx *ctx, struct img_tree *tree,
                      const struct img_fs_opts *opts, struct img_fs_plan **out)
{
	uint64_t size = opts ? opts->size : 0;
	int r = 0;

	if (!size)
		r = fs->estimate(ctx, tree, opts, &size);
	return r < 0 ? r : img_fs_plan_new(ctx, tree, opts, size, out);
}

int img_fs_emit_whole(const struct img_fs_ops *fs, struct img_fs_plan *plan, struct img_dev *dev)
{
	return fs->write(plan->ctx, plan->tree, &plan->opts, dev);
}
