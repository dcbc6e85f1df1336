/*
 * fuzz-manifest.c -- libFuzzer target for the image manifest reader
 * (img_manifest_read, docs/manifest.md), as vmlaunch meets it beside an
 * image. The input goes through a memfd, since the reader takes a path.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include <img/manifest.h>

#include "private.h"

#include "fuzz-input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct img_ctx *ctx;
	struct img_manifest *m = NULL;
	char path[64];
	int fd, r;

	if (size > (1 << 20))
		return 0;
	fd = fuzz_input_file("manifest", data, size, path, sizeof(path));
	if (fd < 0)
		return 0;
	if (img_ctx_new(&ctx) < 0) {
		close(fd);
		return 0;
	}
	r = img_manifest_read(ctx, path, &m);
	if (r == 0) {
		if (!m || m->manifest_version != IMG_MANIFEST_VERSION)
			__builtin_trap();
		for (size_t i = 0; i < m->npartitions; i++)
			(void)m->partitions[i].offset;
		img_manifest_free(m);
	} else if (!*img_ctx_error(ctx)) {
		__builtin_trap(); /* every refusal says why */
	}
	img_ctx_free(ctx);
	close(fd);
	return 0;
}
