/*
 * dev-zring.h -- blocks compressed on worker threads and handed back in
 * order: the ring the compressed qcow2 and the streamOptimized VMDK
 * writers share (dev-qcow2-compress.c, dev-vmdk.c). Internal to libimg.
 *
 * Block k goes through slot k % size: its input is filled (by the
 * producer, which then publishes it; or, staged, by the worker's work()
 * itself), a worker compresses it, and the producer's thread takes the
 * results strictly in order (zring_wait, then zring_done). A worker runs
 * at most `size` blocks ahead of the producer, so the ring bounds memory,
 * and no barrier per batch waits for a preempted thread. What comes out
 * does not depend on thread timing or the number of threads.
 */
#ifndef IMG_DEV_ZRING_H
#define IMG_DEV_ZRING_H

#include "private.h"

struct zring_ops {
	/* A compressor for one worker (NULL: out of memory), and its end. */
	void *(*codec_new)(void *user);
	void (*codec_free)(void *codec);
	/*
	 * Compress block @k from @in into @out; *@olen is the caller's to
	 * define (a length, or a marker). Staged rings read the block into
	 * @in first. 0, or -errno (the ring stops; no message: a worker thread).
	 */
	int (*work)(void *user, void *codec, uint64_t k, uint8_t *in, uint8_t *out, size_t *olen);
};

struct zring;

/*
 * @in_size and @out_size bytes a slot; @threads 0 = one per CPU (at most
 * 64). Staged: all @n blocks are there to take from the start; else none
 * until published. Message set on failure.
 */
int zring_new(struct img_ctx *ctx, const struct zring_ops *ops, void *user, size_t in_size,
              size_t out_size, unsigned threads, bool staged, uint64_t n, struct zring **out);
/* Stops the workers (also midway) and frees everything. */
void zring_free(struct zring *z);

uint64_t zring_size(const struct zring *z);
/* Blocks taken so far (the next to take) and published so far. */
uint64_t zring_consumed(const struct zring *z);
uint64_t zring_published(const struct zring *z);
/* Is block @k's slot still held by a block not taken yet? */
bool zring_full(const struct zring *z, uint64_t k);
uint8_t *zring_in(const struct zring *z, uint64_t k);
uint8_t *zring_out(const struct zring *z, uint64_t k);
size_t zring_olen(const struct zring *z, uint64_t k);
/* Blocks 0 .. @n-1 have their input: the workers may take them. */
void zring_publish(struct zring *z, uint64_t n);
/* Is the next block's result there (without waiting)? */
bool zring_ready(struct zring *z);
/* Wait for the next block's result: 0, or the error that stopped the ring
 * (*@worker: a worker's work() returned it). */
int zring_wait(struct zring *z, bool *worker);
/* The next block is taken (its slot free); @err < 0 stops the ring. */
void zring_done(struct zring *z, int err);

#endif
