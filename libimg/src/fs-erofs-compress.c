/*
 * fs-erofs-compress.c -- EROFS writer, compressed file data: LZ4 / LZ4HC
 * (liblz4) into fixed-size output, one 4 KiB block per pcluster, with
 * compact (4-byte) lcluster indexes (fs-erofs-layout.h, ondisk/erofs.h).
 *
 * Spec: Linux Documentation/filesystems/erofs.rst, fs/erofs/erofs_fs.h and
 * zmap.c (how indexes are read back), decompressor.c (what a pcluster may
 * hold). Each pcluster is compressed on its own (no dictionary across
 * pclusters): as much input as fits 4096 bytes of LZ4 output
 * (LZ4_compress_*destSize), right-aligned in the block behind zeros
 * (ZERO_PADDING). When that does not consume more than one block of input,
 * the pcluster holds the next min(4096, rest) bytes as they are (PLAIN).
 * So every extent but a file's last crosses an lcluster boundary, and every
 * lcluster gets exactly one index: the HEAD (or PLAIN) of the extent that
 * starts in it, or a NONHEAD pointing back to the head and on to the next.
 *
 * A file is compressed only when that takes fewer blocks than its size
 * rounded up (as mkfs.erofs decides); a file that does not shrink keeps its
 * plan and fs-erofs-emit.c copies it in-kernel as usual.
 *
 * Threads: the calling thread reads file data (in canonical order, in
 * segments of at most 4 MiB) into a ring of job slots and writes finished
 * pclusters to the device in order; worker threads compress the slots. Each
 * segment starts and ends an extent (segments start at multiples of 4 MiB,
 * lcluster aligned), so the output does not depend on the number of threads
 * or their timing: the same input gives the same bytes.
 */
#include <lz4.h>
#include <lz4hc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "fs-erofs-layout.h"

#define SEG         (4u << 20) /* input per job: a whole file or 4 MiB of one */
#define MAX_EXTENT  (1u << 20) /* input bytes one pcluster may decode to */
#define SLOTS       6
#define MAX_THREADS 8

struct zext {
	uint32_t len; /* input bytes the pcluster holds */
	uint8_t raw;  /* PLAIN (stored) rather than LZ4 */
};

struct job {
	struct img_node *node;
	uint64_t off; /* segment [off, off + len) of node's data */
	size_t len;
	uint8_t *in;  /* SEG bytes */
	uint8_t *out; /* pclusters, EROFS_BLKSZ each */
	struct zext *ext;
	size_t next; /* pclusters made */
	int err;
	int state; /* FREE, QUEUED, BUSY, DONE */
	uint64_t seq;
};
enum { FREE, QUEUED, BUSY, DONE };

struct zctx {
	const struct img_erofs_compress_opts *o;
	pthread_mutex_t lock;
	pthread_cond_t work; /* a job was queued, or stop */
	pthread_cond_t done; /* a job finished */
	struct job job[SLOTS];
	uint64_t queued_seq; /* next seq to queue */
	uint64_t taken_seq;  /* next seq a worker takes */
	int stop;
};

/* Compress one segment into pclusters (worker side; no ctx, no device). */
static int compress_job(const struct img_erofs_compress_opts *o, void *hc, uint8_t *tmp,
                        struct job *j)
{
	size_t pos = 0;

	j->next = 0;
	while (pos < j->len) {
		size_t rest = j->len - pos;
		uint8_t *dst = j->out + j->next * EROFS_BLKSZ;
		int src = (int)IMG_MIN(rest, (size_t)MAX_EXTENT), csize = 0;

		if (rest > EROFS_BLKSZ) {
			if (o->alg == IMG_EROFS_LZ4HC)
				csize = LZ4_compress_HC_destSize(hc, (const char *)j->in + pos,
				                                 (char *)tmp, &src, EROFS_BLKSZ,
				                                 o->level ? o->level : 9);
			else
				csize = LZ4_compress_destSize((const char *)j->in + pos,
				                              (char *)tmp, &src, EROFS_BLKSZ);
		}
		if (csize > 0 && (size_t)src > EROFS_BLKSZ) {
			memset(dst, 0, EROFS_BLKSZ - (size_t)csize);
			memcpy(dst + EROFS_BLKSZ - csize, tmp, (size_t)csize);
			j->ext[j->next].len = (uint32_t)src;
			j->ext[j->next].raw = 0;
		} else {
			size_t l = IMG_MIN(rest, (size_t)EROFS_BLKSZ);

			memcpy(dst, j->in + pos, l);
			memset(dst + l, 0, EROFS_BLKSZ - l);
			j->ext[j->next].len = (uint32_t)l;
			j->ext[j->next].raw = 1;
		}
		pos += j->ext[j->next].len;
		j->next++;
	}
	return 0;
}

