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
/*
 * What a channel of img_ext2_io_manager writes to. Opening copies it, so it
 * need only live until ext2fs_initialize() returns; the device must live
 * as long as the channel (which takes no reference).
 */
struct img_ext2_io_target {
	struct img_dev *dev;
	/* Where the block cache may spill (an unlinked file): the output's
	 * directory. NULL: the cache stays in memory, however large. */
	const char *spill_dir;
	/* Blocks the cache keeps in memory with a spill_dir; 0: 8 MiB worth.
	 * Tests set a few to make it spill. */
	size_t cache_blocks;
};
/* The channel name that makes img_ext2_io_manager open @t. */
int img_ext2_io_name(const struct img_ext2_io_target *t, char *buf, size_t len);
/*
 * Write the cached blocks that lie wholly below byte @off, in block order,
 * those not written yet (ext2-io.c). From the first call on the channel
 * takes no more writes; io_channel_flush writes the rest.
 */
int img_ext2_io_emit_until(io_channel io, uint64_t off);
/*
 * Declare to the device (img_dev_plan) the runs of cached blocks that lie
 * wholly below byte @off, those not declared yet; as emit_until, the
 * channel takes no more writes from the first call on.
 */
int img_ext2_io_plan_until(io_channel io, uint64_t off);

/* The ext4 row's write with the io cache held to @cache_blocks (0: the
 * default), so tests can make it spill; fs-ext4.c. */
/*
 * The writer in its steps, for a caller that plans a device holding more
 * than this file system (a disk: its partitions declared to the disk's
 * device in order, then img_dev_plan_done on it):
 *   img_ext4_layout()       the first walk: everything laid out and cached,
 *                           nothing written to @dev
 *   img_ext4_plan_ranges()  optional: img_dev_plan() every range the emit
 *                           will write, in block order (not plan_done)
 *   img_ext4_emit()         the second walk: the file system front to back
 *   img_ext4_job_free()     always (also after an error)
 * img_ext4_write_cached() is all of them (planning when opts->flags has
 * IMG_FS_OWN_DEVICE).
 */
struct img_ext4_job;
int img_ext4_layout(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *opts,
                    struct img_dev *dev, size_t cache_blocks, struct img_ext4_job **out);
int img_ext4_plan_ranges(struct img_ext4_job *j);
int img_ext4_emit(struct img_ext4_job *j);
void img_ext4_job_free(struct img_ext4_job *j);

int img_ext4_write_cached(struct img_ctx *ctx, struct img_tree *tree,
                          const struct img_fs_opts *opts, struct img_dev *dev, size_t cache_blocks);

#endif
