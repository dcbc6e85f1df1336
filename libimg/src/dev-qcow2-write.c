/*
 * dev-qcow2-write.c -- writing a qcow2 v3 image directly, without a raw
 * intermediate (qemu docs/interop/qcow2.txt: header, L1/L2, refcounts).
 *
 * Layout without a plan: cluster 0 header, then the L1 table (its size
 * follows from the virtual size), then data clusters in the order the
 * writes first touch them (a bump allocator: the same writes give the same
 * bytes). The L2 tables live in memory until finish, which appends them,
 * then the refcount table and blocks, and writes the header last: behind
 * the frontier, so the output is read back for its sha256. With
 * compression, while the writes come in order the clusters are compressed
 * from memory as the writes pass them and packed from the start of the data
 * area (streaming, below); out of order, the data clusters are staged
 * uncompressed in the output file itself and packed in place at finish
 * (dev-qcow2-compress.c). Either way the tables go after the data and the
 * header is written last: compressed sizes decide every table, so the file
 * is read back for its sha256 (from the page cache: it was written
 * through it). Compressed images ignore a plan.
 *
 * Layout with a plan (img_dev_plan, uncompressed): the writer knows at
 * plan_done every guest cluster that will get data, so the whole file is
 * known and its front is written right then, in file order, through the
 * writer that hashes (dio.c):
 *   cluster 0              header (refcount_order 4, as without a plan)
 *   1 ..                   L1 table
 *   then                   refcount table, refcount blocks (every cluster
 *                          of the file has refcount 1)
 *   then                   the L2 tables that cover planned clusters, in
 *                          L1 order
 *   then                   one data cluster per planned guest cluster, in
 *                          guest order, to the end of the file
 * Data written in plan order then goes out in file order too, finish
 * writes nothing (the file is extended to its last cluster: planned
 * clusters never written are a hole and read as zeros) and
 * img_dev_sha256() gives dio's digest (img_dev_finish_hash); any write
 * behind the frontier makes it -ENODATA, and the bytes are still right. Non-zero data for a cluster
 * outside the plan is refused (there is no room for it); zeros there are
 * fine, they read as zeros already.
 *
 * Without a plan a guest cluster is only allocated when non-zero data is
 * written to it, so clusters only ever written with zeros stay
 * unallocated. write_zeroes
 * on an allocated cluster keeps it allocated (refcount 1) and punches a
 * hole in the host file under it.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dev-qcow2-compress.h"
#include "dev-qcow2-header.h"
#include "dev-qcow2-writer.h"
#include "dio.h"

static struct qcow2_w *W(struct img_dev *dev)
{
	return img_dev_priv(dev);
}

static int w_io_err(struct img_dev *dev, int err, const char *what)
{
	return img_set_error(img_dev_ctx(dev), err, "%s %s: %s", what, W(dev)->path,
	                     strerror(-err));
}

/* The L2 entry of guest cluster @gc; NULL when its table does not exist and !create. */
static uint64_t *l2_slot(struct qcow2_w *w, uint64_t gc, bool create)
{
	uint64_t i1 = gc / w->l2_entries;

	if (!w->l2[i1]) {
		if (!create)
			return NULL;
		w->l2[i1] = calloc((size_t)w->l2_entries, sizeof(uint64_t));
		if (!w->l2[i1])
			return NULL;
	}
	return &w->l2[i1][gc % w->l2_entries];
}

