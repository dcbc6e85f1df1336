/*
 * fuzz-tar.c -- libFuzzer target: bytes -> tar source -> tree -> EROFS.
 *
 * The input is read as a tar stream (any compression libarchive knows) from
 * a memfd, so both the seekable path (data as file ranges) and the writer
 * run; accepted trees are written into a memory device. Errors are fine;
 * crashes, leaks and sanitizer reports are not. Seeds: fixtures/fuzz/tar/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fs-erofs-layout.h"
#include "private.h"
#include <img/source.h>
#include <img/tree.h>

#include "fuzz-input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct img_ctx *ctx;
	struct img_tree *t = NULL;
	struct img_tree_opts to = { 0 };
	struct img_source_opts so = { .prefix = "" };
	struct img_tar_source *src = NULL;
	struct img_erofs_plan *p = NULL;
	struct img_fs_opts fo = { 0 };
	char path[64];
	int fd = fuzz_input_file("fuzz-tar", data, size, path, sizeof(path));

	if (fd < 0 || img_ctx_new(&ctx) < 0)
		abort();
	if (img_tree_new(ctx, &to, &t) < 0)
		abort();
	if (img_source_tar(ctx, path, &so, t, &src) >= 0 && img_tree_finish(t) >= 0 &&
	    img_erofs_plan(ctx, t, &fo, &p) >= 0 && img_erofs_plan_bytes(p) <= (64u << 20)) {
		struct img_dev *dev;

		if (img_dev_mem_new(ctx, img_erofs_plan_bytes(p), &dev) >= 0) {
			img_erofs_emit(ctx, p, dev, 0);
			img_dev_unref(dev);
		}
	}
	img_erofs_plan_free(p);
	img_tar_source_free(src);
	img_tree_free(t);
	img_ctx_free(ctx);
	close(fd);
	return 0;
}
