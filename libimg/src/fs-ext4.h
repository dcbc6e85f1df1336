/*
 * fs-ext4.h -- what the ext4 writer's files share (private to libimg).
 */
#ifndef IMG_FS_EXT4_H
#define IMG_FS_EXT4_H

#include <ext2fs/ext2fs.h>

#include "private.h"
#include <img/fs.h>
#include <img/tree.h>

/* The io_manager forwarding to an img_dev (ext2-io.c). */
extern io_manager const img_ext2_io_manager;
/* The channel name that makes img_ext2_io_manager open @dev. */
int img_ext2_io_name(struct img_dev *dev, char *buf, size_t len);

/*
 * Regular files whose data is not available while the file system is
 * written (IMG_DATA_NONE with a size: a compressed tar stream replayed
 * afterwards) get their blocks allocated and their extents recorded in
 * node->priv. img_ext4_place_data() writes such a file's bytes [off, off+len)
 * into place; img_ext4_release() frees the records.
 */
int img_ext4_place_data(struct img_ctx *ctx, struct img_dev *dev, const struct img_node *node,
                        uint64_t off, const void *buf, size_t len);
void img_ext4_release(struct img_tree *tree);

#endif
