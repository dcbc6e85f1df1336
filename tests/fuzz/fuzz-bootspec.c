/*
 * fuzz-bootspec.c -- libFuzzer target for the boot.json parser
 * (img_bootspec_parse, img/bootspec.h), as mkvmimage meets it in a
 * system's toplevel. A parsed document must keep the promises the boot
 * entries rely on: every path in the store, no control byte anywhere,
 * specialisation names sorted and unique.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <img/bootspec.h>

#include "private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_system(const struct img_bootspec_system *s)
{
	const char *paths[] = { s->kernel, s->initrd, s->init, s->toplevel };

	for (size_t i = 0; i < IMG_ARRAY_SIZE(paths); i++)
		if (!paths[i] || strncmp(paths[i], "/nix/store/", 11) ||
		    !img_bootspec_text_ok(paths[i]))
			__builtin_trap();
	if (!s->label || !img_bootspec_text_ok(s->label) || !s->sort_key || !*s->sort_key)
		__builtin_trap();
	for (size_t i = 0; i < s->nkernel_params; i++)
		if (!*s->kernel_params[i] || !img_bootspec_text_ok(s->kernel_params[i]) ||
		    strchr(s->kernel_params[i], ' '))
			__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct img_ctx *ctx;
	struct img_bootspec *bs = NULL;
	int r;

	if (size > IMG_BOOTSPEC_MAX + 1 || img_ctx_new(&ctx) < 0)
		return 0;
	r = img_bootspec_parse(ctx, (const char *)data, size, "boot.json", NULL, &bs);
	if (r == 0) {
		check_system(&bs->sys);
		for (size_t i = 0; i < bs->nspecs; i++) {
			check_system(&bs->specs[i]);
			if (!bs->specs[i].name || strchr(bs->specs[i].name, '/') ||
			    (i && strcmp(bs->specs[i - 1].name, bs->specs[i].name) >= 0))
				__builtin_trap();
		}
		img_bootspec_free(bs);
	} else if (bs || !*img_ctx_error(ctx)) {
		__builtin_trap(); /* every refusal says why, and leaves nothing */
	}
	img_ctx_free(ctx);
	return 0;
}
