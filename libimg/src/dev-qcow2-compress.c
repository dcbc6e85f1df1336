/*
 * dev-qcow2-compress.c -- compressed qcow2 clusters: the zlib and zstd
 * codecs, and the pass at finish that compresses a written image in place.
 *
 * Spec: qemu docs/interop/qcow2.txt "Compressed Clusters Descriptor";
 * docs/formats.md 2.3 and 2.5. zlib means a raw deflate stream with a
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
 * Batches of clusters are read and compressed by several threads, each
 * result into its own slot; one thread then lays the slots out in order,
 * so the bytes do not depend on thread timing.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "dev-qcow2.h"

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

struct pack {
	struct qcow2_w *w;
	uint64_t k0, count; /* this batch: staged clusters k0 .. k0+count-1 */
	uint8_t *in, *out;  /* count * cs each */
	size_t *olen;       /* per slot: SLOT_ZERO, SLOT_RAW or compressed length */
	atomic_uint_fast64_t next;
	atomic_int err;
};

struct worker {
	struct pack *p;
	struct qcow2_codec *codec;
	pthread_t tid;
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
		uint64_t i = atomic_fetch_add(&p->next, 1);
		uint8_t *in = p->in + i * cs;
		int r;

		if (i >= p->count || atomic_load(&p->err))
			break;
		r = read_staged(p->w, p->k0 + i, in);
		if (r < 0) {
			atomic_store(&p->err, r);
			break;
		}
		if (qcow2_all_zero(in, cs))
			p->olen[i] = SLOT_ZERO;
		else
			p->olen[i] = qcow2_compress(wk->codec, in, cs, p->out + i * cs, cs - 2);
	}
	return NULL;
}

static unsigned online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 ? (unsigned)n : 1;
}

/* Lay out one compressed batch at *wpos; fills obuf and w->l2/w->dref. */
static int layout(struct img_dev *dev, struct pack *p, uint8_t *obuf, uint64_t *wpos,
                  uint64_t *olen_total)
{
	struct qcow2_w *w = p->w;
	uint64_t cs = w->cs, start = *wpos, pos = *wpos, ds = w->data_start >> w->cb;
	unsigned x = 62 - (w->cb - 8);

	for (uint64_t i = 0; i < p->count; i++) {
		uint64_t gc = w->rev[p->k0 + i];
		uint64_t *e = &w->l2[gc / w->l2_entries][gc % w->l2_entries];
		size_t n = p->olen[i];

		if (n == SLOT_ZERO) {
			*e = 0;
			continue;
		}
		if (n != SLOT_RAW) {
			uint64_t first = pos >> w->cb, last = (pos + n - 1) >> w->cb;

			/* 16-bit refcounts: a host cluster takes at most 65535 descriptors. */
			for (uint64_t c = first; c <= last; c++)
				if (w->dref[c - ds] == UINT16_MAX)
					pos = IMG_ALIGN_UP(pos, cs);
			first = pos >> w->cb;
			last = (pos + n - 1) >> w->cb;
			if (pos >= 1ull << x)
				return img_set_error(
				    img_dev_ctx(dev), -EFBIG,
				    "%s: compressed data beyond the reach of qcow2 "
				    "descriptors",
				    w->path);
			memcpy(obuf + (pos - start), p->out + i * cs, n);
			*e = QCOW2_OFLAG_COMPRESSED | ((((pos + n - 1) >> 9) - (pos >> 9)) << x) |
			     pos;
			for (uint64_t c = first; c <= last; c++)
				w->dref[c - ds]++;
			pos += n;
		} else {
			uint64_t at = IMG_ALIGN_UP(pos, cs);

			memset(obuf + (pos - start), 0, (size_t)(at - pos));
			memcpy(obuf + (at - start), p->in + i * cs, (size_t)cs);
			*e = at | QCOW2_OFLAG_COPIED;
			w->dref[(at >> w->cb) - ds] = 1;
			pos = at + cs;
		}
	}
	*olen_total = pos - start;
	*wpos = pos;
	return 0;
}

int qcow2_pack(struct img_dev *dev, struct qcow2_w *w)
{
	struct img_ctx *ctx = img_dev_ctx(dev);
	unsigned nthreads = w->threads ? w->threads : online_cpus();
	uint64_t cs = w->cs, batch, wpos = w->data_start, end;
	int type = w->compression == IMG_QCOW2_COMPRESS_ZSTD ? QCOW2_COMPRESSION_ZSTD
	                                                     : QCOW2_COMPRESSION_ZLIB;
	struct worker *wk = NULL;
	struct pack p = { .w = w };
	uint8_t *obuf = NULL;
	int r = 0;

	nthreads = IMG_MIN(nthreads, 64u);
	batch = IMG_MAX((uint64_t)nthreads * 4, (8ull << 20) / cs);
	batch = IMG_MAX(IMG_MIN(batch, w->rev_n), 1);
	p.in = malloc((size_t)(batch * cs));
	p.out = malloc((size_t)(batch * cs));
	p.olen = calloc((size_t)batch, sizeof(*p.olen));
	obuf = malloc((size_t)(2 * batch * cs));
	w->dref = calloc((size_t)IMG_MAX(w->rev_n, 1), sizeof(*w->dref));
	wk = calloc(nthreads, sizeof(*wk));
	if (!p.in || !p.out || !p.olen || !obuf || !w->dref || !wk) {
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
	for (p.k0 = 0; p.k0 < w->rev_n; p.k0 += p.count) {
		uint64_t start = wpos, olen = 0;
		unsigned started = 0;

		p.count = IMG_MIN(batch, w->rev_n - p.k0);
		atomic_store(&p.next, 0);
		/* Threads 1..n-1 help; this thread is worker 0. */
		for (unsigned t = 1; t < nthreads && t < p.count; t++) {
			if (pthread_create(&wk[t].tid, NULL, work, &wk[t]) != 0)
				break;
			started = t;
		}
		work(&wk[0]);
		for (unsigned t = 1; t <= started; t++)
			pthread_join(wk[t].tid, NULL);
		if (atomic_load(&p.err)) {
			r = img_set_error(ctx, atomic_load(&p.err), "reading back %s: %s", w->path,
			                  strerror(-atomic_load(&p.err)));
			goto out;
		}
		r = layout(dev, &p, obuf, &wpos, &olen);
		if (r < 0)
			goto out;
		r = img_pwrite_full(w->fd, obuf, (size_t)olen, start);
		if (r < 0) {
			r = img_set_error(ctx, r, "writing %s: %s", w->path, strerror(-r));
			goto out;
		}
		r = img_check_cancel(ctx);
		if (r < 0)
			goto out;
	}
	/* Zero the rest of the last cluster: it still holds staged bytes. */
	end = IMG_ALIGN_UP(wpos, cs);
	if (end > wpos) {
		memset(obuf, 0, (size_t)(end - wpos));
		r = img_pwrite_full(w->fd, obuf, (size_t)(end - wpos), wpos);
		if (r < 0) {
			r = img_set_error(ctx, r, "writing %s: %s", w->path, strerror(-r));
			goto out;
		}
	}
	w->data_end = end;
out:
	if (wk)
		for (unsigned t = 0; t < nthreads; t++)
			qcow2_codec_free(wk[t].codec);
	free(wk);
	free(obuf);
	free(p.in);
	free(p.out);
	free(p.olen);
	return r;
}
