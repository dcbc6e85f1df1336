/*
 * dev-zring.c -- blocks compressed on worker threads, handed back in
 * order (dev-zring.h).
 */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "dev-zring.h"

struct worker {
	struct zring *z;
	void *codec;
	pthread_t tid;
	bool started;
};

struct zring {
	const struct zring_ops *ops;
	void *user;
	bool staged;
	bool closed; /* no more blocks will be published */
	size_t in_size, out_size;
	uint64_t size, n; /* slots; blocks published */
	uint8_t *in, *out;
	size_t *olen;
	uint64_t *ready;   /* per slot: k + 1 once block k's result is there */
	uint64_t claimed;  /* next block to hand out */
	uint64_t consumed; /* blocks taken */
	int err;
	bool werr; /* err came from a worker */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct worker *wk;
	unsigned nthreads;
};

static void *work(void *arg)
{
	struct worker *wk = arg;
	struct zring *z = wk->z;

	for (;;) {
		uint64_t k, s;
		int r;

		pthread_mutex_lock(&z->lock);
		while (!z->err && !(z->closed && z->claimed >= z->n) &&
		       (z->claimed >= z->n || z->claimed >= z->consumed + z->size))
			pthread_cond_wait(&z->cond, &z->lock);
		if (z->err || z->claimed >= z->n) {
			pthread_mutex_unlock(&z->lock);
			return NULL;
		}
		k = z->claimed++;
		pthread_mutex_unlock(&z->lock);

		s = k % z->size;
		r = z->ops->work(z->user, wk->codec, k, z->in + s * z->in_size,
		                 z->out + s * z->out_size, &z->olen[s]);

		pthread_mutex_lock(&z->lock);
		if (r < 0 && !z->err) {
			z->err = r;
			z->werr = true;
		}
		z->ready[s] = k + 1;
		pthread_cond_broadcast(&z->cond);
		pthread_mutex_unlock(&z->lock);
	}
}

static unsigned online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 ? (unsigned)n : 1;
}

void zring_free(struct zring *z)
{
	if (!z)
		return;
	if (z->wk) {
		pthread_mutex_lock(&z->lock);
		z->closed = true;
		if (!z->err)
			z->err = -ECANCELED;
		pthread_cond_broadcast(&z->cond);
		pthread_mutex_unlock(&z->lock);
		for (unsigned t = 0; t < z->nthreads; t++) {
			if (z->wk[t].started)
				pthread_join(z->wk[t].tid, NULL);
			if (z->wk[t].codec)
				z->ops->codec_free(z->wk[t].codec);
		}
	}
	pthread_mutex_destroy(&z->lock);
	pthread_cond_destroy(&z->cond);
	free(z->wk);
	free(z->in);
	free(z->out);
	free(z->olen);
	free(z->ready);
	free(z);
}

int zring_new(struct img_ctx *ctx, const struct zring_ops *ops, void *user, size_t in_size,
              size_t out_size, unsigned threads, bool staged, uint64_t n, struct zring **out)
{
	struct zring *z = calloc(1, sizeof(*z));
	int r = 0;

	if (!z)
		return img_set_error(ctx, -ENOMEM, "out of memory for compression");
	pthread_mutex_init(&z->lock, NULL);
	pthread_cond_init(&z->cond, NULL);
	z->ops = ops;
	z->user = user;
	z->staged = z->closed = staged;
	z->n = staged ? n : 0;
	z->in_size = in_size;
	z->out_size = out_size;
	z->nthreads = IMG_MIN(threads ? threads : online_cpus(), 64u);
	z->size = IMG_MAX((uint64_t)z->nthreads * 8, (8ull << 20) / in_size);
	z->in = malloc((size_t)z->size * in_size);
	z->out = malloc((size_t)z->size * out_size);
	z->olen = calloc((size_t)z->size, sizeof(*z->olen));
	z->ready = calloc((size_t)z->size, sizeof(*z->ready));
	z->wk = calloc(z->nthreads, sizeof(*z->wk));
	if (!z->in || !z->out || !z->olen || !z->ready || !z->wk) {
		r = img_set_error(ctx, -ENOMEM, "out of memory for compression");
		goto fail;
	}
	for (unsigned t = 0; t < z->nthreads; t++) {
		z->wk[t].z = z;
		z->wk[t].codec = ops->codec_new(user);
		if (!z->wk[t].codec) {
			r = img_set_error(ctx, -ENOMEM, "cannot set up the compressor");
			goto fail;
		}
	}
	for (unsigned t = 0; t < z->nthreads; t++) {
		if (pthread_create(&z->wk[t].tid, NULL, work, &z->wk[t]) != 0) {
			if (t > 0)
				break; /* fewer threads is fine */
			r = img_set_error(ctx, -EAGAIN, "cannot start a compression thread");
			goto fail;
		}
		z->wk[t].started = true;
	}
	*out = z;
	return 0;
fail:
	zring_free(z);
	return r;
}

uint64_t zring_size(const struct zring *z)
{
	return z->size;
}

/* Only the producer's thread changes these two: it reads them unlocked. */
uint64_t zring_consumed(const struct zring *z)
{
	return z->consumed;
}

uint64_t zring_published(const struct zring *z)
{
	return z->n;
}

bool zring_full(const struct zring *z, uint64_t k)
{
	return k >= z->consumed + z->size;
}

uint8_t *zring_in(const struct zring *z, uint64_t k)
{
	return z->in + (k % z->size) * z->in_size;
}

uint8_t *zring_out(const struct zring *z, uint64_t k)
{
	return z->out + (k % z->size) * z->out_size;
}

size_t zring_olen(const struct zring *z, uint64_t k)
{
	return z->olen[k % z->size];
}

void zring_publish(struct zring *z, uint64_t n)
{
	pthread_mutex_lock(&z->lock);
	z->n = n;
	pthread_cond_broadcast(&z->cond);
	pthread_mutex_unlock(&z->lock);
}

bool zring_ready(struct zring *z)
{
	bool r;

	pthread_mutex_lock(&z->lock);
	r = z->consumed < z->n && z->ready[z->consumed % z->size] == z->consumed + 1;
	pthread_mutex_unlock(&z->lock);
	return r;
}

int zring_wait(struct zring *z, bool *worker)
{
	uint64_t k = z->consumed, s = k % z->size;
	int r;

	pthread_mutex_lock(&z->lock);
	while (z->ready[s] != k + 1 && !z->err)
		pthread_cond_wait(&z->cond, &z->lock);
	r = z->err;
	*worker = z->werr;
	pthread_mutex_unlock(&z->lock);
	return r;
}

void zring_done(struct zring *z, int err)
{
	pthread_mutex_lock(&z->lock);
	if (err < 0 && !z->err)
		z->err = err;
	z->consumed++;
	pthread_cond_broadcast(&z->cond);
	pthread_mutex_unlock(&z->lock);
}
