/*
 * dev-qcow2-compress.c -- compressed qcow2 clusters: the zlib and zstd
 * codecs, and the pass at finish that compresses a written image in place.
 *
 * Spec: qemu docs/interop/qcow2.txt "Compressed Clusters Descriptor" and
 * the compression_type header field. zlib means a raw deflate stream with a
 * 4 KiB window (windowBits -12, memLevel 9) as qemu writes it; zstd one
 * frame per cluster. As qemu does, a cluster is only stored compressed
 * when that saves at least 2 bytes (compressed size < cluster_size - 1).
 *
 * Why compress at finish, in place: writers touch clusters many times and
 * out of order (libext2fs rewrites bitmaps and inode tables), so a cluster
 * is only final when the device is finished. The writer therefore stages
 * every data cluster uncompressed in the output file itself (no TMPDIR, no
 * second copy, copy_file_range still works), and this pass then walks the
 * staged clusters in host order and packs their compressed form from the
 * start of the data area. Packing never overtakes reading: cluster k is
 * read from data_start + k * cs and everything written for clusters 0..k
 * ends at or before data_start + (k + 1) * cs, because no cluster grows.
 * Worker threads read and compress clusters, each result into its own
 * ring slot; one thread lays the slots out strictly in order, so the bytes
 * do not depend on thread timing or the number of threads.
 */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "dev-qcow2-compress.h"
#include "dev-qcow2-writer.h"

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

/* ---- the packing pass ---------------------------------------------- */

#define SLOT_ZERO ((size_t)-1)
#define SLOT_RAW  ((size_t)0)

/*
 * Workers claim staged clusters in order and put each result in ring slot
 * k % ring; the layout thread consumes the slots strictly in order. A
 * worker may run at most `ring` clusters ahead of the layout, so the ring
 * bounds memory, and there is no barrier per batch for a preempted thread
 * to hold up (this machine is shared).
 */