int qcow2_rev_push(struct qcow2_w *w, uint64_t gc)
{
	if (w->rev_n == w->rev_cap) {
		uint64_t cap = w->rev_cap ? w->rev_cap * 2 : 1024;
		uint64_t *n = realloc(w->rev, (size_t)cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		w->rev = n;
		w->rev_cap = cap;
	}
	w->rev[w->rev_n++] = gc;
	return 0;
}

/* Allocate the next data cluster for guest cluster @gc. */
static int alloc_cluster(struct img_dev *dev, uint64_t gc, uint64_t *host)
{
	struct qcow2_w *w = W(dev);
	uint64_t *e = l2_slot(w, gc, true);

	if (!e || qcow2_rev_push(w, gc) < 0)
		return img_set_error(img_dev_ctx(dev), -ENOMEM, "out of memory for qcow2 tables");
	*e = *host = w->next_free;
	w->next_free += w->cs;
	return 0;
}

static uint64_t lookup(struct qcow2_w *w, uint64_t gc)
{
	uint64_t *e = l2_slot(w, gc, false);

	return e ? *e : 0;
}

/*
 * A run of guest bytes whose host bytes are contiguous: each op collects
 * pieces cluster by cluster and does one system call per run.
 */
struct run {
	uint64_t host, len;
	uint64_t pos;  /* writes and copies: offset of the run in the caller's range */
	uint8_t *rbuf; /* pread destination */
};

static bool run_extends(const struct run *r, uint64_t host)
{
	return r->len && r->host + r->len == host;
}

/*
 * Writes and copies share one walk over the guest range [off, off+len),
 * cluster piece by cluster piece: a piece of zeros that lands in a cluster
 * not allocated yet is skipped (it reads as zeros already, and a later write
 * that allocates the cluster starts from zeroed host bytes), so a cluster
 * only ever given zeros is never allocated; every other piece gets its
 * cluster, and host-contiguous pieces become one run for @flush.
 */
struct placer {
	/* Are the caller's @n bytes at @pos all zeros? */
	bool (*zero)(struct img_dev *dev, void *user, uint64_t pos, uint64_t n);
	/* Move run r (r->pos, r->len) to r->host. */
	int (*flush)(struct img_dev *dev, void *user, const struct run *r);
	void *user;
};

static int place(struct img_dev *dev, uint64_t off, uint64_t len, const struct placer *pl)
{
	struct qcow2_w *w = W(dev);
	struct run run = { 0 };
	uint64_t pos = 0;
	int r = 0;

	while (len && r == 0) {
		uint64_t gc = off >> w->cb, in = off & (w->cs - 1), host = lookup(w, gc);
		uint64_t n = IMG_MIN(len, w->cs - in);

		if (!host && pl->zero(dev, pl->user, pos, n)) {
			r = run.len ? pl->flush(dev, pl->user, &run) : 0;
			run.len = 0;
		} else if (!host && w->planned) {
			r = img_set_error(img_dev_ctx(dev), -EINVAL,
			                  "%s: data at guest offset %llu is outside the planned "
			                  "layout",
			                  w->path, (unsigned long long)off);
		} else if (!host && (r = alloc_cluster(dev, gc, &host)) < 0) {
			break;
		} else if (run_extends(&run, host + in)) {
			run.len += n;
		} else {
			r = run.len ? pl->flush(dev, pl->user, &run) : 0;
			run = (struct run){ .host = host + in, .len = n, .pos = pos };
		}
		pos += n;
		off += n;
		len -= n;
	}
	if (r == 0 && run.len)
		r = pl->flush(dev, pl->user, &run);
	return r;
}

/* ---- compressed, in order ------------------------------------------- */

/*
 * While a compressed image's writes come in order (each piece at or past
 * the last data cluster given so far, as the emitters here write), every
 * cluster is final when the writes move past it: it is handed to the
 * compressing workers from memory and laid out as qcow2_pack would lay out
 * the staged clusters, so the bytes are the same without staging the data
 * in the file and reading it back. A read behind that cluster is served
 * from the ring or the layout (decompressed). The first write behind it
 * to a cluster that has data (data or zeros) stages everything laid out so
 * far back in the file (qcow2_stream_unpack) and the image goes on staged,
 * as without streaming.
 */
/* Was guest cluster @gc given data cluster *@k (rev ascends while streaming)? */
static bool stream_find(const struct qcow2_w *w, uint64_t gc, uint64_t *k)
{
	uint64_t lo = 0, hi = w->rev_n;

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (w->rev[mid] < gc)
			lo = mid + 1;
		else
			hi = mid;
	}
	*k = lo;
	return lo < w->rev_n && w->rev[lo] == gc;
}

static bool stream_has(void *user, uint64_t gc)
{
	uint64_t k;

	return stream_find(W(user), gc, &k);
}

/* From the ring or the layout, decompressed. */
static int stream_read(void *user, uint64_t gc, uint8_t *out)
{
	struct qcow2_w *w = W(user);
	uint64_t k;

	stream_find(w, gc, &k);
	return qcow2_stream_read(w->stream, k, out);
}

/* The cluster in memory is final: to the workers. */
static int stream_put(void *user)
{
	return qcow2_stream_publish(W(user)->stream);
}

/* Guest cluster @gc gets the next data cluster, in memory. */
static int stream_open(void *user, uint64_t gc)
{
	struct img_dev *dev = user;
	struct qcow2_w *w = W(dev);

	if (!l2_slot(w, gc, true) || qcow2_rev_push(w, gc) < 0)
		return img_set_error(img_dev_ctx(dev), -ENOMEM, "out of memory for qcow2 tables");
	return qcow2_stream_open(w->stream, &w->bst.buf);
}

/* Out of order: stage what was laid out back in the file (see above). */
static int stream_stage(void *user)
{
	struct qcow2_w *w = W(user);
	int r = qcow2_stream_unpack(w->stream);

	qcow2_stream_free(w->stream);
	w->stream = NULL;
	return r;
}

