/*
 * dev-qcow2-compress.c -- compressed qcow2 clusters: the zlib and zstd
 * codecs, and the packing of compressed clusters: as they are written or at
 * finish from where they were staged.
 *
 * Spec: qemu docs/interop/qcow2.txt "Compressed Clusters Descriptor" and
 * the compression_type header field. zlib means a raw deflate stream with a
 * 4 KiB window (windowBits -12, memLevel 9) as qemu writes it; zstd one
 * frame per cluster. As qemu does, a cluster is only stored compressed
 * when that saves at least 2 bytes (compressed size < cluster_size - 1).
 *
 * Two ways in, one layout. Streaming (the usual one): the writer hands over
 * each data cluster from memory once its writes have moved past it
 * (dev-qcow2-write.c), so nothing is staged. Staged: writers that touch
 * clusters many times and out of order leave each data cluster
 * uncompressed in the output file itself (no TMPDIR, no second copy), and
 * qcow2_pack walks the staged clusters in host order at finish. Either
 * way the compressed forms are packed from the start of the data area, in
 * the same order, so the bytes are the same. Packing never overtakes
 * reading: cluster k is staged at data_start + k * cs and everything
 * written for clusters 0..k ends at or before data_start + (k + 1) * cs,
 * because no cluster grows (which also lets a stream go back to staging,
 * qcow2_stream_unpack). Worker threads compress clusters, each result into
 * its own ring slot (dev-zring.h); one thread lays the slots out strictly
 * in order, so the bytes do not depend on thread timing or the number of
 * threads.
 */
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "dev-qcow2-compress.h"
#include "dev-qcow2-writer.h"
#include "dev-zring.h"

struct qcow2_codec {
	int type;
	int decompress;
	ZSTD_CCtx *zc;
	ZSTD_DCtx *zd;
	z_stream zs;
	bool zs_ready;
};

struct qcow2_codec *qcow2_codec_new(int type, int level, int decompress)
{
	struct qcow2_codec *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return NULL;
	c->type = type;
	c->decompress = decompress;
	if (type == QCOW2_COMPRESSION_ZSTD) {
		if (decompress) {
			c->zd = ZSTD_createDCtx();
			if (!c->zd)
				goto fail;
		} else {
			c->zc = ZSTD_createCCtx();
			if (!c->zc || ZSTD_isError(ZSTD_CCtx_setParameter(
			                  c->zc, ZSTD_c_compressionLevel,
			                  level ? level : ZSTD_CLEVEL_DEFAULT)))
				goto fail;
		}
		return c;
	}
	/* Decompression takes any window (-15 covers qemu's -12). */
	r = decompress ? inflateInit2(&c->zs, -15)
	               : deflateInit2(&c->zs, level ? level : Z_DEFAULT_COMPRESSION, Z_DEFLATED,
	                              -12, 9, Z_DEFAULT_STRATEGY);
	if (r != Z_OK)
		goto fail;
	c->zs_ready = true;
	return c;
fail:
	qcow2_codec_free(c);
	return NULL;
}

void qcow2_codec_free(struct qcow2_codec *c)
{
	if (!c)
		return;
	ZSTD_freeCCtx(c->zc);
	ZSTD_freeDCtx(c->zd);
	if (c->zs_ready) {
		if (c->decompress)
			inflateEnd(&c->zs);
		else
			deflateEnd(&c->zs);
	}
	free(c);
}

size_t qcow2_compress(struct qcow2_codec *c, const uint8_t *in, size_t cs, uint8_t *out, size_t cap)
{
	if (c->type == QCOW2_COMPRESSION_ZSTD) {
		size_t n = ZSTD_compress2(c->zc, out, cap, in, cs);

		return ZSTD_isError(n) ? 0 : n;
	}
	if (deflateReset(&c->zs) != Z_OK)
		return 0;
	c->zs.next_in = (Bytef *)in;
	c->zs.avail_in = (uInt)cs;
	c->zs.next_out = out;
	c->zs.avail_out = (uInt)cap;
	if (deflate(&c->zs, Z_FINISH) != Z_STREAM_END)
		return 0;
	return cap - c->zs.avail_out;
}

