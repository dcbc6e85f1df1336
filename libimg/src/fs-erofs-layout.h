/*
 * fs-erofs-layout.h -- the EROFS writer's layout and phases, shared by the
 * phase files (fs-erofs-plan.c, fs-erofs-emit.c, fs-erofs-compress.c) and
 * the table row (fs-erofs.c), which the store-image recipe reaches through
 * fs.h. Named apart from the row so the phases depend on the layout, not on
 * the row that calls them.
 *
 * Layout (one fixed shape, so a file's data address depends only on the
 * files before it in canonical order -- what lets a sorted tar stream go
 * straight into place):
 *   block 0          bytes 0..1023 zero, superblock at 1024, root inode at
 *                    nid 36 (byte 1152) with its inline tail if it fits
 *   blocks 1..       regular file data, canonical order (depth first,
 *                    children sorted), full blocks; a tail that is not
 *                    inlined takes one more, zero-padded block
 *   then             directory blocks and long symlink targets
 *   then             metadata blocks: inodes + inline tails, packed best-fit
 *                    so that no inode or tail crosses a block boundary
 * meta_blkaddr is 0, so nid = byte offset / 32.
 *
 * Calling sequence:
 *   img_erofs_plan(ctx, tree, &opts, &plan);       tree finished
 *   size = img_erofs_plan_bytes(plan);
 *   img_erofs_plan_writes(ctx, plan, dev);         optional: the device's plan
 *   img_erofs_emit(ctx, plan, dev, flags);         metadata + data it can reach
 *   img_erofs_write_data(plan, dev, node, ...);    data the emit skipped
 *   img_erofs_plan_free(plan);
 */
#ifndef IMG_FS_EROFS_LAYOUT_H
#define IMG_FS_EROFS_LAYOUT_H

#include "tree-private.h"
#include "ondisk/erofs.h"
#include <img/fs.h>
#include <img/tree.h>

/*
 * One per node, so packed (24 bytes; docs/memory.md): block numbers are 32
 * bits on disk and the plan refuses more than 2^32 blocks; the inode number
 * follows from seq (img_erofs_ino) and what only compressed files have is in
 * arrays compression allocates.
 */
struct img_erofs_inode {
	uint64_t nid;          /* inode slot (meta_blkaddr 0: byte offset / 32) */
	uint32_t startblk;     /* first data block, or EROFS_NULL_ADDR */
	uint32_t nblocks;      /* data blocks outside the metadata area */
	uint16_t tail;         /* bytes inlined after the inode (FLAT_INLINE), or 0 */
	uint8_t isize;         /* 32 compact, 64 extended */
	uint8_t layout;        /* EROFS_INODE_FLAT_PLAIN, _FLAT_INLINE or _COMPRESSED_COMPACT */
	uint8_t data_in_place; /* set by a caller: the full blocks are already there */
};

/*
 * Bytes of a regular file of @size that live in full data blocks (the rest,
 * a tail, is inlined after the inode); the same rule the plan uses for every
 * inode but the root. With forced owner and times a file's inode is compact
 * unless @size needs 64 bits, so a tar reader can apply it per entry.
 */
static inline uint64_t img_erofs_body_bytes(uint64_t size, unsigned isize)
{
	uint64_t tail = size % EROFS_BLKSZ;

	return tail && isize + tail <= EROFS_BLKSZ ? size - tail : size;
}
static inline uint64_t img_erofs_default_body(uint64_t size)
{
	return img_erofs_body_bytes(size,
	                            size > UINT32_MAX ? EROFS_EXTENDED_SIZE : EROFS_COMPACT_SIZE);
}

struct img_erofs_plan {
	struct img_ctx *ctx;
	struct img_tree *tree;
	struct img_node **nodes;       /* by node->seq */
	struct img_erofs_inode *inode; /* by node->seq; valid for inode holders */
	/* By node->seq, both NULL unless compressing (fs-erofs-compress.c): a
	 * compressed file's bytes after its inode (map header + indexes). */
	uint8_t **zindex;
	uint32_t *zmeta; /* their length */
	/* Seqs of kept hard links (not inodes of their own), ascending. */
	uint32_t *links;
	size_t nlinks;
	uint32_t *meta_order; /* seqs of inode holders sorted by nid */
	size_t ninodes;
	uint64_t data_start;  /* first file data block (1) */
	uint64_t data_blocks; /* file data blocks */
	uint64_t other_start; /* directory / symlink blocks */
	uint64_t meta_start;  /* first metadata block after block 0 */
	uint64_t blocks;      /* total */
	uint32_t feature_incompat;
	int64_t epoch;
	uint8_t uuid[16];
	char label[EROFS_LABEL_MAX + 1];
};

/* Plan the whole layout of the finished @tree. */
int img_erofs_plan(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *opts,
                   struct img_erofs_plan **out);