static bool buf_zero(struct img_dev *dev, void *user, uint64_t pos, uint64_t n)
{
	(void)dev;
	return img_all_zero((const uint8_t *)user + pos, (size_t)n);
}

/*
 * Bytes at host offset @at through the writer when there is one (it hashes
 * them while they come in order, and a write of ours straight to the file
 * at or past its frontier would be overwritten by the zeros it fills a
 * short gap of its next run with), else straight to the file.
 */
static int emit(struct img_dev *dev, const void *buf, uint64_t len, uint64_t at)
{
	struct qcow2_w *w = W(dev);
	int e;

	if (w->dio)
		return img_dio_pwrite(w->dio, buf, len, at);
	e = img_pwrite_full(w->fd, buf, (size_t)len, at);
	return e < 0 ? w_io_err(dev, e, "writing") : 0;
}

static int flush_write(struct img_dev *dev, void *user, const struct run *r)
{
	return emit(dev, (const uint8_t *)user + r->pos, r->len, r->host);
}

static int w_pwrite(struct img_dev *dev, const void *buf, size_t len, uint64_t off)
{
	const struct placer pl = { buf_zero, flush_write, (void *)buf };
	const struct stream_op op = { .kind = STREAM_WRITE, .src = buf };
	int r = block_stream_op(&W(dev)->bst, off, len, &op);

	return r <= 0 ? r : place(dev, off, len, &pl);
}

static int flush_data(struct img_dev *dev, void *user, const struct run *r)
{
	return img_dio_write(W(dev)->dio, (const uint8_t *)user + r->pos, r->len, r->host);
}

static int w_write_data(struct img_dev *dev, const void *buf, size_t len, uint64_t off)
{
	const struct placer pl = { buf_zero, W(dev)->dio ? flush_data : flush_write, (void *)buf };
	const struct stream_op op = { .kind = STREAM_WRITE, .src = buf };
	int r = block_stream_op(&W(dev)->bst, off, len, &op);

	return r <= 0 ? r : place(dev, off, len, &pl);
}

static int flush_read(struct img_dev *dev, struct run *r)
{
	int e = r->len ? img_dio_fence(W(dev)->dio, r->host, r->len) : 0;

	if (e < 0)
		return e;
	e = r->len ? img_pread_full(W(dev)->fd, r->rbuf, (size_t)r->len, r->host) : 0;

	if (e == -EIO) {
		/* The tail of a partly written last cluster may lie past EOF: zeros. */
		struct stat st;
		uint64_t have;

		if (fstat(W(dev)->fd, &st) < 0)
			return w_io_err(dev, -errno, "reading");
		have = (uint64_t)st.st_size > r->host ? (uint64_t)st.st_size - r->host : 0;
		have = IMG_MIN(have, r->len);
		memset(r->rbuf + have, 0, (size_t)(r->len - have));
		e = have ? img_pread_full(W(dev)->fd, r->rbuf, (size_t)have, r->host) : 0;
	}
	r->len = 0;
	return e < 0 ? w_io_err(dev, e, "reading") : 0;
}

static int w_pread(struct img_dev *dev, void *buf, size_t len, uint64_t off)
{
	struct qcow2_w *w = W(dev);
	uint8_t *p = buf;
	struct run run = { 0 };
	const struct stream_op op = { .kind = STREAM_READ, .dst = buf };
	int r = block_stream_op(&W(dev)->bst, off, len, &op);

	if (r <= 0)
		return r;
	while (len) {
		uint64_t gc = off >> w->cb, in = off & (w->cs - 1), host = lookup(w, gc);
		size_t n = (size_t)IMG_MIN(len, w->cs - in);

		if (!host) {
			memset(p, 0, n);
			r = flush_read(dev, &run);
		} else if (run_extends(&run, host + in)) {
			run.len += n;
			r = 0;
		} else {
			r = flush_read(dev, &run);
			run = (struct run){ .host = host + in, .len = n, .rbuf = p };
		}
		if (r < 0)
			return r;
		p += n;
		off += n;
		len -= n;
	}
	return flush_read(dev, &run);
}

static const uint8_t zeros[65536];

static int write_zero_bytes(struct img_dev *dev, uint64_t host, uint64_t len)
{
	int e = img_dio_fence(W(dev)->dio, host, len);

	if (e < 0)
		return e;
	while (len) {
		size_t n = (size_t)IMG_MIN(len, sizeof(zeros));

		e = img_pwrite_full(W(dev)->fd, zeros, n, host);
		if (e < 0)
			return w_io_err(dev, e, "writing");
		host += n;
		len -= n;
	}
	return 0;
}

