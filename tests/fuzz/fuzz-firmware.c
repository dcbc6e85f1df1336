/*
 * fuzz-firmware.c -- libFuzzer target for QEMU firmware descriptor parsing
 * (img_vm_firmware_parse, vm-firmware.c). The first byte picks the
 * --secure-boot filter; the rest is the descriptor JSON.
 */
#include <stddef.h>
#include <stdint.h>

#include <img/vm.h>

#include "private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct img_ctx *ctx;
	struct img_vm_firmware fw;

	if (size < 1 || size > (1 << 16))
		return 0;
	if (img_ctx_new(&ctx) < 0)
		return 0;
	if (img_vm_firmware_parse(ctx, "fuzz.json", (const char *)data + 1, size - 1, data[0] & 1,
	                          &fw) == 0) {
		/* A descriptor that fits names absolute files and known formats. */
		if (!fw.code || fw.code[0] != '/' || !fw.vars || fw.vars[0] != '/' ||
		    (strcmp(fw.code_format, "raw") && strcmp(fw.code_format, "qcow2")))
			__builtin_trap();
		img_vm_firmware_release(&fw);
	}
	img_ctx_free(ctx);
	return 0;
}
