/*
 * fs-fat32.h -- the FAT32 writer (for the ESP), private to libimg.
 *
 * img_fs_fat32 is the ops-table row fs.c lists as "vfat" (alias "fat32").
 * opts->label is the volume label (upper case, at most 11 bytes; default
 * "NO NAME"), opts->id_role the repro role of the volume ID (default
 * "fat-volume-id"). The volume ID in blkid's text form is what
 * img_fat32_volume_id_str() gives for the same role.
 */
#ifndef IMG_FS_FAT32_H
#define IMG_FS_FAT32_H

#include <img/fs.h>

extern const struct img_fs_ops img_fs_fat32;

/* The volume ID of role @role as blkid prints it: "XXXX-XXXX". */
/*
 * The bytes from the volume's start that writing @tree on @size bytes puts
 * data in (boot sectors, FATs, every used cluster); past them the volume
 * stays zeros. For a device's plan (img_dev_plan); *end is @size when the
 * content does not fit (the write then says so).
 */
int img_fat32_written_bytes(struct img_ctx *ctx, struct img_tree *tree, uint64_t size,
                            uint64_t *end);
void img_fat32_volume_id_str(const struct img_ctx *ctx, const char *role, char out[10]);

#endif