int qcow2_decompress(struct qcow2_codec *c, const uint8_t *in, size_t len, uint8_t *out, size_t cs)
{
	if (c->type == QCOW2_COMPRESSION_ZSTD) {
		ZSTD_inBuffer ib = { in, len, 0 };
		ZSTD_outBuffer ob = { out, cs, 0 };

		/* Stream until the cluster is full: the frame's exact size is not stored. */
		ZSTD_DCtx_reset(c->zd, ZSTD_reset_session_only);
		for (;;) {
			size_t before_in = ib.pos, before_out = ob.pos;
			size_t r = ZSTD_decompressStream(c->zd, &ob, &ib);

			if (ZSTD_isError(r))
				return -EIO;
			if (ob.pos == ob.size || r == 0)
				break;
			if (ib.pos == before_in && ob.pos == before_out)
				break; /* input exhausted */
		}
		return ob.pos == cs ? 0 : -EIO;
	}
	if (inflateReset(&c->zs) != Z_OK)
		return -EIO;
	c->zs.next_in = (Bytef *)in;
	c->zs.avail_in = (uInt)len;
	c->zs.next_out = out;
	c->zs.avail_out = (uInt)cs;
	{
		int r = inflate(&c->zs, Z_FINISH);

		/* qemu accepts a full cluster even when the stream has not ended. */
		if (r != Z_STREAM_END && r != Z_BUF_ERROR && r != Z_OK)
			return -EIO;
	}
	return c->zs.avail_out == 0 ? 0 : -EIO;
}

/* ---- packing ---------------------------------------------------------- */

#define SLOT_ZERO ((size_t)-1)
#define SLOT_RAW  ((size_t)0)

/*
 * The layout: compressed clusters back to back at byte granularity from
 * the start of the data area; an incompressible cluster starts a fresh
 * host cluster, and the gap this leaves before it is filled by the next
 * compressed clusters that fit (as qemu's byte allocator does). Output
 * is collected in obuf (from file offset ostart) and written in big chunks.
 */
struct layout {
	uint64_t pos;          /* end of the packed data */
	uint64_t gap, gap_end; /* unused bytes before the last raw cluster */
	uint8_t *obuf;
	uint64_t ostart, olen, ocap;
};

/*
 * Data cluster k (w->rev[k] its guest cluster) goes through the ring
 * (dev-zring.h): filled (staged: the worker reads it from the file;
 * streamed: the producer writes it and publishes it), compressed by a
 * worker, laid out by the producer's thread strictly in order.
 */
struct qcow2_pack {
	struct img_dev *dev;
	struct qcow2_w *w;
	bool staged; /* the clusters come from the file (qcow2_pack) */
	int type;    /* QCOW2_COMPRESSION_* */
	struct zring *z;
	uint64_t dref_cap;
	struct layout l;
	/* reading laid-out clusters (qcow2_stream_read, _unpack) */
	struct qcow2_codec *dcodec;
	uint8_t *cbuf;
};

