/*
 * fs-ext4.c -- the ext4 writer: libext2fs (1.47.0) on an img_dev through the
 * io_manager of ext2-io.c. Formats: the ext4 disk layout (kernel
 * Documentation/filesystems/ext4), e2fsprogs' mke2fs flow; what the image
 * holds and why: docs/root-image.md.
 *
 * Plan, then emit:
 *   - size: content blocks counted from the tree (file data, directory
 *     blocks packed exactly as written below, long symlinks, extent index
 *     blocks), the journal, and the metadata overhead that
 *     ext2fs_initialize() itself reports for a candidate size, iterated until
 *     it fits. The same check runs on the real device before anything is
 *     written, so a --size that is too small fails cleanly.
 *   - inode numbers: assigned in the tree's depth-first order from 12 on
 *     (root 2, lost+found 11); kept hard links share their first link's.
 *   - directories: blocks packed here (hash-indexed, one or two levels, when
 *     over one block; else linear) and written with
 *     ext2fs_write_dir_block4(), which adds the metadata_csum checksums.
 *   - file data: every block of a file is allocated up front, as contiguous
 *     extents (goal = right after the previous file), before any byte of
 *     data is read. Blocks of zeros are stored like any other (mke2fs -d
 *     leaves them holes, which needs the data read before it is placed).
 *
 * Then one pass, front to back (issue 12): every metadata block (inode
 * tables, bitmaps, group descriptors, superblocks, directory, symlink and
 * extent blocks) waits in the io_manager's cache (ext2-io.c); a second walk
 * in the same order reads each file's extents back from its inode and, just
 * before each extent, the cache writes the metadata below it; the file data
 * then goes to the device (img_dev_write_data: written behind with
 * O_DIRECT), the last block padded with zeros, blocks of zeros and holes of
 * sparse host files left unwritten (the device reads as zeros). A planned
 * output (qcow2, a vdisk, a disk's slice of one) has its clusters laid out
 * already, so there the data is copied into the writer directly (one copy
 * instead of two; holes of sparse host files still skipped) and blocks of
 * zeros go out as the zeros they are: the same bytes. The last
 * flush writes the metadata past the last file. Every write lands past the
 * one before, so the output is hashed as it goes out and a planned qcow2
 * (img_dev_plan) lays its clusters out before the first.
 *
 * Reproducibility: UUID, hash seed from repro; every time from the epoch
 * (fs->now too: libext2fs reads 0 as "now", so epoch 0 becomes 1 for the
 * superblock only); signed directory hash forced; s_kbytes_written 0; all
 * allocation in one fixed order. The device must read as zeros where nothing
 * is written (fresh raw, qcow2 and slices of them do): inode tables and the
 * journal are not zeroed.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <et/com_err.h>

#include "fs-ext4.h"
#include "fs-private.h"
#include <img/repro.h>

#define EXT4_BS              4096u
#define EXT4_LOG_BS          2 /* 1024 << 2 */
#define EXT4_INODE_SZ        256u
#define EXT4_FIRST_INO       11u /* lost+found; content starts at 12 */
#define EXT4_LPF_BLOCKS      4u
#define EXT4_TAIL            12u    /* struct ext2_dir_entry_tail */
#define EXT4_MIN_BLOCKS      4096u  /* 16 MiB: room for the smallest journal */
#define EXT4_BYTES_PER_INODE 16384u /* mke2fs's default inode_ratio */
#define EXT4_FAST_SYMLINK    60u    /* sizeof(i_block): shorter targets live in the inode */
#define EXT4_EXTENT_MAX      32768u /* blocks one initialised extent covers */
/* Large host files are scanned for holes; smaller ones are read whole. */
#define EXT4_HOLE_SCAN_MIN (16u << 10)
#define EXT4_CHUNK         (256u << 10) /* file data read per step */

struct ext4_writer {
	struct img_ctx *ctx;
	struct img_tree *tree;
	struct img_dev *dev;
	ext2_filsys fs;
	int64_t epoch;
	blk64_t goal; /* where the next allocation should start */
	ext2_ino_t next_ino;
	ext2_ino_t *ino; /* by node seq: the inode number (a kept link: its inode's) */
	uint8_t *buf;    /* directory / symlink block buffer */
	size_t buflen;
	uint8_t *data; /* EXT4_CHUNK bytes of file data */
	/* The output was planned (img_ext4_plan_ranges): every extent's
	 * clusters are laid out already, so file data is copied straight into
	 * the writer (one copy, holes of sparse host files kept) without
	 * looking for blocks of zeros, which read the same either way. */
	bool planned;
};

/* What the tree needs, independent of the file system size. */
struct ext4_need {
	uint64_t blocks; /* content blocks incl. lost+found and a small slack */
	uint64_t inodes; /* highest inode number used */
};

static int ext2_err(struct img_ctx *ctx, errcode_t err, const char *what)
{
	int e = err > 0 && err < 4096 ? -(int)err : -EIO;

	if (err == EXT2_ET_BLOCK_ALLOC_FAIL || err == EXT2_ET_DIR_NO_SPACE ||
	    err == EXT2_ET_INODE_ALLOC_FAIL)
		e = -ENOSPC;
	/* Keep a device's own message (it names the output file). */
	if (img_ctx_errno(ctx) && (err == EXT2_ET_SHORT_READ || err == EXT2_ET_SHORT_WRITE))
		return img_error_prefix(ctx, img_ctx_errno(ctx), "ext4: %s", what);
	return img_set_error(ctx, e, "ext4: %s: %s", what, error_message(err));
}

/* ---- directory packing (shared by the estimate and the writer) ---------- */

static unsigned rec_len(size_t name_len)
{
	return (unsigned)((8 + name_len + 3) & ~(size_t)3);
}

/* Is @node the root, which also holds lost+found? */
static int is_root(const struct img_node *node)
{
	return node->parent == NULL;
}

/* Number of entries beyond "." and "..". */
static size_t dir_nentries(const struct img_node *dir)
{
	return dir->nchildren + (is_root(dir) ? 1 : 0);
}

/* The name of entry @i (after "." and ".."); lost+found first in the root. */
static const char *dir_entry_name(const struct img_node *dir, size_t i, size_t *len)
{
	if (is_root(dir)) {
		if (i == 0) {
			*len = 10;
			return "lost+found";
		}
		i--;
	}
	*len = dir->children[i]->name_len;
	return dir->children[i]->name;
}

static uint64_t dir_blocks(const struct img_node *dir)
{
	const unsigned usable = EXT4_BS - EXT4_TAIL;
	unsigned used = rec_len(1) + rec_len(2);
	uint64_t blocks = 1;
	size_t n = dir_nentries(dir);

	for (size_t i = 0; i < n; i++) {
		size_t len;
		unsigned r;

		dir_entry_name(dir, i, &len);
		r = rec_len(len);
		if (used + r > usable) {
			blocks++;
			used = 0;
		}
		used += r;
	}
	return blocks;
}

/* Blocks of extent index a file of @n blocks may need beyond the 4 in the inode. */
static uint64_t extent_index_blocks(uint64_t n)
{
	uint64_t extents = IMG_DIV_ROUND_UP(n, EXT4_EXTENT_MAX) + n / 32768 + 1;

	return extents <= 4 ? 0 : IMG_DIV_ROUND_UP(extents, 340) + 1;
}

