/*
 * dev-qcow2-read.c -- reading existing qcow2 images (versions 2 and 3),
 * read-only: plain, zero-flagged, zlib- and zstd-compressed clusters, and
 * backing files when the caller allows them.
 *
 * Spec: qemu docs/interop/qcow2.txt ("Cluster mapping", "Compressed
 * Clusters Descriptor"). The input is
 * untrusted: the header is validated by qcow2_read_header(), every L1 entry
 * at open, every L2 entry when it is used; anything inconsistent is refused
 * with a message naming the file and what is wrong.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dev-qcow2-compress.h"
#include "dev-qcow2-header.h"

#define L2_CACHE 32

struct q2r {
	int fd;
	char *path;
	struct qcow2_hdr h;
	unsigned cb;
	uint64_t cs, l2_entries;
	uint64_t *l1; /* host byte order */
	struct {
		uint64_t idx; /* L1 index, UINT64_MAX when empty */
		uint8_t *tbl;
	} cache[L2_CACHE];
	struct img_dev *backing;
	struct qcow2_codec *codec;
	uint8_t *cbuf;     /* compressed bytes of one cluster */
	uint8_t *dbuf;     /* the last decompressed cluster ... */
	uint64_t dbuf_key; /* ... and its L2 entry (0 = none) */
};

static struct q2r *R(struct img_dev *dev)
{
	return img_dev_priv(dev);
}

enum kind { K_UNALLOC, K_ZERO, K_NORMAL, K_COMPRESSED };

static int corrupt(struct img_dev *dev, const char *fmt, unsigned long long a, unsigned long long b)
{
	char what[256];

	snprintf(what, sizeof(what), fmt, a, b);
	return img_set_error(img_dev_ctx(dev), -EINVAL, "%s: corrupt qcow2: %s", R(dev)->path,
	                     what);
}

static int load_l2(struct img_dev *dev, uint64_t i1, const uint8_t **tbl)
{
	struct q2r *q = R(dev);
	unsigned slot = (unsigned)(i1 % L2_CACHE);
	int e;

	if (q->cache[slot].idx == i1) {
		*tbl = q->cache[slot].tbl;
		return 0;
	}
	if (!q->cache[slot].tbl) {
		q->cache[slot].tbl = malloc((size_t)q->cs);
		if (!q->cache[slot].tbl)
			return img_set_error(img_dev_ctx(dev), -ENOMEM, "out of memory");
	}
	q->cache[slot].idx = UINT64_MAX;
	e = img_pread_full(q->fd, q->cache[slot].tbl, (size_t)q->cs, q->l1[i1]);
	if (e < 0)
		return img_set_error(img_dev_ctx(dev), e, "%s: reading an L2 table: %s", q->path,
		                     strerror(-e));
	q->cache[slot].idx = i1;
	*tbl = q->cache[slot].tbl;
	return 0;
}

/* What guest cluster @gc holds: its kind and L2 entry. */
static int classify(struct img_dev *dev, uint64_t gc, enum kind *kind, uint64_t *entry)
{
	struct q2r *q = R(dev);
	uint64_t i1 = gc / q->l2_entries, e, off;
	const uint8_t *tbl = NULL;
	int r;

	*kind = K_UNALLOC;
	*entry = 0;
	if (!q->l1[i1])
		return 0;
	r = load_l2(dev, i1, &tbl);
	if (r < 0)
		return r;
	e = img_get_be64(tbl + (gc % q->l2_entries) * 8);
	*entry = e;
	if (e & QCOW2_OFLAG_COMPRESSED) {
		if (e & QCOW2_OFLAG_COPIED)
			return corrupt(dev,
			               "compressed L2 entry 0x%llx for guest cluster %llu has "
			               "the COPIED bit",
			               e, gc);
		*kind = K_COMPRESSED;
		return 0;
	}
	if (e & QCOW2_L2_RESERVED & ~QCOW2_OFFSET_MASK_LOW)
		return corrupt(dev, "L2 entry 0x%llx for guest cluster %llu has reserved bits set",
		               e, gc);
	if (q->h.version >= 3 && (e & QCOW2_OFLAG_ZERO)) {
		*kind = K_ZERO;
		return 0;
	}
	off = e & QCOW2_OFFSET_MASK;
	if (!off && !(e & QCOW2_OFFSET_MASK_LOW))
		return 0;
	if (off % q->cs || (e & QCOW2_OFFSET_MASK_LOW))
		return corrupt(dev, "data cluster offset %llu (guest cluster %llu) is not aligned",
		               off, gc);
	if (off >= q->h.file_size)
		return corrupt(dev,
		               "data cluster offset %llu (guest cluster %llu) is past the end "
		               "of the file",
		               off, gc);
	if (off < q->cs)
		return corrupt(dev,
		               "data cluster offset %llu (guest cluster %llu) is inside the "
		               "header",
		               off, gc);
	*kind = K_NORMAL;
	return 0;
}

