/*
 * fs-ext4.h -- what the ext4 writer's files share (private to libimg).
 */
#ifndef IMG_FS_EXT4_H
#define IMG_FS_EXT4_H

#include <ext2fs/ext2fs.h>

#include "tree-private.h"
#include <img/fs.h>
#include <img/tree.h>

/* The row in the file system table (fs.c). */
extern const struct img_fs_ops img_fs_ext4;

/* The io_manager forwarding to an img_dev (ext2-io.c). */
extern io_manager const img_ext2_io_manager;
/* The channel name that makes img_ext2_io_manager open @dev. */
int img_ext2_io_name(struct img_dev *dev, char *buf, size_t len);

#endif
