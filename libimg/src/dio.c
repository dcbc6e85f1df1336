/*
 * dio.c -- the output's writer: write-behind through O_DIRECT, and the
 * SHA-256 of the output taken on the bytes as they go out.
 *
 * Copying file data into the output through the page cache (copy_file_range,
 * or pread + pwrite) makes the kernel copy every page into a new page-cache
 * page with per-page file-system bookkeeping, and the output's fsync then
 * writes all of it back. Here data that lands host-contiguously is gathered
 * into large aligned buffers (one pread each, out of the source's page cache)
 * and a writer thread writes each full buffer with O_DIRECT while the next
 * one fills: the data reaches the device in one pass and the final fsync has
 * little left to do.
 *
 * A buffer holds one run of host bytes from any offset; its first byte sits
 * at the same place in its page as in the file, so the run's whole pages are
 * aligned in memory too. The writer thread writes the whole pages directly
 * and the partial pages at the run's ends through the page cache, buffers in
 * the order they were filled, so a range written twice ends with the later
 * data. A write the caller makes itself (img_dio_fence(), then its own
 * pwrite) waits for the buffers under the pages it touches. Where O_DIRECT
 * is refused (a file system without it, an alignment the device does not
 * take) the same buffers are written through the page cache.
 *
 * In order: as long as every write starts at or past the end of everything
 * written before (the frontier), the writer is "ordered": metadata writes
 * (img_dio_pwrite) join the runs too, a short gap goes out as zeros inside
 * the run, a longer one (or img_dio_zero) stays a hole of the new file, and
 * a hasher thread hashes each buffer, in the order they were filled and
 * while the writer thread writes it (so the device does not wait for the
 * hash), with the gap before it hashed as zeros, never read. img_dio_digest() then gives the
 * SHA-256 of the whole file without reading it back. The first write behind the frontier ends that
 * for good: the writer goes on as before (every write still lands, in order) and img_dio_digest()
 * says -ENODATA, so the caller reads the output back. Only a new (all-hole) file can be hashed this
 * way. A build without a manifest (img_build, no o->manifest) takes no hash at all.
 */
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "context-private.h"
#include "dio.h"

#define DIO_ALIGN    4096u
#define DIO_BUFS     4
#define DIO_BUF_SIZE (4u << 20)
/* In order, a gap up to this size inside a run is written as zeros. */
#define DIO_GAP_FILL (64u << 10)

/* BUF_WRITTEN: written, its hash still to be taken (then FREE). */
enum buf_state { BUF_FREE, BUF_FILLING, BUF_QUEUED, BUF_WRITING, BUF_WRITTEN };

struct dio_buf {
	uint8_t *mem;
	uint64_t base; /* host offset of mem[0] (aligned) */
	size_t start;  /* the run: mem[start, len) (start < DIO_ALIGN) */
	size_t len;
	uint64_t seq; /* submission order */
	bool hash;    /* the hasher thread hashes it (written in order) */
	bool hashed;  /* ... and has */
	enum buf_state state;
};

struct img_dio {
	struct img_ctx *ctx;
	int fd;  /* the output, through the page cache */
	int dfd; /* the same file, O_DIRECT (-1: none) */
	char *name;
	struct dio_buf buf[DIO_BUFS];
	struct dio_buf *fill; /* the run being gathered, or NULL */
	uint64_t seq;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* any state change; waiters re-check */
	pthread_t thread, hasher;
	bool started, stop;
	bool buffered; /* O_DIRECT refused: the thread writes through the page cache */
	int error;     /* first write failure (negative errno), set by the thread */
	/* In order (caller's thread): everything so far below @front. */
	bool ordered;
	bool hash; /* take the SHA-256 at all (not when no manifest wants it) */
	uint64_t front;
	/* The hash (hasher thread while it runs): bytes [0, hashed) of the file. */
	EVP_MD_CTX *md;
	uint64_t hashed;
};

static uint64_t align_down(uint64_t v)
{
	return v & ~(uint64_t)(DIO_ALIGN - 1);
}

static uint64_t align_up(uint64_t v)
{
	return align_down(v + DIO_ALIGN - 1);
}