static int flush_punch(struct img_dev *dev, struct run *r)
{
	int e = r->len ? img_dio_fence(W(dev)->dio, r->host, r->len) : 0;

	if (e < 0)
		return e;
	if (r->len && fallocate(W(dev)->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
	                        (off_t)r->host, (off_t)r->len) < 0)
		e = write_zero_bytes(dev, r->host, r->len);
	r->len = 0;
	return e;
}

/*
 * Planned layout: host bytes to read as zeros, told to the writer first.
 * In order they are a hole of the new file already (or short zeros in the
 * run); behind the frontier (img_dio_zero fenced them) punched.
 */
static int flush_planned_zeros(struct img_dev *dev, struct run *r)
{
	int e = r->len ? img_dio_zero(W(dev)->dio, r->host, r->len) : 1;

	if (e == 0) {
		if (fallocate(W(dev)->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		              (off_t)r->host, (off_t)r->len) < 0)
			e = write_zero_bytes(dev, r->host, r->len);
	}
	r->len = 0;
	return e < 0 ? e : 0;
}

static int planned_zeroes(struct img_dev *dev, uint64_t off, uint64_t len)
{
	struct qcow2_w *w = W(dev);
	struct run run = { 0 };
	int r;

	while (len) {
		uint64_t gc = off >> w->cb, in = off & (w->cs - 1), host = lookup(w, gc);
		uint64_t n = IMG_MIN(len, w->cs - in);

		if (!host) {
			r = flush_planned_zeros(dev, &run);
		} else if (run_extends(&run, host + in)) {
			run.len += n;
			r = 0;
		} else {
			r = flush_planned_zeros(dev, &run);
			run = (struct run){ .host = host + in, .len = n };
		}
		if (r < 0)
			return r;
		off += n;
		len -= n;
	}
	return flush_planned_zeros(dev, &run);
}

/* Zeros over [off, off+len): nothing to do where unallocated. */
static int w_write_zeroes(struct img_dev *dev, uint64_t off, uint64_t len)
{
	struct qcow2_w *w = W(dev);
	struct run run = { 0 };
	const struct stream_op op = { .kind = STREAM_ZERO };
	int r = block_stream_op(&W(dev)->bst, off, len, &op);

	if (r <= 0)
		return r;
	if (w->planned)
		return planned_zeroes(dev, off, len);
	while (len) {
		uint64_t gc = off >> w->cb, in = off & (w->cs - 1), host = lookup(w, gc);
		uint64_t n = IMG_MIN(len, w->cs - in);

		if (!host) {
			r = flush_punch(dev, &run);
		} else if (n < w->cs) {
			r = flush_punch(dev, &run);
			if (r == 0)
				r = write_zero_bytes(dev, host + in, n);
		} else if (run_extends(&run, host)) {
			run.len += n;
			r = 0;
		} else {
			r = flush_punch(dev, &run);
			run = (struct run){ .host = host, .len = n };
		}
		if (r < 0)
			return r;
		off += n;
		len -= n;
	}
	return flush_punch(dev, &run);
}

/* Where a copy's bytes come from: @fd from offset @src on. */
struct copy_src {
	int fd;
	uint64_t src;
};

/* Move one host-contiguous run from the source. */
static int flush_copy(struct img_dev *dev, void *user, const struct run *run)
{
	const struct copy_src *cs = user;
	struct qcow2_w *w = W(dev);
	int e;

	if (w->dio)
		return img_dio_copy(w->dio, cs->fd, cs->src + run->pos, run->len, run->host);
	e = img_copy_fd_range(cs->fd, cs->src + run->pos, w->fd, run->host, run->len);
	if (e == -ENODATA)
		return img_set_error(img_dev_ctx(dev), -EIO,
		                     "input changed while reading (shorter than expected)");
	return e < 0 ? w_io_err(dev, e, "copying into") : 0;
}

/*
 * Are the source's @n bytes at @pos (at most a cluster) all zeros? Files
 * hold such runs (padding inside binaries) that are not holes; place()
 * leaves them out of clusters not allocated yet. One small read decides for
 * nearly every data range (its first bytes are not zero); only a range that
 * starts with zeros is read whole. Unreadable as a file (a pipe): data.
 */
