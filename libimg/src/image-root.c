/* image-root.c -- ROOT and EMPTY recipes. Until the ext4 writer lands, EMPTY
 * writes an all-zero disk of --size. */
#include "image-private.h"

int img_build_root(struct img_ctx *ctx, const struct img_build_opts *o)
{
	struct img_dev *dev;
	int r;

	if (o->mode != IMG_MODE_EMPTY)
		return img_set_error(ctx, -ENOSYS, "the root file system writer is not built yet");
	if (!o->size)
		return img_set_error(ctx, -EINVAL, "--empty needs --size");
	r = img_image_set_seed(ctx, o, NULL, 0);
	if (r < 0)
		return r;
	r = img_image_create_output(ctx, o, o->size, &dev);
	if (r < 0)
		return r;
	r = img_dev_finish(dev);
	img_dev_unref(dev);
	return r;
}