/* Trees may be 10,000 levels deep: every traversal is img_tree_walk(). */
static int need_visit(void *user, struct img_node *node, unsigned depth)
{
	struct ext4_need *need = user;

	(void)depth;
	if (node->link)
		return 0; /* a kept hard link: one more directory entry only */
	need->inodes++;
	switch (node->type) {
	case IMG_NODE_REG: {
		uint64_t n = IMG_DIV_ROUND_UP(node->size, EXT4_BS);

		need->blocks += n + extent_index_blocks(n);
		break;
	}
	case IMG_NODE_SYMLINK:
		if (node->size >= EXT4_FAST_SYMLINK)
			need->blocks++;
		break;
	case IMG_NODE_DIR: {
		uint64_t b = dir_blocks(node);

		/* an indexed directory (dir_pack_htree) packs its leaves in hash
		 * order: a root block and index nodes more, and up to one entry's
		 * slack a leaf */
		need->blocks += b > 1 ? b + b / 8 + b / 256 + 3 : b;
		break;
	}
	default:
		break;
	}
	return 0;
}

static void tree_need(struct img_tree *tree, struct ext4_need *need)
{
	memset(need, 0, sizeof(*need));
	if (tree && tree->root)
		img_tree_walk(tree, need_visit, need);
	else
		need->inodes = 1, need->blocks = 1; /* an empty root */
	/* inodes: the root is counted; 1 and 3..11 are reserved or lost+found */
	need->inodes += EXT4_FIRST_INO - 1;
	need->blocks += EXT4_LPF_BLOCKS;
	/* slack: the resize inode's block, extents split at group metadata */
	need->blocks += 64 + need->blocks / 256;
}

/* ---- file system geometry ------------------------------------------------ */

static uint64_t inodes_for(uint64_t blocks, const struct ext4_need *need)
{
	uint64_t by_ratio = blocks * EXT4_BS / EXT4_BYTES_PER_INODE;
	uint64_t by_need = need->inodes + need->inodes / 8 + 256;

	return IMG_MIN(IMG_MAX(by_ratio, by_need), (uint64_t)UINT32_MAX);
}

static uint64_t journal_blocks(uint64_t blocks)
{
	int j = ext2fs_default_journal_size(blocks);

	return j > 0 ? (uint64_t)j : 0;
}

/*
 * ext2fs_initialize() a file system of @blocks on @dev: the superblock
 * template every build uses. Nothing is written yet.
 */
