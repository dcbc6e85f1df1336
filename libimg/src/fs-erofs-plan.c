/*
 * fs-erofs-plan.c -- EROFS writer, phase 1: the whole layout from the tree.
 *
 * Spec: Linux Documentation/filesystems/erofs.rst and fs/erofs/erofs_fs.h
 * (inode forms, flat data layouts, directories). Decides
 * for every inode its form (compact or extended), data layout (FLAT_PLAIN,
 * FLAT_INLINE), data blocks and nid, in canonical order, before a byte is
 * written. The layout is described in fs-erofs-layout.h.
 */
#include <stdio.h>
#include <stdlib.h>

#include "fs-erofs-layout.h"
#include <img/repro.h>

/* --- directories: "." and ".." merged into the sorted children --------- */

static int name_less(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t n = alen < blen ? alen : blen;
	int c = memcmp(a, b, n);

	return c < 0 || (c == 0 && alen < blen);
}

void img_erofs_dir_init(struct img_erofs_dir_iter *it, struct img_node *dir)
{
	size_t d = 0, dd = 0;

	/* Children are sorted: count those before "." and before "..". */
	while (d < dir->nchildren &&
	       name_less(dir->children[d]->name, dir->children[d]->name_len, ".", 1))
		d++;
	dd = d;
	while (dd < dir->nchildren &&
	       name_less(dir->children[dd]->name, dir->children[dd]->name_len, "..", 2))
		dd++;
	it->dir = dir;
	it->dot = d;
	it->dotdot = dd + 1;
	it->i = 0;
	it->count = dir->nchildren + 2;
}

/* The next entry in on-disk order; 0 at the end. */
int img_erofs_dir_next(struct img_erofs_dir_iter *it, const char **name, size_t *len,
                       struct img_node **target)
{
	size_t i = it->i, c;

	if (i >= it->count)
		return 0;
	it->i++;
	if (i == it->dot) {
		*name = ".";
		*len = 1;
		*target = it->dir;
		return 1;
	}
	if (i == it->dotdot) {
		*name = "..";
		*len = 2;
		*target = it->dir->parent ? it->dir->parent : it->dir;
		return 1;
	}
	c = i - (i > it->dot) - (i > it->dotdot);
	*name = it->dir->children[c]->name;
	*len = it->dir->children[c]->name_len;
	*target = it->dir->children[c];
	return 1;
}

/* i_size of a directory: entries never span blocks (1.7). */
static uint64_t dir_size(struct img_node *dir)
{
	struct img_erofs_dir_iter it;
	struct img_node *t;
	const char *name;
	size_t len;
	uint64_t full = 0, used = 0;

	img_erofs_dir_init(&it, dir);
	while (img_erofs_dir_next(&it, &name, &len, &t)) {
		if (used + EROFS_DIRENT_SIZE + len > EROFS_BLKSZ) {
			full++;
			used = 0;
		}
		used += EROFS_DIRENT_SIZE + len;
	}
	return full * EROFS_BLKSZ + used;
}

/* --- per inode ----------------------------------------------------------- */

uint64_t img_erofs_inode_size(struct img_node *n)
{
	switch (n->type) {
	case IMG_NODE_REG:
	case IMG_NODE_SYMLINK:
		return n->size;
	case IMG_NODE_DIR:
		return dir_size(n); /* recomputed: the plan asks twice, nothing is kept */
	default:
		return 0;
	}
}

static int plan_inode(struct img_erofs_plan *p, struct img_node *n, uint64_t *nid_root_end)
{
	struct img_erofs_inode *e = &p->inode[n->seq];
	uint64_t size = img_erofs_inode_size(n);
	uint64_t tail = size % EROFS_BLKSZ;
	int extended;

	/* Compact inodes have no time of their own: they show build_time. */
	extended = size > UINT32_MAX || n->uid > 0xFFFF || n->gid > 0xFFFF || n->nlink > 0xFFFF ||
	           n->mtime != p->epoch;
	e->isize = extended ? EROFS_EXTENDED_SIZE : EROFS_COMPACT_SIZE;
	e->startblk = EROFS_NULL_ADDR;
	e->tail = 0;
	e->layout = EROFS_INODE_FLAT_PLAIN;
	e->nblocks = 0;
	if (n->type != IMG_NODE_REG && n->type != IMG_NODE_DIR && n->type != IMG_NODE_SYMLINK)
		return 0;
	if (size == 0) {
		e->startblk = 0;
		return 0;
	}
	/* A tail is inlined when inode + tail fit one block (never across a
	 * boundary); for the root that block is block 0 after the superblock. */
	if (tail && (n->parent ? img_erofs_body_bytes(size, e->isize) != size
	                       : *nid_root_end + e->isize + tail <= EROFS_BLKSZ)) {
		e->tail = (uint16_t)tail;
		e->layout = EROFS_INODE_FLAT_INLINE;
		e->nblocks = size / EROFS_BLKSZ;
	} else {
		e->nblocks = IMG_DIV_ROUND_UP(size, EROFS_BLKSZ);
	}
	return 0;
}

/* --- metadata packing: best fit over partly used blocks ------------------ */

