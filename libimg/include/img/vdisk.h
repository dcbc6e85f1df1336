/*
 * vdisk.h -- the other virtual disk formats users hand to hypervisors and
 * clouds, written directly through an img_dev like qcow2 (no conversion
 * pass), and opened read-only:
 *
 *   IMG_VDISK_VPC_FIXED     VHD, fixed: the raw bytes and a 512-byte footer
 *                           (what Azure and Hyper-V take; virtual size a
 *                           multiple of 1 MiB for Azure)
 *   IMG_VDISK_VPC_DYNAMIC   VHD, dynamic: 2 MiB blocks behind a BAT
 *   IMG_VDISK_VDI           VirtualBox VDI, dynamic: 1 MiB blocks
 *   IMG_VDISK_VMDK_SPARSE   VMDK monolithicSparse: 64 KiB grains
 *   IMG_VDISK_VMDK_STREAM   VMDK streamOptimized (OVA/OVF): deflated grains
 *                           with markers, tables at the end; each grain
 *                           deflated once in-order writes pass it (else
 *                           staged in the output, laid out at finish)
 *
 * Dynamic VHD, VDI and monolithicSparse VMDK use a plan (img_dev_plan, dev.h):
 * every block it touches gets its slot in virtual order, the tables are
 * written at img_dev_plan_done() in front of the data, and the file goes out
 * front to back, hashed on the way (img_dev_sha256). Without a plan blocks
 * are allocated in write order and the tables written at img_dev_finish().
 *
 * Identifiers (VHD and VDI UUIDs, the VMDK CID) come from the context's
 * seed (repro.h); the VHD timestamp from its epoch.
 */
#ifndef IMG_VDISK_H
#define IMG_VDISK_H

#include <stdint.h>
#include <img/dev.h>

#ifdef __cplusplus
extern "C" {
#endif

enum img_vdisk_format {
	IMG_VDISK_VPC_FIXED = 1,
	IMG_VDISK_VPC_DYNAMIC,
	IMG_VDISK_VDI,
	IMG_VDISK_VMDK_SPARSE,
	IMG_VDISK_VMDK_STREAM,
};

struct img_vdisk_opts {
	enum img_vdisk_format format;
	uint64_t size; /* virtual size in bytes, a multiple of 512 */
	/* The file name a VMDK descriptor names its extent by (the final
	 * name's base name; the file may be written under another). NULL: the
	 * base name of the path. */
	const char *extent_name;
};

/* Create @path (truncated) as @o->format. */
IMG_EXPORT int img_dev_vdisk_create(struct img_ctx *ctx, const char *path,
                                    const struct img_vdisk_opts *o, struct img_dev **out);

/*
 * What @path is, from its magic: *format set (0 when none of these) and,
 * when it is one, *qemu_name to qemu's driver name ("vpc", "vdi", "vmdk").
 * Negative errno only when the file cannot be read.
 */
IMG_EXPORT int img_vdisk_probe(struct img_ctx *ctx, const char *path, enum img_vdisk_format *format,
                               const char **qemu_name);

/* Open @path, one of these formats, read-only (virtual size from its header). */
IMG_EXPORT int img_dev_vdisk_open(struct img_ctx *ctx, const char *path, struct img_dev **out);

/* qemu's name for @f ("vpc", "vdi", "vmdk"). */
IMG_EXPORT const char *img_vdisk_qemu_name(enum img_vdisk_format f);

#ifdef __cplusplus
}
#endif
#endif
