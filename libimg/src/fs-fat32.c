/*
 * fs-fat32.c -- a FAT32 writer for EFI System Partitions: plan, then emit.
 *
 * Spec: Microsoft FAT specification (fatgen103): BPB, FSInfo, FAT, 8.3 and
 * long-name directory entries; formats.md section 3 for the geometry
 * mkfs.fat uses and what EDK2 (OVMF) and fsck.fat accept.
 *
 * Plan: name every entry (8.3 + long name) directory by directory, count
 * directory entries, choose the geometry from the volume size (at least
 * 65,525 clusters: fewer makes EDK2 read it as FAT16 and refuse it), then
 * give every node a contiguous run of clusters in depth-first tree order
 * (the root first, at cluster 2). Emit: boot sector, FSInfo and their
 * backups, both FATs, then directories and file data in that same order;
 * file data moves with img_node_copy_data (in-kernel where possible).
 *
 * Determinism: children arrive sorted bytewise; ~N tails come from a
 * counter per basis, not from a hash of the clock; every time is the node's
 * (normalised) mtime in UTC, clamped to 1980..2107; the volume ID comes
 * from repro.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tree-private.h"
#include "fs-fat32.h"
#include "fs-private.h"
#include "ondisk/fat.h"
#include <img/repro.h>
#include <img/tree.h>

/* ---- names ------------------------------------------------------------- */

struct fat_child {
	uint8_t shortname[11];
	uint8_t nlfn;  /* long-name slots (0: the short name is the name) */
	uint16_t *lfn; /* UTF-16 name, NULL when nlfn == 0 */
	uint16_t lfn_len;
};

struct fat_dir {
	struct fat_child *c; /* one per child, same order */
	uint64_t nentries;   /* directory entries incl. ".", ".." / the label */
};

/* A set of 11-byte short names with a counter, open addressing. */
struct name_set {
	uint8_t (*keys)[12]; /* [11] = 1 when used */
	uint32_t *val;
	size_t cap, n;
};

static uint64_t hash11(const uint8_t *k)
{
	uint64_t h = 1469598103934665603ull;

	for (int i = 0; i < 11; i++)
		h = (h ^ k[i]) * 1099511628211ull;
	return h;
}

static int set_init(struct name_set *s, size_t n)
{
	s->cap = 16;
	while (s->cap < 2 * n + 2)
		s->cap *= 2;
	s->keys = calloc(s->cap, sizeof(*s->keys));
	s->val = calloc(s->cap, sizeof(*s->val));
	s->n = 0;
	return s->keys && s->val ? 0 : -ENOMEM;
}

static void set_free(struct name_set *s)
{
	free(s->keys);
	free(s->val);
}

/* The slot of @k: either holding it, or the empty one where it goes. */
static size_t set_slot(const struct name_set *s, const uint8_t *k)
{
	size_t i = hash11(k) & (s->cap - 1);

	while (s->keys[i][11] && memcmp(s->keys[i], k, 11))
		i = (i + 1) & (s->cap - 1);
	return i;
}

static int set_has(const struct name_set *s, const uint8_t *k)
{
	return s->keys[set_slot(s, k)][11];
}

/* Insert (or update) @k with @v. The caller sized the set for every key. */
static void set_put(struct name_set *s, const uint8_t *k, uint32_t v)
{
	size_t i = set_slot(s, k);

	if (!s->keys[i][11]) {
		memcpy(s->keys[i], k, 11);
		s->keys[i][11] = 1;
		s->n++;
	}
	s->val[i] = v;
}

static uint32_t set_get(const struct name_set *s, const uint8_t *k)
{
	size_t i = set_slot(s, k);

	return s->keys[i][11] ? s->val[i] : 0;
}

static int short_char_ok(uint8_t c)
{
	if (c >= 'A' && c <= 'Z')
		return 1;
	if (c >= '0' && c <= '9')
		return 1;
	return c && strchr("!#$%&'()-@^_`{}~", c) != NULL;
}

/* Is @name already a valid upper-case 8.3 name? Then it needs no long name. */
static int exact_short(const char *name, size_t len, uint8_t out[11])
{
	const char *dot = memchr(name, '.', len);
	size_t blen = dot ? (size_t)(dot - name) : len, elen = dot ? len - blen - 1 : 0;

	if (blen < 1 || blen > 8 || (dot && (elen < 1 || elen > 3)))
		return 0;
	memset(out, ' ', 11);
	for (size_t i = 0; i < blen; i++) {
		if (!short_char_ok((uint8_t)name[i]))
			return 0;
		out[i] = (uint8_t)name[i];
	}
	for (size_t i = 0; i < elen; i++) {
		if (!short_char_ok((uint8_t)dot[1 + i]))
			return 0;
		out[8 + i] = (uint8_t)dot[1 + i];
	}
	return 1;
}

/*
 * The basis name (fatgen103 "Basis-Name Generation"): upper case, spaces
 * and leading dots dropped, invalid characters as '_', 8 characters of the
 * part before the last dot and 3 of the part after it. Returns whether the
 * conversion lost nothing but case.
 */
