/*
 * fuzz-vdisk.c -- libFuzzer target for the VHD, VDI and VMDK readers
 * (dev-vdisk.c, dev-vdisk-engine.c, dev-vpc.c, dev-vdi.c, dev-vmdk.c):
 * probe and open the input (through a memfd, since the reader takes a
 * path), then read the virtual disk, bounded: the first 4 MiB and one
 * sector every 32 MiB of the first 2 GiB. A refusal must say why.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <img/vdisk.h>

#include "private.h"

#include "fuzz-input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum img_vdisk_format f;
	struct img_ctx *ctx;
	struct img_dev *dev = NULL;
	static uint8_t buf[1 << 20];
	char path[64];
	int fd;

	if (size > (4 << 20))
		return 0;
	fd = fuzz_input_file("vdisk", data, size, path, sizeof(path));
	if (fd < 0)
		return 0;
	if (img_ctx_new(&ctx) < 0) {
		close(fd);
		return 0;
	}
	if (img_vdisk_probe(ctx, path, &f, NULL) == 0 && f) {
		if (img_dev_vdisk_open(ctx, path, &dev) == 0) {
			uint64_t vsize = img_dev_size(dev);

			for (uint64_t off = 0; off < vsize && off < (4 << 20); off += sizeof(buf))
				if (img_dev_pread(dev, buf,
				                  (size_t)IMG_MIN(sizeof(buf), vsize - off),
				                  off) < 0)
					break;
			for (uint64_t off = 0; off + 512 <= vsize && off < (2ull << 30);
			     off += 32u << 20)
				(void)img_dev_pread(dev, buf, 512, off);
			img_dev_unref(dev);
		} else if (!*img_ctx_error(ctx)) {
			__builtin_trap();
		}
	}
	img_ctx_free(ctx);
	close(fd);
	return 0;
}
