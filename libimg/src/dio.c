/*
 * dio.c -- write-behind of copied file data through O_DIRECT.
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
 * Only whole 4 KiB pages of a run are written directly; the partial pages at
 * its ends go through the page cache like every other write, so no page is
 * written by both paths at once. Every other access to the output (metadata
 * writes, reads, hole punching) calls img_dio_fence() first, which waits for
 * the direct writes under the pages it touches. Buffers are written in the
 * order they were filled, so a range copied twice ends with the later data.
 * Where O_DIRECT is refused (a file system without it, an alignment the
 * device does not take), the same buffers are written through the page cache.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dio.h"

#define DIO_ALIGN    4096u
#define DIO_BUFS     3
#define DIO_BUF_SIZE (4u << 20)

enum buf_state { BUF_FREE, BUF_FILLING, BUF_QUEUED, BUF_WRITING };

struct dio_buf {
	uint8_t *mem;
	uint64_t off; /* host offset of mem[0] (aligned) */
	size_t len;   /* bytes filled, or to write once queued */
	uint64_t seq; /* submission order */
	enum buf_state state;
};

struct img_dio {
	struct img_ctx *ctx;
	int fd;  /* the output, through the page cache */
	int dfd; /* the same file, O_DIRECT */
	char *name;
	struct dio_buf buf[DIO_BUFS];
	struct dio_buf *fill; /* the run being gathered, or NULL */
	uint64_t seq;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* any state change; waiters re-check */
	pthread_t thread;
	bool started, stop;
	bool buffered; /* O_DIRECT refused: the thread writes through the page cache */
	int error;     /* first write failure (negative errno), set by the thread */
};

static uint64_t align_down(uint64_t v)
{
	return v & ~(uint64_t)(DIO_ALIGN - 1);
}

static uint64_t align_up(uint64_t v)
{
	return align_down(v + DIO_ALIGN - 1);
}

int img_dio_new(struct img_ctx *ctx, int fd, const char *name, struct img_dio **out)
{
	struct img_dio *d;
	char proc[64];
	int dfd;

	*out = NULL;
	if (!img_ctx_direct_io(ctx))
		return 0;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	dfd = open(proc, O_WRONLY | O_DIRECT | O_CLOEXEC);
	if (dfd < 0)
		return 0; /* no O_DIRECT here (or no /proc): the caller copies as before */
#ifdef STATX_DIOALIGN
	{
		struct statx stx;

		if (statx(dfd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
		    (stx.stx_mask & STATX_DIOALIGN) &&
		    (stx.stx_dio_offset_align == 0 || stx.stx_dio_offset_align > DIO_ALIGN ||
		     stx.stx_dio_mem_align > DIO_ALIGN)) {
			close(dfd);
			return 0;
		}
	}
#endif
	d = calloc(1, sizeof(*d));
	if (!d || !(d->name = img_strdup(name ? name : "output"))) {
		free(d);
		close(dfd);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	d->ctx = ctx;
	d->fd = fd;
	d->dfd = dfd;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	*out = d;
	return 0;
}

/* Write one queued buffer: directly, or through the page cache once refused. */
static int write_out(struct img_dio *d, const struct dio_buf *b)
{
	int e = d->buffered ? -EINVAL : img_pwrite_full(d->dfd, b->mem, b->len, b->off);

	if (e == -EINVAL) {
		/* alignment or file system: no direct writes from now on (the
		 * whole buffer again: what went out directly is the same bytes) */
		d->buffered = true;
		e = img_pwrite_full(d->fd, b->mem, b->len, b->off);
	}
	return e;
}

static struct dio_buf *next_queued(struct img_dio *d)
{
	struct dio_buf *best = NULL;

	for (int i = 0; i < DIO_BUFS; i++)
		if (d->buf[i].state == BUF_QUEUED && (!best || d->buf[i].seq < best->seq))
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

/* The writer thread, started on the first full run; signals stay with the caller's threads. */
static int start(struct img_dio *d)
{
	sigset_t all, old;
	int e;

	if (d->started)
		return 0;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	e = pthread_create(&d->thread, NULL, writer, d);
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

/*
 * End the run being gathered: its partial last page through the page cache
 * now, its whole pages to the writer thread.
 */
static int close_run(struct img_dio *d)
{
	struct dio_buf *b = d->fill;
	size_t whole;
	int e = 0;

	if (!b)
		return 0;
	d->fill = NULL;
	whole = (size_t)align_down(b->len);
	if (b->len > whole) {
		/* An earlier run still in flight may cover that page too. */
		e = img_dio_fence(d, b->off + whole, b->len - whole);
		if (e == 0 && (e = img_pwrite_full(d->fd, b->mem + whole, b->len - whole,
		                                   b->off + whole)) < 0)
			e = write_error(d, e);
	}
	if (e == 0 && whole)
		e = start(d);
	pthread_mutex_lock(&d->lock);
	if (e == 0 && whole) {
		b->len = whole;
		b->seq = ++d->seq;
		b->state = BUF_QUEUED;
	} else {
		b->state = BUF_FREE;
	}
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	return e;
}

static bool overlaps(uint64_t a, uint64_t an, uint64_t b, uint64_t bn)
{
	return a < b + bn && b < a + an;
}

/*
 * Wait until no queued or running direct write touches [lo, lo+n). The
 * first write error so far (negative errno, no message set), or 0.
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
			    overlaps(lo, n, b->off, b->len))
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
	if (d->fill && overlaps(lo, n, d->fill->off, align_up(d->fill->len))) {
		e = close_run(d);
		if (e < 0)
			return e;
	}
	e = wait_writes(d, lo, n);
	return e ? write_error(d, e) : 0;
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

/* @n bytes (inside one page) through the page cache. */
static int put_small(struct img_dio *d, const struct src *s, size_t n, uint64_t dst)
{
	uint8_t page[DIO_ALIGN];
	int e = img_dio_fence(d, dst, n);

	if (e == 0)
		e = get(d, s, page, n);
	if (e < 0)
		return e;
	e = img_pwrite_full(d->fd, page, n, dst);
	return e < 0 ? write_error(d, e) : 0;
}

static int put(struct img_dio *d, struct src *s, uint64_t len, uint64_t dst)
{
	int e;

	while (len) {
		struct dio_buf *b = d->fill;

		if (b && dst == b->off + b->len) {
			size_t n = (size_t)IMG_MIN(len, DIO_BUF_SIZE - b->len);

			e = get(d, s, b->mem + b->len, n);
			if (e < 0)
				return e;
			b->len += n;
			s->off += n;
			dst += n;
			len -= n;
			if (b->len == DIO_BUF_SIZE && (e = close_run(d)) < 0)
				return e;
			continue;
		}
		e = close_run(d);
		if (e < 0)
			return e;
		if (dst % DIO_ALIGN) {
			/* A run starts on a page boundary: the head goes the usual way. */
			size_t n = (size_t)IMG_MIN(len, DIO_ALIGN - dst % DIO_ALIGN);

			e = put_small(d, s, n, dst);
			if (e < 0)
				return e;
			s->off += n;
			dst += n;
			len -= n;
			continue;
		}
		e = take_buf(d, &b);
		if (e < 0)
			return e;
		b->off = dst;
		b->len = 0;
		d->fill = b;
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
	}
	for (int i = 0; i < DIO_BUFS; i++)
		free(d->buf[i].mem);
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->cond);
	close(d->dfd);
	free(d->name);
	free(d);
}