/* Read staged cluster @k; a tail past EOF (never written) reads as zeros. */
static int read_staged(struct qcow2_w *w, uint64_t k, uint8_t *buf)
{
	uint64_t off = w->data_start + k * w->cs;
	size_t done = 0;

	while (done < w->cs) {
		ssize_t n = pread(w->fd, buf + done, (size_t)w->cs - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	memset(buf + done, 0, (size_t)w->cs - done);
	return 0;
}

static void *pack_codec_new(void *user)
{
	struct qcow2_pack *p = user;

	return qcow2_codec_new(p->type, p->w->level, 0);
}

static void pack_codec_free(void *codec)
{
	qcow2_codec_free(codec);
}

/* A worker's cluster: SLOT_ZERO, SLOT_RAW (does not shrink) or its length. */
static int pack_work(void *user, void *codec, uint64_t k, uint8_t *in, uint8_t *out, size_t *olen)
{
	struct qcow2_pack *p = user;
	size_t cs = (size_t)p->w->cs;
	int r = p->staged ? read_staged(p->w, k, in) : 0;

	if (r == 0 && img_all_zero(in, cs))
		*olen = SLOT_ZERO;
	else if (r == 0)
		*olen = qcow2_compress(codec, in, cs, out, cs - 2);
	return r;
}

static const struct zring_ops pack_ops = { pack_codec_new, pack_codec_free, pack_work };

static int put(struct img_dev *dev, struct layout *l, uint64_t at, const uint8_t *src, size_t n)
{
	struct qcow2_w *w = img_dev_priv(dev);
	int r;

	if (at >= l->ostart) {
		memcpy(l->obuf + (at - l->ostart), src, n);
		l->olen = IMG_MAX(l->olen, at + n - l->ostart);
		return 0;
	}
	/* A gap already flushed: write there directly. */
	r = img_pwrite_full(w->fd, src, n, at);
	return r < 0 ? img_set_error(img_dev_ctx(dev), r, "writing %s: %s", w->path, strerror(-r))
	             : 0;
}

static int flush_layout(struct img_dev *dev, struct layout *l)
{
	struct qcow2_w *w = img_dev_priv(dev);
	int r = l->olen ? img_pwrite_full(w->fd, l->obuf, (size_t)l->olen, l->ostart) : 0;

	if (r < 0)
		return img_set_error(img_dev_ctx(dev), r, "writing %s: %s", w->path, strerror(-r));
	l->ostart += l->olen;
	l->olen = 0;
	return 0;
}

static int place(struct img_dev *dev, struct layout *l, uint64_t gc, const uint8_t *in,
                 const uint8_t *out, size_t n)
{
	struct qcow2_w *w = img_dev_priv(dev);
	uint64_t cs = w->cs, ds = w->data_start >> w->cb, at, first, last;
	uint64_t *e = &w->l2[gc / w->l2_entries][gc % w->l2_entries];
	unsigned x = 62 - (w->cb - 8);
	int r;

	if (n == SLOT_ZERO) {
		*e = 0;
		return 0;
	}
	if (n == SLOT_RAW) {
		at = IMG_ALIGN_UP(l->pos, cs);
		if (at > l->pos) {
			static const uint8_t z[512];

			for (uint64_t p = l->pos; p < at; p += IMG_MIN(sizeof(z), at - p)) {
				r = put(dev, l, p, z, (size_t)IMG_MIN(sizeof(z), at - p));
				if (r < 0)
					return r;
			}
			l->gap = l->pos;
			l->gap_end = at;
		}
		r = put(dev, l, at, in, (size_t)cs);
		if (r < 0)
			return r;
		*e = at | QCOW2_OFLAG_COPIED;
		w->dref[(at >> w->cb) - ds] = 1;
		l->pos = at + cs;
		return 0;
	}
	/* 16-bit refcounts: a host cluster takes at most 65535 descriptors. */
	if (n <= l->gap_end - l->gap && w->dref[(l->gap >> w->cb) - ds] < UINT16_MAX) {
		at = l->gap;
		l->gap += n;
	} else {
		at = l->pos;
		if (w->dref[(at >> w->cb) - ds] == UINT16_MAX ||
		    w->dref[((at + n - 1) >> w->cb) - ds] == UINT16_MAX)
			at = IMG_ALIGN_UP(at, cs);
		l->pos = at + n;
	}
	if (at + n > 1ull << x)
		return img_set_error(img_dev_ctx(dev), -EFBIG,
		                     "%s: compressed data beyond the reach of qcow2 descriptors",
		                     w->path);
	r = put(dev, l, at, out, n);
	if (r < 0)
		return r;
	*e = QCOW2_OFLAG_COMPRESSED | ((((at + n - 1) >> 9) - (at >> 9)) << x) | at;
	first = at >> w->cb;
	last = (at + n - 1) >> w->cb;
	for (uint64_t c = first; c <= last; c++)
		w->dref[c - ds]++;
	return 0;
}

/* Lay out the next cluster, waiting for its compression. */
static int take(struct qcow2_pack *p)
{
	struct qcow2_w *w = p->w;
	uint64_t k = zring_consumed(p->z);
	bool worker;
	int r = zring_wait(p->z, &worker);

	if (r < 0)
		return worker ? img_set_error(img_dev_ctx(p->dev), r, "reading back %s: %s",
		                              w->path, strerror(-r))
		              : r;
	r = place(p->dev, &p->l, w->rev[k], zring_in(p->z, k), zring_out(p->z, k),
	          zring_olen(p->z, k));
	if (r == 0 && p->l.olen + 2 * w->cs > p->l.ocap)
		r = flush_layout(p->dev, &p->l);
	zring_done(p->z, r);
	return r;
}

/* Stop the workers and free everything; the writer's state stays. */
static void pack_free(struct qcow2_pack *p)
{
	if (!p)
		return;
	zring_free(p->z);
	qcow2_codec_free(p->dcodec);
	free(p->cbuf);
	free(p->l.obuf);
	free(p);
}

static int pack_new(struct img_dev *dev, struct qcow2_w *w, bool staged, struct qcow2_pack **out)
{
	struct img_ctx *ctx = img_dev_ctx(dev);
	uint64_t cs = w->cs;
	struct qcow2_pack *p = calloc(1, sizeof(*p));
	int r;

	if (!p)
		return img_set_error(ctx, -ENOMEM, "out of memory for qcow2 compression");
	p->dev = dev;
	p->w = w;
	p->staged = staged;
	p->type = w->compression == IMG_QCOW2_COMPRESS_ZSTD ? QCOW2_COMPRESSION_ZSTD
	                                                    : QCOW2_COMPRESSION_ZLIB;
	p->l = (struct layout){ .pos = w->data_start, .ostart = w->data_start };
	p->l.ocap = IMG_MAX(4ull << 20, 4 * cs);
	p->l.obuf = malloc((size_t)p->l.ocap);
	p->dref_cap = IMG_MAX(staged ? w->rev_n : 0, 1024);
	free(w->dref);
	w->dref = calloc((size_t)p->dref_cap, sizeof(*w->dref));
	if (!p->l.obuf || !w->dref) {
		pack_free(p);
		return img_set_error(ctx, -ENOMEM, "out of memory for qcow2 compression");
	}
	r = zring_new(ctx, &pack_ops, p, (size_t)cs, (size_t)cs, w->threads, staged, w->rev_n,
	              &p->z);
	if (r < 0) {
		pack_free(p);
		return r;
	}
	*out = p;
	return 0;
}

/* Everything laid out: write the rest, zero the end of the last cluster. */
static int pack_end(struct qcow2_pack *p)
{
	struct qcow2_w *w = p->w;
	uint64_t end = IMG_ALIGN_UP(p->l.pos, w->cs);
	int r = flush_layout(p->dev, &p->l);

	if (r == 0 && end > p->l.pos) {
		/* staged: the rest of the last cluster still holds staged bytes */
		memset(p->l.obuf, 0, (size_t)(end - p->l.pos));
		r = img_pwrite_full(w->fd, p->l.obuf, (size_t)(end - p->l.pos), p->l.pos);
		if (r < 0)
			r = img_set_error(img_dev_ctx(p->dev), r, "writing %s: %s", w->path,
			                  strerror(-r));
	}
	w->data_end = end;
	return r;
}

int qcow2_pack(struct img_dev *dev, struct qcow2_w *w)
{
	struct img_ctx *ctx = img_dev_ctx(dev);
	struct qcow2_pack *p;
	int r = pack_new(dev, w, true, &p);

	if (r < 0)
		return r;
	img_progress_phase(ctx, "qcow2 compression", w->rev_n * w->cs, 0);
	for (uint64_t k = 0; k < w->rev_n && r == 0; k++) {
		r = take(p);
		img_progress_add(ctx, w->cs, 0);
		if (r == 0 && k % 1024 == 1023)
			r = img_check_cancel(ctx);
	}
	if (r == 0)
		r = pack_end(p);
	pack_free(p);
	return r;
}

/* ---- streaming ------------------------------------------------------- */

int qcow2_stream_start(struct img_dev *dev, struct qcow2_w *w, struct qcow2_pack **out)
{
	return pack_new(dev, w, false, out);
}

int qcow2_stream_open(struct qcow2_pack *p, uint8_t **buf)
{
	struct qcow2_w *w = p->w;
	uint64_t k = w->rev_n - 1;
	int r = 0;

	if (w->rev_n > p->dref_cap) {
		uint64_t cap = p->dref_cap * 2;
		uint16_t *d = realloc(w->dref, (size_t)cap * sizeof(*d));

		if (!d)
			return img_set_error(img_dev_ctx(p->dev), -ENOMEM,
			                     "out of memory for qcow2 compression");
		memset(d + p->dref_cap, 0, (size_t)(cap - p->dref_cap) * sizeof(*d));
		w->dref = d;
		p->dref_cap = cap;
	}
	/* slot k is free once cluster k - ring size is laid out */
	while (r == 0 && zring_full(p->z, k))
		r = take(p);
	if (r < 0)
		return r;
	*buf = zring_in(p->z, k);
	memset(*buf, 0, (size_t)w->cs);
	return 0;
}

int qcow2_stream_publish(struct qcow2_pack *p)
{
	int r = 0;

	zring_publish(p->z, p->w->rev_n);
	/* lay out what is compressed already, without waiting */
	while (r == 0 && zring_ready(p->z))
		r = take(p);
	return r;
}

/* Lay out every published cluster and write the layout out. */
static int drain(struct qcow2_pack *p)
{
	int r = 0;

	while (r == 0 && zring_consumed(p->z) < zring_published(p->z))
		r = take(p);
	return r < 0 ? r : flush_layout(p->dev, &p->l);
}

int qcow2_stream_finish(struct qcow2_pack *p)
{
	int r = drain(p);

	return r < 0 ? r : pack_end(p);
}

/*
 * Data cluster @k as laid out (its L2 entry, w->l2; the layout written
 * out), uncompressed into @out.
 */
static int read_laid_out(struct qcow2_pack *p, uint64_t k, uint8_t *out)
{
	struct qcow2_w *w = p->w;
	uint64_t cs = w->cs, gc = w->rev[k], e = w->l2[gc / w->l2_entries][gc % w->l2_entries];
	unsigned x = 62 - (w->cb - 8);
	int r = 0;

	if (!p->dcodec) {
		p->dcodec = qcow2_codec_new(w->compression == IMG_QCOW2_COMPRESS_ZSTD
		                                ? QCOW2_COMPRESSION_ZSTD
		                                : QCOW2_COMPRESSION_ZLIB,
		                            0, 1);
		p->cbuf = malloc((size_t)(cs + 1024));
		if (!p->dcodec || !p->cbuf)
			return -ENOMEM;
	}
	if (!e) {
		memset(out, 0, (size_t)cs);
	} else if (e & QCOW2_OFLAG_COMPRESSED) {
		uint64_t at = e & ((1ull << x) - 1), nsec = (e >> x) & ((1ull << (w->cb - 8)) - 1);
		/* the descriptor's whole sectors, not past the packed data */
		uint64_t len = IMG_MIN((at & ~511ull) + (nsec + 1) * 512, p->l.pos) - at;

		r = img_pread_full(w->fd, p->cbuf, (size_t)len, at);
		if (r == 0 &&
		    qcow2_decompress(p->dcodec, p->cbuf, (size_t)len, out, (size_t)cs) < 0)
			r = -EIO;
	} else {
		r = img_pread_full(w->fd, out, (size_t)cs, e & ~QCOW2_OFLAG_COPIED);
	}
	return r;
}

int qcow2_stream_read(struct qcow2_pack *p, uint64_t k, uint8_t *out)
{
	struct qcow2_w *w = p->w;
	int r;

	/* not laid out yet: its slot still holds it (taken before reuse) */
	if (k >= zring_consumed(p->z)) {
		memcpy(out, zring_in(p->z, k), (size_t)w->cs);
		return 0;
	}
	r = flush_layout(p->dev, &p->l);
	if (r == 0 && (r = read_laid_out(p, k, out)) < 0)
		r = img_set_error(img_dev_ctx(p->dev), r, "%s: reading a compressed cluster: %s",
		                  w->path, strerror(-r));
	return r;
}

/*
 * Back to staging: every data cluster k laid out so far goes back to its
 * staged place, data_start + k * cs, uncompressed. Last cluster first: what
 * was laid out for cluster j ends at or before data_start + (j + 1) * cs
 * (qcow2_pack's invariant: no cluster grows), so writing cluster k's staged
 * place only overwrites what clusters after k left, and those are back
 * already.
 */
int qcow2_stream_unpack(struct qcow2_pack *p)
{
	struct qcow2_w *w = p->w;
	uint8_t *buf = malloc((size_t)w->cs);
	int r = buf ? drain(p) : img_set_error(img_dev_ctx(p->dev), -ENOMEM, "out of memory");

	for (uint64_t k = w->rev_n; r == 0 && k-- > 0;) {
		uint64_t gc = w->rev[k], at = w->data_start + k * w->cs;

		r = read_laid_out(p, k, buf);
		if (r == 0)
			r = img_pwrite_full(w->fd, buf, (size_t)w->cs, at);
		if (r < 0)
			r = img_set_error(img_dev_ctx(p->dev), r,
			                  "%s: staging its compressed clusters again: %s", w->path,
			                  strerror(-r));
		w->l2[gc / w->l2_entries][gc % w->l2_entries] = at;
	}
	free(w->dref);
	w->dref = NULL;
	w->next_free = w->data_start + w->rev_n * w->cs;
	free(buf);
	return r;
}

void qcow2_stream_free(struct qcow2_pack *p)
{
	pack_free(p);
}