/* The cluster behind compressed entry @e, decompressed into q->dbuf. */
static int load_compressed(struct img_dev *dev, uint64_t e, uint64_t gc)
{
	struct q2r *q = R(dev);
	unsigned x = 62 - (q->cb - 8);
	uint64_t off = e & ((1ull << x) - 1);
	uint64_t nsec = (e >> x) & ((1ull << (q->cb - 8)) - 1);
	uint64_t end = (off & ~511ull) + (nsec + 1) * 512, len;
	int r;

	if (q->dbuf_key == e)
		return 0;
	if (off >= q->h.file_size || off < q->cs)
		return corrupt(dev,
		               "compressed cluster at %llu (guest cluster %llu) is outside "
		               "the file's data",
		               off, gc);
	end = IMG_MIN(end, q->h.file_size);
	len = end - off;
	if (!q->codec) {
		q->codec = qcow2_codec_new(q->h.compression_type, 0, 1);
		q->cbuf = malloc((size_t)(2 * q->cs + 512));
		q->dbuf = malloc((size_t)q->cs);
		if (!q->codec || !q->cbuf || !q->dbuf)
			return img_set_error(img_dev_ctx(dev), -ENOMEM, "out of memory");
	}
	q->dbuf_key = 0;
	r = img_pread_full(q->fd, q->cbuf, (size_t)len, off);
	if (r < 0)
		return img_set_error(img_dev_ctx(dev), r, "%s: reading a compressed cluster: %s",
		                     q->path, strerror(-r));
	if (qcow2_decompress(q->codec, q->cbuf, (size_t)len, q->dbuf, (size_t)q->cs) < 0)
		return corrupt(dev,
		               "compressed cluster at %llu (guest cluster %llu) does not "
		               "decompress to a full cluster",
		               off, gc);
	q->dbuf_key = e;
	return 0;
}

/* A run of clusters read with one call: host-contiguous data, or backing. */
struct rrun {
	enum kind kind; /* K_NORMAL or K_UNALLOC (from the backing file) */
	uint64_t pos;   /* host offset (K_NORMAL) or guest offset (K_UNALLOC) */
	uint64_t len;
	uint8_t *buf;
};

static int flush_run(struct img_dev *dev, struct rrun *run)
{
	struct q2r *q = R(dev);
	uint64_t have = run->len;
	int e = 0;

	if (!run->len)
		return 0;
	if (run->kind == K_NORMAL) {
		/* A last cluster cut short by EOF reads as zeros past it (as qemu). */
		have = q->h.file_size > run->pos ? q->h.file_size - run->pos : 0;
		have = IMG_MIN(have, run->len);
		e = have ? img_pread_full(q->fd, run->buf, (size_t)have, run->pos) : 0;
		if (e < 0)
			e = img_set_error(img_dev_ctx(dev), e, "%s: reading: %s", q->path,
			                  strerror(-e));
	} else {
		uint64_t bsize = img_dev_size(q->backing);

		have = bsize > run->pos ? IMG_MIN(bsize - run->pos, run->len) : 0;
		e = have ? img_dev_pread(q->backing, run->buf, (size_t)have, run->pos) : 0;
		if (e < 0)
			e = img_error_prefix(img_dev_ctx(dev), e, "%s: backing file", q->path);
	}
	memset(run->buf + have, 0, (size_t)(run->len - have));
	run->len = 0;
	return e;
}

