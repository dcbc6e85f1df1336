/* image-store.c -- STORE recipe (EROFS). Not written yet. */
#include "image-private.h"

int img_build_store(struct img_ctx *ctx, const struct img_build_opts *o)
{
	(void)o;
	return img_set_error(ctx, -ENOSYS, "the store image writer is not built yet");
}
