/* dev-qcow2.c -- not written yet (see the foundation issue). */
#include "private.h"
#include <img/qcow2.h>

int img_dev_qcow2_create(struct img_ctx *ctx, const char *path, const struct img_qcow2_opts *opts,
                         struct img_dev **out)
{
	(void)path;
	(void)opts;
	(void)out;
	return img_set_error(ctx, -ENOSYS, "qcow2 output is not built yet");
}
