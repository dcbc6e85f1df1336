/* closure.c -- not written yet (see the ext4 issue). */
#include "private.h"
#include <img/closure.h>

int img_closure_load(struct img_ctx *ctx, const char *spec, const struct img_closure_opts *opts,
		     struct img_closure **out)
{
	(void)spec;
	(void)opts;
	(void)out;
	return img_set_error(ctx, -ENOSYS, "closures are not read yet");
}