static bool source_zero(struct img_dev *dev, void *user, uint64_t pos, uint64_t n)
{
	const struct copy_src *cs = user;
	struct qcow2_w *w = W(dev);
	uint64_t src = cs->src + pos;
	uint8_t head[64];
	size_t h = (size_t)IMG_MIN(n, sizeof(head));

	if (img_pread_full(cs->fd, head, h, src) < 0 || !img_all_zero(head, h))
		return false;
	if (n == h)
		return true;
	if (!w->zbuf && !(w->zbuf = malloc((size_t)w->cs)))
		return false;
	return img_pread_full(cs->fd, w->zbuf, (size_t)n, src) == 0 &&
	       img_all_zero(w->zbuf, (size_t)n);
}

/* Copy a range of @fd (dev.c already skipped its holes): allocate clusters,
 * contiguous where new. */
static int copy_data(struct img_dev *dev, int fd, uint64_t src, uint64_t len, uint64_t dst)
{
	struct copy_src cs = { fd, src };
	const struct placer pl = { source_zero, flush_copy, &cs };
	const struct stream_op op = { .kind = STREAM_COPY, .fd = fd, .from = src };
	int r = block_stream_op(&W(dev)->bst, dst, len, &op);

	return r <= 0 ? r : place(dev, dst, len, &pl);
}

static int w_flush(struct img_dev *dev)
{
	return img_dio_drain(W(dev)->dio);
}

/* ---- finish --------------------------------------------------------- */

static uint16_t refcount_of(const struct qcow2_w *w, uint64_t c)
{
	uint64_t ds = w->data_start >> w->cb, de = w->data_end >> w->cb;

	if (w->dref && c >= ds && c < de)
		return w->dref[c - ds];
	return 1;
}

/* L2 table @i as on disk: flags set (plain images: every cluster has refcount 1). */
static void encode_l2(const struct qcow2_w *w, uint32_t i, uint8_t *buf)
{
	for (uint64_t j = 0; j < w->l2_entries; j++) {
		uint64_t v = w->l2[i][j];

		/* Plain images: host offsets still; all have refcount 1. */
		if (!w->dref && v)
			v |= QCOW2_OFLAG_COPIED;
		img_put_be64(buf + j * 8, v);
	}
}

/* The refcount table: @rb blocks from host offset @blocks on. */
static void encode_reftable(const struct qcow2_w *w, uint8_t *buf, uint64_t rt, uint64_t rb,
                            uint64_t blocks)
{
	memset(buf, 0, (size_t)(rt * w->cs));
	for (uint64_t i = 0; i < rb; i++)
		img_put_be64(buf + i * 8, blocks + i * w->cs);
}

/* Refcount block @i of an image of @total clusters. */
static void encode_refblock(const struct qcow2_w *w, uint8_t *buf, uint64_t i, uint64_t total)
{
	uint64_t rb_entries = w->cs / 2, c = i * rb_entries;

	memset(buf, 0, (size_t)w->cs);
	for (uint64_t j = 0; j < rb_entries && c < total; j++, c++)
		img_put_be16(buf + j * 2, refcount_of(w, c));
}

static int write_tables(struct img_dev *dev)
{
	struct qcow2_w *w = W(dev);
	uint64_t cs = w->cs, n_l2 = 0, meta, rt, rb, total;
	uint64_t l1_bytes = IMG_ALIGN_UP((uint64_t)w->hdr.l1_size * 8, cs), k = 0;
	uint8_t *buf = NULL, *l1 = NULL;
	int e = 0;

	for (uint32_t i = 0; i < w->hdr.l1_size; i++) {
		/* Compression drops all-zero clusters: a table may have emptied. */
		if (w->l2[i] && img_all_zero(w->l2[i], (size_t)cs)) {
			free(w->l2[i]);
			w->l2[i] = NULL;
		}
		n_l2 += w->l2[i] != NULL;
	}
	meta = w->data_end + n_l2 * cs;
	qcow2_refcount_fit(meta >> w->cb, w->cb, &rt, &rb);
	total = (meta >> w->cb) + rt + rb;
	if (rt * cs > QCOW2_MAX_REFTABLE_BYTES)
		return img_set_error(img_dev_ctx(dev), -EFBIG,
		                     "%s: the image needs a refcount table beyond qcow2 limits",
		                     w->path);
	buf = malloc((size_t)IMG_MAX(cs, rt * cs));
	l1 = calloc(1, (size_t)IMG_MAX(l1_bytes, cs));
	if (!buf || !l1) {
		e = img_set_error(img_dev_ctx(dev), -ENOMEM, "out of memory");
		goto out;
	}
	/* The data area may have shrunk (compression): drop the staged tail. */
	if (ftruncate(w->fd, (off_t)w->data_end) < 0) {
		e = w_io_err(dev, -errno, "truncating");
		goto out;
	}
	for (uint32_t i = 0; i < w->hdr.l1_size; i++) {
		uint64_t at = w->data_end + k * cs;

		if (!w->l2[i])
			continue;
		encode_l2(w, i, buf);
		e = img_pwrite_full(w->fd, buf, (size_t)cs, at);
		if (e < 0)
			goto io;
		img_put_be64(l1 + (uint64_t)i * 8, at | QCOW2_OFLAG_COPIED);
		k++;
	}
	e = img_pwrite_full(w->fd, l1, (size_t)l1_bytes, w->hdr.l1_offset);
	if (e < 0)
		goto io;
	encode_reftable(w, buf, rt, rb, meta + rt * cs);
	e = img_pwrite_full(w->fd, buf, (size_t)(rt * cs), meta);
	if (e < 0)
		goto io;
	for (uint64_t i = 0; i < rb; i++) {
		encode_refblock(w, buf, i, total);
		e = img_pwrite_full(w->fd, buf, (size_t)cs, meta + (rt + i) * cs);
		if (e < 0)
			goto io;
	}
	w->hdr.reftable_offset = meta;
	w->hdr.reftable_clusters = (uint32_t)rt;
	qcow2_encode_header(&w->hdr, buf);
	e = img_pwrite_full(w->fd, buf, (size_t)cs, 0);
	if (e < 0)
		goto io;
	if (ftruncate(w->fd, (off_t)(total * cs)) < 0 || fsync(w->fd) < 0)
		e = w_io_err(dev, -errno, "completing");
	goto out;
io:
	e = w_io_err(dev, e, "writing");
out:
	free(buf);
	free(l1);
	return e;
}