void img_erofs_plan_free(struct img_erofs_plan *plan);
/*
 * Lay the plan out again after inodes changed form (compression,
 * fs-erofs-compress.c): data blocks in canonical order from block 1, then
 * directory and symlink blocks, then the metadata packing. Forms, sizes and
 * nids of the root stay.
 */
int img_erofs_plan_layout(struct img_erofs_plan *plan);
static inline uint64_t img_erofs_plan_bytes(const struct img_erofs_plan *plan)
{
	return plan->blocks << 12;
}
/* Bytes after the inode of node @seq: a compressed file's indexes, else 0. */
static inline uint32_t img_erofs_zmeta(const struct img_erofs_plan *plan, uint64_t seq)
{
	return plan->zmeta ? plan->zmeta[seq] : 0;
}
/*
 * i_ino of the inode held by node @seq: inode holders numbered in canonical
 * order from 0 (the root), i.e. @seq less the kept links before it.
 */
static inline uint32_t img_erofs_ino(const struct img_erofs_plan *plan, uint32_t seq)
{
	size_t lo = 0, hi = plan->nlinks;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (plan->links[mid] < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return seq - (uint32_t)lo;
}
/* The plan entry of @node's inode (the holder's for a kept hard link). */
static inline struct img_erofs_inode *img_erofs_inode_of(const struct img_erofs_plan *plan,
                                                         struct img_node *node)
{
	return &plan->inode[img_node_inode(node)->seq];
}

/*
 * Compressed EROFS (fs-erofs-compress.c): LZ4 or LZ4HC into 4 KiB pclusters,
 * full indexes. Run after img_erofs_plan() on a device sized for the
 * uncompressed plan: writes every regular file's data from block 1 (files
 * that do not shrink by a block stay uncompressed), relays the plan out and
 * marks the data as in place; then img_erofs_emit() writes the rest and the
 * device may be shrunk to img_erofs_plan_bytes().
 */
enum img_erofs_compressor {
	IMG_EROFS_LZ4 = 1,
	IMG_EROFS_LZ4HC,
};
struct img_erofs_compress_opts {
	enum img_erofs_compressor alg;
	int level;        /* LZ4HC level 1..12 (0 = 9); LZ4: acceleration (0 = 1) */
	unsigned threads; /* compressing threads besides the reading one; 0 = 1 */
};
int img_erofs_compress(struct img_ctx *ctx, struct img_erofs_plan *plan, struct img_dev *dev,
                       const struct img_erofs_compress_opts *opts);

/* Emit flags. */
#define IMG_EROFS_EMIT_NO_DATA 0x1u /* write no regular-file data (caller places it) */

/*
 * Write superblock, inodes, directories, symlinks and (unless
 * IMG_EROFS_EMIT_NO_DATA) the data of every regular file whose data is
 * reachable (PATH, FD, MEM). Files with IMG_DATA_NONE are left for
 * img_erofs_write_data(). @dev must be img_erofs_plan_bytes() long and read
 * as zeros.
 */
int img_erofs_emit(struct img_ctx *ctx, struct img_erofs_plan *plan, struct img_dev *dev,
                   unsigned flags);

/*
 * img_dev_plan() on @dev for every range img_erofs_emit() (and the data
 * img_erofs_write_data() fills in after it) will write, ascending: block 0,
 * each file's data blocks less the holes of a sparse source (emit leaves
 * those unwritten), everything from the directory blocks to the end. Not
 * for compressed plans (their data is written before emit).
 */
int img_erofs_plan_writes(struct img_ctx *ctx, const struct img_erofs_plan *plan,
                          struct img_dev *dev);

/* Where the bytes [@off, @off + @len) of @node's data go on the device:
 * up to two extents (full blocks, inline tail). Returns the count. */
struct img_erofs_extent {
	uint64_t file_off, dev_off, len;
};
int img_erofs_map(const struct img_erofs_plan *plan, struct img_node *node, uint64_t off,
                  uint64_t len, struct img_erofs_extent ext[2]);
/* Write file data bytes of @node at file offset @off (streamed data). */
int img_erofs_write_data(const struct img_erofs_plan *plan, struct img_dev *dev,
                         struct img_node *node, uint64_t off, const void *buf, size_t len);

/* Directory entries in on-disk order: "." and ".." merged into the sorted
 * children (bytewise, prefix first; formats.md 1.7). */
struct img_erofs_dir_iter {
	struct img_node *dir;
	size_t dot, dotdot, i, count;
};
void img_erofs_dir_init(struct img_erofs_dir_iter *it, struct img_node *dir);
int img_erofs_dir_next(struct img_erofs_dir_iter *it, const char **name, size_t *len,
                       struct img_node **target);
/* i_size of @n (a directory's is computed by the plan). */
uint64_t img_erofs_inode_size(struct img_node *n);

extern const struct img_fs_ops img_fs_erofs;

#endif