static int basis_name(const char *name, size_t len, uint8_t out[11], size_t *blen)
{
	const char *last_dot = NULL;
	size_t start = 0, bi = 0, ei = 0;
	int lossless = 1;

	memset(out, ' ', 11);
	while (start < len && name[start] == '.')
		start++, lossless = 0;
	for (size_t i = start; i < len; i++)
		if (name[i] == '.')
			last_dot = name + i;
	for (size_t i = start; i < len; i++) {
		uint8_t c = (uint8_t)name[i];
		int ext = last_dot && name + i > last_dot;

		if (name + i == last_dot)
			continue;
		if (c == ' ' || c == '.') {
			lossless = 0;
			continue;
		}
		if (c >= 'a' && c <= 'z')
			c = (uint8_t)(c - 'a' + 'A');
		else if (!short_char_ok(c))
			c = '_', lossless = 0;
		if (ext) {
			if (ei < 3)
				out[8 + ei++] = c;
			else
				lossless = 0;
		} else {
			if (bi < 8)
				out[bi++] = c;
			else
				lossless = 0;
		}
	}
	if (bi == 0) {
		out[0] = '_';
		bi = 1;
		lossless = 0;
	}
	*blen = bi;
	return lossless;
}

/* UTF-8 -> UTF-16 long name. -EILSEQ for invalid UTF-8, -ENAMETOOLONG over 255 units. */
static int to_utf16(const char *name, size_t len, uint16_t *out, uint16_t *olen)
{
	size_t n = 0;

	for (size_t i = 0; i < len;) {
		uint8_t c = (uint8_t)name[i];
		uint32_t cp;
		size_t k;

		if (c < 0x80)
			cp = c, k = 1;
		else if ((c & 0xE0) == 0xC0)
			cp = c & 0x1F, k = 2;
		else if ((c & 0xF0) == 0xE0)
			cp = c & 0x0F, k = 3;
		else if ((c & 0xF8) == 0xF0)
			cp = c & 0x07, k = 4;
		else
			return -EILSEQ;
		if (i + k > len)
			return -EILSEQ;
		for (size_t j = 1; j < k; j++) {
			if (((uint8_t)name[i + j] & 0xC0) != 0x80)
				return -EILSEQ;
			cp = cp << 6 | ((uint8_t)name[i + j] & 0x3F);
		}
		if ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) ||
		    cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return -EILSEQ;
		i += k;
		if (cp >= 0x10000) {
			if (n + 2 > FAT_LFN_MAX)
				return -ENAMETOOLONG;
			cp -= 0x10000;
			out[n++] = (uint16_t)(0xD800 | cp >> 10);
			out[n++] = (uint16_t)(0xDC00 | (cp & 0x3FF));
		} else {
			if (n + 1 > FAT_LFN_MAX)
				return -ENAMETOOLONG;
			out[n++] = (uint16_t)cp;
		}
	}
	*olen = (uint16_t)n;
	return 0;
}

static int bad_long_char(uint8_t c)
{
	return c < 0x20 || strchr("\"*/:<>?\\|", c) != NULL;
}

static void free_dir(struct fat_dir *d, size_t n)
{
	if (!d)
		return;
	for (size_t i = 0; d->c && i < n; i++)
		free(d->c[i].lfn);
	free(d->c);
	free(d);
}

/* Put the ~N tail on @basis (base part @blen chars) into @out. */
static void with_tail(const uint8_t basis[11], size_t blen, uint32_t n, uint8_t out[11])
{
	char tail[12];
	int tl = snprintf(tail, sizeof(tail), "~%u", n);
	size_t keep = IMG_MIN(blen, 8 - (size_t)tl);

	memcpy(out, basis, 11);
	memset(out, ' ', 8);
	memcpy(out, basis, keep);
	memcpy(out + keep, tail, (size_t)tl);
}

