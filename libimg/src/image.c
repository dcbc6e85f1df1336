/*
 * image.c -- img_build(): the front door of the recipes; the mode picks one.
 * What they share is image-common.c, below them.
 */
#include "image-private.h"

int img_build(struct img_ctx *ctx, const struct img_build_opts *o)
{
	if (!o->output)
		return img_set_error(ctx, -EINVAL, "no output file given");
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
