/*
 * fs-erofs-emit.c -- EROFS writer, phase 2: write the planned layout.
 *
 * Spec: Linux Documentation/filesystems/erofs.rst and fs/erofs/erofs_fs.h
 * (superblock, its checksum, inodes, directories, special files). One pass
 * in block order, so the device sees the output go out in file order (and
 * hashes it on the way): block 0 (the superblock, whose checksum covers the
 * root inode after it: the plan knows both up front), file data (in-kernel
 * copies), directory and symlink blocks, metadata blocks (inodes with inline
 * tails). Every byte not written here reads as zero (the device is new).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs-erofs-layout.h"

static uint8_t file_type(const struct img_node *n)
{
	switch (n->type) {
	case IMG_NODE_REG:
		return EROFS_FT_REG;
	case IMG_NODE_DIR:
		return EROFS_FT_DIR;
	case IMG_NODE_SYMLINK:
		return EROFS_FT_SYMLINK;
	case IMG_NODE_CHR:
		return EROFS_FT_CHR;
	case IMG_NODE_BLK:
		return EROFS_FT_BLK;
	case IMG_NODE_FIFO:
		return EROFS_FT_FIFO;
	case IMG_NODE_SOCK:
		return EROFS_FT_SOCK;
	}
	return EROFS_FT_UNKNOWN;
}

static uint16_t mode_bits(const struct img_node *n)
{
	static const uint16_t fmt[] = {
		[IMG_NODE_REG] = S_IFREG,   [IMG_NODE_DIR] = S_IFDIR, [IMG_NODE_SYMLINK] = S_IFLNK,
		[IMG_NODE_CHR] = S_IFCHR,   [IMG_NODE_BLK] = S_IFBLK, [IMG_NODE_FIFO] = S_IFIFO,
		[IMG_NODE_SOCK] = S_IFSOCK,
	};

	return (uint16_t)(fmt[n->type] | (n->mode & 07777));
}

/* Directory blocks, generated in order; @fn gets each finished block. */
typedef int (*dir_block_fn)(void *user, uint64_t index, const uint8_t *blk, size_t used);

static int dir_blocks(const struct img_erofs_plan *p, struct img_node *dir, uint8_t *blk,
                      dir_block_fn fn, void *user)
{
	struct img_erofs_dir_iter it, first;
	struct img_node *t;
	const char *name;
	size_t len, used = 0, count = 0;
	uint64_t index = 0;
	int r;

	img_erofs_dir_init(&it, dir);
	first = it;
	for (;;) {
		int more = img_erofs_dir_next(&it, &name, &len, &t);

		if (more && used + EROFS_DIRENT_SIZE + len <= EROFS_BLKSZ) {
			used += EROFS_DIRENT_SIZE + len;
			count++;
			continue;
		}
		/* Lay out the @count entries from @first: dirents, then names. */
		{
			size_t nameoff = count * EROFS_DIRENT_SIZE;
			struct img_erofs_dir_iter w = first;

			memset(blk, 0, EROFS_BLKSZ);
			for (size_t i = 0; i < count; i++) {
				const char *nm;
				size_t nl;
				struct img_node *tg;
				uint8_t *de = blk + i * EROFS_DIRENT_SIZE;

				img_erofs_dir_next(&w, &nm, &nl, &tg);
				img_put_le64(de + EROFS_DE_NID, img_erofs_inode_of(p, tg)->nid);
				img_put_le16(de + EROFS_DE_NAMEOFF, (uint16_t)nameoff);
				de[EROFS_DE_TYPE] = file_type(img_node_inode(tg));
				memcpy(blk + nameoff, nm, nl);
				nameoff += nl;
			}
			r = fn(user, index++, blk, used);
			if (r < 0)
				return r;
		}
		if (!more)
			return 0;
		/* The entry that did not fit opens the next block. */
		first = it;
		first.i--;
		used = EROFS_DIRENT_SIZE + len;
		count = 1;
	}
}