static int r_pread(struct img_dev *dev, void *buf, size_t len, uint64_t off)
{
	struct q2r *q = R(dev);
	struct rrun run = { 0 };
	uint8_t *p = buf;
	int r;

	while (len) {
		uint64_t gc = off >> q->cb, in = off & (q->cs - 1), e, pos;
		size_t n = (size_t)IMG_MIN(len, q->cs - in);
		enum kind k;

		r = classify(dev, gc, &k, &e);
		if (r < 0)
			return r;
		if (k == K_UNALLOC && !q->backing)
			k = K_ZERO;
		pos = k == K_NORMAL ? (e & QCOW2_OFFSET_MASK) + in : off;
		if ((k == K_NORMAL || k == K_UNALLOC) && run.len && run.kind == k &&
		    run.pos + run.len == pos) {
			run.len += n;
			goto next;
		}
		r = flush_run(dev, &run);
		if (r < 0)
			return r;
		if (k == K_NORMAL || k == K_UNALLOC) {
			run = (struct rrun){ .kind = k, .pos = pos, .len = n, .buf = p };
		} else if (k == K_ZERO) {
			memset(p, 0, n);
		} else {
			r = load_compressed(dev, e, gc);
			if (r < 0)
				return r;
			memcpy(p, q->dbuf + in, n);
		}
	next:
		p += n;
		off += n;
		len -= n;
	}
	return flush_run(dev, &run);
}

static int r_pwrite(struct img_dev *dev, const void *buf, size_t len, uint64_t off)
{
	(void)buf;
	(void)len;
	(void)off;
	return img_set_error(img_dev_ctx(dev), -EROFS, "%s: opened read-only", R(dev)->path);
}

static int r_flush(struct img_dev *dev)
{
	(void)dev;
	return 0;
}

static void r_destroy(struct img_dev *dev)
{
	struct q2r *q = R(dev);

	for (unsigned i = 0; i < L2_CACHE; i++)
		free(q->cache[i].tbl);
	free(q->l1);
	free(q->cbuf);
	free(q->dbuf);
	qcow2_codec_free(q->codec);
	img_dev_unref(q->backing);
	free(q->path);
	if (q->fd >= 0)
		close(q->fd);
}

static const struct img_dev_ops qcow2_r_ops = {
	.name = "qcow2",
	.pread = r_pread,
	.pwrite = r_pwrite,
	.flush = r_flush,
	.destroy = r_destroy,
};

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

