/* image-disk.c -- EFI, BIOS, HYBRID recipes. Not written yet. */
#include "image-private.h"

int img_build_disk(struct img_ctx *ctx, const struct img_build_opts *o)
{
	(void)o;
	return img_set_error(ctx, -ENOSYS, "partitioned disks are not built yet");
}