struct emit {
	struct img_erofs_plan *p;
	struct img_dev *dev;
	struct img_node *node;
	uint8_t *tailbuf; /* the last directory block, for inlining */
	uint8_t *genbuf;  /* where directory blocks are generated */
	size_t tail_used;
	/*
	 * Inline tails of files that also have a body, read while the file is
	 * open for its body (phase 1) for the metadata pass (phase 3), so the
	 * file is not opened a second time. Bounded: past TAIL_CACHE_MAX the
	 * metadata pass reads the rest itself.
	 */
	uint8_t *tails;
	size_t tails_len, tails_cap;
	/* Where each cached tail is, in seq order (phase 1 goes in seq
	 * order), searched by seq: only files with a cached tail cost. */
	struct tail_ref {
		uint32_t seq, off;
	} * tail_refs;
	size_t ntail_refs, tail_refs_cap;
};

/* The cached tail of node @seq, or NULL. */
static const uint8_t *tail_cached(const struct emit *em, uint32_t seq)
{
	size_t lo = 0, hi = em->ntail_refs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (em->tail_refs[mid].seq == seq)
			return em->tails + em->tail_refs[mid].off;
		if (em->tail_refs[mid].seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/*
 * 4 MiB: a fixed cost of every big build (docs/memory.md), holding the tails
 * of the first thousands of files; a closure with more reads the rest in the
 * metadata pass, a second open of each (16 MiB bought little on a
 * 400k-entry closure, whose tails need 100 times that).
 */
#define TAIL_CACHE_MAX (4u << 20)

static int dir_block_out(void *user, uint64_t index, const uint8_t *blk, size_t used)
{
	struct emit *em = user;
	struct img_erofs_inode *e = &em->p->inode[em->node->seq];

	if (index < e->nblocks)
		return img_dev_write_data(em->dev, blk, EROFS_BLKSZ,
		                          (e->startblk + index) * EROFS_BLKSZ);
	/* The inline tail: kept for the metadata pass. */
	memcpy(em->tailbuf, blk, used);
	em->tail_used = used;
	return 0;
}

static int dir_block_skip(void *user, uint64_t index, const uint8_t *blk, size_t used)
{
	struct emit *em = user;

	(void)index;
	memcpy(em->tailbuf, blk, used);
	em->tail_used = used;
	return 0;
}

static void put_inode(const struct img_erofs_plan *p, struct img_node *n, uint8_t *b)
{
	const struct img_erofs_inode *e = &p->inode[n->seq];
	uint64_t size = img_erofs_inode_size(n);
	uint32_t u = 0;

	switch (n->type) {
	case IMG_NODE_REG:
	case IMG_NODE_DIR:
	case IMG_NODE_SYMLINK:
		u = (uint32_t)e->startblk;
		if (!size)
			u = 0;
		/* compressed: i_u is the count of compressed blocks (1.13) */
		if (e->layout == EROFS_INODE_COMPRESSED_COMPACT)
			u = (uint32_t)e->nblocks;
		break;
	case IMG_NODE_CHR:
	case IMG_NODE_BLK:
		/* Linux "new" dev_t encoding (formats.md 1.8). */
		u = (n->rdev_minor & 0xff) | (n->rdev_major << 8) |
		    ((n->rdev_minor & ~0xffu) << 12);
		break;
	default:
		break;
	}
	memset(b, 0, e->isize);
	if (e->isize == EROFS_COMPACT_SIZE) {
		img_put_le16(b + EROFS_IC_FORMAT, EROFS_I_FORMAT(EROFS_INODE_COMPACT, e->layout));
		img_put_le16(b + EROFS_IC_MODE, mode_bits(n));
		img_put_le16(b + EROFS_IC_NLINK, (uint16_t)n->nlink);
		img_put_le32(b + EROFS_IC_SIZE, (uint32_t)size);
		img_put_le32(b + EROFS_IC_U, u);
		img_put_le32(b + EROFS_IC_INO, img_erofs_ino(p, n->seq));
		img_put_le16(b + EROFS_IC_UID, (uint16_t)n->uid);
		img_put_le16(b + EROFS_IC_GID, (uint16_t)n->gid);
	} else {
		img_put_le16(b + EROFS_IE_FORMAT, EROFS_I_FORMAT(EROFS_INODE_EXTENDED, e->layout));
		img_put_le16(b + EROFS_IE_MODE, mode_bits(n));
		img_put_le64(b + EROFS_IE_SIZE, size);
		img_put_le32(b + EROFS_IE_U, u);
		img_put_le32(b + EROFS_IE_INO, img_erofs_ino(p, n->seq));
		img_put_le32(b + EROFS_IE_UID, n->uid);
		img_put_le32(b + EROFS_IE_GID, n->gid);
		img_put_le64(b + EROFS_IE_MTIME, (uint64_t)n->mtime);
		img_put_le32(b + EROFS_IE_NLINK, n->nlink);
	}
}

/*
 * A compressed file's inode and its map header + indexes, from @blk (the
 * metadata block *cur) on: a record over one block starts a block of its
 * own (the packer's rule) and runs on into the next ones, each written when
 * full; the last stays in @blk for the inodes packed after it.
 */
static int put_zmeta(struct emit *em, struct img_node *n, uint8_t *blk, uint64_t *cur)
{
	const struct img_erofs_inode *e = &em->p->inode[n->seq];
	size_t pos = (size_t)(e->nid * EROFS_SLOT % EROFS_BLKSZ),
	       left = img_erofs_zmeta(em->p, n->seq);
	const uint8_t *src = em->p->zindex[n->seq];
	int r;

	put_inode(em->p, n, blk + pos);
	pos += e->isize;
	while (left) {
		size_t k = IMG_MIN(left, EROFS_BLKSZ - pos);

		memcpy(blk + pos, src, k);
		src += k;
		left -= k;
		pos += k;
		if (left) {
			r = img_dev_write_data(em->dev, blk, EROFS_BLKSZ, *cur * EROFS_BLKSZ);
			if (r < 0)
				return r;
			memset(blk, 0, EROFS_BLKSZ);
			(*cur)++;
			pos = 0;
		}
	}
	return 0;
}

/* Inode + inline tail of @n into @b (its place inside a metadata block). */
static int put_meta(struct emit *em, struct img_node *n, uint8_t *b)
{
	struct img_erofs_plan *p = em->p;
	const struct img_erofs_inode *e = &p->inode[n->seq];
	uint8_t *tail = b + e->isize;
	int r;

	put_inode(p, n, b);
	if (!e->tail)
		return 0;
	switch (n->type) {
	case IMG_NODE_REG:
		if (n->data.kind == IMG_DATA_NONE)
			return 0; /* streamed later into the same place */
		const uint8_t *cached = tail_cached(em, n->seq);

		if (cached) {
			memcpy(tail, cached, e->tail);
			return 0;
		}
		return img_node_read_data(p->ctx, n, n->size - e->tail, tail, e->tail);
	case IMG_NODE_SYMLINK:
		memcpy(tail, n->target + (n->size - e->tail), e->tail);
		return 0;
	case IMG_NODE_DIR:
		em->node = n;
		r = dir_blocks(p, n, em->genbuf, dir_block_skip, em);
		if (r < 0)
			return r;
		if (em->tail_used != e->tail)
			return img_set_error(p->ctx, -EIO, "erofs: directory tail %zu != plan %u",
			                     em->tail_used, e->tail);
		memcpy(tail, em->tailbuf, e->tail);
		return 0;
	default:
		return 0;
	}
}

static int emit_file_data(struct emit *em, struct img_node *n)
{
	struct img_erofs_plan *p = em->p;
	const struct img_erofs_inode *e = &p->inode[n->seq];
	uint64_t body = n->size - e->tail;
	struct img_node_reader rd;
	int r;

	if (!body || n->data.kind == IMG_DATA_NONE || e->data_in_place)
		return 0;
	r = img_node_reader_open(p->ctx, n, &rd);
	if (r < 0)
		return r;
	/* The device keeps a sparse file's holes. */
	r = img_node_reader_copy(p->ctx, &rd, 0, body, em->dev, e->startblk * EROFS_BLKSZ);
	if (r >= 0 && e->tail && em->tails_len + e->tail <= TAIL_CACHE_MAX) {
		if (em->ntail_refs == em->tail_refs_cap) {
			size_t cap = em->tail_refs_cap ? em->tail_refs_cap * 2 : 1024;
			struct tail_ref *t = realloc(em->tail_refs, cap * sizeof(*t));

			if (!t) {
				r = img_set_error(p->ctx, -ENOMEM, "out of memory");
			} else {
				em->tail_refs = t;
				em->tail_refs_cap = cap;
			}
		}
		if (r >= 0 && em->tails_len + e->tail > em->tails_cap) {
			size_t cap = IMG_MIN(IMG_MAX(em->tails_cap * 2, (size_t)1 << 20),
			                     (size_t)TAIL_CACHE_MAX);
			uint8_t *t = realloc(em->tails, cap);

			if (!t) {
				r = img_set_error(p->ctx, -ENOMEM, "out of memory");
			} else {
				em->tails = t;
				em->tails_cap = cap;
			}
		}
		if (r >= 0)
			r = img_node_reader_pread(p->ctx, &rd, em->tails + em->tails_len, e->tail,
			                          body);
		if (r >= 0) {
			em->tail_refs[em->ntail_refs++] =
			    (struct tail_ref){ n->seq, (uint32_t)em->tails_len };
			em->tails_len += e->tail;
		}
	}
	img_node_reader_close(&rd);
	/*
	 * The rest of the last block is the file's: its zeros go out as data,
	 * so the device's run of file data goes on into the next file.
	 */
	if (r >= 0 && body % EROFS_BLKSZ) {
		static const uint8_t zeros[EROFS_BLKSZ];

		r = img_dev_write_data(em->dev, zeros, EROFS_BLKSZ - body % EROFS_BLKSZ,
		                       e->startblk * EROFS_BLKSZ + body);
	}
	return r;
}

static int emit_other(struct emit *em, struct img_node *n, uint8_t *blk)
{
	struct img_erofs_plan *p = em->p;
	const struct img_erofs_inode *e = &p->inode[n->seq];

	if (!e->nblocks)
		return 0;
	if (n->type == IMG_NODE_DIR) {
		em->node = n;
		return dir_blocks(p, n, blk, dir_block_out, em);
	}
	/* A symlink target too long to inline: one zero-padded block. */
	memset(blk, 0, EROFS_BLKSZ);
	memcpy(blk, n->target, n->size);
	return img_dev_write_data(em->dev, blk, EROFS_BLKSZ, e->startblk * EROFS_BLKSZ);
}

static void put_super(const struct img_erofs_plan *p, uint8_t *blk0)
{
	uint8_t *sb = blk0 + EROFS_SB_OFFSET;
	struct img_node *root = p->tree->root;

	img_put_le32(sb + EROFS_SB_MAGIC, EROFS_MAGIC);
	img_put_le32(sb + EROFS_SB_FEATURE_COMPAT,
	             EROFS_FEATURE_COMPAT_SB_CHKSUM | EROFS_FEATURE_COMPAT_MTIME);
	img_put_le32(sb + EROFS_SB_FEATURE_INCOMPAT, p->feature_incompat);
	sb[EROFS_SB_BLKSZBITS] = EROFS_BLKSZBITS;
	img_put_le16(sb + EROFS_SB_ROOT_NID, (uint16_t)p->inode[root->seq].nid);
	img_put_le64(sb + EROFS_SB_INOS, p->ninodes);
	img_put_le64(sb + EROFS_SB_BUILD_TIME, (uint64_t)p->epoch);
	img_put_le32(sb + EROFS_SB_BLOCKS, (uint32_t)p->blocks);
	img_put_le32(sb + EROFS_SB_META_BLKADDR, 0);
	memcpy(sb + EROFS_SB_UUID, p->uuid, 16);
	memcpy(sb + EROFS_SB_VOLUME_NAME, p->label, strlen(p->label));
	/* CRC32C from the superblock to the end of block 0, checksum field
	 * zero, seed ~0 and no final xor (formats.md 1.3). */
	img_put_le32(sb + EROFS_SB_CHECKSUM, 0);
	img_put_le32(sb + EROFS_SB_CHECKSUM,
	             img_crc32c(0xFFFFFFFFu, sb, EROFS_BLKSZ - EROFS_SB_OFFSET));
}

/* ---- the device's plan ------------------------------------------------ */

/* Ranges handed to img_dev_plan() merged while they touch: [start, end). */
struct plan_span {
	struct img_dev *dev;
	uint64_t start, end;
};

/* [off, end) will be written; what the span covers already is dropped. */
static int span_add(struct plan_span *s, uint64_t off, uint64_t end)
{
	int r = 0;

	off = IMG_MAX(off, s->end);
	if (off >= end)
		return 0;
	if (off > s->end) {
		if (s->end > s->start)
			r = img_dev_plan(s->dev, s->start, s->end - s->start);
		s->start = off;
	}
	s->end = end;
	return r;
}

/* Sources of at least this size are probed for holes (as dev.c copies them). */
#define PLAN_HOLE_PROBE (256u << 10)

/*
 * A file's data blocks: only the data segments of a sparse source (the
 * copy turns its holes into write_zeroes, which write nothing), each
 * widened to whole blocks, and the last block, whose padding emit writes.
 * The probe moves the descriptor's position, which a shared one (a tar's)
 * keeps: it is put back.
 */
static int plan_file(struct img_ctx *ctx, const struct img_erofs_plan *p, struct img_node *n,
                     struct plan_span *s)
{
	const struct img_erofs_inode *e = &p->inode[n->seq];
	uint64_t body = n->size - e->tail, at = (uint64_t)e->startblk * EROFS_BLKSZ, pos = 0;
	struct img_node_reader rd;
	struct stat st;
	off_t keep;
	int r;

	if (!body)
		return 0;
	if (body < PLAN_HOLE_PROBE ||
	    (n->data.kind != IMG_DATA_PATH && n->data.kind != IMG_DATA_FD))
		return span_add(s, at, at + (uint64_t)e->nblocks * EROFS_BLKSZ);
	r = img_node_reader_open(ctx, n, &rd);
	if (r < 0)
		return r;
	keep = lseek(rd.fd, 0, SEEK_CUR);
	while (r >= 0 && pos < body) {
		off_t d = fstat(rd.fd, &st) == 0 && S_ISREG(st.st_mode)
		              ? lseek(rd.fd, (off_t)(rd.base + pos), SEEK_DATA)
		              : -1;
		uint64_t ds, he;

		if (d < 0 && errno == ENXIO)
			break; /* a hole to the end */
		if (d < 0) {
			r = span_add(s, at + (pos & ~(uint64_t)(EROFS_BLKSZ - 1)),
			             at + IMG_ALIGN_UP(body, (uint64_t)EROFS_BLKSZ));
			break; /* no hole support: all of it */
		}
		ds = (uint64_t)d - rd.base;
		if (ds >= body)
			break;
		d = lseek(rd.fd, d, SEEK_HOLE);
		he = d < 0 ? body : IMG_MIN((uint64_t)d - rd.base, body);
		r = span_add(s, at + (ds & ~(uint64_t)(EROFS_BLKSZ - 1)),
		             at + IMG_ALIGN_UP(he, (uint64_t)EROFS_BLKSZ));
		pos = IMG_MAX(he, ds + 1);
	}
	if (keep >= 0)
		lseek(rd.fd, keep, SEEK_SET);
	img_node_reader_close(&rd);
	if (r >= 0 && body % EROFS_BLKSZ)
		r = span_add(s, at + (body & ~(uint64_t)(EROFS_BLKSZ - 1)),
		             at + IMG_ALIGN_UP(body, (uint64_t)EROFS_BLKSZ));
	return r;
}

int img_erofs_plan_writes(struct img_ctx *ctx, const struct img_erofs_plan *p, struct img_dev *dev)
{
	struct plan_span s = { .dev = dev };
	int r = span_add(&s, 0, EROFS_BLKSZ);

	/* File data in canonical order = block order, as emit writes it. */
	for (uint64_t i = 0; r >= 0 && i < p->tree->nodes; i++) {
		struct img_node *n = p->nodes[i];

		if (!n->link && n->type == IMG_NODE_REG)
			r = plan_file(ctx, p, n, &s);
	}
	/* Directory and symlink blocks, then the metadata: densely packed. */
	if (r >= 0)
		r = span_add(&s, p->other_start * EROFS_BLKSZ, p->blocks * EROFS_BLKSZ);
	if (r >= 0 && s.end > s.start)
		r = img_dev_plan(dev, s.start, s.end - s.start);
	return r;
}

int img_erofs_emit(struct img_ctx *ctx, struct img_erofs_plan *p, struct img_dev *dev,
                   unsigned flags)
{
	struct emit em = { .p = p, .dev = dev };
	uint8_t *blk0 = calloc(1, EROFS_BLKSZ), *blk = malloc(EROFS_BLKSZ);
	uint64_t nnodes = p->tree->nodes, cur = UINT64_MAX;
	int r = 0;

	em.tailbuf = malloc(EROFS_BLKSZ);
	em.genbuf = malloc(EROFS_BLKSZ);
	if (!blk0 || !blk || !em.tailbuf || !em.genbuf) {
		r = img_set_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	if (img_dev_size(dev) < img_erofs_plan_bytes(p)) {
		r = img_set_error(ctx, -ENOSPC, "erofs: the device holds %llu bytes, %llu needed",
		                  (unsigned long long)img_dev_size(dev),
		                  (unsigned long long)img_erofs_plan_bytes(p));
		goto out;
	}

	/*
	 * 0. Block 0: the superblock and what shares the block with it (the
	 * root inode, placed right after it), checksummed, first.
	 */
	for (size_t j = 0; j < p->ninodes; j++) {
		struct img_node *n = p->nodes[p->meta_order[j]];
		uint64_t off = p->inode[n->seq].nid * EROFS_SLOT;

		if (off >= EROFS_BLKSZ)
			break; /* meta_order is in nid order */
		r = put_meta(&em, n, blk0 + off);
		if (r < 0)
			goto out;
	}
	put_super(p, blk0);
	r = img_dev_write_data(dev, blk0, EROFS_BLKSZ, 0);
	if (r < 0)
		goto out;

	/* 1. File data, canonical order = block order. */
	img_progress_phase(ctx, "writing file data", p->tree->data_bytes, p->ninodes);
	for (uint64_t i = 0; i < nnodes && !(flags & IMG_EROFS_EMIT_NO_DATA); i++) {
		struct img_node *n = p->nodes[i];

		if (n->link || n->type != IMG_NODE_REG)
			continue;
		r = emit_file_data(&em, n);
		if (r < 0)
			goto out;
		img_progress_add(ctx, n->size, 1);
		/* after every file: a few big ones between checks took seconds */
		if ((r = img_check_cancel(ctx)) < 0)
			goto out;
	}

	/*
	 * 2. Directory blocks and long symlink targets, then 3. the metadata:
	 * every block is written once, so all go to the device as data
	 * (gathered into large direct writes), like the file data.
	 */
	for (uint64_t i = 0; i < nnodes; i++) {
		struct img_node *n = p->nodes[i];

		if (n->link || n->type == IMG_NODE_REG)
			continue;
		r = emit_other(&em, n, blk);
		if (r < 0)
			goto out;
	}

	/* Metadata blocks in nid order (block 0 is out already). */
	for (size_t j = 0; j < p->ninodes; j++) {
		struct img_node *n = p->nodes[p->meta_order[j]];
		uint64_t off = p->inode[n->seq].nid * EROFS_SLOT, b = off / EROFS_BLKSZ;

		if (b == 0)
			continue;
		if (b != cur) {
			if (cur != UINT64_MAX &&
			    (r = img_dev_write_data(dev, blk, EROFS_BLKSZ, cur * EROFS_BLKSZ)) < 0)
				goto out;
			memset(blk, 0, EROFS_BLKSZ);
			cur = b;
		}
		if (img_erofs_zmeta(p, n->seq)) {
			r = put_zmeta(&em, n, blk, &cur);
			if (r < 0)
				goto out;
			continue;
		}
		r = put_meta(&em, n, blk + off % EROFS_BLKSZ);
		if (r < 0)
			goto out;
	}
	if (cur != UINT64_MAX &&
	    (r = img_dev_write_data(dev, blk, EROFS_BLKSZ, cur * EROFS_BLKSZ)) < 0)
		goto out;
	r = img_dev_error(dev);
out:
	free(blk0);
	free(blk);
	free(em.tailbuf);
	free(em.genbuf);
	free(em.tails);
	free(em.tail_refs);
	return r;
}
