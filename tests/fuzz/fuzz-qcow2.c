/*
 * fuzz-qcow2.c -- libFuzzer target for the qcow2 reader (dev-qcow2-read.c,
 * dev-qcow2-header.c, dev-qcow2.c): probe and open the input (through a
 * memfd, since the reader takes a path), then read the virtual disk, bounded: the first
 * 4 MiB, and one cluster at the start of each of the first 64 L2 ranges.
 * Backing files are never allowed here. Error messages must name the file.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <img/qcow2.h>

#include "private.h"

#include "fuzz-input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct img_qcow2_info info;
	struct img_ctx *ctx;
	struct img_dev *dev = NULL;
	static uint8_t buf[1 << 20];
	char path[64];
	int fd;

	if (size > (4 << 20))
		return 0;
	fd = fuzz_input_file("qcow2", data, size, path, sizeof(path));
	if (fd < 0)
		return 0;
	if (img_ctx_new(&ctx) < 0) {
		close(fd);
		return 0;
	}
	if (img_qcow2_probe(ctx, path, &info) == 0 && info.cluster_bits < 9)
		__builtin_trap();
	if (img_dev_qcow2_open(ctx, path, 0, &dev) == 0) {
		uint64_t vsize = img_dev_size(dev), span;

		for (uint64_t off = 0; off < vsize && off < (4 << 20); off += sizeof(buf))
			if (img_dev_pread(dev, buf, (size_t)IMG_MIN(sizeof(buf), vsize - off),
			                  off) < 0)
				break;
		/* One cluster at the start of each L2 table's range. */
		span = (1ull << info.cluster_bits) * ((1ull << info.cluster_bits) / 8);
		for (uint64_t i = 0; i < 64 && i * span < vsize; i++)
			(void)img_dev_pread(dev, buf, 512, i * span);
		img_dev_unref(dev);
	} else if (!*img_ctx_error(ctx)) {
		__builtin_trap(); /* a refusal always says why */
	}
	img_ctx_free(ctx);
	close(fd);
	return 0;
}