static int ext4_init(struct img_ctx *ctx, const struct img_ext2_io_target *target, uint64_t blocks,
                     const struct ext4_need *need, ext2_filsys *out)
{
	struct ext2_super_block param;
	char name[64];
	errcode_t err;

	memset(&param, 0, sizeof(param));
	param.s_rev_level = EXT2_DYNAMIC_REV;
	param.s_log_block_size = EXT4_LOG_BS;
	ext2fs_blocks_count_set(&param, blocks);
	param.s_inode_size = EXT4_INODE_SZ;
	param.s_inodes_count = (uint32_t)inodes_for(blocks, need);
	param.s_log_groups_per_flex = 4;
	param.s_min_extra_isize = sizeof(struct ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE;
	param.s_want_extra_isize = param.s_min_extra_isize;
	param.s_default_mount_opts = EXT2_DEFM_XATTR_USER | EXT2_DEFM_ACL;
	param.s_feature_compat = EXT2_FEATURE_COMPAT_EXT_ATTR | EXT2_FEATURE_COMPAT_RESIZE_INODE |
	                         EXT2_FEATURE_COMPAT_DIR_INDEX;
	param.s_feature_incompat = EXT2_FEATURE_INCOMPAT_FILETYPE | EXT3_FEATURE_INCOMPAT_EXTENTS |
	                           EXT4_FEATURE_INCOMPAT_64BIT | EXT4_FEATURE_INCOMPAT_FLEX_BG;
	param.s_feature_ro_compat =
	    EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER | EXT2_FEATURE_RO_COMPAT_LARGE_FILE |
	    EXT4_FEATURE_RO_COMPAT_HUGE_FILE | EXT4_FEATURE_RO_COMPAT_DIR_NLINK |
	    EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE | EXT4_FEATURE_RO_COMPAT_METADATA_CSUM;
	if (img_ext2_io_name(target, name, sizeof(name)) < 0)
		return img_set_error(ctx, -ERANGE, "ext4: device name too long");
	err = ext2fs_initialize(name, EXT2_FLAG_64BITS, &param, img_ext2_io_manager, out);
	if (err)
		return ext2_err(ctx, err, "cannot lay out the file system");
	return 0;
}

/*
 * Does the content fit a file system of @blocks? 0, or -ENOSPC with
 * @short_by set to the blocks missing.
 */
static int ext4_fits(struct img_ctx *ctx, struct img_dev *dev, uint64_t blocks,
                     const struct ext4_need *need, uint64_t extra_blocks, uint64_t *short_by)
{
	ext2_filsys fs;
	uint64_t free_blocks, want;
	errcode_t err;
	int r;

	*short_by = 0;
	if (blocks < EXT4_MIN_BLOCKS) {
		*short_by = EXT4_MIN_BLOCKS - blocks;
		return -ENOSPC;
	}
	r = ext4_init(ctx, &(struct img_ext2_io_target){ .dev = dev }, blocks, need, &fs);
	if (r < 0)
		return r;
	/* the group tables as the writer places them (in memory only): with
	 * flex_bg their blocks are only counted once they are allocated */
	err = ext2fs_allocate_tables(fs);
	if (err) {
		ext2fs_free(fs);
		return ext2_err(ctx, err, "cannot allocate the group tables");
	}
	free_blocks = ext2fs_free_blocks_count(fs->super);
	if (fs->super->s_inodes_count < need->inodes) {
		ext2fs_free(fs);
		*short_by = 1024; /* more blocks give more inodes (by the ratio) */
		return -ENOSPC;
	}
	ext2fs_free(fs);
	want = need->blocks + journal_blocks(blocks) + extra_blocks;
	if (free_blocks < want) {
		*short_by = want - free_blocks;
		return -ENOSPC;
	}
	return 0;
}

/* The smallest block count (plus @extra bytes free) that holds @need. */
static int ext4_size(struct img_ctx *ctx, const struct ext4_need *need, uint64_t extra,
                     uint64_t *blocks_out)
{
	uint64_t extra_blocks = IMG_DIV_ROUND_UP(extra, EXT4_BS);
	uint64_t blocks, short_by;
	struct img_dev *scratch;
	int r;

	/* ext2fs_initialize does no I/O: any device serves for sizing. */
	r = img_dev_mem_new(ctx, EXT4_BS, &scratch);
	if (r < 0)
		return r;
	blocks = need->blocks + extra_blocks;
	blocks += blocks / 32 + journal_blocks(blocks);
	blocks = IMG_MAX(blocks, (uint64_t)EXT4_MIN_BLOCKS);
	for (int i = 0; i < 64; i++) {
		r = ext4_fits(ctx, scratch, blocks, need, extra_blocks, &short_by);
		if (r != -ENOSPC)
			break;
		blocks += short_by + short_by / 16 + 16;
	}
	img_dev_unref(scratch);
	if (r < 0)
		return r == -ENOSPC ? img_set_error(ctx, r, "ext4: cannot find a size") : r;
	/* whole MiB, as image sizes usually are */
	*blocks_out = IMG_ALIGN_UP(blocks, 256);
	return 0;
}

static int ext4_estimate(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *opts,
                         uint64_t *size)
{
	struct ext4_need need;
	uint64_t blocks;
	int r;

	tree_need(tree, &need);
	r = ext4_size(ctx, &need, opts ? opts->extra : 0, &blocks);
	if (r < 0)
		return r;
	*size = blocks * EXT4_BS;
	return 0;
}

/* ---- inodes -------------------------------------------------------------- */

static void set_time(uint32_t *sec, uint32_t *extra, int64_t t)
{
	/* 32 bits of seconds, signed; the 2 low "extra" bits extend the epoch. */
	*sec = (uint32_t)t;
	*extra = (uint32_t)(((uint64_t)(t - (int32_t)(uint32_t)t) >> 32) & 3);
}

static void inode_init(struct ext4_writer *w, struct ext2_inode_large *in, uint16_t type,
                       const struct img_node *node, int64_t mtime)
{
	memset(in, 0, sizeof(*in));
	in->i_mode = (uint16_t)(type | (node ? node->mode & 07777 : 0755));
	if (node) {
		in->i_uid = (uint16_t)node->uid;
		ext2fs_set_i_uid_high(*in, node->uid >> 16);
		in->i_gid = (uint16_t)node->gid;
		ext2fs_set_i_gid_high(*in, node->gid >> 16);
	}
	in->i_extra_isize = sizeof(struct ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE;
	set_time(&in->i_atime, &in->i_atime_extra, mtime);
	set_time(&in->i_mtime, &in->i_mtime_extra, mtime);
	set_time(&in->i_ctime, &in->i_ctime_extra, w->epoch);
	set_time(&in->i_crtime, &in->i_crtime_extra, w->epoch);
	in->i_links_count = 1;
}

static int inode_write(struct ext4_writer *w, ext2_ino_t ino, struct ext2_inode_large *in)
{
	errcode_t err = ext2fs_write_inode_full(w->fs, ino, (struct ext2_inode *)in, sizeof(*in));

	return err ? ext2_err(w->ctx, err, "cannot write an inode") : 0;
}

/* An empty extent tree in i_block (EXTENTS_FL set). */
static int inode_extents(struct ext4_writer *w, ext2_ino_t ino, struct ext2_inode_large *in)
{
	ext2_extent_handle_t h;
	errcode_t err;

	err = ext2fs_extent_open2(w->fs, ino, (struct ext2_inode *)in, &h);
	if (err)
		return ext2_err(w->ctx, err, "cannot start an extent tree");
	ext2fs_extent_free(h);
	in->i_flags |= EXT4_EXTENTS_FL;
	return 0;
}

typedef int (*extent_fn)(struct ext4_writer *w, void *user, blk64_t lblk, blk64_t pblk,
                         blk64_t len);

/* Call @fn for every leaf extent of @ino, in logical order. */
static int for_each_extent(struct ext4_writer *w, ext2_ino_t ino, struct ext2_inode_large *in,
                           extent_fn fn, void *user)
{
	struct ext2fs_extent e;
	ext2_extent_handle_t h;
	errcode_t err;
	int r = 0;

	err = ext2fs_extent_open2(w->fs, ino, (struct ext2_inode *)in, &h);
	if (err)
		return ext2_err(w->ctx, err, "cannot read an extent tree");
	err = ext2fs_extent_get(h, EXT2_EXTENT_ROOT, &e);
	while (!err) {
		if (e.e_flags & EXT2_EXTENT_FLAGS_LEAF) {
			r = fn(w, user, e.e_lblk, e.e_pblk, e.e_len);
			if (r < 0)
				break;
		}
		err = ext2fs_extent_get(h, EXT2_EXTENT_NEXT_LEAF, &e);
	}
	ext2fs_extent_free(h);
	if (r < 0)
		return r;
	if (err && err != EXT2_ET_EXTENT_NO_NEXT && err != EXT2_ET_EXTENT_NO_DOWN)
		return ext2_err(w->ctx, err, "cannot read an extent tree");
	return 0;
}

/* Allocate logical blocks [lblk, lblk+n) of @ino as initialised extents. */
static int alloc_blocks(struct ext4_writer *w, ext2_ino_t ino, struct ext2_inode_large *in,
                        blk64_t lblk, blk64_t n)
{
	blk64_t goal = w->goal >= lblk ? w->goal - lblk : w->goal;
	errcode_t err;

	if (!n)
		return 0;
	err = ext2fs_fallocate(w->fs, EXT2_FALLOCATE_FORCE_INIT, ino, (struct ext2_inode *)in, goal,
	                       lblk, n);
	if (err)
		return ext2_err(w->ctx, err, "cannot allocate blocks");
	return 0;
}

static int track_goal(struct ext4_writer *w, void *user, blk64_t lblk, blk64_t pblk, blk64_t len)
{
	(void)user;
	(void)lblk;
	if (pblk + len > w->goal)
		w->goal = pblk + len;
	return 0;
}

/* ---- directories ---------------------------------------------------------- */

static uint8_t dir_file_type(const struct img_node *n)
{
	switch (img_node_inode((struct img_node *)n)->type) {
	case IMG_NODE_REG:
		return EXT2_FT_REG_FILE;
	case IMG_NODE_DIR:
		return EXT2_FT_DIR;
	case IMG_NODE_SYMLINK:
		return EXT2_FT_SYMLINK;
	case IMG_NODE_CHR:
		return EXT2_FT_CHRDEV;
	case IMG_NODE_BLK:
		return EXT2_FT_BLKDEV;
	case IMG_NODE_FIFO:
		return EXT2_FT_FIFO;
	case IMG_NODE_SOCK:
		return EXT2_FT_SOCK;
	}
	return EXT2_FT_UNKNOWN;
}

static int grow_buf(struct ext4_writer *w, size_t len)
{
	uint8_t *b;

	if (len <= w->buflen)
		return 0;
	b = realloc(w->buf, len);
	if (!b)
		return img_set_error(w->ctx, -ENOMEM, "out of memory");
	w->buf = b;
	w->buflen = len;
	return 0;
}

static uint8_t *put_entry(uint8_t *p, ext2_ino_t ino, const char *name, size_t len, uint8_t ft)
{
	img_put_le32(p, ino);
	img_put_le16(p + 4, (uint16_t)rec_len(len));
	p[6] = (uint8_t)len;
	p[7] = ft;
	memcpy(p + 8, name, len);
	return p + rec_len(len);
}

/*
 * Pack the directory's entries into w->buf: nblocks blocks, each ending in a
 * checksum tail (its checksum is filled in by ext2fs_write_dir_block4).
 * Entries follow dir_blocks()' packing exactly; the last entry of a block
 * stretches to the tail.
 */
static int dir_pack(struct ext4_writer *w, const struct img_node *dir, ext2_ino_t ino,
                    ext2_ino_t parent, uint64_t nblocks)
{
	const unsigned usable = EXT4_BS - EXT4_TAIL;
	size_t n = dir_nentries(dir);
	uint8_t *blk, *p, *last;
	uint64_t b = 0;
	int r;

	r = grow_buf(w, nblocks * EXT4_BS);
	if (r < 0)
		return r;
	memset(w->buf, 0, nblocks * EXT4_BS);
	blk = w->buf;
	p = put_entry(blk, ino, ".", 1, EXT2_FT_DIR);
	last = p;
	p = put_entry(p, parent, "..", 2, EXT2_FT_DIR);
	for (size_t i = 0; i < n; i++) {
		size_t len;
		const char *name = dir_entry_name(dir, i, &len);
		ext2_ino_t cino;
		uint8_t ft;

		if (is_root(dir) && i == 0) {
			cino = EXT4_FIRST_INO;
			ft = EXT2_FT_DIR;
		} else {
			const struct img_node *c = dir->children[i - (is_root(dir) ? 1 : 0)];

			cino = w->ino[c->seq];
			ft = dir_file_type(c);
		}
		if ((size_t)(p - blk) + rec_len(len) > usable) {
			/* close this block: the last entry takes the rest */
			img_put_le16(last + 4, (uint16_t)(blk + usable - last));
			blk += EXT4_BS;
			b++;
			p = blk;
		}
		last = p;
		p = put_entry(p, cino, name, len, ft);
	}
	img_put_le16(last + 4, (uint16_t)(blk + usable - last));
	if (b + 1 != nblocks)
		return img_set_error(w->ctx, -EIO, "ext4: directory packing mismatch (%llu/%llu)",
		                     (unsigned long long)(b + 1), (unsigned long long)nblocks);
	for (uint64_t i = 0; i < nblocks; i++) {
		/* blocks without entries: one empty entry (inode 0) spanning the block */
		uint8_t *bb = w->buf + i * EXT4_BS;

		if (i >= b + 1) {
			img_put_le32(bb, 0);
			img_put_le16(bb + 4, (uint16_t)usable);
		}
		ext2fs_initialize_dirent_tail(w->fs, EXT2_DIRENT_TAIL(bb, EXT4_BS));
	}
	return 0;
}

/*
 * Indexed (htree) directories: a directory of more than one block gets a
 * dx_root in block 0 ("." and ".." with the index after them), with two
 * levels also index nodes in blocks 1..n, then its entries in leaf blocks
 * sorted by (hash, minor hash), as e2fsck -D builds them. Up to DX_LIMIT
 * leaves take one level, up to DX_LIMIT * DX_NODE_LIMIT two; beyond that the
 * directory stays linear (valid, only slower to search).
 */
#define DX_ROOT_ENTRIES 32u /* ".", "..", dx_root_info: where the count/limit sits */
#define DX_LIMIT        ((EXT4_BS - DX_ROOT_ENTRIES - 8u) / 8u) /* 8: struct ext2_dx_tail */
#define DX_NODE_LIMIT   ((EXT4_BS - 8u - 8u) / 8u)              /* after an empty dirent of 8 */

struct dx_ent {
	uint32_t hash, minor;
	size_t idx; /* entry index (name order): ties stay in name order */
};

static int cmp_dx(const void *a, const void *b)
{
	const struct dx_ent *x = a, *y = b;

	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	if (x->minor != y->minor)
		return x->minor < y->minor ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static void dir_entry_target(const struct ext4_writer *w, const struct img_node *dir, size_t i,
                             ext2_ino_t *ino, uint8_t *ft)
{
	if (is_root(dir) && i == 0) {
		*ino = EXT4_FIRST_INO;
		*ft = EXT2_FT_DIR;
	} else {
		const struct img_node *c = dir->children[i - (is_root(dir) ? 1 : 0)];

		*ino = w->ino[c->seq];
		*ft = dir_file_type(c);
	}
}

/* Index entry @k of the count/limit table at @cl: hash and block. */
static void dx_put(uint8_t *cl, size_t k, uint32_t hash, uint32_t block)
{
	if (k)
		img_put_le32(cl + k * 8, hash);
	img_put_le32(cl + k * 8 + 4, block);
}

/* 1: not indexed (one block, or too many leaves); 0: w->buf holds *nblocks. */
static int dir_pack_htree(struct ext4_writer *w, const struct img_node *dir, ext2_ino_t ino,
                          ext2_ino_t parent, uint64_t *nblocks)
{
	const unsigned usable = EXT4_BS - EXT4_TAIL;
	size_t n = dir_nentries(dir), leaves = 1, used = 0, leaf, nodes;
	struct dx_ent *d;
	uint32_t *first; /* per leaf: its first hash, low bit = continues */
	uint8_t *blk, *p, *last = NULL, *root;
	uint32_t prev_hash = 0;
	int r;

	if (dir_blocks(dir) < 2)
		return 1;
	d = malloc(n * sizeof(*d));
	if (!d)
		return img_set_error(w->ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		size_t len;
		const char *name = dir_entry_name(dir, i, &len);
		ext2_dirhash_t h, mh;
		errcode_t err = ext2fs_dirhash2(EXT2_HASH_HALF_MD4, name, (int)len, NULL, 0,
		                                w->fs->super->s_hash_seed, &h, &mh);

		if (err) {
			free(d);
			return ext2_err(w->ctx, err, "cannot hash a directory entry");
		}
		d[i].hash = h;
		d[i].minor = mh;
		d[i].idx = i;
	}
	qsort(d, n, sizeof(*d), cmp_dx);
	for (size_t i = 0; i < n; i++) {
		size_t len;
		unsigned rl;

		dir_entry_name(dir, d[i].idx, &len);
		rl = rec_len(len);
		if (used + rl > usable) {
			leaves++;
			used = 0;
		}
		used += rl;
	}
	nodes = leaves > DX_LIMIT ? IMG_DIV_ROUND_UP(leaves, DX_NODE_LIMIT) : 0;
	first = calloc(leaves, sizeof(*first));
	if (nodes > DX_LIMIT || !first) {
		free(d);
		free(first);
		return first ? 1 : img_set_error(w->ctx, -ENOMEM, "out of memory");
	}
	*nblocks = 1 + nodes + leaves;
	r = grow_buf(w, *nblocks * EXT4_BS);
	if (r < 0) {
		free(d);
		free(first);
		return r;
	}
	memset(w->buf, 0, *nblocks * EXT4_BS);

	/* the leaves, in hash order, after the root and the index nodes */
	leaf = 0;
	blk = w->buf + (1 + nodes) * EXT4_BS;
	p = blk;
	for (size_t i = 0; i < n; i++) {
		size_t len;
		const char *name = dir_entry_name(dir, d[i].idx, &len);
		ext2_ino_t cino;
		uint8_t ft;

		if ((size_t)(p - blk) + rec_len(len) > usable) {
			img_put_le16(last + 4, (uint16_t)(blk + usable - last));
			leaf++;
			blk += EXT4_BS;
			p = blk;
			/* the low bit marks a hash that continues from the previous leaf */
			first[leaf] = d[i].hash | (d[i].hash == prev_hash ? 1u : 0u);
		}
		dir_entry_target(w, dir, d[i].idx, &cino, &ft);
		last = p;
		p = put_entry(p, cino, name, len, ft);
		prev_hash = d[i].hash;
	}
	img_put_le16(last + 4, (uint16_t)(blk + usable - last));
	free(d);
	if (leaf + 1 != leaves) {
		free(first);
		return img_set_error(w->ctx, -EIO, "ext4: htree packing mismatch");
	}
	for (size_t i = 0; i < leaves; i++)
		ext2fs_initialize_dirent_tail(
		    w->fs, EXT2_DIRENT_TAIL(w->buf + (1 + nodes + i) * EXT4_BS, EXT4_BS));

	/* block 0: ".", ".." spanning the block, dx_root_info, count/limit */
	root = w->buf;
	put_entry(root, ino, ".", 1, EXT2_FT_DIR);
	put_entry(root + 12, parent, "..", 2, EXT2_FT_DIR);
	img_put_le16(root + 12 + 4, EXT4_BS - 12);
	root[24 + 4] = EXT2_HASH_HALF_MD4; /* hash_version */
	root[24 + 5] = 8;                  /* info_length */
	root[24 + 6] = nodes ? 1 : 0;      /* indirect_levels */
	img_put_le16(root + DX_ROOT_ENTRIES, (uint16_t)DX_LIMIT);
	if (!nodes) {
		img_put_le16(root + DX_ROOT_ENTRIES + 2, (uint16_t)leaves);
		for (size_t i = 0; i < leaves; i++)
			dx_put(root + DX_ROOT_ENTRIES, i, first[i], (uint32_t)(1 + i));
	} else {
		img_put_le16(root + DX_ROOT_ENTRIES + 2, (uint16_t)nodes);
		for (size_t j = 0; j < nodes; j++) {
			uint8_t *node = w->buf + (1 + j) * EXT4_BS;
			size_t a = j * DX_NODE_LIMIT, cnt = IMG_MIN(DX_NODE_LIMIT, leaves - a);

			/* an index node: one empty entry over the block, then the table */
			img_put_le16(node + 4, EXT4_BS);
			img_put_le16(node + 8, (uint16_t)DX_NODE_LIMIT);
			img_put_le16(node + 10, (uint16_t)cnt);
			for (size_t k = 0; k < cnt; k++)
				dx_put(node + 8, k, first[a + k], (uint32_t)(1 + nodes + a + k));
			dx_put(root + DX_ROOT_ENTRIES, j, first[a], (uint32_t)(1 + j));
		}
	}
	free(first);
	return 0;
}

static int write_dir_extent(struct ext4_writer *w, void *user, blk64_t lblk, blk64_t pblk,
                            blk64_t len)
{
	ext2_ino_t ino = (ext2_ino_t)(uintptr_t)user;
	uint8_t *blk = w->buf + lblk * EXT4_BS;

	errcode_t err = 0;

	/*
	 * What ext2fs_write_dir_block4 does on a little-endian host (the
	 * entries are packed little-endian already), the extent in one write.
	 */
	for (blk64_t i = 0; i < len && !err; i++)
		err = ext2fs_dir_block_csum_set(w->fs, ino,
		                                (struct ext2_dir_entry *)(blk + i * EXT4_BS));
	if (err)
		return ext2_err(w->ctx, err, "cannot checksum a directory block");
	err = io_channel_write_blk64(w->fs->io, pblk, (int)len, blk);
	if (err)
		return ext2_err(w->ctx, err, "cannot write a directory block");
	return track_goal(w, NULL, lblk, pblk, len);
}

/* Write directory @ino: its blocks (from w->buf) and its inode. */
static int dir_emit(struct ext4_writer *w, ext2_ino_t ino, struct ext2_inode_large *in,
                    uint64_t nblocks)
{
	int r;

	ext2fs_inode_size_set(w->fs, (struct ext2_inode *)in, nblocks * EXT4_BS);
	r = inode_extents(w, ino, in);
	if (r >= 0)
		r = inode_write(w, ino, in);
	if (r >= 0)
		r = alloc_blocks(w, ino, in, 0, nblocks);
	if (r >= 0)
		r = for_each_extent(w, ino, in, write_dir_extent, (void *)(uintptr_t)ino);
	if (r >= 0)
		r = inode_write(w, ino, in);
	return r;
}

static int write_lost_found(struct ext4_writer *w)
{
	struct img_node empty = { .type = IMG_NODE_DIR, .mode = 0700, .parent = w->tree->root };
	struct ext2_inode_large in;
	int r;

	/* 16 KiB like mke2fs makes it, so e2fsck can reconnect files without
	 * allocating. The fake node has a parent, so it holds only "." and "..". */
	r = dir_pack(w, &empty, EXT4_FIRST_INO, EXT2_ROOT_INO, 1);
	if (r < 0)
		return r;
	r = grow_buf(w, EXT4_LPF_BLOCKS * EXT4_BS);
	if (r < 0)
		return r;
	for (unsigned i = 1; i < EXT4_LPF_BLOCKS; i++) {
		uint8_t *bb = w->buf + i * EXT4_BS;

		memset(bb, 0, EXT4_BS);
		img_put_le16(bb + 4, EXT4_BS - EXT4_TAIL);
		ext2fs_initialize_dirent_tail(w->fs, EXT2_DIRENT_TAIL(bb, EXT4_BS));
	}
	inode_init(w, &in, LINUX_S_IFDIR, &empty, w->epoch);
	in.i_links_count = 2;
	return dir_emit(w, EXT4_FIRST_INO, &in, EXT4_LPF_BLOCKS);
}

/* ---- content -------------------------------------------------------------- */

/*
 * A regular file's blocks, all of them, before any data is read: each run
 * gets the free blocks right at the goal (ext2fs_new_range), a chunk at a
 * time, and the file's extents grow as long as logical and physical blocks
 * stay contiguous; each finished extent goes into the inode's tree
 * (ext2fs_extent_insert, which adds index blocks as needed).
 */
struct file_map {
	ext2_extent_handle_t h;
	struct ext2fs_extent cur; /* not yet in the tree; e_len 0 = none */
	int inserted;             /* extents in the tree so far */
	blk64_t last;             /* last logical block in the tree */
	blk64_t blocks;           /* data blocks, for i_blocks */
};

static int map_flush(struct ext4_writer *w, struct file_map *m)
{
	errcode_t err = 0;

	if (!m->cur.e_len)
		return 0;
	if (m->inserted) {
		/* after the last one (a split may have moved the handle) */
		err = ext2fs_extent_goto(m->h, m->last);
		if (!err)
			err = ext2fs_extent_insert(m->h, EXT2_EXTENT_INSERT_AFTER, &m->cur);
	} else {
		err = ext2fs_extent_insert(m->h, 0, &m->cur);
	}
	if (err)
		return ext2_err(w->ctx, err, "cannot add an extent");
	m->inserted++;
	m->last = m->cur.e_lblk + m->cur.e_len - 1;
	m->cur.e_len = 0;
	return 0;
}

/* Allocate @n blocks as logical blocks @lblk... */
static int map_alloc(struct ext4_writer *w, struct file_map *m, blk64_t lblk, blk64_t n)
{
	while (n) {
		blk64_t pblk, plen;
		errcode_t err = ext2fs_new_range(w->fs, 0, w->goal, n, NULL, &pblk, &plen);
		int r;

		if (err)
			return ext2_err(w->ctx, err, "cannot allocate blocks");
		ext2fs_block_alloc_stats_range(w->fs, pblk, (blk_t)plen, +1);
		w->goal = pblk + plen;
		m->blocks += plen;
		while (plen) {
			struct ext2fs_extent *c = &m->cur;
			blk64_t k;

			if (!c->e_len || c->e_lblk + c->e_len != lblk ||
			    c->e_pblk + c->e_len != pblk || c->e_len == EXT4_EXTENT_MAX) {
				r = map_flush(w, m);
				if (r < 0)
					return r;
				*c = (struct ext2fs_extent){ .e_lblk = lblk, .e_pblk = pblk };
			}
			k = IMG_MIN(plen, EXT4_EXTENT_MAX - c->e_len);
			c->e_len += (uint32_t)k;
			lblk += k;
			pblk += k;
			plen -= k;
			n -= k;
		}
	}
	return 0;
}

/* Every block of a regular file, a chunk's worth at a time (the data comes at emission). */
static int alloc_file(struct ext4_writer *w, const struct img_node *node, ext2_ino_t ino,
                      struct ext2_inode_large *in)
{
	const blk64_t chunk = EXT4_CHUNK / EXT4_BS, nb = IMG_DIV_ROUND_UP(node->size, EXT4_BS);
	struct file_map m = { 0 };
	errcode_t err;
	int r = 0;

	err = ext2fs_extent_open2(w->fs, ino, (struct ext2_inode *)in, &m.h);
	if (err)
		return ext2_err(w->ctx, err, "cannot read an extent tree");
	for (blk64_t b = 0; b < nb && r >= 0; b += chunk)
		r = map_alloc(w, &m, b, IMG_MIN(chunk, nb - b));
	if (r >= 0)
		r = map_flush(w, &m);
	if (r >= 0 && m.blocks) {
		err = ext2fs_iblk_add_blocks(w->fs, (struct ext2_inode *)in, m.blocks);
		if (err)
			r = ext2_err(w->ctx, err, "cannot count the blocks of a file");
	}
	ext2fs_extent_free(m.h);
	return r;
}

static int write_reg(struct ext4_writer *w, struct img_node *node, ext2_ino_t ino)
{
	struct ext2_inode_large in;
	int r;

	inode_init(w, &in, LINUX_S_IFREG, node, node->mtime);
	in.i_links_count = (uint16_t)IMG_MAX(node->nlink, 1u);
	r = inode_extents(w, ino, &in);
	if (r < 0)
		return r;
	ext2fs_inode_size_set(w->fs, (struct ext2_inode *)&in, node->size);
	r = inode_write(w, ino, &in);
	if (r < 0 || !node->size)
		return r;
	r = alloc_file(w, node, ino, &in);
	if (r >= 0)
		r = inode_write(w, ino, &in);
	if (r < 0)
		return img_error_prefix(w->ctx, r, "ext4: %s", node->name);
	return r;
}

static int write_symlink_block(struct ext4_writer *w, void *user, blk64_t lblk, blk64_t pblk,
                               blk64_t len)
{
	errcode_t err = io_channel_write_blk64(w->fs->io, pblk, 1, user);

	if (err)
		return ext2_err(w->ctx, err, "cannot write a symlink block");
	return track_goal(w, NULL, lblk, pblk, len);
}

static int write_symlink(struct ext4_writer *w, const struct img_node *node, ext2_ino_t ino)
{
	struct ext2_inode_large in;
	size_t len = strlen(node->target);
	int r;

	if (len >= EXT4_BS)
		return img_set_error(w->ctx, -ENAMETOOLONG,
		                     "ext4: symlink %s: target of %zu bytes is too long",
		                     node->name, len);
	inode_init(w, &in, LINUX_S_IFLNK, node, node->mtime);
	in.i_mode = (uint16_t)(LINUX_S_IFLNK | 0777);
	in.i_links_count = (uint16_t)IMG_MAX(node->nlink, 1u);
	ext2fs_inode_size_set(w->fs, (struct ext2_inode *)&in, len);
	if (len < EXT4_FAST_SYMLINK) {
		memcpy(in.i_block, node->target, len);
		return inode_write(w, ino, &in);
	}
	r = inode_extents(w, ino, &in);
	if (r >= 0)
		r = inode_write(w, ino, &in);
	if (r >= 0)
		r = alloc_blocks(w, ino, &in, 0, 1);
	if (r >= 0)
		r = grow_buf(w, EXT4_BS);
	if (r < 0)
		return r;
	memset(w->buf, 0, EXT4_BS);
	memcpy(w->buf, node->target, len);
	r = for_each_extent(w, ino, &in, write_symlink_block, w->buf);
	if (r >= 0)
		r = inode_write(w, ino, &in);
	return r;
}

static int write_special(struct ext4_writer *w, const struct img_node *node, ext2_ino_t ino)
{
	struct ext2_inode_large in;
	uint16_t type = LINUX_S_IFIFO;
	uint32_t ma = node->rdev_major, mi = node->rdev_minor;

	switch (node->type) {
	case IMG_NODE_CHR:
		type = LINUX_S_IFCHR;
		break;
	case IMG_NODE_BLK:
		type = LINUX_S_IFBLK;
		break;
	case IMG_NODE_SOCK:
		type = LINUX_S_IFSOCK;
		break;
	default:
		break;
	}
	inode_init(w, &in, type, node, node->mtime);
	in.i_links_count = (uint16_t)IMG_MAX(node->nlink, 1u);
	if (type == LINUX_S_IFCHR || type == LINUX_S_IFBLK) {
		/* old encoding when it fits, else the new one (Linux's
		 * old_valid_dev / new_encode_dev) */
		if (ma < 256 && mi < 256)
			in.i_block[0] = ma * 256 + mi;
		else
			in.i_block[1] = (mi & 0xff) | (ma << 8) | ((mi & ~0xffu) << 12);
	}
	return inode_write(w, ino, &in);
}

static int write_dir(struct ext4_writer *w, struct img_node *node, ext2_ino_t ino)
{
	struct ext2_inode_large in;
	ext2_ino_t parent = node->parent ? w->ino[node->parent->seq] : ino;
	uint64_t nblocks = 0;
	uint32_t links;
	int r, linear;

	linear = r = dir_pack_htree(w, node, ino, parent, &nblocks);
	if (linear == 1) {
		nblocks = dir_blocks(node);
		r = dir_pack(w, node, ino, parent, nblocks);
	}
	if (r < 0)
		return r;
	inode_init(w, &in, LINUX_S_IFDIR, node, node->mtime);
	if (!linear)
		in.i_flags |= EXT2_INDEX_FL;
	links = node->nlink ? node->nlink : 2;
	if (is_root(node))
		links++; /* lost+found */
	/* dir_nlink: a directory with too many subdirectories counts 1 */
	in.i_links_count = links >= EXT2_LINK_MAX ? 1 : (uint16_t)links;
	r = dir_emit(w, ino, &in, nblocks);
	if (r < 0)
		return r;
	/* lost+found right after the root, before the content, as mke2fs does */
	return is_root(node) ? write_lost_found(w) : 0;
}

/* One node, parent before children (img_tree_walk's order). */
static int write_visit(void *user, struct img_node *node, unsigned depth)
{
	struct ext4_writer *w = user;
	ext2_ino_t ino = w->ino[node->seq];
	int r;

	(void)depth;
	r = img_check_cancel(w->ctx);
	if (r < 0)
		return r;
	img_progress_add(w->ctx, 0, 1);
	if (node->link)
		return 0; /* a kept hard link: its directory entry is all */
	switch (node->type) {
	case IMG_NODE_DIR:
		return write_dir(w, node, ino);
	case IMG_NODE_REG:
		return write_reg(w, node, ino);
	case IMG_NODE_SYMLINK:
		return write_symlink(w, node, ino);
	default:
		return write_special(w, node, ino);
	}
}

/* ---- emission: front to back --------------------------------------------- */

struct emit_file {
	const struct img_node *node;
	struct img_node_reader rd;
	int scan; /* a large host file: read only where it has data */
};

/*
 * One extent of a file: the metadata below it first, then its data a chunk
 * at a time, blocks of zeros and host holes left unwritten.
 */
static int emit_extent(struct ext4_writer *w, void *user, blk64_t lblk, blk64_t pblk, blk64_t len)
{
	struct emit_file *f = user;
	uint64_t off = lblk * EXT4_BS, end = IMG_MIN((lblk + len) * EXT4_BS, f->node->size);
	uint64_t base = pblk * EXT4_BS - off; /* device offset = base + file offset */
	int r = img_ext2_io_emit_until(w->fs->io, pblk * EXT4_BS);

	if (r >= 0 && w->planned && off < end) {
		r = img_node_reader_copy(w->ctx, &f->rd, off, end - off, w->dev, base + off);
		if (r >= 0)
			img_progress_add(w->ctx, end - off, 0);
		return r;
	}
	while (r >= 0 && off < end) {
		size_t n = (size_t)IMG_MIN(end - off, EXT4_CHUNK);
		size_t nb = IMG_DIV_ROUND_UP(n, EXT4_BS), i = 0;

		if (f->scan) {
			off_t d = lseek(f->rd.fd, (off_t)off, SEEK_DATA);
			uint64_t next;

			if (d < 0 && errno != ENXIO) {
				f->scan = 0; /* no hole support here: read it all */
			} else {
				next = d < 0 ? end : IMG_MIN((uint64_t)d / EXT4_BS * EXT4_BS, end);
				if (next > off) {
					img_progress_add(w->ctx, next - off, 0);
					off = next;
					continue;
				}
			}
		}
		r = img_node_reader_pread(w->ctx, &f->rd, w->data, n, off);
		if (r < 0)
			break;
		memset(w->data + n, 0, nb * EXT4_BS - n); /* the last block's padding */
		while (i < nb && r >= 0) {
			size_t j;

			if (img_all_zero(w->data + i * EXT4_BS, EXT4_BS)) {
				i++;
				continue;
			}
			for (j = i + 1; j < nb && !img_all_zero(w->data + j * EXT4_BS, EXT4_BS);
			     j++)
				;
			r = img_dev_write_data(w->dev, w->data + i * EXT4_BS, (j - i) * EXT4_BS,
			                       base + off + i * EXT4_BS);
			i = j;
		}
		img_progress_add(w->ctx, n, 0);
		off += n;
	}
	return r;
}

/* A regular file's data, where alloc_file put it (read back from its inode). */
static int emit_visit(void *user, struct img_node *node, unsigned depth)
{
	struct ext4_writer *w = user;
	struct emit_file f = { .node = node };
	ext2_ino_t ino = w->ino[node->seq];
	struct ext2_inode_large in;
	errcode_t err;
	int r;

	(void)depth;
	if (node->link || node->type != IMG_NODE_REG || !node->size)
		return 0;
	r = img_check_cancel(w->ctx);
	if (r < 0)
		return r;
	err = ext2fs_read_inode_full(w->fs, ino, (struct ext2_inode *)&in, sizeof(in));
	if (err)
		return ext2_err(w->ctx, err, "cannot read back an inode");
	r = img_node_reader_open(w->ctx, node, &f.rd);
	if (r >= 0) {
		f.scan = node->data.kind == IMG_DATA_PATH && node->size >= EXT4_HOLE_SCAN_MIN;
		r = for_each_extent(w, ino, &in, emit_extent, &f);
		img_node_reader_close(&f.rd);
	}
	if (r < 0)
		return img_error_prefix(w->ctx, r, "ext4: %s", node->name);
	return 0;
}

/* One data extent in the plan, after the metadata below it. */
static int plan_extent(struct ext4_writer *w, void *user, blk64_t lblk, blk64_t pblk, blk64_t len)
{
	int r = img_ext2_io_plan_until(w->fs->io, pblk * EXT4_BS);

	(void)user;
	(void)lblk;
	return r < 0 ? r : img_dev_plan(w->dev, pblk * EXT4_BS, len * EXT4_BS);
}

static int plan_visit(void *user, struct img_node *node, unsigned depth)
{
	struct ext4_writer *w = user;
	ext2_ino_t ino = w->ino[node->seq];
	struct ext2_inode_large in;
	errcode_t err;

	(void)depth;
	if (node->link || node->type != IMG_NODE_REG || !node->size)
		return 0;
	err = ext2fs_read_inode_full(w->fs, ino, (struct ext2_inode *)&in, sizeof(in));
	if (err)
		return ext2_err(w->ctx, err, "cannot read back an inode");
	return for_each_extent(w, ino, &in, plan_extent, NULL);
}

/* The second walk (the data in the first one's order), then the metadata past it. */
static int emit_all(struct ext4_writer *w)
{
	errcode_t err;
	int r;

	if (!w->data && !(w->data = malloc(EXT4_CHUNK)))
		return img_set_error(w->ctx, -ENOMEM, "out of memory");
	r = img_tree_walk(w->tree, emit_visit, w);
	if (r < 0)
		return r;
	err = io_channel_flush(w->fs->io);
	if (err)
		return ext2_err(w->ctx, err, "cannot write the metadata");
	return 0;
}

/* Inode numbers in depth-first order; kept links share their first link's. */
static int number_visit(void *user, struct img_node *node, unsigned depth)
{
	struct ext4_writer *w = user;

	(void)depth;
	if (node->link) {
		/* the holder comes first in this walk: its number is set */
		w->ino[node->seq] = w->ino[node->link->seq];
		return 0;
	}
	if (is_root(node)) {
		w->ino[node->seq] = EXT2_ROOT_INO;
	} else {
		if (w->next_ino > w->fs->super->s_inodes_count)
			return img_set_error(w->ctx, -ENOSPC, "ext4: out of inodes");
		w->ino[node->seq] = w->next_ino++;
	}
	ext2fs_inode_alloc_stats2(w->fs, w->ino[node->seq], +1, node->type == IMG_NODE_DIR);
	return 0;
}

/* ---- the file system frame ------------------------------------------------- */

static int ext4_setup(struct ext4_writer *w, const struct img_fs_opts *opts)
{
	ext2_filsys fs = w->fs;
	struct ext2_super_block *sb = fs->super;
	const char *role = opts && opts->id_role ? opts->id_role : "root";
	const char *label = opts && opts->label ? opts->label : "";
	char name[128];
	uint8_t hs[16];
	errcode_t err;

	if (strlen(label) > sizeof(sb->s_volume_name))
		return img_set_error(w->ctx, -EINVAL, "ext4: label '%s' is longer than %zu bytes",
		                     label, sizeof(sb->s_volume_name));
	fs->now = w->epoch > 0 ? w->epoch : 1;
	sb->s_mkfs_time = sb->s_lastcheck = sb->s_wtime = (uint32_t)fs->now;
	/* times past 2106: the high byte (ext2fs_close only sets the low 32 bits) */
	sb->s_mkfs_time_hi = sb->s_lastcheck_hi = sb->s_wtime_hi =
	    (uint8_t)((uint64_t)fs->now >> 32);
	sb->s_max_mnt_count = (uint16_t)-1;
	sb->s_checkinterval = 0;
	sb->s_errors = EXT2_ERRORS_CONTINUE;
	sb->s_kbytes_written = 0;
	memset(sb->s_volume_name, 0, sizeof(sb->s_volume_name));
	memcpy(sb->s_volume_name, label, strlen(label));
	memset(sb->s_last_mounted, 0, sizeof(sb->s_last_mounted));
	snprintf(name, sizeof(name), "ext4-uuid:%s", role);
	img_repro_uuid(w->ctx, name, sb->s_uuid);
	snprintf(name, sizeof(name), "ext4-hash-seed:%s", role);
	img_repro_uuid(w->ctx, name, hs);
	memcpy(sb->s_hash_seed, hs, sizeof(hs));
	sb->s_def_hash_version = EXT2_HASH_HALF_MD4;
	/* ext2fs_initialize picks by the build host's char signedness */
	sb->s_flags &= ~(EXT2_FLAGS_UNSIGNED_HASH | EXT2_FLAGS_SIGNED_HASH);
	sb->s_flags |= EXT2_FLAGS_SIGNED_HASH;
	sb->s_checksum_type = EXT2_CRC32C_CHKSUM;
	ext2fs_init_csum_seed(fs);

	err = ext2fs_allocate_tables(fs);
	if (!err)
		err = ext2fs_convert_subcluster_bitmap(fs, &fs->block_map);
	if (err)
		return ext2_err(w->ctx, err, "cannot allocate the group tables");
	/* The device reads as zeros: inode tables need no zeroing. */
	for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
		ext2fs_bg_flags_set(fs, g, EXT2_BG_INODE_ZEROED);
		ext2fs_group_desc_csum_set(fs, g);
	}
	return 0;
}

static int ext4_reserved(struct ext4_writer *w)
{
	ext2_filsys fs = w->fs;
	struct ext2fs_journal_params jp;
	struct ext2_inode_large zero;
	errcode_t err;

	/* Reserved inodes 1..10 exist with valid checksums (mke2fs does the same). */
	memset(&zero, 0, sizeof(zero));
	for (ext2_ino_t i = 1; i < EXT4_FIRST_INO; i++) {
		err = ext2fs_write_inode_full(fs, i, (struct ext2_inode *)&zero, sizeof(zero));
		if (err)
			return ext2_err(w->ctx, err, "cannot write the reserved inodes");
	}
	for (ext2_ino_t i = EXT2_ROOT_INO + 1; i <= EXT4_FIRST_INO; i++)
		ext2fs_inode_alloc_stats2(fs, i, +1, i == EXT4_FIRST_INO);
	ext2fs_mark_inode_bitmap2(fs->inode_map, EXT2_BAD_INO);
	ext2fs_inode_alloc_stats2(fs, EXT2_BAD_INO, +1, 0);
	err = ext2fs_update_bb_inode(fs, NULL);
	if (err)
		return ext2_err(w->ctx, err, "cannot write the bad blocks inode");
	err = ext2fs_create_resize_inode(fs);
	if (err)
		return ext2_err(w->ctx, err, "cannot create the resize inode");
	err = ext2fs_get_journal_params(&jp, fs);
	if (!err)
		err = ext2fs_add_journal_inode3(
		    fs, &jp, ~0ULL, EXT2_MKJOURNAL_LAZYINIT | EXT2_MKJOURNAL_NO_MNT_CHECK);
	if (err)
		return ext2_err(w->ctx, err, "cannot create the journal");
	return 0;
}

/* A build between its two walks (fs-ext4.h). */
struct img_ext4_job {
	struct ext4_writer w;
	/* Nothing is written before ext2fs_initialize returns (it only lays
	 * out in memory); the channel spills beside the output from then on. */
	struct img_ext2_io_target target;
};

void img_ext4_job_free(struct img_ext4_job *j)
{
	if (!j)
		return;
	free(j->w.ino);
	free(j->w.buf);
	free(j->w.data);
	if (j->w.fs)
		ext2fs_free(j->w.fs);
	free(j);
}

int img_ext4_layout(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *opts,
                    struct img_dev *dev, size_t cache_blocks, struct img_ext4_job **out)
{
	struct img_ext4_job *j;
	struct ext4_writer *w;
	struct ext4_need need;
	uint64_t blocks = img_dev_size(dev) / EXT4_BS, short_by, min_blocks;
	errcode_t err;
	int r;

	*out = NULL;
	if (!tree || !tree->root || !tree->finished)
		return img_set_error(ctx, -EINVAL, "ext4: the tree is not finished");
	if (img_tree_lookup(tree, "lost+found"))
		return img_set_error(ctx, -EEXIST,
		                     "ext4: the content has a /lost+found; the file system makes "
		                     "its own");
	tree_need(tree, &need);
	/* Too small is an error before anything is written. */
	r = ext4_fits(ctx, dev, blocks, &need, 0, &short_by);
	if (r == -ENOSPC) {
		r = ext4_size(ctx, &need, 0, &min_blocks);
		if (r < 0)
			return r;
		return img_set_error(ctx, -ENOSPC,
		                     "ext4: %llu bytes is too small for the content: it needs at "
		                     "least %llu bytes (%llu MiB)",
		                     (unsigned long long)img_dev_size(dev),
		                     (unsigned long long)(min_blocks * EXT4_BS),
		                     (unsigned long long)(min_blocks >> 8));
	}
	if (r < 0)
		return r;
	j = calloc(1, sizeof(*j));
	if (!j)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	w = &j->w;
	*w = (struct ext4_writer){ .ctx = ctx, .tree = tree, .dev = dev };
	w->epoch = img_repro_epoch(ctx);
	j->target = (struct img_ext2_io_target){ .dev = dev,
		                                 .spill_dir = opts ? opts->spill_dir : NULL,
		                                 .cache_blocks = cache_blocks };
	img_progress_phase(ctx, "ext4", tree->data_bytes, tree->nodes);
	r = ext4_init(ctx, &j->target, blocks, &need, &w->fs);
	if (r >= 0)
		r = ext4_setup(w, opts);
	if (r >= 0)
		r = ext4_reserved(w);
	if (r >= 0 && !(w->ino = calloc(tree->nodes, sizeof(*w->ino))))
		r = img_set_error(ctx, -ENOMEM, "out of memory");
	if (r >= 0) {
		w->next_ino = EXT4_FIRST_INO + 1;
		w->goal = 0;
		r = img_tree_walk(tree, number_visit, w);
	}
	if (r >= 0)
		r = img_tree_walk(tree, write_visit, w);
	if (r >= 0) {
		/* superblocks, group descriptors, bitmaps: into the cache too */
		w->fs->super->s_kbytes_written = 0;
		ext2fs_mark_super_dirty(w->fs);
		err = ext2fs_flush2(w->fs, EXT2_FLAG_FLUSH_NO_SYNC);
		if (err)
			r = ext2_err(ctx, err, "cannot write the superblock and group tables");
	}
	if (r < 0) {
		img_ext4_job_free(j);
		return r;
	}
	*out = j;
	return 0;
}

int img_ext4_plan_ranges(struct img_ext4_job *j)
{
	int r = img_tree_walk(j->w.tree, plan_visit, &j->w);

	j->w.planned = true;
	return r < 0 ? r : img_ext2_io_plan_until(j->w.fs->io, UINT64_MAX);
}

int img_ext4_emit(struct img_ext4_job *j)
{
	int r = emit_all(&j->w);

	return r < 0 ? r : img_dev_error(j->w.dev);
}

int img_ext4_write_cached(struct img_ctx *ctx, struct img_tree *tree,
                          const struct img_fs_opts *opts, struct img_dev *dev, size_t cache_blocks)
{
	struct img_ext4_job *j;
	int r = img_ext4_layout(ctx, tree, opts, dev, cache_blocks, &j);

	if (r < 0)
		return r;
	/* the whole output: plan it (a qcow2 lays its clusters out for it) */
	if (opts && opts->flags & IMG_FS_OWN_DEVICE) {
		r = img_ext4_plan_ranges(j);
		if (r >= 0)
			r = img_dev_plan_done(dev);
	}
	if (r >= 0)
		r = img_ext4_emit(j);
	img_ext4_job_free(j);
	return r;
}

static int ext4_write(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *opts,
                      struct img_dev *dev)
{
	return img_ext4_write_cached(ctx, tree, opts, dev, 0);
}

/* The plan sizes the file system and fixes its IDs; emit is ext4_write. */
static int ext4_plan(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *opts,
                     struct img_fs_plan **out)
{
	return img_fs_plan_sized(&img_fs_ext4, ctx, tree, opts, out);
}

/* The UUID ext4_setup() gives the superblock. */
static void ext4_volume_id(const struct img_fs_plan *plan, char *out, size_t len)
{
	char name[128], text[37];
	uint8_t u[16];

	snprintf(name, sizeof(name), "ext4-uuid:%s",
	         plan->opts.id_role ? plan->opts.id_role : "root");
	img_repro_uuid(plan->ctx, name, u);
	img_uuid_unparse(u, text);
	snprintf(out, len, "%s", text);
}

static int ext4_emit(struct img_fs_plan *plan, struct img_dev *dev)
{
	return img_fs_emit_whole(&img_fs_ext4, plan, dev);
}

const struct img_fs_ops img_fs_ext4 = {
	.name = "ext4",
	.plan = ext4_plan,
	.planned_size = img_fs_plan_size,
	.volume_id = ext4_volume_id,
	.emit = ext4_emit,
	.plan_free = img_fs_plan_free,
	.estimate = ext4_estimate,
	.write = ext4_write,
};