/* Read the L1 table and check every entry points at a sane L2 table. */
static int read_l1(struct img_ctx *ctx, struct q2r *q)
{
	uint64_t n = q->h.l1_size, l1_bytes = n * 8;
	uint64_t rt = q->h.reftable_offset, rt_len = (uint64_t)q->h.reftable_clusters << q->cb;
	uint8_t *raw;
	int e;

	q->l1 = calloc((size_t)IMG_MAX(n, 1), sizeof(uint64_t));
	raw = malloc((size_t)IMG_MAX(l1_bytes, 1));
	if (!q->l1 || !raw) {
		free(raw);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	e = n ? img_pread_full(q->fd, raw, (size_t)l1_bytes, q->h.l1_offset) : 0;
	if (e < 0) {
		free(raw);
		return img_set_error(ctx, e, "%s: reading the L1 table: %s", q->path, strerror(-e));
	}
	for (uint64_t i = 0; i < n; i++) {
		uint64_t v = img_get_be64(raw + i * 8), off = v & QCOW2_OFFSET_MASK;
		const char *bad = NULL;

		if (v & QCOW2_L1_RESERVED)
			bad = "has reserved bits set";
		else if (!off)
			continue;
		else if (off % q->cs)
			bad = "points to an unaligned L2 table";
		else if (off >= q->h.file_size || q->cs > q->h.file_size - off)
			bad = "points to an L2 table past the end of the file";
		else if (off < q->cs)
			bad = "points into the header";
		else if (overlaps(off, q->cs, q->h.l1_offset, l1_bytes))
			bad = "points into the L1 table";
		else if (overlaps(off, q->cs, rt, rt_len))
			bad = "points into the refcount table";
		if (bad) {
			free(raw);
			return img_set_error(
			    ctx, -EINVAL, "%s: corrupt qcow2: L1 entry %llu (0x%llx) %s", q->path,
			    (unsigned long long)i, (unsigned long long)v, bad);
		}
		q->l1[i] = off;
	}
	free(raw);
	return 0;
}

static int open_depth(struct img_ctx *ctx, const char *path, unsigned flags, unsigned depth,
                      struct img_dev **out);

static int open_backing(struct img_ctx *ctx, struct q2r *q, unsigned flags, unsigned depth)
{
	const char *name = q->h.backing_file, *fmt = q->h.backing_format;
	const char *slash = strrchr(q->path, '/');
	char *full = NULL;
	uint8_t m[4];
	int r, fd;

	if (!(flags & IMG_QCOW2_ALLOW_BACKING))
		return img_set_error(ctx, -EPERM,
		                     "%s: names the backing file '%s', which is not opened unless "
		                     "backing files are allowed",
		                     q->path, name);
	if (depth + 1 >= QCOW2_MAX_CHAIN_DEPTH)
		return img_set_error(ctx, -ELOOP,
		                     "%s: backing chain deeper than %d images (a loop?) at '%s'",
		                     q->path, QCOW2_MAX_CHAIN_DEPTH, name);
	/* Relative names are relative to the overlay's directory, as in qemu. */
	if (name[0] == '/' || !slash)
		full = img_strdup(name);
	else if (img_asprintf(&full, "%.*s/%s", (int)(slash - q->path), q->path, name) < 0)
		full = NULL;
	if (!full)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	if (!*fmt) {
		fd = open(full, O_RDONLY | O_CLOEXEC);
		fmt = fd >= 0 && pread(fd, m, 4, 0) == 4 && img_get_be32(m) == QCOW2_MAGIC ? "qcow2"
		                                                                           : "raw";
		if (fd >= 0)
			close(fd);
	}
	if (!strcmp(fmt, "qcow2"))
		r = open_depth(ctx, full, flags, depth + 1, &q->backing);
	else if (!strcmp(fmt, "raw"))
		r = img_dev_raw_open(ctx, full, &q->backing);
	else
		r = img_set_error(ctx, -ENOTSUP, "backing format '%s' is not supported", fmt);
	if (r < 0 && depth == 0) /* once, not once per level of a long chain */
		r = img_error_prefix(ctx, r, "%s: backing file '%s'", q->path, name);
	free(full);
	return r;
}

static int open_depth(struct img_ctx *ctx, const char *path, unsigned flags, unsigned depth,
                      struct img_dev **out)
{
	struct qcow2_hdr h;
	struct img_dev *dev;
	struct q2r *q;
	int r, fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	r = qcow2_read_header(ctx, path, fd, &h);
	if (r == 0)
		r = img_dev_new(ctx, &qcow2_r_ops, h.size, IMG_DEV_READONLY, sizeof(*q), &dev);
	if (r < 0) {
		close(fd);
		return r;
	}
	q = img_dev_priv(dev);
	q->fd = fd;
	q->h = h;
	q->cb = h.cluster_bits;
	q->cs = 1ull << q->cb;
	q->l2_entries = q->cs / 8;
	for (unsigned i = 0; i < L2_CACHE; i++)
		q->cache[i].idx = UINT64_MAX;
	q->path = img_strdup(path);
	if (!q->path) {
		r = img_set_error(ctx, -ENOMEM, "out of memory");
		goto fail;
	}
	r = read_l1(ctx, q);
	if (r < 0)
		goto fail;
	if (h.backing_file[0]) {
		r = open_backing(ctx, q, flags, depth);
		if (r < 0)
			goto fail;
	}
	*out = dev;
	return 0;
fail:
	img_dev_unref(dev);
	return r;
}

int img_dev_qcow2_open(struct img_ctx *ctx, const char *path, unsigned flags, struct img_dev **out)
{
	return open_depth(ctx, path, flags, 0, out);
}