/* ---- the planned layout ---------------------------------------------- */

/* [off, off+len) will be written (dev.c checked: ascending, inside the disk). */
static int w_plan(struct img_dev *dev, uint64_t off, uint64_t len)
{
	struct qcow2_w *w = W(dev);
	uint64_t first = off >> w->cb, end = ((off + len - 1) >> w->cb) + 1;
	struct qcow2_run *last = w->plan_n ? &w->plan[w->plan_n - 1] : NULL;

	if (w->compression != IMG_QCOW2_COMPRESS_NONE)
		return 0; /* staged and packed at finish: nothing to lay out */
	/* Ranges may share a cluster with the one before, or touch it. */
	if (last && first <= last->gc + last->n) {
		last->n = IMG_MAX(last->n, end - last->gc);
		return 0;
	}
	if (w->plan_n == w->plan_cap) {
		size_t cap = w->plan_cap ? w->plan_cap * 2 : 64;
		struct qcow2_run *n = realloc(w->plan, cap * sizeof(*n));

		if (!n)
			return img_set_error(img_dev_ctx(dev), -ENOMEM, "out of memory");
		w->plan = n;
		w->plan_cap = cap;
	}
	w->plan[w->plan_n++] = (struct qcow2_run){ first, end - first };
	return 0;
}

/*
 * Lay the file out for the plan and write everything in front of the data,
 * in file order: header, L1, refcount table, refcount blocks (every cluster
 * of the file has refcount 1, and the file's size is known now), the L2
 * tables of the planned clusters, in L1 order. The data clusters follow,
 * one per planned guest cluster, in guest order: written in plan order, the
 * whole file goes out front to back.
 */