static void *worker(void *arg)
{
	struct zctx *z = arg;
	void *hc = malloc((size_t)LZ4_sizeofStateHC());
	uint8_t *tmp = malloc(EROFS_BLKSZ);

	pthread_mutex_lock(&z->lock);
	for (;;) {
		struct job *j;

		while (!z->stop && z->taken_seq == z->queued_seq)
			pthread_cond_wait(&z->work, &z->lock);
		if (z->stop)
			break;
		j = &z->job[z->taken_seq % SLOTS];
		z->taken_seq++;
		j->state = BUSY;
		pthread_mutex_unlock(&z->lock);
		j->err = hc && tmp ? compress_job(z->o, hc, tmp, j) : -ENOMEM;
		pthread_mutex_lock(&z->lock);
		j->state = DONE;
		pthread_cond_broadcast(&z->done);
	}
	pthread_mutex_unlock(&z->lock);
	free(hc);
	free(tmp);
	return NULL;
}

/* Files worth trying: over one block (one block cannot shrink). */
static int candidate(const struct img_erofs_plan *p, struct img_node *n)
{
	(void)p;
	return !n->link && n->type == IMG_NODE_REG && n->size > EROFS_BLKSZ &&
	       n->data.kind != IMG_DATA_NONE;
}

/* The producer: the next segment of a candidate file, in canonical order. */
struct cursor {
	uint64_t i;   /* node seq */
	uint64_t off; /* next segment's offset in it */
};

static int next_segment(const struct img_erofs_plan *p, struct cursor *c)
{
	for (; c->i < p->tree->nodes; c->i++, c->off = 0) {
		struct img_node *n = p->nodes[c->i];

		if (candidate(p, n) && c->off < n->size)
			return 1;
	}
	return 0;
}

/* Queue the next segment into a free slot; 0 if there is none left. */
static int produce(struct img_ctx *ctx, struct img_erofs_plan *p, struct zctx *z, struct cursor *c)
{
	struct job *j = &z->job[z->queued_seq % SLOTS];
	struct img_node *n;
	int r;

	if (!next_segment(p, c))
		return 0;
	n = p->nodes[c->i];
	j->node = n;
	j->off = c->off;
	j->len = (size_t)IMG_MIN(n->size - c->off, (uint64_t)SEG);
	r = img_node_read_data(ctx, n, j->off, j->in, j->len);
	if (r < 0)
		return r;
	c->off += j->len;
	pthread_mutex_lock(&z->lock);
	j->seq = z->queued_seq++;
	j->state = QUEUED;
	pthread_cond_signal(&z->work);
	pthread_mutex_unlock(&z->lock);
	return 1;
}

/* One lcluster's index before encoding. */
struct zent {
	uint32_t blkaddr; /* HEAD, PLAIN */
	uint16_t lo;      /* clusterofs (HEAD, PLAIN) */
	uint16_t d0, d1;  /* NONHEAD */
	uint8_t type;
};

struct zfile {
	struct zent *ent;    /* one per lcluster */
	uint64_t nlc;        /* lclusters = indexes */
	uint64_t lcn;        /* next index to fill */
	unsigned clusterofs; /* where the next extent starts in lcluster lcn */
};