/* Upper-case ASCII copy of a name in @buf, for the case-insensitive duplicate check. */
static int cmp_ci(const void *a, const void *b)
{
	const struct img_node *x = *(struct img_node *const *)a, *y = *(struct img_node *const *)b;
	size_t n = IMG_MIN(x->name_len, y->name_len);

	for (size_t i = 0; i < n; i++) {
		int cx = (unsigned char)x->name[i], cy = (unsigned char)y->name[i];

		if (cx >= 'a' && cx <= 'z')
			cx -= 32;
		if (cy >= 'a' && cy <= 'z')
			cy -= 32;
		if (cx != cy)
			return cx - cy;
	}
	return (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static int name_error(struct img_ctx *ctx, const struct img_node *n, int err, const char *why)
{
	char path[4096];

	if (img_node_path(n, path, sizeof(path)) < 0)
		snprintf(path, sizeof(path), "%s", n->name);
	return img_set_error(ctx, err, "fat32: /%s: %s", path, why);
}

/* Name the children of @dir; attach a struct fat_dir to its writer scratch (priv). */
/* Every directory's names (struct fat_dir), by node seq: name_all() to unname(). */
struct fat_names {
	struct img_ctx *ctx;
	struct fat_dir **dir;
};

static int name_dir(struct fat_names *nm, struct img_node *dir, int is_root)
{
	struct img_ctx *ctx = nm->ctx;
	struct fat_dir *d = calloc(1, sizeof(*d));
	struct name_set used = { 0 }, counters = { 0 };
	struct img_node **sorted = NULL;
	uint16_t buf[FAT_LFN_MAX];
	size_t n = dir->nchildren;
	int r = -ENOMEM;

	if (!d)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	d->c = calloc(n ? n : 1, sizeof(*d->c));
	if (!d->c || set_init(&used, n) < 0 || set_init(&counters, n) < 0)
		goto oom;
	/* FAT compares names without case: two that differ only in case collide. */
	sorted = malloc((n ? n : 1) * sizeof(*sorted));
	if (!sorted)
		goto oom;
	memcpy(sorted, dir->children, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), cmp_ci);
	for (size_t i = 1; i < n; i++)
		if (!cmp_ci(&sorted[i - 1], &sorted[i])) {
			char msg[600];

			snprintf(msg, sizeof(msg),
			         "differs from '%s' only in case; FAT cannot hold both",
			         sorted[i - 1]->name);
			r = name_error(ctx, sorted[i], -EEXIST, msg);
			goto fail;
		}

	/* Pass 1: names that are exact 8.3 names keep them (nobody's tail may take them). */
	for (size_t i = 0; i < n; i++) {
		struct img_node *c = dir->children[i];

		if (exact_short(c->name, c->name_len, d->c[i].shortname))
			set_put(&used, d->c[i].shortname, 1);
		else
			d->c[i].shortname[0] = 0;
	}
	/* Pass 2: everything else gets a long name and a generated short name. */
	d->nentries = is_root ? 1 : 2;
	for (size_t i = 0; i < n; i++) {
		struct img_node *c = dir->children[i];
		struct fat_child *fc = &d->c[i];
		uint8_t basis[11], cand[11];
		size_t blen;
		uint32_t k;
		int lossless;

		if (fc->shortname[0]) {
			d->nentries++;
			continue;
		}
		for (size_t j = 0; j < c->name_len; j++)
			if (bad_long_char((uint8_t)c->name[j])) {
				r = name_error(ctx, c, -EINVAL,
				               "the name holds a character FAT cannot store");
				goto fail;
			}
		if (c->name[c->name_len - 1] == '.' || c->name[c->name_len - 1] == ' ') {
			r = name_error(ctx, c, -EINVAL, "FAT names cannot end in a dot or a space");
			goto fail;
		}
		r = to_utf16(c->name, c->name_len, buf, &fc->lfn_len);
		if (r < 0) {
			r = name_error(ctx, c, r,
			               r == -EILSEQ ? "the name is not valid UTF-8"
			                            : "the name is longer than 255 UTF-16 units");
			goto fail;
		}
		fc->lfn = malloc(fc->lfn_len * sizeof(uint16_t));
		if (!fc->lfn)
			goto oom;
		memcpy(fc->lfn, buf, fc->lfn_len * sizeof(uint16_t));
		fc->nlfn = (uint8_t)IMG_DIV_ROUND_UP(fc->lfn_len, FAT_LFN_CHARS);
		lossless = basis_name(c->name, c->name_len, basis, &blen);
		if (lossless && !set_has(&used, basis)) {
			memcpy(fc->shortname, basis, 11);
		} else {
			/* Numeric tail: the smallest free N for this basis, remembering
			 * where the last search ended so big directories stay linear. */
			for (k = IMG_MAX(set_get(&counters, basis), 1u);; k++) {
				if (k > 999999) {
					r = name_error(ctx, c, -ENOSPC, "no free 8.3 alias left");
					goto fail;
				}
				with_tail(basis, blen, k, cand);
				if (!set_has(&used, cand))
					break;
			}
			set_put(&counters, basis, k + 1);
			memcpy(fc->shortname, cand, 11);
		}
		set_put(&used, fc->shortname, 1);
		d->nentries += 1u + fc->nlfn;
	}
	if (d->nentries > FAT_DIR_MAX_ENTRIES) {
		r = name_error(ctx, dir, -ENOSPC,
		               "the directory needs more than 65,536 FAT entries");
		goto fail;
	}
	set_free(&used);
	set_free(&counters);
	free(sorted);
	nm->dir[dir->seq] = d;
	return 0;
oom:
	r = img_set_error(ctx, -ENOMEM, "out of memory");
fail:
	set_free(&used);
	set_free(&counters);
	free(sorted);
	free_dir(d, n);
	return r;
}

static int name_visit(void *user, struct img_node *node, unsigned depth)
{
	struct fat_names *nm = user;
	struct img_ctx *ctx = nm->ctx;

	(void)depth;
	switch (node->type) {
	case IMG_NODE_DIR:
		return name_dir(nm, node, node->parent == NULL);
	case IMG_NODE_REG:
		if (img_node_inode(node)->size > 0xFFFFFFFFull)
			return name_error(ctx, node, -EFBIG,
			                  "FAT32 files are limited to 4 GiB - 1 byte");
		return 0;
	default:
		return name_error(ctx, node, -EINVAL,
		                  "FAT can hold only files and directories (not symlinks or "
		                  "devices)");
	}
}

static int unname_visit(void *user, struct img_node *node, unsigned depth)
{
	struct fat_names *nm = user;

	(void)depth;
	if (node->type == IMG_NODE_DIR && nm->dir[node->seq]) {
		free_dir(nm->dir[node->seq], node->nchildren);
		nm->dir[node->seq] = NULL;
	}
	return 0;
}

static void unname(struct img_tree *tree, struct fat_names *nm)
{
	if (!nm->dir)
		return;
	img_tree_walk(tree, unname_visit, nm);
	free(nm->dir);
	nm->dir = NULL;
}

static int name_all(struct img_ctx *ctx, struct img_tree *tree, struct fat_names *nm)
{
	int r;

	nm->ctx = ctx;
	nm->dir = NULL;
	if (!tree->root || tree->root->type != IMG_NODE_DIR)
		return img_set_error(ctx, -EINVAL, "fat32: the tree has no root directory");
	if (!tree->finished)
		return img_set_error(ctx, -EINVAL, "fat32: the tree is not finished");
	nm->dir = calloc(tree->nodes, sizeof(*nm->dir));
	if (!nm->dir)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	r = img_tree_walk(tree, name_visit, nm);
	if (r < 0)
		unname(tree, nm);
	return r;
}

/* ---- geometry ---------------------------------------------------------- */

struct geom {
	uint64_t sectors;  /* TotSec32 */
	uint32_t spc;      /* sectors per cluster */
	uint32_t reserved; /* sectors */
	uint32_t fatlen;   /* sectors per FAT */
	uint64_t clusters; /* data clusters */
	uint64_t data;     /* first data sector */
};

/* The FAT32 layout of @sectors with @spc sectors per cluster (mkfs.fat's arithmetic). */
static int geom_try(uint64_t sectors, uint32_t spc, struct geom *g)
{
	uint64_t clust, fatlen;

	if (sectors > 0xFFFFFFFFull)
		return -EFBIG; /* TotSec32 */
	g->sectors = sectors;
	g->spc = spc;
	g->reserved = (uint32_t)IMG_ALIGN_UP(FAT_RESERVED_MIN, spc);
	if (sectors <= g->reserved + 2)
		return -ENOSPC;
	clust =
	    ((sectors - g->reserved) * FAT_SECTOR + 2 * 8) / ((uint64_t)spc * FAT_SECTOR + 2 * 4);
	fatlen = IMG_ALIGN_UP(IMG_DIV_ROUND_UP((clust + 2) * 4, FAT_SECTOR), spc);
	if (g->reserved + 2 * fatlen >= sectors)
		return -ENOSPC;
	g->fatlen = (uint32_t)fatlen;
	g->clusters = (sectors - g->reserved - 2 * fatlen) / spc;
	g->data = g->reserved + 2 * fatlen;
	if (g->clusters + 2 > fatlen * FAT_SECTOR / 4)
		g->clusters = fatlen * FAT_SECTOR / 4 - 2;
	if (g->clusters > FAT_MAX_CLUSTERS)
		return -EFBIG;
	if (g->clusters < FAT_MIN_CLUSTERS)
		return -ENOSPC;
	return 0;
}

/* Cluster size as mkfs.fat -F 32 picks it, smaller when that leaves too few clusters. */
static int geom_pick(uint64_t bytes, struct geom *g)
{
	uint64_t sectors = bytes / FAT_SECTOR;
	uint32_t spc;
	int r;

	if (bytes <= (260ull << 20))
		spc = 1;
	else if (bytes <= (8ull << 30))
		spc = 8;
	else if (bytes <= (16ull << 30))
		spc = 16;
	else if (bytes <= (32ull << 30))
		spc = 32;
	else
		spc = 64;
	for (;;) {
		r = geom_try(sectors, spc, g);
		if (r == -EFBIG && spc < 128) {
			spc *= 2;
			continue;
		}
		if (r == -ENOSPC && spc > 1) {
			spc /= 2;
			continue;
		}
		return r;
	}
}

/* Clusters the named tree needs with @cs-byte clusters. */
struct count {
	uint64_t cs, clusters;
	struct fat_dir *const *dir;
};

static int count_visit(void *user, struct img_node *node, unsigned depth)
{
	struct count *c = user;

	(void)depth;
	if (node->type == IMG_NODE_DIR) {
		struct fat_dir *d = c->dir[node->seq];

		c->clusters += IMG_MAX(1, IMG_DIV_ROUND_UP(d->nentries * FAT_DIRENT, c->cs));
	} else {
		c->clusters += IMG_DIV_ROUND_UP(img_node_inode(node)->size, c->cs);
	}
	return 0;
}

static uint64_t count_clusters(struct img_tree *tree, const struct fat_names *nm, uint64_t cs)
{
	struct count c = { cs, 0, nm->dir };

	img_tree_walk(tree, count_visit, &c);
	return c.clusters;
}

#define MIB (1ull << 20)

static int fat_estimate(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *o,
                        uint64_t *size)
{
	struct geom g;
	struct fat_names nm;
	uint64_t bytes = 34 * MIB;
	int r = name_all(ctx, tree, &nm);

	if (r < 0)
		return r;
	for (;;) {
		uint64_t need;

		r = geom_pick(bytes, &g);
		if (r < 0) {
			unname(tree, &nm);
			return img_set_error(ctx, r, "fat32: no FAT32 geometry for %llu bytes",
			                     (unsigned long long)bytes);
		}
		need = count_clusters(tree, &nm, (uint64_t)g.spc * FAT_SECTOR) +
		       IMG_DIV_ROUND_UP(o->extra, (uint64_t)g.spc * FAT_SECTOR);
		if (need <= g.clusters)
			break;
		/* Grow by what is missing (plus FAT overhead), in whole MiB. */
		bytes +=
		    IMG_ALIGN_UP((need - g.clusters) * g.spc * FAT_SECTOR * 102 / 100 + 1, MIB);
	}
	unname(tree, &nm);
	*size = bytes;
	return 0;
}

/* ---- emit -------------------------------------------------------------- */

struct emit {
	struct img_ctx *ctx;
	struct img_dev *dev;
	struct geom g;
	uint64_t cs;   /* cluster bytes */
	uint32_t *fat; /* clusters + 2 entries */
	struct fat_names names;
	uint32_t *first; /* by node seq: the first cluster (0: none) */
	uint64_t next;   /* next free cluster */
	uint8_t *dirbuf;
	size_t dirbuf_len;
	uint8_t label[11]; /* as in the BPB; the root's volume label entry repeats it */
};

static uint64_t cluster_off(const struct emit *e, uint64_t cl)
{
	return (e->g.data + (cl - FAT_FIRST_CLUSTER) * e->g.spc) * FAT_SECTOR;
}

/* Give @node @n contiguous clusters and chain them in the FAT. */
static uint32_t alloc_run(struct emit *e, uint64_t n)
{
	uint64_t first = e->next;

	if (!n)
		return 0;
	for (uint64_t i = 0; i < n; i++)
		e->fat[first + i] = i + 1 < n ? (uint32_t)(first + i + 1) : FAT_EOC;
	e->next += n;
	return (uint32_t)first;
}

static int alloc_visit(void *user, struct img_node *node, unsigned depth)
{
	struct emit *e = user;
	uint64_t n;

	(void)depth;
	if (node->type == IMG_NODE_DIR) {
		struct fat_dir *d = e->names.dir[node->seq];

		n = IMG_MAX(1, IMG_DIV_ROUND_UP(d->nentries * FAT_DIRENT, e->cs));
	} else {
		n = IMG_DIV_ROUND_UP(img_node_inode(node)->size, e->cs);
	}
	e->first[node->seq] = alloc_run(e, n);
	return 0;
}

/* FAT time and date of @t (UTC), clamped to the range FAT can hold. */
static void fat_time(int64_t t, uint16_t *date, uint16_t *tm)
{
	struct tm b;
	time_t tt;

	if (t < 315532800) /* 1980-01-01 */
		t = 315532800;
	if (t > 4354819198ll) /* 2107-12-31 23:59:58 */
		t = 4354819198ll;
	tt = (time_t)t;
	gmtime_r(&tt, &b);
	*date = (uint16_t)((b.tm_year + 1900 - 1980) << 9 | (b.tm_mon + 1) << 5 | b.tm_mday);
	*tm = (uint16_t)(b.tm_hour << 11 | b.tm_min << 5 | b.tm_sec / 2);
}

static void put_short(uint8_t *de, const uint8_t name[11], uint8_t attr, uint32_t cluster,
                      uint32_t size, int64_t mtime)
{
	uint16_t date, tm;

	fat_time(mtime, &date, &tm);
	memcpy(de + FAT_DE_NAME, name, 11);
	de[FAT_DE_ATTR] = attr;
	de[FAT_DE_CRTTIMETENTH] = 0;
	img_put_le16(de + FAT_DE_CRTTIME, tm);
	img_put_le16(de + FAT_DE_CRTDATE, date);
	img_put_le16(de + FAT_DE_LSTACCDATE, date);
	img_put_le16(de + FAT_DE_FSTCLUSHI, (uint16_t)(cluster >> 16));
	img_put_le16(de + FAT_DE_WRTTIME, tm);
	img_put_le16(de + FAT_DE_WRTDATE, date);
	img_put_le16(de + FAT_DE_FSTCLUSLO, (uint16_t)cluster);
	img_put_le32(de + FAT_DE_FILESIZE, size);
}

static uint8_t lfn_checksum(const uint8_t name[11])
{
	uint8_t sum = 0;

	for (int i = 0; i < 11; i++)
		sum = (uint8_t)(((sum & 1) << 7) + (sum >> 1) + name[i]);
	return sum;
}

/* Long-name slots for @fc at @de (nlfn * 32 bytes), last part first. */
static void put_lfn(uint8_t *de, const struct fat_child *fc)
{
	static const uint8_t pos[13] = { 1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30 };
	uint8_t sum = lfn_checksum(fc->shortname);

	for (unsigned s = 0; s < fc->nlfn; s++) {
		unsigned ord = fc->nlfn - s; /* physical slot s holds part ord */
		uint8_t *slot = de + s * FAT_DIRENT;

		memset(slot, 0, FAT_DIRENT);
		slot[FAT_LFN_ORD] = (uint8_t)(ord | (s == 0 ? FAT_LFN_LAST : 0));
		slot[FAT_LFN_ATTR] = FAT_ATTR_LFN;
		slot[FAT_LFN_CHKSUM] = sum;
		for (unsigned i = 0; i < FAT_LFN_CHARS; i++) {
			size_t ci = (ord - 1) * FAT_LFN_CHARS + i;
			uint16_t ch;

			if (ci < fc->lfn_len)
				ch = fc->lfn[ci];
			else if (ci == fc->lfn_len)
				ch = 0; /* terminator, then 0xFFFF padding */
			else
				ch = 0xFFFF;
			img_put_le16(slot + pos[i], ch);
		}
	}
}

static int emit_dir(struct emit *e, struct img_node *dir)
{
	struct fat_dir *d = e->names.dir[dir->seq];
	uint64_t n = IMG_MAX(1, IMG_DIV_ROUND_UP(d->nentries * FAT_DIRENT, e->cs));
	size_t len = (size_t)(n * e->cs);
	uint8_t *de;

	if (len > e->dirbuf_len) {
		uint8_t *nb = realloc(e->dirbuf, len);

		if (!nb)
			return img_set_error(e->ctx, -ENOMEM, "out of memory");
		e->dirbuf = nb;
		e->dirbuf_len = len;
	}
	memset(e->dirbuf, 0, len);
	de = e->dirbuf;
	if (!dir->parent) {
		put_short(de, e->label, FAT_ATTR_VOLUME_ID, 0, 0, dir->mtime);
		de += FAT_DIRENT;
	} else {
		static const uint8_t dot[11] = ".          ", dotdot[11] = "..         ";
		uint32_t parent = dir->parent->parent ? e->first[dir->parent->seq] : 0;

		put_short(de, dot, FAT_ATTR_DIRECTORY, e->first[dir->seq], 0, dir->mtime);
		put_short(de + FAT_DIRENT, dotdot, FAT_ATTR_DIRECTORY, parent, 0,
		          dir->parent->mtime);
		de += 2 * FAT_DIRENT;
	}
	for (size_t i = 0; i < dir->nchildren; i++) {
		struct img_node *c = dir->children[i];
		struct fat_child *fc = &d->c[i];
		int isdir = c->type == IMG_NODE_DIR;

		put_lfn(de, fc);
		de += fc->nlfn * FAT_DIRENT;
		put_short(de, fc->shortname, isdir ? FAT_ATTR_DIRECTORY : FAT_ATTR_ARCHIVE,
		          e->first[c->seq], isdir ? 0 : (uint32_t)img_node_inode(c)->size,
		          c->mtime);
		de += FAT_DIRENT;
	}
	if ((uint64_t)(de - e->dirbuf) != d->nentries * FAT_DIRENT)
		return img_set_error(e->ctx, -EIO, "fat32: directory size differs from the plan");
	return img_dev_pwrite(e->dev, e->dirbuf, len, cluster_off(e, e->first[dir->seq]));
}

static int emit_visit(void *user, struct img_node *node, unsigned depth)
{
	struct emit *e = user;
	const struct img_node *ino = img_node_inode(node);
	uint64_t off, tail;
	int r;

	(void)depth;
	r = img_check_cancel(e->ctx);
	if (r < 0)
		return r;
	if (node->type == IMG_NODE_DIR) {
		r = emit_dir(e, node);
		img_progress_add(e->ctx, 0, 1);
		return r;
	}
	if (!ino->size) {
		img_progress_add(e->ctx, 0, 1);
		return 0;
	}
	off = cluster_off(e, e->first[node->seq]);
	r = img_node_copy_data(e->ctx, ino, 0, ino->size, e->dev, off);
	if (r < 0)
		return r;
	tail = IMG_ALIGN_UP(ino->size, e->cs) - ino->size;
	if (tail)
		r = img_dev_write_zeroes(e->dev, off + ino->size, tail);
	img_progress_add(e->ctx, ino->size, 1);
	return r;
}

static int emit_boot(struct emit *e, const struct img_fs_opts *o, uint32_t free_count,
                     uint32_t next_free)
{
	uint8_t *res = calloc(e->g.reserved, FAT_SECTOR), *bs, *fsi;
	char label[12];
	size_t ll;
	int r;

	if (!res)
		return img_set_error(e->ctx, -ENOMEM, "out of memory");
	bs = res;
	fsi = res + FAT_FSINFO_SECTOR * FAT_SECTOR;
	snprintf(label, sizeof(label), "%s", o->label && *o->label ? o->label : "NO NAME");
	ll = strlen(label);
	bs[0] = 0xEB;
	bs[1] = 0x58;
	bs[2] = 0x90;
	memcpy(bs + FAT_BS_OEM, "libimg  ", 8);
	img_put_le16(bs + FAT_BPB_BYTSPERSEC, FAT_SECTOR);
	bs[FAT_BPB_SECPERCLUS] = (uint8_t)e->g.spc;
	img_put_le16(bs + FAT_BPB_RSVDSECCNT, (uint16_t)e->g.reserved);
	bs[FAT_BPB_NUMFATS] = 2;
	bs[FAT_BPB_MEDIA] = 0xF8;
	img_put_le16(bs + FAT_BPB_SECPERTRK, 63);
	img_put_le16(bs + FAT_BPB_NUMHEADS, 255);
	img_put_le32(bs + FAT_BPB_HIDDSEC, 0);
	img_put_le32(bs + FAT_BPB_TOTSEC32, (uint32_t)e->g.sectors);
	img_put_le32(bs + FAT_BPB_FATSZ32, e->g.fatlen);
	img_put_le32(bs + FAT_BPB_ROOTCLUS, FAT_FIRST_CLUSTER);
	img_put_le16(bs + FAT_BPB_FSINFO, FAT_FSINFO_SECTOR);
	img_put_le16(bs + FAT_BPB_BKBOOTSEC, FAT_BACKUP_BOOT);
	bs[FAT_BS_DRVNUM] = 0x80;
	bs[FAT_BS_BOOTSIG] = 0x29;
	img_put_le32(bs + FAT_BS_VOLID,
	             img_repro_u32(e->ctx, o->id_role ? o->id_role : "fat-volume-id"));
	memset(bs + FAT_BS_VOLLAB, ' ', 11);
	memcpy(bs + FAT_BS_VOLLAB, label, ll);
	memcpy(e->label, bs + FAT_BS_VOLLAB, 11);
	memcpy(bs + FAT_BS_FILSYSTYPE, "FAT32   ", 8);
	/* Not bootable: hlt; jmp back to the hlt. */
	bs[FAT_BS_BOOTCODE] = 0xF4;
	bs[FAT_BS_BOOTCODE + 1] = 0xEB;
	bs[FAT_BS_BOOTCODE + 2] = 0xFD;
	bs[FAT_BS_SIGNATURE] = 0x55;
	bs[FAT_BS_SIGNATURE + 1] = 0xAA;
	img_put_le32(fsi + FAT_FSI_LEADSIG, FAT_FSI_LEADSIG_V);
	img_put_le32(fsi + FAT_FSI_STRUCSIG, FAT_FSI_STRUCSIG_V);
	img_put_le32(fsi + FAT_FSI_FREE_COUNT, free_count);
	img_put_le32(fsi + FAT_FSI_NXT_FREE, next_free);
	img_put_le32(fsi + FAT_FSI_TRAILSIG, FAT_FSI_TRAILSIG_V);
	memcpy(res + FAT_BACKUP_BOOT * FAT_SECTOR, bs, FAT_SECTOR);
	memcpy(res + (FAT_BACKUP_BOOT + 1) * FAT_SECTOR, fsi, FAT_SECTOR);
	r = img_dev_pwrite(e->dev, res, (size_t)e->g.reserved * FAT_SECTOR, 0);
	free(res);
	return r;
}

static int check_label(struct img_ctx *ctx, const char *label)
{
	size_t n;

	if (!label)
		return 0;
	n = strlen(label);
	if (n < 1 || n > 11)
		return img_set_error(ctx, -EINVAL, "fat32: label '%s' must be 1 to 11 characters",
		                     label);
	for (size_t i = 0; i < n; i++)
		if (!short_char_ok((uint8_t)label[i]) && label[i] != ' ')
			return img_set_error(ctx, -EINVAL,
			                     "fat32: label '%s': use upper-case letters, digits "
			                     "and _-",
			                     label);
	return 0;
}

static int fat_write(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *o,
                     struct img_dev *dev)
{
	struct emit e = { .ctx = ctx, .dev = dev };
	uint64_t need, fatbytes, end;
	uint8_t *fatbuf = NULL;
	int r;

	r = check_label(ctx, o->label);
	if (r < 0)
		return r;
	r = geom_pick(img_dev_size(dev), &e.g);
	if (r < 0)
		return img_set_error(ctx, r,
		                     "fat32: %llu MiB is too small for FAT32 (at least %u "
		                     "clusters are needed; give 33 MiB or more)",
		                     (unsigned long long)(img_dev_size(dev) >> 20),
		                     FAT_MIN_CLUSTERS);
	e.cs = (uint64_t)e.g.spc * FAT_SECTOR;
	r = name_all(ctx, tree, &e.names);
	if (r < 0)
		return r;
	need = count_clusters(tree, &e.names, e.cs);
	if (need > e.g.clusters) {
		uint64_t est = 0;

		unname(tree, &e.names);
		fat_estimate(ctx, tree, o, &est);
		return img_set_error(ctx, -ENOSPC,
		                     "fat32: the content needs %llu clusters of %llu bytes but "
		                     "%llu MiB hold %llu: make the partition at least %llu MiB "
		                     "(--boot-size)",
		                     (unsigned long long)need, (unsigned long long)e.cs,
		                     (unsigned long long)(img_dev_size(dev) >> 20),
		                     (unsigned long long)e.g.clusters,
		                     (unsigned long long)IMG_DIV_ROUND_UP(est, MIB));
	}
	e.fat = calloc(e.g.clusters + 2, sizeof(uint32_t));
	e.first = calloc(tree->nodes, sizeof(*e.first));
	if (!e.fat || !e.first) {
		r = img_set_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	e.fat[0] = FAT_ENTRY0;
	e.fat[1] = FAT_ENTRY1;
	e.next = FAT_FIRST_CLUSTER;
	img_tree_walk(tree, alloc_visit, &e);
	if (e.next - FAT_FIRST_CLUSTER != need || e.first[tree->root->seq] != FAT_FIRST_CLUSTER) {
		r = img_set_error(ctx, -EIO, "fat32: allocation differs from the plan");
		goto out;
	}

	r = emit_boot(&e, o, (uint32_t)(e.g.clusters - need),
	              need < e.g.clusters ? (uint32_t)e.next : 0xFFFFFFFFu);
	if (r < 0)
		goto out;
	fatbytes = (uint64_t)e.g.fatlen * FAT_SECTOR;
	fatbuf = calloc(1, fatbytes);
	if (!fatbuf) {
		r = img_set_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	for (uint64_t i = 0; i < e.g.clusters + 2; i++)
		img_put_le32(fatbuf + 4 * i, e.fat[i]);
	for (int k = 0; k < 2 && r == 0; k++)
		r = img_dev_pwrite(dev, fatbuf, fatbytes,
		                   ((uint64_t)e.g.reserved + (uint64_t)k * e.g.fatlen) *
		                       FAT_SECTOR);
	if (r < 0)
		goto out;

	img_progress_phase(ctx, "fat32", tree->data_bytes, tree->nodes);
	r = img_tree_walk(tree, emit_visit, &e);
	if (r < 0)
		goto out;
	/* Free clusters and the tail past the last cluster read as zeros. */
	end = cluster_off(&e, e.next);
	if (end < img_dev_size(dev))
		r = img_dev_write_zeroes(dev, end, img_dev_size(dev) - end);
	if (r == 0)
		r = img_dev_error(dev);
out:
	unname(tree, &e.names);
	free(e.first);
	free(e.fat);
	free(fatbuf);
	free(e.dirbuf);
	return r;
}

int img_fat32_written_bytes(struct img_ctx *ctx, struct img_tree *tree, uint64_t size,
                            uint64_t *end)
{
	struct emit e = { .ctx = ctx };
	struct fat_names nm;
	uint64_t need;
	int r;

	*end = size; /* what cannot be worked out here, fat_write refuses */
	if (geom_pick(size, &e.g) < 0)
		return 0;
	r = name_all(ctx, tree, &nm);
	if (r < 0)
		return r;
	need = count_clusters(tree, &nm, (uint64_t)e.g.spc * FAT_SECTOR);
	unname(tree, &nm);
	if (need <= e.g.clusters)
		*end = cluster_off(&e, FAT_FIRST_CLUSTER + need);
	return 0;
}

void img_fat32_volume_id_str(const struct img_ctx *ctx, const char *role, char out[10])
{
	uint32_t id = img_repro_u32(ctx, role ? role : "fat-volume-id");

	snprintf(out, 10, "%04X-%04X", id >> 16, id & 0xFFFF);
}

static int fat_plan(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *opts,
                    struct img_fs_plan **out)
{
	return img_fs_plan_sized(&img_fs_fat32, ctx, tree, opts, out);
}

static void fat_volume_id(const struct img_fs_plan *plan, char *out, size_t len)
{
	char id[10];

	img_fat32_volume_id_str(plan->ctx, plan->opts.id_role, id);
	snprintf(out, len, "%s", id);
}

static int fat_emit(struct img_fs_plan *plan, struct img_dev *dev)
{
	return img_fs_emit_whole(&img_fs_fat32, plan, dev);
}

const struct img_fs_ops img_fs_fat32 = {
	.name = "vfat",
	.plan = fat_plan,
	.planned_size = img_fs_plan_size,
	.volume_id = fat_volume_id,
	.emit = fat_emit,
	.plan_free = img_fs_plan_free,
	.estimate = fat_estimate,
	.write = fat_write,
};
