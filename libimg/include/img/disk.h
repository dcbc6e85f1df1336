/*
 * disk.h -- partition tables: plan a layout, write it (GPT or MBR through
 * libfdisk), and read one back to see how an image boots.
 *
 * Planning is pure arithmetic: partitions are placed in order at 1 MiB
 * boundaries, each with its exact size (the last one takes what is left
 * when the disk size is given). Every identifier comes from repro by role
 * name ("gpt-disk", "part-esp", "part-root", "part-bios-boot",
 * "part-root-verity", "mbr-signature"), so adding a partition changes no other ID.
 *
 * Calling sequence (writer):
 *   struct img_disk_layout l = { .label = IMG_DISK_GPT };
 *   img_disk_layout_add(&l, IMG_PART_ESP, 256 << 20);
 *   img_disk_layout_add(&l, IMG_PART_ROOT, root_bytes);
 *   img_disk_plan(ctx, &l);                 offsets, total size, GUIDs
 *   ... create a device of l.size bytes ...
 *   img_disk_write(ctx, &l, dev);           the table (and GPT backup)
 *   img_dev_slice_new(dev, l.parts[i].offset, l.parts[i].size, &part);
 *
 * Calling sequence (reader, e.g. vmlaunch picking the boot mode):
 *   struct img_disk_info info;
 *   img_disk_probe(ctx, dev, &info);        info.label, info.has_esp, ...
 */
#ifndef IMG_DISK_H
#define IMG_DISK_H

#include <stddef.h>
#include <stdint.h>
#include <img/context.h>
#include <img/dev.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IMG_DISK_SECTOR 512u
#define IMG_DISK_ALIGN  (1u << 20) /* partition start and size grain */

enum img_disk_label {
	IMG_DISK_NONE = 0,
	IMG_DISK_GPT,
	IMG_DISK_MBR,
};

enum img_part_role {
	IMG_PART_ESP = 1,
	IMG_PART_ROOT,
	IMG_PART_BIOS_BOOT,
	IMG_PART_ROOT_VERITY, /* the root's dm-verity hash tree (--efi --verity) */
};

#define IMG_DISK_MAX_PARTS 8

/* GPT type GUIDs (lower case, as the manifest records them). */
#define IMG_GPT_TYPE_ESP         "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
#define IMG_GPT_TYPE_ROOT_X86_64 "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
#define IMG_GPT_TYPE_BIOS_BOOT   "21686148-6449-6e6f-744e-656564454649"
/* Discoverable Partitions Specification: Root Verity Partition (x86-64) */
#define IMG_GPT_TYPE_ROOT_VERITY_X86_64 "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5"

struct img_disk_part {
	enum img_part_role role;
	uint64_t size;        /* in: minimum bytes (rounded up to 1 MiB); out: exact bytes */
	uint64_t offset;      /* out: bytes from the start of the disk */
	unsigned number;      /* out: 1-based table index */
	const char *name;     /* out: GPT name ("ESP", "nixos", "bios-boot", "nixos-verity");
	                         NULL for MBR */
	const char *rolename; /* out: "esp", "root", "bios-boot", "root-verity" */
	char type[37];        /* out: GPT type GUID (lower case), or MBR type ("83", "ef") */
	char uuid[37];        /* out: GPT partition GUID (lower case); "" for MBR */
	int bootable;         /* out: MBR active flag */
};

struct img_disk_layout {
	enum img_disk_label label;
	uint64_t size; /* in: total disk bytes, 0 = computed; out: total bytes */
	struct img_disk_part parts[IMG_DISK_MAX_PARTS];
	size_t nparts;
	char disk_guid[37];     /* out: GPT disk GUID (lower case) */
	uint32_t mbr_signature; /* out: MBR disk identifier */
};

/* Append a partition of @role and at least @size bytes (planned later). */
IMG_EXPORT int img_disk_layout_add(struct img_disk_layout *l, enum img_part_role role,
                                   uint64_t size);