static void put_ent(struct zfile *f, unsigned type, unsigned lo, uint32_t blkaddr, uint64_t d0,
                    uint64_t d1)
{
	struct zent *z = &f->ent[f->lcn++];

	z->type = (uint8_t)type;
	z->lo = (uint16_t)lo;
	z->blkaddr = blkaddr;
	z->d0 = (uint16_t)d0;
	z->d1 = (uint16_t)IMG_MIN(d1, (uint64_t)EROFS_BLKSZ - 1);
}

/* The indexes for one extent of @len bytes in pcluster @pblk. */
static void add_extent(struct zfile *f, uint32_t len, int raw, uint32_t pblk)
{
	unsigned c = f->clusterofs, head = c, type = raw ? EROFS_Z_PLAIN : EROFS_Z_HEAD1;
	uint64_t count = len, d0 = 0, d1 = (c + count) / EROFS_BLKSZ;

	if (!d1) {
		/* ends inside the lcluster it starts in: a file's last extent */
		put_ent(f, type, head, pblk, 0, 0);
		f->clusterofs = (unsigned)(c + count);
		return;
	}
	do {
		if (!d0)
			put_ent(f, type, head, pblk, 0, 0);
		else
			put_ent(f, EROFS_Z_NONHEAD, 0, 0, d0, d1);
		count -= EROFS_BLKSZ - c;
		c = 0;
		d0++;
		d1--;
	} while (c + count >= EROFS_BLKSZ);
	f->clusterofs = (unsigned)(c + count);
}

/* After the last extent: an lcluster the file ends in gets an index too. */
static void end_file(struct zfile *f, uint32_t next_pblk)
{
	if (f->clusterofs && f->lcn < f->nlc)
		put_ent(f, EROFS_Z_PLAIN, f->clusterofs, next_pblk, 0, 0);
}

/* Map header + compact indexes (ondisk/erofs.h); returns the bytes. */
static uint8_t *encode(const struct zfile *f, uint32_t *len)
{
	uint64_t npack = IMG_DIV_ROUND_UP(f->nlc, 2);
	uint8_t *zi;

	*len = (uint32_t)(EROFS_Z_COMPACT_START + npack * EROFS_Z_PACK_SIZE);
	zi = calloc(1, *len); /* the map header is all zero: LZ4, 4 KiB lclusters */
	if (!zi)
		return NULL;
	for (uint64_t pk = 0; pk < npack; pk++) {
		uint8_t *d = zi + EROFS_Z_COMPACT_START + pk * EROFS_Z_PACK_SIZE;
		uint32_t base = UINT32_MAX, bits = 0;

		for (unsigned k = 0; k < 2 && pk * 2 + k < f->nlc; k++) {
			const struct zent *z = &f->ent[pk * 2 + k];
			unsigned lo = z->lo;

			/* the pack's last NONHEAD keeps delta[1], the kernel
			 * finds delta[0] from the one before */
			if (z->type == EROFS_Z_NONHEAD)
				lo = k == 1 ? z->d1 : z->d0;
			else if (base == UINT32_MAX)
				base = z->blkaddr - 1; /* heads count from base + 1 */
			bits |= (uint32_t)(lo | z->type << 12) << (16 * k);
		}
		img_put_le32(d, bits);
		img_put_le32(d + EROFS_Z_PACK_BASE, base == UINT32_MAX ? 0 : base);
	}
	return zi;
}

static int wait_done(struct zctx *z, struct job *j)
{
	pthread_mutex_lock(&z->lock);
	while (j->state != DONE)
		pthread_cond_wait(&z->done, &z->lock);
	j->state = FREE;
	pthread_mutex_unlock(&z->lock);
	return j->err;
}