static int w_plan_done(struct img_dev *dev)
{
	struct qcow2_w *w = W(dev);
	uint64_t cs = w->cs, l1c = IMG_ALIGN_UP((uint64_t)w->hdr.l1_size * 8, cs) / cs;
	uint64_t n_l2 = 0, data = 0, rt, rb, front, l2_at, data_at, last_t = UINT64_MAX, k;
	uint8_t *buf = NULL, *l1 = NULL;
	int e = 0;

	if (w->compression != IMG_QCOW2_COMPRESS_NONE)
		return 0;
	for (size_t i = 0; i < w->plan_n; i++) {
		uint64_t t0 = w->plan[i].gc / w->l2_entries;
		uint64_t t1 = (w->plan[i].gc + w->plan[i].n - 1) / w->l2_entries;

		n_l2 += t1 - t0 + 1 - (t0 == last_t);
		last_t = t1;
		data += w->plan[i].n;
	}
	front = 1 + l1c;
	qcow2_refcount_fit(front + n_l2 + data, w->cb, &rt, &rb);
	if (rt * cs > QCOW2_MAX_REFTABLE_BYTES)
		return img_set_error(img_dev_ctx(dev), -EFBIG,
		                     "%s: the image needs a refcount table beyond qcow2 limits",
		                     w->path);
	w->total = front + rt + rb + n_l2 + data;
	l2_at = (front + rt + rb) * cs;
	data_at = l2_at + n_l2 * cs;
	/* The data clusters, in guest order; the tables know them from now on. */
	k = 0;
	for (size_t i = 0; i < w->plan_n; i++)
		for (uint64_t gc = w->plan[i].gc; gc < w->plan[i].gc + w->plan[i].n; gc++) {
			uint64_t *slot = l2_slot(w, gc, true);

			if (!slot)
				return img_set_error(img_dev_ctx(dev), -ENOMEM,
				                     "out of memory for qcow2 tables");
			*slot = data_at + k++ * cs;
		}
	w->next_free = w->data_end = w->total * cs;
	buf = malloc((size_t)IMG_MAX(cs, rt * cs));
	l1 = calloc(1, (size_t)(l1c * cs));
	if (!buf || !l1) {
		e = img_set_error(img_dev_ctx(dev), -ENOMEM, "out of memory");
		goto out;
	}
	k = 0;
	for (uint32_t i = 0; i < w->hdr.l1_size; i++)
		if (w->l2[i])
			img_put_be64(l1 + (uint64_t)i * 8, (l2_at + k++ * cs) | QCOW2_OFLAG_COPIED);
	w->hdr.reftable_offset = front * cs;
	w->hdr.reftable_clusters = (uint32_t)rt;
	qcow2_encode_header(&w->hdr, buf);
	e = emit(dev, buf, cs, 0);
	if (e == 0)
		e = emit(dev, l1, l1c * cs, w->hdr.l1_offset);
	if (e == 0) {
		encode_reftable(w, buf, rt, rb, (front + rt) * cs);
		e = emit(dev, buf, rt * cs, front * cs);
	}
	for (uint64_t i = 0; e == 0 && i < rb; i++) {
		encode_refblock(w, buf, i, w->total);
		e = emit(dev, buf, cs, (front + rt + i) * cs);
	}
	k = 0;
	for (uint32_t i = 0; e == 0 && i < w->hdr.l1_size; i++) {
		if (!w->l2[i])
			continue;
		encode_l2(w, i, buf);
		e = emit(dev, buf, cs, l2_at + k++ * cs);
	}
	w->planned = e == 0;
out:
	free(buf);
	free(l1);
	return e;
}

/*
 * Finish a planned image: nothing is left to write, the tables went out at
 * plan_done. The file ends after the last planned cluster (a hole when it
 * was never written). The hash is the writer's when everything came in
 * order.
 */
static int finish_planned(struct img_dev *dev)
{
	struct qcow2_w *w = W(dev);
	int r = img_dev_finish_hash(dev, w->dio, w->total * w->cs);

	if (r < 0)
		return r;
	if (ftruncate(w->fd, (off_t)(w->total * w->cs)) < 0 || fsync(w->fd) < 0)
		return w_io_err(dev, -errno, "completing");
	return 0;
}

static int w_finish(struct img_dev *dev)
{
	struct qcow2_w *w = W(dev);
	int r;

	if (w->planned)
		return finish_planned(dev);
	if (w->bst.on) {
		r = block_stream_end(&w->bst);
		if (r == 0)
			r = qcow2_stream_finish(w->stream);
		qcow2_stream_free(w->stream);
		w->stream = NULL;
		return r < 0 ? r : write_tables(dev);
	}
	r = img_dio_drain(w->dio);
	if (r < 0)
		return r;
	if (w->compression != IMG_QCOW2_COMPRESS_NONE) {
		r = qcow2_pack(dev, w);
		if (r < 0)
			return r;
	} else {
		w->data_end = w->next_free;
	}
	return write_tables(dev);
}

static void w_destroy(struct img_dev *dev)
{
	struct qcow2_w *w = W(dev);

	qcow2_stream_free(w->stream);
	img_dio_free(w->dio);
	if (w->l2)
		for (uint32_t i = 0; i < w->hdr.l1_size; i++)
			free(w->l2[i]);
	free(w->l2);
	free(w->rev);
	free(w->dref);
	free(w->zbuf);
	free(w->plan);
	free(w->path);
	if (w->fd >= 0)
		close(w->fd);
}

static const struct img_dev_ops qcow2_w_ops = {
	.name = "qcow2",
	.pread = w_pread,
	.pwrite = w_pwrite,
	.write_zeroes = w_write_zeroes,
	.copy_from_fd = copy_data,
	.flush = w_flush,
	.write_data = w_write_data,
	.finish = w_finish,
	.destroy = w_destroy,
	.plan = w_plan,
	.plan_done = w_plan_done,
};