#define SLOTS_PER_BLOCK (EROFS_BLKSZ / EROFS_SLOT)

struct bucket {
	uint64_t *blk;
	size_t n, cap;
};

static int bucket_push(struct bucket *b, uint64_t blk)
{
	if (b->n == b->cap) {
		size_t ncap = b->cap ? b->cap * 2 : 16;
		uint64_t *nb = realloc(b->blk, ncap * sizeof(*nb));

		if (!nb)
			return -ENOMEM;
		b->blk = nb;
		b->cap = ncap;
	}
	b->blk[b->n++] = blk;
	return 0;
}

struct packer {
	struct bucket free[SLOTS_PER_BLOCK]; /* by free slots */
	uint64_t nblocks;                    /* metadata blocks opened */
};

/*
 * Place @slots slots; returns the slot index relative to the metadata area.
 * A record over one block (a compressed file's indexes) starts a run of new
 * blocks; what is left of its last block is free for others.
 */
static int pack(struct packer *k, uint64_t slots, uint64_t *slot_out)
{
	if (slots > SLOTS_PER_BLOCK) {
		uint64_t nb = IMG_DIV_ROUND_UP(slots, SLOTS_PER_BLOCK);
		unsigned left = (unsigned)(nb * SLOTS_PER_BLOCK - slots);

		*slot_out = k->nblocks * SLOTS_PER_BLOCK;
		k->nblocks += nb;
		if (left && bucket_push(&k->free[left], k->nblocks - 1) < 0)
			return -ENOMEM;
		return 0;
	}
	for (unsigned f = (unsigned)slots; f < SLOTS_PER_BLOCK; f++) {
		struct bucket *b = &k->free[f];

		if (b->n) {
			uint64_t blk = b->blk[--b->n];

			*slot_out = blk * SLOTS_PER_BLOCK + (SLOTS_PER_BLOCK - f);
			if (f - slots && bucket_push(&k->free[f - slots], blk) < 0)
				return -ENOMEM;
			return 0;
		}
	}
	*slot_out = k->nblocks * SLOTS_PER_BLOCK;
	if (slots < SLOTS_PER_BLOCK &&
	    bucket_push(&k->free[SLOTS_PER_BLOCK - slots], k->nblocks) < 0)
		return -ENOMEM;
	k->nblocks++;
	return 0;
}

static int collect(void *user, struct img_node *n, unsigned depth)
{
	struct img_erofs_plan *p = user;

	(void)depth;
	p->nodes[n->seq] = n;
	return 0;
}

static int cmp_nid(const void *a, const void *b, void *user)
{
	const struct img_erofs_plan *p = user;
	uint64_t x = p->inode[*(const uint32_t *)a].nid, y = p->inode[*(const uint32_t *)b].nid;

	return x < y ? -1 : x > y;
}

void img_erofs_plan_free(struct img_erofs_plan *p)
{
	if (!p)
		return;
	for (uint64_t i = 0; p->zindex && i < p->tree->nodes; i++)
		free(p->zindex[i]);
	free(p->zindex);
	free(p->zmeta);
	free(p->links);
	free(p->nodes);
	free(p->inode);
	free(p->meta_order);
	free(p);
}

static int too_big(struct img_ctx *ctx)
{
	return img_set_error(ctx, -EFBIG,
	                     "the EROFS image would exceed 2^32 blocks of 4 KiB (16 TiB)");
}

int img_erofs_plan(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *opts,
                   struct img_erofs_plan **out)
{
	struct img_erofs_plan *p;
	const char *label = opts && opts->label ? opts->label : "nix-store";
	uint64_t nnodes = tree->nodes, root_end;
	int r;

	if (!tree->finished)
		return img_set_error(ctx, -EINVAL, "erofs: the tree is not finished");
	if (strlen(label) > EROFS_LABEL_MAX)
		return img_set_error(ctx, -EINVAL, "erofs: label '%s' is longer than %u bytes",
		                     label, EROFS_LABEL_MAX);
	p = img_malloc0(sizeof(*p));
	if (!p)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	p->ctx = ctx;
	p->tree = tree;
	p->epoch = img_repro_epoch(ctx);
	snprintf(p->label, sizeof(p->label), "%s", label);
	if (opts && opts->uuid)
		memcpy(p->uuid, opts->uuid, 16);
	else
		img_repro_uuid(ctx, opts && opts->id_role ? opts->id_role : "erofs-uuid", p->uuid);
	p->nodes = calloc(nnodes, sizeof(*p->nodes));
	p->inode = calloc(nnodes, sizeof(*p->inode));
	p->meta_order = calloc(tree->inodes ? tree->inodes : 1, sizeof(*p->meta_order));
	if (!p->nodes || !p->inode || !p->meta_order) {
		r = img_set_error(ctx, -ENOMEM, "out of memory");
		goto fail;
	}
	r = img_tree_walk(tree, collect, p);
	if (r < 0)
		goto fail;

