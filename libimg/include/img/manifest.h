/*
 * manifest.h -- the JSON manifest written beside an image (docs/manifest.md).
 *
 * mkvmimage writes it after the image is complete; vmlaunch reads it to
 * pick the boot mode and to show what the image holds. Version 1. Written
 * with json-c: keys in the documented order, two-space indentation, a
 * newline at the end. The reader ignores keys it does not know and refuses
 * a manifest_version it does not know.
 *
 * Calling sequence (reader):
 *   struct img_manifest *m;
 *   img_manifest_read(ctx, "disk.qcow2.json", &m);
 *   if (m->boot && !strcmp(m->boot, "efi")) ...
 *   img_manifest_free(m);
 *
 * Calling sequence (writer): fill a struct img_manifest on the stack with
 * borrowed strings (NULL = key absent), then img_manifest_write(). Only a
 * manifest returned by img_manifest_read() is passed to img_manifest_free().
 */
#ifndef IMG_MANIFEST_H
#define IMG_MANIFEST_H

#include <stddef.h>
#include <stdint.h>
#include <img/context.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IMG_MANIFEST_VERSION 1

/*
 * A dm-verity hash tree over a partition's data (veritysetup's format,
 * superblock at hash_offset). Offsets are bytes from the start of the image.
 */
struct img_manifest_verity {
	char *root_hash;      /* hex */
	char *hash_algorithm; /* "sha256" */
	uint32_t data_block_size;
	uint32_t hash_block_size;
	uint64_t data_offset; /* the first data block */
	uint64_t data_blocks;
	uint64_t hash_offset; /* the verity superblock; the tree follows one hash block on */
	uint64_t hash_size;   /* bytes from hash_offset: superblock block + tree */
	char *salt;           /* hex */
	char *uuid;           /* the verity superblock's UUID */
};

struct img_manifest_partition {
	unsigned number;      /* 1-based table index; 0 for a bare file system */
	char *role;           /* "esp" | "root" | "root-verity" | "bios-boot" | "store" */
	char *name;           /* GPT partition name, or NULL (MBR, bare fs) */
	char *type;           /* GPT type GUID (lower case) or MBR type ("83"); NULL for none */
	char *uuid;           /* GPT partition GUID, or NULL */
	uint64_t offset;      /* bytes from the start of the disk */
	uint64_t size;        /* bytes */
	char *filesystem;     /* "vfat" | "ext4" | "erofs", or NULL (BIOS boot partition) */
	char *label;          /* file system label, or NULL */
	char *fs_uuid;        /* as blkid prints it, or NULL */
	char *fs_compression; /* "lz4", "lz4hc:LEVEL", or NULL (none) */
	struct img_manifest_verity *verity; /* or NULL */
};

/* One boot entry the image offers (docs/manifest.md). */
struct img_manifest_entry {
	char *id;             /* "nixos-generation-1[-specialisation-NAME]" */
	char *title;          /* as the boot menu shows it */
	char *specialisation; /* NAME, or NULL for the system itself */
	char *loader;         /* "systemd-boot" | "uki" | "grub" */
	char *path;           /* where the entry is on the image ("loader/entries/x.conf") */
	char *kernel;         /* store path of the kernel */
	char *initrd;         /* store path of the initrd */
	char *options;        /* the kernel command line ("init=... params") */
	int is_default;       /* booted when nobody chooses */
};

struct img_manifest {
	int manifest_version;  /* IMG_MANIFEST_VERSION */
	char *generator;       /* "mkvmimage 0.1.0" */
	char *image;           /* the image file's name as given to the tool */
	char *format;          /* "raw" | "qcow2" | "vpc" | "vdi" | "vmdk" */
	char *compression;     /* "none" | "zstd" | "zlib" */
	uint64_t virtual_size; /* bytes */
	char *mode;            /* "root" | "empty" | "efi" | "bios" | "hybrid" | "store" */
	char *boot;            /* "efi" | "bios" | "none" */
	char *partition_table; /* "gpt" | "mbr" | "none" */
	char *disk_guid;       /* GPT disk GUID, or NULL */
	struct img_manifest_partition *partitions;
	size_t npartitions;
	char *system;        /* NixOS toplevel, or NULL */
	char *kernel_params; /* NULL when there is no system */
	char *bootloader;    /* "systemd-boot" | "uki" | "grub" | "none", or NULL */
	char *boot_source;   /* "bootspec" (boot.json) | "files" (kernel, initrd, ...), or NULL */
	struct img_manifest_entry *entries;
	size_t nentries;
	char *sha256;  /* hex of the output file, or NULL */
	char *seed;    /* the seed as text, or NULL */
	int64_t epoch; /* SOURCE_DATE_EPOCH used */
};

/*
 * Write @m to @path (created or truncated, mode 0644). Strings are
 * borrowed. Fails with a message naming @path.
 */
IMG_EXPORT int img_manifest_write(struct img_ctx *ctx, const char *path,
                                  const struct img_manifest *m);

/*
 * Read the manifest at @path into a new struct (free with
 * img_manifest_free). -ENOENT if the file does not exist (callers fall back
 * to probing the image); -EINVAL with a message naming @path and the key
 * for malformed JSON, wrong types or an unknown manifest_version.
 * Missing optional keys read as NULL / 0.
 */
IMG_EXPORT int img_manifest_read(struct img_ctx *ctx, const char *path, struct img_manifest **out);

/* Free what img_manifest_read() returned. NULL allowed. */
IMG_EXPORT void img_manifest_free(struct img_manifest *m);

#ifdef __cplusplus
}
#endif
#endif