/*
 * Place the partitions: first at 1 MiB, each start and size a multiple of
 * 1 MiB, GPT backup (33 sectors) at the end. With l->size given, the last
 * partition grows to fill the disk; a size that cannot hold the partitions
 * is -ENOSPC with a message saying what is needed. Fills types, names,
 * numbers and all IDs from the context's seed.
 */
IMG_EXPORT int img_disk_plan(struct img_ctx *ctx, struct img_disk_layout *l);

/*
 * Write the planned partition table onto @dev (whose size must be l->size)
 * through libfdisk, on a staging memfd of the table regions, then copied
 * into @dev. Partition contents are not touched.
 */
IMG_EXPORT int img_disk_write(struct img_ctx *ctx, const struct img_disk_layout *l,
                              struct img_dev *dev);
/*
 * The same in two steps, so that a disk goes out front to back (and can be
 * hashed as it is written): the head (MBR, or protective MBR, GPT header
 * and entries) now, and the GPT's backup at the end of the disk, returned
 * in *@tail (malloc'd, NULL for MBR), with img_disk_write_tail() after the
 * partitions. The caller frees *@tail. @boot_code, when not NULL, is the
 * 440 bytes of BIOS boot code (a boot loader's first stage) LBA 0 starts
 * with; without it they are zeros. The head is LBA 0 alone for MBR, so a
 * boot loader's next stage can follow it in order (the gap before 1 MiB).
 */
IMG_EXPORT int img_disk_write_head(struct img_ctx *ctx, const struct img_disk_layout *l,
                                   struct img_dev *dev, const uint8_t *boot_code, uint8_t **tail);
IMG_EXPORT int img_disk_write_tail(const struct img_disk_layout *l, struct img_dev *dev,
                                   const uint8_t *tail);
/* Bytes of boot code img_disk_write_head() puts at the start of LBA 0. */
#define IMG_DISK_BOOT_CODE 440u

/* The ranges those two write, for @dev's plan (img_dev_plan): the head
 * first, the tail after every partition's ranges. */
IMG_EXPORT int img_disk_plan_head(const struct img_disk_layout *l, struct img_dev *dev);
IMG_EXPORT int img_disk_plan_tail(const struct img_disk_layout *l, struct img_dev *dev);

/* What a disk's partition table says (img_disk_probe). */
struct img_disk_info {
	enum img_disk_label label; /* NONE: no valid GPT or MBR partition table */
	char disk_guid[37];        /* GPT disk GUID, "" otherwise */
	uint32_t mbr_signature;
	int has_esp;       /* a GPT ESP or an MBR 0xEF partition */
	int has_bios_boot; /* a GPT BIOS boot partition */
	int has_active;    /* MBR: an active (bootable) partition */
	int has_boot_code; /* LBA 0 has non-zero boot code (GRUB boot.img) */
	size_t nparts;     /* partitions found (all of them) */
	struct {
		unsigned number;     /* 1-based */
		uint64_t offset;     /* bytes */
		uint64_t size;       /* bytes */
		char type[37];       /* GPT type GUID or MBR type as two hex digits */
		char uuid[37];       /* GPT partition GUID, "" for MBR */
		char name[73];       /* GPT name as UTF-8 (ASCII kept, others '?') */
		int bootable;        /* MBR active flag */
	} parts[IMG_DISK_MAX_PARTS]; /* the first IMG_DISK_MAX_PARTS of them */
};

/*
 * Read the partition table of @dev (any img_dev: raw, qcow2 opened
 * read-only, ...). GPT is recognised by a valid primary header (signature,
 * header CRC, entry-array CRC), else the backup header; MBR by the 0x55AA
 * signature and sane entries. Returns 0 with info->label = IMG_DISK_NONE
 * when there is no table (e.g. a bare file system); <0 only for I/O errors.
 * Untrusted input: every field is range-checked.
 */
IMG_EXPORT int img_disk_probe(struct img_ctx *ctx, struct img_dev *dev, struct img_disk_info *info);

#ifdef __cplusplus
}
#endif
#endif