int img_erofs_compress(struct img_ctx *ctx, struct img_erofs_plan *p, struct img_dev *dev,
                       const struct img_erofs_compress_opts *o)
{
	struct zctx z = { .o = o };
	pthread_t tid[MAX_THREADS];
	unsigned nthreads = o->threads ? IMG_MIN(o->threads, (unsigned)MAX_THREADS) : 1,
	         started = 0;
	struct cursor cur = { 0, 0 };
	uint64_t blk = 1, consumed = 0, saved = 0, ncomp = 0;
	int r = 0, more = 1;

	if (o->alg != IMG_EROFS_LZ4 && o->alg != IMG_EROFS_LZ4HC)
		return img_set_error(ctx, -EINVAL, "erofs: unknown compressor");
	if (o->alg == IMG_EROFS_LZ4HC && (o->level < 0 || o->level > LZ4HC_CLEVEL_MAX))
		return img_set_error(ctx, -EINVAL, "erofs: lz4hc level %d is not 1..%d", o->level,
		                     LZ4HC_CLEVEL_MAX);
	if (!p->zindex && !(p->zindex = calloc(IMG_MAX(p->tree->nodes, 1), sizeof(*p->zindex))))
		return img_set_error(ctx, -ENOMEM, "out of memory");
	if (!p->zmeta && !(p->zmeta = calloc(IMG_MAX(p->tree->nodes, 1), sizeof(*p->zmeta))))
		return img_set_error(ctx, -ENOMEM, "out of memory");
	pthread_mutex_init(&z.lock, NULL);
	pthread_cond_init(&z.work, NULL);
	pthread_cond_init(&z.done, NULL);
	for (unsigned s = 0; s < SLOTS; s++) {
		z.job[s].in = malloc(SEG);
		z.job[s].out = malloc(SEG);
		z.job[s].ext = malloc(SEG / EROFS_BLKSZ * sizeof(struct zext));
		if (!z.job[s].in || !z.job[s].out || !z.job[s].ext)
			r = img_set_error(ctx, -ENOMEM, "out of memory");
	}
	for (; r >= 0 && started < nthreads; started++)
		if (pthread_create(&tid[started], NULL, worker, &z) != 0)
			r = img_set_error(ctx, -EAGAIN, "erofs: cannot start a compressing thread");
	img_progress_phase(ctx, "compressing file data", p->tree->data_bytes, 0);

	for (uint64_t i = 0; r >= 0 && i < p->tree->nodes; i++) {
		struct img_node *n = p->nodes[i];
		struct img_erofs_inode *e = &p->inode[i];
		struct zfile f = { 0 };
		uint64_t start = blk, zblocks = 0;

		if (n->link || n->type != IMG_NODE_REG)
			continue;
		if (!candidate(p, n)) {
			blk += e->nblocks;
			continue;
		}
		f.nlc = IMG_DIV_ROUND_UP(n->size, EROFS_BLKSZ);
		f.ent = calloc(f.nlc, sizeof(*f.ent));
		if (!f.ent) {
			r = img_set_error(ctx, -ENOMEM, "out of memory");
			break;
		}
		for (uint64_t off = 0; r >= 0 && off < n->size;) {
			struct job *j = &z.job[consumed % SLOTS];

			/* keep every slot busy: read ahead while the workers compress */
			while (r >= 0 && more && z.queued_seq < consumed + SLOTS) {
				r = produce(ctx, p, &z, &cur);
				if (r == 0)
					more = 0;
			}
			if (r < 0)
				break;
			r = wait_done(&z, j);
			if (r < 0) {
				r = img_set_error(ctx, r, "erofs: compressing '%s' failed",
				                  n->name);
				break;
			}
			if (j->node != n || j->off != off) {
				r = img_set_error(ctx, -EIO,
				                  "erofs: compression jobs out of order");
				break;
			}
			consumed++;
			/*
			 * A single-segment file that does not save a block against
			 * its size stays as it is (mkfs.erofs's rule: a file of
			 * 1 < blocks <= 2 that fits one pcluster is compressed, which
			 * also frees the metadata of its inline tail).
			 */
			if (j->len == n->size &&
			    j->next >= IMG_DIV_ROUND_UP(n->size, (uint64_t)EROFS_BLKSZ)) {
				zblocks = 0;
				break;
			}
			r = img_dev_write_data(dev, j->out, j->next * EROFS_BLKSZ,
			                       blk * EROFS_BLKSZ);
			for (size_t k = 0; r >= 0 && k < j->next; k++)
				add_extent(&f, j->ext[k].len, j->ext[k].raw, (uint32_t)(blk + k));
			blk += j->next;
			zblocks += j->next;
			off += j->len;
			img_progress_add(ctx, j->len, 0);
		}
		if (r < 0) {
			free(f.ent);
			break;
		}
		/*
		 * The same rule for a file of many segments, known only at its
		 * end (no block saved against its size rounded up), and one
		 * more: the pclusters and their indexes (4 bytes an lcluster)
		 * must take less than the plain blocks and inline tail, or the
		 * image would grow (32 MiB of noise saving one block has 8 KiB
		 * of indexes). Its pclusters go back to zeros: emit writes the
		 * plain data, and the device reads as zeros where emit writes
		 * nothing.
		 */
		if (zblocks && (zblocks >= IMG_DIV_ROUND_UP(n->size, (uint64_t)EROFS_BLKSZ) ||
		                zblocks * EROFS_BLKSZ + EROFS_Z_COMPACT_START +
		                        IMG_DIV_ROUND_UP(f.nlc, 2) * EROFS_Z_PACK_SIZE >=
		                    e->nblocks * EROFS_BLKSZ + e->tail)) {
			r = img_dev_write_zeroes(dev, start * EROFS_BLKSZ, zblocks * EROFS_BLKSZ);
			free(f.ent);
			if (r < 0)
				break;
			blk = start + e->nblocks;
			img_progress_add(ctx, 0, 1); /* its bytes were counted per segment */
			continue;
		}
		if (!zblocks) {
			free(f.ent);
			blk += e->nblocks;
			img_progress_add(ctx, n->size, 1);
			continue;
		}
		end_file(&f, (uint32_t)blk);
		if (f.lcn != f.nlc || f.ent[0].blkaddr != start) {
			free(f.ent);
			r = img_set_error(ctx, -EIO, "erofs: '%s': %llu indexes for %llu lclusters",
			                  n->name, (unsigned long long)f.lcn,
			                  (unsigned long long)f.nlc);
			break;
		}
		p->zindex[i] = encode(&f, &p->zmeta[i]);
		free(f.ent);
		if (!p->zindex[i]) {
			r = img_set_error(ctx, -ENOMEM, "out of memory");
			break;
		}
		saved += e->nblocks - zblocks;
		ncomp++;
		e->layout = EROFS_INODE_COMPRESSED_COMPACT;
		e->tail = 0;
		e->nblocks = zblocks;
		e->startblk = start;
		e->data_in_place = 1;
		img_progress_add(ctx, 0, 1);
		if ((r = img_check_cancel(ctx)) < 0)
			break;
	}

	pthread_mutex_lock(&z.lock);
	z.stop = 1;
	pthread_cond_broadcast(&z.work);
	pthread_mutex_unlock(&z.lock);
	for (unsigned t = 0; t < started; t++)
		pthread_join(tid[t], NULL);
	for (unsigned s = 0; s < SLOTS; s++) {
		free(z.job[s].in);
		free(z.job[s].out);
		free(z.job[s].ext);
	}
	pthread_cond_destroy(&z.work);
	pthread_cond_destroy(&z.done);
	pthread_mutex_destroy(&z.lock);
	if (r < 0)
		return r;

	if (ncomp)
		p->feature_incompat |= EROFS_FEATURE_INCOMPAT_ZERO_PADDING;
	r = img_erofs_plan_layout(p);
	if (r < 0)
		return r;
	/* The relayout must put every compressed file where its data went. */
	for (uint64_t i = 0; i < p->tree->nodes; i++) {
		const struct img_erofs_inode *e = &p->inode[i];

		/* lcluster 0 is a head: the first pack's base + 1 is its block */
		if (p->zindex[i] &&
		    img_get_le32(p->zindex[i] + EROFS_Z_COMPACT_START + EROFS_Z_PACK_BASE) + 1ull !=
		        e->startblk)
			return img_set_error(ctx, -EIO, "erofs: compressed data of '%s' misplaced",
			                     p->nodes[i]->name);
	}
	img_log(ctx, IMG_LOG_INFO, "erofs: %llu files compressed, %llu blocks saved",
	        (unsigned long long)ncomp, (unsigned long long)saved);
	return 0;
}