int qcow2_create_with_backing(struct img_ctx *ctx, const char *path,
                              const struct img_qcow2_opts *opts, const char *backing,
                              const char *backing_fmt, struct img_dev **out)
{
	unsigned cb = opts->cluster_bits ? opts->cluster_bits : 16;
	uint64_t l1n, cs;
	struct img_dev *dev;
	struct qcow2_w *w;
	int r;

	if (cb < QCOW2_MIN_CLUSTER_BITS || cb > QCOW2_MAX_CLUSTER_BITS)
		return img_set_error(
		    ctx, -EINVAL, "%s: qcow2 cluster size 2^%u is outside 512 B..2 MiB", path, cb);
	cs = 1ull << cb;
	if (opts->size % 512)
		return img_set_error(ctx, -EINVAL,
		                     "%s: qcow2 virtual size %llu is not a multiple of 512", path,
		                     (unsigned long long)opts->size);
	l1n = qcow2_l1_entries(opts->size, cb);
	if (opts->size > QCOW2_MAX_VIRTUAL_SIZE || l1n * 8 > QCOW2_MAX_L1_BYTES)
		return img_set_error(
		    ctx, -EFBIG, "%s: a %llu-byte disk is too large for %llu-byte qcow2 clusters",
		    path, (unsigned long long)opts->size, (unsigned long long)cs);
	if (opts->compression != IMG_QCOW2_COMPRESS_NONE &&
	    opts->compression != IMG_QCOW2_COMPRESS_ZSTD &&
	    opts->compression != IMG_QCOW2_COMPRESS_ZLIB)
		return img_set_error(ctx, -EINVAL, "%s: unknown qcow2 compression %d", path,
		                     (int)opts->compression);
	r = img_dev_new(ctx, &qcow2_w_ops, opts->size, 0, sizeof(*w), &dev);
	if (r < 0)
		return r;
	w = img_dev_priv(dev);
	w->fd = -1;
	w->cb = cb;
	w->cs = cs;
	w->l2_entries = cs / 8;
	w->compression = opts->compression;
	w->level = opts->level;
	w->threads = opts->threads;
	w->hdr.version = 3;
	w->hdr.cluster_bits = cb;
	w->hdr.size = opts->size;
	w->hdr.l1_size = (uint32_t)l1n;
	w->hdr.l1_offset = cs;
	w->hdr.refcount_order = 4;
	w->hdr.header_length = QCOW2_H_V3_LENGTH;
	if (opts->compression == IMG_QCOW2_COMPRESS_ZSTD) {
		w->hdr.compression_type = QCOW2_COMPRESSION_ZSTD;
		w->hdr.incompat = QCOW2_INCOMPAT_COMPRESSION;
	}
	if (backing) {
		snprintf(w->hdr.backing_file, sizeof(w->hdr.backing_file), "%s", backing);
		snprintf(w->hdr.backing_format, sizeof(w->hdr.backing_format), "%s", backing_fmt);
	}
	w->data_start = cs + IMG_ALIGN_UP(l1n * 8, cs);
	w->next_free = w->data_start;
	w->path = img_strdup(path);
	w->l2 = calloc((size_t)IMG_MAX(l1n, 1), sizeof(*w->l2));
	if (!w->path || !w->l2) {
		img_dev_unref(dev);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	w->fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		r = img_set_error(ctx, -errno, "creating %s: %s", path, strerror(errno));
		img_dev_unref(dev);
		return r;
	}
	/*
	 * Compressed images compress their clusters from memory while the
	 * writes come in order and write what is packed through the page cache
	 * (it is read back for the sha256, and staged clusters are read back
	 * to pack them): no direct writer for them.
	 */
	if (opts->compression == IMG_QCOW2_COMPRESS_NONE) {
		r = img_dio_new(ctx, w->fd, path, &w->dio);
	} else if (!(w->zbuf = malloc((size_t)cs))) {
		r = img_set_error(ctx, -ENOMEM, "out of memory");
	} else {
		w->bst = (struct block_stream){ .ctx = ctx,
			                        .name = w->path,
			                        .bs = cs,
			                        .tmp = w->zbuf,
			                        .user = dev,
			                        .has = stream_has,
			                        .read = stream_read,
			                        .put = stream_put,
			                        .open = stream_open,
			                        .stage = stream_stage };
		r = qcow2_stream_start(dev, w, &w->stream);
		w->bst.on = r == 0;
	}
	if (r < 0) {
		img_dev_unref(dev);
		return r;
	}
	*out = dev;
	return 0;
}

int img_dev_qcow2_create(struct img_ctx *ctx, const char *path, const struct img_qcow2_opts *opts,
                         struct img_dev **out)
{
	return qcow2_create_with_backing(ctx, path, opts, NULL, NULL, out);
}