/* May this descriptor take O_DIRECT writes of our alignment? -1: no. */
static int open_direct(int fd)
{
	char proc[64];
	int dfd;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	dfd = open(proc, O_WRONLY | O_DIRECT | O_CLOEXEC);
	if (dfd < 0)
		return -1; /* no O_DIRECT here (or no /proc): the thread writes buffered */
#ifdef STATX_DIOALIGN
	{
		struct statx stx;

		if (statx(dfd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
		    (stx.stx_mask & STATX_DIOALIGN) &&
		    (stx.stx_dio_offset_align == 0 || stx.stx_dio_offset_align > DIO_ALIGN ||
		     stx.stx_dio_mem_align > DIO_ALIGN)) {
			close(dfd);
			return -1;
		}
	}
#endif
	return dfd;
}

int img_dio_new(struct img_ctx *ctx, int fd, const char *name, struct img_dio **out)
{
	struct img_dio *d;

	*out = NULL;
	if (!img_ctx_direct_io(ctx))
		return 0;
	d = calloc(1, sizeof(*d));
	if (!d || !(d->name = img_strdup(name ? name : "output")) || !(d->md = EVP_MD_CTX_new()) ||
	    !EVP_DigestInit_ex(d->md, EVP_sha256(), NULL)) {
		if (d) {
			EVP_MD_CTX_free(d->md);
			free(d->name);
		}
		free(d);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	d->ctx = ctx;
	d->fd = fd;
	d->dfd = open_direct(fd);
	d->buffered = d->dfd < 0;
	d->ordered = true;
	d->hash = !ctx->no_output_hash;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	*out = d;
	return 0;
}

/* Host bytes mem[a, b) of @b through the page cache, or directly. */
static int write_part(struct img_dio *d, const struct dio_buf *b, size_t a, size_t e, bool direct)
{
	int r;

	if (a >= e)
		return 0;
	if (direct && !d->buffered) {
		r = img_pwrite_full(d->dfd, b->mem + a, e - a, b->base + a);
		if (r != -EINVAL)
			return r;
		/* alignment or file system: no direct writes from now on (the
		 * whole part again: what went out directly is the same bytes) */
		d->buffered = true;
	}
	return img_pwrite_full(d->fd, b->mem + a, e - a, b->base + a);
}

/* Write one queued buffer: its whole pages directly, the partial ones buffered. */
static int write_out(struct img_dio *d, const struct dio_buf *b)
{
	size_t s = b->start, e = b->len;
	size_t ws = (size_t)IMG_MIN(align_up(s), e), we = (size_t)IMG_MAX(align_down(e), ws);
	int r = write_part(d, b, s, ws, false);

	if (r == 0)
		r = write_part(d, b, ws, we, true);
	if (r == 0)
		r = write_part(d, b, we, e, false);
	return r;
}

static const uint8_t zeros[65536];

static void hash_zeros(EVP_MD_CTX *md, uint64_t n)
{
	while (n) {
		size_t k = (size_t)IMG_MIN(n, sizeof(zeros));

		EVP_DigestUpdate(md, zeros, k);
		n -= k;
	}
}

/* A buffer written in order: the hole before it as zeros, then its bytes. */
static void hash_out(struct img_dio *d, const struct dio_buf *b)
{
	uint64_t at = b->base + b->start;

	if (at > d->hashed)
		hash_zeros(d->md, at - d->hashed);
	EVP_DigestUpdate(d->md, b->mem + b->start, b->len - b->start);
	d->hashed = b->base + b->len;
}

static struct dio_buf *next_queued(struct img_dio *d)
{
	struct dio_buf *best = NULL;

	for (int i = 0; i < DIO_BUFS; i++)
		if (d->buf[i].state == BUF_QUEUED && (!best || d->buf[i].seq < best->seq))
			best = &d->buf[i];
	return best;
}

static bool unhashed(const struct dio_buf *b)
{
	return b->hash && !b->hashed &&
	       (b->state == BUF_QUEUED || b->state == BUF_WRITING || b->state == BUF_WRITTEN);
}

/* The next buffer to hash: the first filled of those not hashed yet. */
static struct dio_buf *next_unhashed(struct img_dio *d)
{
	struct dio_buf *best = NULL;

	for (int i = 0; i < DIO_BUFS; i++)
		if (unhashed(&d->buf[i]) && (!best || d->buf[i].seq < best->seq))
			best = &d->buf[i];
	return best;
}

static void *writer(void *arg)
{
	struct img_dio *d = arg;

	pthread_mutex_lock(&d->lock);
	for (;;) {
		struct dio_buf *b = next_queued(d);
		int e;

		if (!b) {
			if (d->stop)
				break;
			pthread_cond_wait(&d->cond, &d->lock);
			continue;
		}
		b->state = BUF_WRITING;
		pthread_mutex_unlock(&d->lock);
		e = write_out(d, b);
		pthread_mutex_lock(&d->lock);
		if (e < 0 && !d->error)
			d->error = e;
		b->state = b->hash && !b->hashed ? BUF_WRITTEN : BUF_FREE;
		pthread_cond_broadcast(&d->cond);
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

/*
 * Buffers are hashed in the order they were filled (bytes in file order: a
 * buffer is hashed only while the output is in order), beside their write.
 */
static void *hasher(void *arg)
{
	struct img_dio *d = arg;

	pthread_mutex_lock(&d->lock);
	for (;;) {
		struct dio_buf *b = next_unhashed(d);

		if (!b) {
			if (d->stop)
				break;
			pthread_cond_wait(&d->cond, &d->lock);
			continue;
		}
		pthread_mutex_unlock(&d->lock);
		hash_out(d, b);
		pthread_mutex_lock(&d->lock);
		b->hashed = true;
		if (b->state == BUF_WRITTEN)
			b->state = BUF_FREE;
		pthread_cond_broadcast(&d->cond);
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

static int write_error(struct img_dio *d, int e)
{
	return img_set_error(d->ctx, e, "writing %s: %s", d->name, strerror(-e));
}

static int read_error(struct img_dio *d, int e)
{
	if (e == -EIO)
		return img_set_error(d->ctx, e,
		                     "input changed while reading (shorter than expected)");
	return img_set_error(d->ctx, e, "reading input: %s", strerror(-e));
}

/* The writer and hasher threads, started on the first run; signals stay with the caller's threads.
 */
static int start(struct img_dio *d)
{
	sigset_t all, old;
	int e;

	if (d->started)
		return 0;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	e = pthread_create(&d->thread, NULL, writer, d);
	if (!e && (e = pthread_create(&d->hasher, NULL, hasher, d)) != 0) {
		pthread_mutex_lock(&d->lock);
		d->stop = true;
		pthread_cond_broadcast(&d->cond);
		pthread_mutex_unlock(&d->lock);
		pthread_join(d->thread, NULL);
		d->stop = false;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e)
		return img_set_error(d->ctx, -e, "starting the writer thread: %s", strerror(e));
	d->started = true;
	return 0;
}

/* A free buffer (allocated on first use), waiting for the writer if need be. */
static int take_buf(struct img_dio *d, struct dio_buf **out)
{
	struct dio_buf *b = NULL;
	int e;

	pthread_mutex_lock(&d->lock);
	for (;;) {
		for (int i = 0; i < DIO_BUFS && !b; i++)
			if (d->buf[i].state == BUF_FREE)
				b = &d->buf[i];
		if (b || d->error)
			break;
		pthread_cond_wait(&d->cond, &d->lock);
	}
	e = d->error;
	if (b && !e)
		b->state = BUF_FILLING;
	pthread_mutex_unlock(&d->lock);
	if (e)
		return write_error(d, e);
	if (!b->mem && !(b->mem = aligned_alloc(DIO_ALIGN, DIO_BUF_SIZE))) {
		b->state = BUF_FREE;
		return img_set_error(d->ctx, -ENOMEM, "out of memory");
	}
	*out = b;
	return 0;
}

/* Hand the run being gathered to the writer thread. */
static int close_run(struct img_dio *d)
{
	struct dio_buf *b = d->fill;
	bool some;
	int e = 0;

	if (!b)
		return 0;
	d->fill = NULL;
	some = b->len > b->start;
	if (some)
		e = start(d);
	pthread_mutex_lock(&d->lock);
	if (e == 0 && some) {
		b->seq = ++d->seq;
		b->hash = d->ordered && d->hash;
		b->hashed = false;
		b->state = BUF_QUEUED;
	} else {
		b->state = BUF_FREE;
	}
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	return e;
}

/* A new run from host offset @dst. */
static int open_run(struct img_dio *d, uint64_t dst)
{
	struct dio_buf *b = NULL;
	int e = close_run(d);

	if (e == 0)
		e = take_buf(d, &b);
	if (e < 0)
		return e;
	b->base = align_down(dst);
	b->start = b->len = (size_t)(dst - b->base);
	d->fill = b;
	return 0;
}

static bool overlaps(uint64_t a, uint64_t an, uint64_t b, uint64_t bn)
{
	return a < b + bn && b < a + an;
}

/*
 * Wait until no queued or running write touches [lo, lo+n). The first
 * write error so far (negative errno, no message set), or 0.
 */
static int wait_writes(struct img_dio *d, uint64_t lo, uint64_t n)
{
	int e;

	pthread_mutex_lock(&d->lock);
	for (;;) {
		bool busy = false;

		for (int i = 0; i < DIO_BUFS; i++) {
			const struct dio_buf *b = &d->buf[i];

			if ((b->state == BUF_QUEUED || b->state == BUF_WRITING) &&
			    overlaps(lo, n, b->base, align_up(b->len)))
				busy = true;
		}
		if (!busy)
			break;
		pthread_cond_wait(&d->cond, &d->lock);
	}
	e = d->error;
	pthread_mutex_unlock(&d->lock);
	return e;
}

int img_dio_fence(struct img_dio *d, uint64_t off, uint64_t len)
{
	uint64_t lo = align_down(off), n = align_up(off + len) - lo;
	int e;

	if (!d)
		return 0;
	if (d->fill && overlaps(lo, n, d->fill->base, align_up(d->fill->len))) {
		e = close_run(d);
		if (e < 0)
			return e;
	}
	e = wait_writes(d, lo, n);
	return e ? write_error(d, e) : 0;
}

int img_dio_read_fence(struct img_dio *d, uint64_t off, uint64_t len)
{
	uint64_t lo = align_down(off), n = align_up(off + len) - lo;
	int e;

	if (!d)
		return 0;
	e = wait_writes(d, lo, n);
	return e ? write_error(d, e) : 0;
}

void img_dio_read_overlay(struct img_dio *d, void *buf, uint64_t len, uint64_t off)
{
	const struct dio_buf *b = d ? d->fill : NULL;
	uint64_t lo, hi;

	if (!b)
		return;
	lo = IMG_MAX(off, b->base + b->start);
	hi = IMG_MIN(off + len, b->base + b->len);
	if (lo < hi)
		memcpy((uint8_t *)buf + (lo - off), b->mem + (lo - b->base), (size_t)(hi - lo));
}

/* Where a run's bytes come from: a file (pread) or the caller's memory. */
struct src {
	int fd;
	const uint8_t *mem;
	uint64_t off;
};

static int get(struct img_dio *d, const struct src *s, uint8_t *to, size_t n)
{
	int e;

	if (s->mem) {
		memcpy(to, s->mem + s->off, n);
		return 0;
	}
	e = img_pread_full(s->fd, to, n, s->off);
	return e < 0 ? read_error(d, e) : 0;
}

/* Is a write at @dst still in order? The first one behind ends that. */
static bool in_order(struct img_dio *d, uint64_t dst)
{
	if (d->ordered && dst < d->front)
		d->ordered = false;
	return d->ordered;
}

/*
 * The fill buffer, run on to @dst: in order a short gap becomes zeros in
 * the run; else only a run ending right at @dst goes on.
 */
static bool joins_run(struct img_dio *d, uint64_t dst)
{
	struct dio_buf *b = d->fill;
	uint64_t end;

	if (!b)
		return false;
	end = b->base + b->len;
	if (dst == end)
		return b->len < DIO_BUF_SIZE;
	if (!d->ordered || dst < end || dst - end > DIO_GAP_FILL || dst - b->base >= DIO_BUF_SIZE)
		return false;
	memset(b->mem + b->len, 0, (size_t)(dst - end));
	b->len = (size_t)(dst - b->base);
	return true;
}

static int put(struct img_dio *d, struct src *s, uint64_t len, uint64_t dst)
{
	int e;

	if (in_order(d, dst))
		d->front = dst + len;
	while (len) {
		struct dio_buf *b;
		size_t n;

		if (!joins_run(d, dst) && (e = open_run(d, dst)) < 0)
			return e;
		b = d->fill;
		n = (size_t)IMG_MIN(len, DIO_BUF_SIZE - b->len);
		e = get(d, s, b->mem + b->len, n);
		if (e < 0)
			return e;
		b->len += n;
		s->off += n;
		dst += n;
		len -= n;
		if (b->len == DIO_BUF_SIZE && (e = close_run(d)) < 0)
			return e;
	}
	return 0;
}

int img_dio_copy(struct img_dio *d, int fd, uint64_t src, uint64_t len, uint64_t dst)
{
	struct src s = { .fd = fd, .off = src };

	return put(d, &s, len, dst);
}

int img_dio_write(struct img_dio *d, const void *buf, uint64_t len, uint64_t dst)
{
	struct src s = { .fd = -1, .mem = buf };

	return put(d, &s, len, dst);
}

int img_dio_pwrite(struct img_dio *d, const void *buf, uint64_t len, uint64_t dst)
{
	int e;

	if (in_order(d, dst))
		return img_dio_write(d, buf, len, dst);
	e = img_dio_fence(d, dst, len);
	if (e == 0 && (e = img_pwrite_full(d->fd, buf, (size_t)len, dst)) < 0)
		e = write_error(d, e);
	return e;
}

int img_dio_zero(struct img_dio *d, uint64_t off, uint64_t len)
{
	struct dio_buf *b = d ? d->fill : NULL;

	if (!d)
		return 0;
	if (!in_order(d, off))
		return img_dio_fence(d, off, len);
	d->front = off + len;
	/* Short zeros right after the run: written in it, so it goes on. */
	if (b && off == b->base + b->len && len <= DIO_GAP_FILL && b->len + len <= DIO_BUF_SIZE) {
		memset(b->mem + b->len, 0, (size_t)len);
		b->len += (size_t)len;
	}
	return 1;
}

int img_dio_drain(struct img_dio *d)
{
	int e, w;

	if (!d)
		return 0;
	e = close_run(d);
	w = wait_writes(d, 0, UINT64_MAX); /* even after an error: nothing left in flight */
	if (e == 0 && w)
		e = write_error(d, w);
	return e;
}

int img_dio_digest(struct img_dio *d, uint64_t size, uint8_t out[32])
{
	unsigned int n = 32;
	int e;

	if (!d || !d->ordered || !d->hash || d->front > size)
		return -ENODATA;
	e = img_dio_drain(d);
	if (e < 0)
		return e;
	/* Nothing in flight: once every buffer is hashed, the hash is ours. */
	pthread_mutex_lock(&d->lock);
	while (next_unhashed(d))
		pthread_cond_wait(&d->cond, &d->lock);
	pthread_mutex_unlock(&d->lock);
	hash_zeros(d->md, size - d->hashed);
	d->hashed = size;
	d->ordered = false; /* once */
	EVP_DigestFinal_ex(d->md, out, &n);
	return 0;
}

void img_dio_free(struct img_dio *d)
{
	if (!d)
		return;
	img_dio_drain(d);
	if (d->started) {
		pthread_mutex_lock(&d->lock);
		d->stop = true;
		pthread_cond_broadcast(&d->cond);
		pthread_mutex_unlock(&d->lock);
		pthread_join(d->thread, NULL);
		pthread_join(d->hasher, NULL);
	}
	for (int i = 0; i < DIO_BUFS; i++)
		free(d->buf[i].mem);
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->cond);
	if (d->dfd >= 0)
		close(d->dfd);
	EVP_MD_CTX_free(d->md);
	free(d->name);
	free(d);
}
