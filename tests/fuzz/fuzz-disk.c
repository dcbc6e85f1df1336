/*
 * fuzz-disk.c -- libFuzzer target for the partition table reader
 * (img_disk_probe), which vmlaunch runs on images it did not make. The input
 * is the start of a 4 MiB disk (protective MBR, GPT header and entries); the
 * rest reads as zeros. Whatever the bytes, every partition reported must lie
 * inside the disk.
 */
#include <stddef.h>
#include <stdint.h>

#include <img/disk.h>

#include "private.h"

#define DISK_SIZE (4u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct img_disk_info info;
	struct img_ctx *ctx;
	struct img_dev *dev;

	if (size > DISK_SIZE || img_ctx_new(&ctx) < 0)
		return 0;
	if (img_dev_mem_new(ctx, DISK_SIZE, &dev) < 0) {
		img_ctx_free(ctx);
		return 0;
	}
	if (size)
		img_dev_pwrite(dev, data, size, 0);
	if (img_disk_probe(ctx, dev, &info) == 0) {
		if (info.nparts && info.label == IMG_DISK_NONE)
			__builtin_trap();
		for (size_t i = 0; i < info.nparts && i < IMG_DISK_MAX_PARTS; i++)
			if (info.parts[i].offset > DISK_SIZE ||
			    info.parts[i].size > DISK_SIZE - info.parts[i].offset)
				__builtin_trap();
	}
	img_dev_unref(dev);
	img_ctx_free(ctx);
	return 0;
}