	/* Sizes, forms and layouts. */
	root_end = EROFS_SB_OFFSET + EROFS_SB_SIZE;
	if (tree->nodes > tree->inodes &&
	    !(p->links = calloc(tree->nodes - tree->inodes, sizeof(*p->links)))) {
		r = img_set_error(ctx, -ENOMEM, "out of memory");
		goto fail;
	}
	for (uint64_t i = 0; i < nnodes; i++) {
		struct img_node *n = p->nodes[i];

		if (n->link) {
			if (p->nlinks == tree->nodes - tree->inodes) {
				r = img_set_error(ctx, -EIO,
				                  "erofs: more links than the tree counted");
				goto fail;
			}
			p->links[p->nlinks++] = (uint32_t)i;
			continue;
		}
		plan_inode(p, n, &root_end);
	}
	r = img_erofs_plan_layout(p);
	if (r < 0)
		goto fail;
	*out = p;
	return 0;
fail:
	img_erofs_plan_free(p);
	return r;
}

int img_erofs_plan_layout(struct img_erofs_plan *p)
{
	struct img_ctx *ctx = p->ctx;
	uint64_t nnodes = p->tree->nodes, blk;
	struct packer k;
	size_t mo = 0;
	int r;

	memset(&k, 0, sizeof(k));
	/* File data from block 1 in canonical order, then directories and
	 * long symlinks. */
	blk = 1;
	p->data_start = blk;
	for (uint64_t i = 0; i < nnodes; i++) {
		struct img_node *n = p->nodes[i];
		struct img_erofs_inode *e = &p->inode[i];

		if (n->link || n->type != IMG_NODE_REG || !e->nblocks)
			continue;
		e->startblk = blk;
		if (img_add_overflow(blk, e->nblocks, &blk) || blk > UINT32_MAX) {
			r = too_big(ctx);
			goto fail;
		}
	}
	p->data_blocks = blk - p->data_start;
	p->other_start = blk;
	for (uint64_t i = 0; i < nnodes; i++) {
		struct img_node *n = p->nodes[i];
		struct img_erofs_inode *e = &p->inode[i];

		if (n->link || n->type == IMG_NODE_REG || !e->nblocks)
			continue;
		e->startblk = blk;
		blk += e->nblocks;
		if (blk > UINT32_MAX) {
			r = too_big(ctx);
			goto fail;
		}
	}
	p->meta_start = blk;

	/* nids: root right after the superblock (a u16), the rest best fit. */
	for (uint64_t i = 0; i < nnodes; i++) {
		struct img_node *n = p->nodes[i];
		struct img_erofs_inode *e = &p->inode[i];
		uint64_t slot;

		if (n->link)
			continue;
		if (!n->parent) {
			e->nid = (EROFS_SB_OFFSET + EROFS_SB_SIZE) / EROFS_SLOT;
		} else {
			uint64_t need = IMG_DIV_ROUND_UP(
			    (uint64_t)e->isize + e->tail + img_erofs_zmeta(p, i), EROFS_SLOT);

			if (pack(&k, need, &slot) < 0) {
				r = img_set_error(ctx, -ENOMEM, "out of memory");
				goto fail;
			}
			e->nid = p->meta_start * SLOTS_PER_BLOCK + slot;
		}
		p->meta_order[mo++] = (uint32_t)i; /* seqs are 32 bits (tree.h) */
	}
	p->ninodes = mo;
	if (img_add_overflow(p->meta_start, k.nblocks, &p->blocks) || p->blocks > UINT32_MAX) {
		r = too_big(ctx);
		goto fail;
	}
	qsort_r(p->meta_order, p->ninodes, sizeof(*p->meta_order), cmp_nid, p);
	r = 0;
fail:
	for (unsigned f = 0; f < SLOTS_PER_BLOCK; f++)
		free(k.free[f].blk);
	return r;
}

int img_erofs_map(const struct img_erofs_plan *p, struct img_node *node, uint64_t off, uint64_t len,
                  struct img_erofs_extent ext[2])
{
	const struct img_erofs_inode *e = img_erofs_inode_of(p, node);
	uint64_t size = img_node_inode(node)->size, body = size - e->tail, end;
	int n = 0;

	if (img_add_overflow(off, len, &end) || end > size)
		return -EINVAL;
	if (off < body) {
		uint64_t l = IMG_MIN(end, body) - off;

		ext[n++] = (struct img_erofs_extent){ off, e->startblk * EROFS_BLKSZ + off, l };
		off += l;
	}
	if (off < end)
		ext[n++] =
		    (struct img_erofs_extent){ off, e->nid * EROFS_SLOT + e->isize + (off - body),
			                       end - off };
	return n;
}

int img_erofs_write_data(const struct img_erofs_plan *p, struct img_dev *dev, struct img_node *node,
                         uint64_t off, const void *buf, size_t len)
{
	struct img_erofs_extent ext[2];
	int n = img_erofs_map(p, node, off, len, ext);

	if (n < 0)
		return img_set_error(p->ctx, n, "erofs: data beyond the end of '%s'", node->name);
	for (int i = 0; i < n; i++) {
		int r = img_dev_pwrite(dev, (const uint8_t *)buf + (ext[i].file_off - off),
		                       (size_t)ext[i].len, ext[i].dev_off);

		if (r < 0)
			return r;
	}
	return 0;
}