struct pack {
	struct qcow2_w *w;
	uint64_t n, ring;
	uint8_t *in, *out; /* ring * cs each */
	size_t *olen;      /* per slot: SLOT_ZERO, SLOT_RAW or compressed length */
	uint64_t *ready;   /* per slot: k + 1 once cluster k's result is there */
	uint64_t claimed;  /* next cluster to hand out */
	uint64_t consumed; /* clusters the layout is done with */
	int err;
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

struct worker {
	struct pack *p;
	struct qcow2_codec *codec;
	pthread_t tid;
	bool started;
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

static void *work(void *arg)
{
	struct worker *wk = arg;
	struct pack *p = wk->p;
	size_t cs = (size_t)p->w->cs;

	for (;;) {
		uint64_t k, s;
		uint8_t *in;
		int r;

		pthread_mutex_lock(&p->lock);
		while (!p->err && p->claimed < p->n && p->claimed >= p->consumed + p->ring)
			pthread_cond_wait(&p->cond, &p->lock);
		if (p->err || p->claimed >= p->n) {
			pthread_mutex_unlock(&p->lock);
			return NULL;
		}
		k = p->claimed++;
		pthread_mutex_unlock(&p->lock);

		s = k % p->ring;
		in = p->in + s * cs;
		r = read_staged(p->w, k, in);
		if (r == 0 && img_all_zero(in, cs))
			p->olen[s] = SLOT_ZERO;
		else if (r == 0)
			p->olen[s] = qcow2_compress(wk->codec, in, cs, p->out + s * cs, cs - 2);

		pthread_mutex_lock(&p->lock);
		if (r < 0 && !p->err)
			p->err = r;
		p->ready[s] = k + 1;
		pthread_cond_broadcast(&p->cond);
		pthread_mutex_unlock(&p->lock);
	}
}

static unsigned online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 ? (unsigned)n : 1;
}

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

static int consume(struct img_dev *dev, struct pack *p, struct layout *l)
{
	struct qcow2_w *w = p->w;
	uint64_t cs = w->cs;
	int r = 0;

	img_progress_phase(img_dev_ctx(dev), "qcow2 compression", p->n * cs, 0);
	for (uint64_t k = 0; k < p->n; k++) {
		uint64_t s = k % p->ring;

		pthread_mutex_lock(&p->lock);
		while (p->ready[s] != k + 1 && !p->err)
			pthread_cond_wait(&p->cond, &p->lock);
		r = p->err;
		pthread_mutex_unlock(&p->lock);
		if (r < 0)
			return img_set_error(img_dev_ctx(dev), r, "reading back %s: %s", w->path,
			                     strerror(-r));
		r = place(dev, l, w->rev[k], p->in + s * cs, p->out + s * cs, p->olen[s]);
		if (r == 0 && l->olen + 2 * cs > l->ocap)
			r = flush_layout(dev, l);
		img_progress_add(img_dev_ctx(dev), cs, 0);
		if (r == 0 && k % 1024 == 1023)
			r = img_check_cancel(img_dev_ctx(dev));
		pthread_mutex_lock(&p->lock);
		if (r < 0)
			p->err = r;
		p->consumed = k + 1;
		pthread_cond_broadcast(&p->cond);
		pthread_mutex_unlock(&p->lock);
		if (r < 0)
			return r;
	}
	return flush_layout(dev, l);
}

int qcow2_pack(struct img_dev *dev, struct qcow2_w *w)
{
	struct img_ctx *ctx = img_dev_ctx(dev);
	unsigned nthreads = IMG_MIN(w->threads ? w->threads : online_cpus(), 64u);
	uint64_t cs = w->cs, end;
	int type = w->compression == IMG_QCOW2_COMPRESS_ZSTD ? QCOW2_COMPRESSION_ZSTD
	                                                     : QCOW2_COMPRESSION_ZLIB;
	struct layout l = { .pos = w->data_start };
	struct worker *wk = NULL;
	struct pack p = { .w = w, .n = w->rev_n };
	int r = 0;

	p.ring = IMG_MAX((uint64_t)nthreads * 8, (8ull << 20) / cs);
	p.in = malloc((size_t)(p.ring * cs));
	p.out = malloc((size_t)(p.ring * cs));
	p.olen = calloc((size_t)p.ring, sizeof(*p.olen));
	p.ready = calloc((size_t)p.ring, sizeof(*p.ready));
	l.ocap = IMG_MAX(4ull << 20, 4 * cs);
	l.obuf = malloc((size_t)l.ocap);
	l.ostart = w->data_start;
	w->dref = calloc((size_t)IMG_MAX(w->rev_n, 1), sizeof(*w->dref));
	wk = calloc(nthreads, sizeof(*wk));
	pthread_mutex_init(&p.lock, NULL);
	pthread_cond_init(&p.cond, NULL);
	if (!p.in || !p.out || !p.olen || !p.ready || !l.obuf || !w->dref || !wk) {
		r = img_set_error(ctx, -ENOMEM, "out of memory for qcow2 compression");
		goto out;
	}
	for (unsigned t = 0; t < nthreads; t++) {
		wk[t].p = &p;
		wk[t].codec = qcow2_codec_new(type, w->level, 0);
		if (!wk[t].codec) {
			r = img_set_error(ctx, -ENOMEM, "%s: cannot set up the compressor",
			                  w->path);
			goto out;
		}
	}
	for (unsigned t = 0; t < nthreads; t++) {
		if (pthread_create(&wk[t].tid, NULL, work, &wk[t]) != 0) {
			if (t > 0)
				break; /* fewer threads is fine */
			r = img_set_error(ctx, -EAGAIN, "%s: cannot start a compression thread",
			                  w->path);
			goto out;
		}
		wk[t].started = true;
	}
	r = consume(dev, &p, &l);
	if (r < 0)
		goto out;
	/* Zero the rest of the last cluster: it still holds staged bytes. */
	end = IMG_ALIGN_UP(l.pos, cs);
	if (end > l.pos) {
		memset(l.obuf, 0, (size_t)(end - l.pos));
		r = img_pwrite_full(w->fd, l.obuf, (size_t)(end - l.pos), l.pos);
		if (r < 0) {
			r = img_set_error(ctx, r, "writing %s: %s", w->path, strerror(-r));
			goto out;
		}
	}
	w->data_end = end;
out:
	if (wk) {
		pthread_mutex_lock(&p.lock);
		if (r < 0 && !p.err)
			p.err = r;
		pthread_cond_broadcast(&p.cond);
		pthread_mutex_unlock(&p.lock);
		for (unsigned t = 0; t < nthreads; t++) {
			if (wk[t].started)
				pthread_join(wk[t].tid, NULL);
			qcow2_codec_free(wk[t].codec);
		}
	}
	pthread_mutex_destroy(&p.lock);
	pthread_cond_destroy(&p.cond);
	free(wk);
	free(l.obuf);
	free(p.in);
	free(p.out);
	free(p.olen);
	free(p.ready);
	return r;
}
