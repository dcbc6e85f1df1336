/*
 * image.c -- img_build(): the front door of the recipes; the mode picks one.
 * What they share is image-common.c, below them.
 */
#include "context-private.h"
#include "image-private.h"

static int build(struct img_ctx *ctx, const struct img_build_opts *o)
{
	switch (o->mode) {
	case IMG_MODE_ROOT:
	case IMG_MODE_EMPTY:
		return img_build_root(ctx, o);
	case IMG_MODE_STORE:
		return img_build_store(ctx, o);
	case IMG_MODE_EFI:
	case IMG_MODE_BIOS:
	case IMG_MODE_HYBRID:
		return img_build_disk(ctx, o);
	}
	return img_set_error(ctx, -EINVAL, "unknown mode %d", (int)o->mode);
}

int img_build(struct img_ctx *ctx, const struct img_build_opts *o)
{
	int r;

	if (!o->output)
		return img_set_error(ctx, -EINVAL, "no output file given");
	/* no manifest, no sha256 to give it: the writer skips the hash */
	ctx->no_output_hash = !o->manifest;
	r = build(ctx, o);
	ctx->no_output_hash = 0;
	return r;
}
