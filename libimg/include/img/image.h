/*
 * image.h -- the recipes the tools call: one call builds one image.
 *
 *   IMG_MODE_ROOT    ext4 (label nixos) holding the closure, no partition table
 *   IMG_MODE_EMPTY   an empty ext4 of opts->size
 *   IMG_MODE_EFI     GPT: ESP (FAT32) + root ext4, UEFI boot files
 *   IMG_MODE_BIOS    MBR: one bootable ext4 root partition at 1 MiB
 *   IMG_MODE_HYBRID  GPT: BIOS boot + ESP + root
 *   IMG_MODE_STORE   EROFS (label nix-store) whose root holds the store paths;
 *                    with opts->verity a dm-verity hash tree (veritysetup's
 *                    format) follows the file system in the same file
 *
 * img_build() writes opts->output in place (the tool passes a temporary name
 * and renames it on success; the library removes nothing). The seed, when
 * not given, is derived from the inputs: the sorted closure and the options
 * that change the output.
 */
#ifndef IMG_IMAGE_H
#define IMG_IMAGE_H

#include <stdint.h>
#include <img/context.h>
#include <img/qcow2.h>
#include <img/vdisk.h>

#ifdef __cplusplus
extern "C" {
#endif

enum img_mode {
	IMG_MODE_ROOT = 0,
	IMG_MODE_EMPTY,
	IMG_MODE_EFI,
	IMG_MODE_BIOS,
	IMG_MODE_HYBRID,
	IMG_MODE_STORE,
};

/* --compress-fs: the store image's EROFS file data. */
enum img_fs_compression {
	IMG_FS_COMPRESS_NONE = 0,
	IMG_FS_COMPRESS_LZ4,
	IMG_FS_COMPRESS_LZ4HC,
};

enum img_format {
	IMG_FORMAT_RAW = 0,
	IMG_FORMAT_QCOW2,
	IMG_FORMAT_VPC,  /* VHD; virtual size rounded up to 1 MiB (Azure) */
	IMG_FORMAT_VDI,  /* VirtualBox, dynamic */
	IMG_FORMAT_VMDK, /* VMware */
};

struct img_build_opts {
	enum img_mode mode;
	const char *output;      /* the file to write */
	const char *output_name; /* the name recorded in the manifest (final name) */
	enum img_format format;
	enum img_qcow2_compression compression;
	unsigned cluster_bits; /* qcow2; 0 = default */
	/* VPC: IMG_VDISK_VPC_FIXED (0 means it) or _DYNAMIC; VMDK:
	 * IMG_VDISK_VMDK_SPARSE (0 means it) or _STREAM (vdisk.h). */
	enum img_vdisk_format vdisk;

	const char *closure;   /* CLOSURE spec (file, closureInfo dir, "-"), or NULL */
	const char *tar;       /* --tar FILE or "-", or NULL */
	const char *root;      /* --root (default "/") */
	const char *store_dir; /* --store-dir (default "/nix/store") */

	uint64_t size;             /* --size; 0 = computed */
	uint64_t additional_space; /* --additional-space */
	int additional_space_set;
	uint64_t boot_size;         /* --boot-size; 0 = 256 MiB */
	const char *label;          /* --label; NULL = mode default */
	const char *uuid;           /* the file system UUID (STORE only); NULL = from the seed */
	const char *system;         /* --system toplevel store path, or NULL */
	const char *bootloader;     /* --bootloader FILE (systemd-boot EFI binary) */
	int uki;                    /* --uki */
	const char *uki_stub;       /* --uki-stub FILE */
	const char *grub_dir;       /* --grub DIR */
	const char *kernel_params;  /* extra kernel parameters */
	const char *specialisation; /* --specialisation NAME: the default boot entry */
	unsigned tree_flags;        /* IMG_TREE_* (keep hard links, ...) */
	int verity; /* --verity: a dm-verity hash tree after the store's EROFS, or (--efi) in a
	             partition after the root */
	enum img_fs_compression fs_compression; /* --compress-fs (store image, raw output) */
	int fs_compression_level;               /* LZ4HC 1..12; 0 = 9 */
	unsigned threads;                       /* compressing threads; 0 = 2 */

	const char *seed; /* --seed; NULL = derived from the inputs */
	size_t seed_len;
	const char *manifest; /* where to write the JSON manifest, or NULL */
};

IMG_EXPORT int img_build(struct img_ctx *ctx, const struct img_build_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
