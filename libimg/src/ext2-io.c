/*
 * ext2-io.c -- a libext2fs io_manager that forwards every block read and
 * write to an img_dev, so libext2fs writes its metadata straight into a raw
 * file, a qcow2 image or a partition slice (e2fsprogs lib/ext2fs/ext2_io.h,
 * the io_manager ops table).
 *
 * libext2fs opens a channel by name only, so what it writes to travels in
 * the name: img_ext2_io_name() formats "img-dev:<pointer>" of a struct
 * img_ext2_io_target and open() copies what it needs from it. The caller
 * keeps a reference on the device for as long as the file system is open;
 * the channel takes none.
 *
 * Every write (inode table blocks, directory and symlink blocks, extent
 * blocks, bitmaps, group descriptors, the superblock: libext2fs rewrites an
 * inode table block once per inode) goes into a write-back cache and reaches
 * the device once, in block order: all of it at flush, or, while the ext4
 * writer emits its file data in block order, the part below each data run
 * just before that run (img_ext2_io_emit_until), so the whole file system
 * goes out front to back and the output can be hashed as it is written.
 * A write that is not a whole block of the cache's block size (the channel's
 * at the first write) is merged into the cached block, or into the device's
 * bytes when not cached (the device reads as zeros where nothing was
 * written). File data never passes through here.
 *
 * The cache is an index (open addressing; per block its number, its frame
 * in memory and its slot in the spill file, 16 bytes) and frames of one
 * block each, allocated in chunks. Without a spill directory frames are
 * added as needed and everything stays in memory (about 4 KiB per 16
 * inodes: 100 MiB at 400k entries). With one, at most cache_blocks frames
 * exist (default IMG_EXT2_CACHE_BYTES); over that the clock hand takes the
 * frame of a block not used since it last passed (second chance) and that
 * block's bytes go to its slot in an unlinked file in the spill directory,
 * the output's own (never TMPDIR: the spill is as large as the metadata,
 * which a small /tmp may not hold). libext2fs moves through its metadata
 * almost in order: ext2fs_write_inode reads an inode table block only when
 * it moves on to another and rewrites it once per inode, a directory block
 * is written once, the bitmaps at the end; the hot set is a few blocks, and
 * 8 MiB (2048 frames) keeps even a deep directory chain's parents in memory
 * while being a small share of the 100 MiB a 400k-entry build may take.
 *
 * A spilled block is read from its slot, and a partial write over it
 * updates the slot in place; only a whole-block write brings it back into a
 * frame (the cache_put path, the one libext2fs uses). Emission writes every
 * block in block order, contiguous runs of up to 256 blocks in one write.
 * Once it has begun the cache only serves reads (a write is refused:
 * nothing may land behind what went out); flush ends it, then the spill
 * file is emptied and refilled from slot 0. A spill read or write
 * that fails (ENOSPC included) is an error on the context that names the
 * directory, and the channel refuses all further I/O.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs-ext4.h"

/* The frames' budget when a spill directory is given. */
#define IMG_EXT2_CACHE_BYTES (8u << 20)
#define CHUNK_FRAMES         256u /* frames allocated at once (1 MiB of 4 KiB blocks) */
#define MAX_RUN              256u /* blocks in one device write at flush */
#define NONE                 UINT32_MAX

struct cache_ent {
	uint64_t blk;
	uint32_t frame; /* NONE: not in memory */
	uint32_t slot;  /* NONE: never spilled. Both NONE: an empty index slot */
};

struct img_io_priv {
	struct img_dev *dev;
	char *spill_dir;        /* NULL: no limit on frames */
	size_t cache_blocks;    /* frames allowed with a spill_dir; 0: the default */
	struct cache_ent *ents; /* open addressing, power-of-two size */
	size_t n, cap;
	/* frame f: chunks[f / chunk_frames] + (f % chunk_frames) * block size */
	uint8_t **chunks;
	uint64_t *frame_blk; /* the block in each frame */
	uint8_t *frame_ref;  /* used since the clock hand last passed */
	size_t nchunks, chunk_frames, nframes, frames_alloc, hand;
	int spill_fd;    /* -1 until the first eviction */
	uint32_t nslots; /* slots of the spill file in use */
	int failed;      /* a spill read or write failed: no more I/O */
	size_t cbs;      /* the cache's block size (the channel's at the first write) */
	uint8_t *tmp;    /* one block, for merging a partial write */
	/* Emitting: the cache in block order, the next entry to write and the
	 * next one to declare to the device's plan. */
	struct cache_ent *emit;
	size_t emit_n, emit_pos, plan_pos;
};

static int ent_used(const struct cache_ent *e)
{
	return e->frame != NONE || e->slot != NONE;
}

static size_t cache_slot(const struct img_io_priv *p, uint64_t blk)
{
	uint64_t h = blk * 0x9e3779b97f4a7c15ull;

	return (size_t)(h ^ (h >> 31)) & (p->cap - 1);
}

static struct cache_ent *cache_find(struct img_io_priv *p, uint64_t blk)
{
	if (!p->n)
		return NULL;
	for (size_t i = cache_slot(p, blk);; i = (i + 1) & (p->cap - 1)) {
		if (!ent_used(&p->ents[i]))
			return NULL;
		if (p->ents[i].blk == blk)
			return &p->ents[i];
	}
}

static int cache_grow(struct img_io_priv *p)
{
	size_t cap = p->cap ? p->cap * 2 : 1024;
	struct cache_ent *e = malloc(cap * sizeof(*e)), *old = p->ents;
	size_t oldcap = p->cap;

	if (!e)
		return -ENOMEM;
	memset(e, 0xff, cap * sizeof(*e)); /* frame = slot = NONE */
	p->ents = e;
	p->cap = cap;
	for (size_t i = 0; i < oldcap; i++) {
		size_t j;

		if (!ent_used(&old[i]))
			continue;
		for (j = cache_slot(p, old[i].blk); ent_used(&e[j]); j = (j + 1) & (cap - 1))
			;
		e[j] = old[i];
	}
	free(old);
	return 0;
}

/* ---- the spill file ---------------------------------------------------------- */

static struct img_ctx *io_ctx(const struct img_io_priv *p)
{
	return img_dev_ctx(p->dev);
}

/* @len bytes at @off of the spill file, all of them or an error. */
static int spill_io(struct img_io_priv *p, int write, void *buf, size_t len, uint64_t off)
{
	int r = write ? img_pwrite_full(p->spill_fd, buf, len, off)
	              : img_pread_full(p->spill_fd, buf, len, off);

	if (r < 0) {
		p->failed = 1;
		return img_set_error(io_ctx(p), r,
		                     "%s: cannot %s the ext4 block cache's spill file: %s",
		                     p->spill_dir, write ? "write" : "read", strerror(-r));
	}
	return 0;
}

/* ---- frames ------------------------------------------------------------------ */

static size_t frame_limit(const struct img_io_priv *p, size_t bs)
{
	if (!p->spill_dir)
		return NONE - 1;
	if (p->cache_blocks)
		return IMG_MIN(p->cache_blocks, (size_t)NONE - 1);
	return IMG_MAX(IMG_EXT2_CACHE_BYTES / bs, (size_t)1);
}

static uint8_t *frame_data(const struct img_io_priv *p, uint32_t f, size_t bs)
{
	return p->chunks[f / p->chunk_frames] + (f % p->chunk_frames) * bs;
}

static int frames_add_chunk(struct img_io_priv *p, size_t bs)
{
	size_t cf, total;
	uint8_t **c;
	uint64_t *fb;
	uint8_t *fr;

	if (!p->chunk_frames)
		p->chunk_frames = IMG_MIN((size_t)CHUNK_FRAMES, frame_limit(p, bs));
	cf = p->chunk_frames;
	total = p->frames_alloc + cf;
	c = realloc(p->chunks, (p->nchunks + 1) * sizeof(*c));
	if (!c)
		return -ENOMEM;
	p->chunks = c;
	fb = realloc(p->frame_blk, total * sizeof(*fb));
	if (!fb)
		return -ENOMEM;
	p->frame_blk = fb;
	fr = realloc(p->frame_ref, total);
	if (!fr)
		return -ENOMEM;
	p->frame_ref = fr;
	c[p->nchunks] = malloc(cf * bs);
	if (!c[p->nchunks])
		return -ENOMEM;
	p->nchunks++;
	p->frames_alloc = total;
	return 0;
}

static void frames_free(struct img_io_priv *p)
{
	for (size_t i = 0; i < p->nchunks; i++)
		free(p->chunks[i]);
	free(p->chunks);
	free(p->frame_blk);
	free(p->frame_ref);
	p->chunks = NULL;
	p->frame_blk = NULL;
	p->frame_ref = NULL;
	p->nchunks = p->chunk_frames = p->nframes = p->frames_alloc = p->hand = 0;
}

/* Frame @f's block to its spill slot (a new one on its first eviction). */
static int frame_evict(struct img_io_priv *p, uint32_t f, size_t bs)
{
	struct cache_ent *e = cache_find(p, p->frame_blk[f]);
	int r;

	if (p->spill_fd < 0 &&
	    (r = img_open_unlinked(io_ctx(p), p->spill_dir, "ext4-cache",
	                           "a spill file for the ext4 block cache", &p->spill_fd)) < 0) {
		p->failed = 1;
		return r;
	}
	if (e->slot == NONE) {
		if (p->nslots == NONE) {
			p->failed = 1;
			return img_set_error(io_ctx(p), -EFBIG,
			                     "%s: the ext4 block cache's spill file is full",
			                     p->spill_dir);
		}
		e->slot = p->nslots++;
	}
	r = spill_io(p, 1, frame_data(p, f, bs), bs, (uint64_t)e->slot * bs);
	if (r < 0)
		return r;
	e->frame = NONE;
	return 0;
}

/* A frame for a block: a new one while under the limit, else the clock's victim. */
static int frame_take(struct img_io_priv *p, size_t bs, uint32_t *out)
{
	int r;

	if (p->nframes < frame_limit(p, bs)) {
		if (p->nframes == p->frames_alloc && (r = frames_add_chunk(p, bs)) < 0)
			return r;
		*out = (uint32_t)p->nframes++;
		return 0;
	}
	for (;;) {
		uint32_t f = (uint32_t)p->hand;

		p->hand = (p->hand + 1) % p->nframes;
		if (p->frame_ref[f]) {
			p->frame_ref[f] = 0;
			continue;
		}
		r = frame_evict(p, f, bs);
		if (r < 0)
			return r;
		*out = f;
		return 0;
	}
}

/* ---- the cache ----------------------------------------------------------------- */

/* Put one whole block into the cache (copying @data). */
static int cache_put(struct img_io_priv *p, uint64_t blk, const void *data, size_t bs)
{
	struct cache_ent *e = cache_find(p, blk);
	uint32_t f;
	int r;

	if (e && e->frame != NONE) {
		f = e->frame;
	} else {
		if (!e && (p->n + 1) * 2 > p->cap && cache_grow(p) < 0)
			return -ENOMEM;
		/* taking a frame never grows the index: @e stays valid */
		r = frame_take(p, bs, &f);
		if (r < 0)
			return r;
		if (!e) {
			size_t i;

			for (i = cache_slot(p, blk); ent_used(&p->ents[i]);
			     i = (i + 1) & (p->cap - 1))
				;
			e = &p->ents[i];
			e->blk = blk;
			e->slot = NONE;
			p->n++;
		}
		e->frame = f;
		p->frame_blk[f] = blk;
	}
	memcpy(frame_data(p, f, bs), data, bs);
	p->frame_ref[f] = 1;
	return 0;
}

/* Bytes [in, in+n) of block @blk, if cached, into @out. 1 if cached. */
static int cache_get(struct img_io_priv *p, uint64_t blk, size_t in, void *out, size_t n, size_t bs)
{
	struct cache_ent *e = cache_find(p, blk);
	int r;

	if (!e)
		return 0;
	if (e->frame != NONE) {
		memcpy(out, frame_data(p, e->frame, bs) + in, n);
		p->frame_ref[e->frame] = 1;
		return 1;
	}
	r = spill_io(p, 0, out, n, (uint64_t)e->slot * bs + in);
	return r < 0 ? r : 1;
}

/* Bytes [in, in+n) of block @blk's cached copy (its frame or its slot); 0 if not cached. */
static int cache_update(struct img_io_priv *p, uint64_t blk, size_t in, const void *src, size_t n,
                        size_t bs)
{
	struct cache_ent *e = cache_find(p, blk);

	if (!e)
		return 0;
	if (e->frame != NONE) {
		memcpy(frame_data(p, e->frame, bs) + in, src, n);
		return 0;
	}
	return spill_io(p, 1, (void *)src, n, (uint64_t)e->slot * bs + in);
}

static int cmp_ent(const void *a, const void *b)
{
	const struct cache_ent *x = a, *y = b;

	return x->blk < y->blk ? -1 : x->blk > y->blk;
}

/* Empty the cache: frames freed, spill file emptied (slots from 0 again). */
static int cache_reset(struct img_io_priv *p)
{
	if (p->ents)
		memset(p->ents, 0xff, p->cap * sizeof(*p->ents));
	p->n = 0;
	p->nslots = 0;
	frames_free(p);
	if (p->spill_fd >= 0 && ftruncate(p->spill_fd, 0) < 0) {
		p->failed = 1;
		return img_set_error(io_ctx(p), -errno,
		                     "%s: cannot empty the ext4 block cache's spill file: %s",
		                     p->spill_dir, strerror(errno));
	}
	return 0;
}

/* Begin emission: the cached blocks in block order. */
static int emit_begin(struct img_io_priv *p)
{
	size_t k = 0;

	if (p->emit || !p->n)
		return 0;
	p->emit = malloc(p->n * sizeof(*p->emit));
	if (!p->emit)
		return -ENOMEM;
	for (size_t i = 0; i < p->cap; i++)
		if (ent_used(&p->ents[i]))
			p->emit[k++] = p->ents[i];
	qsort(p->emit, k, sizeof(*p->emit), cmp_ent);
	p->emit_n = k;
	p->emit_pos = p->plan_pos = 0;
	return 0;
}

/* Write the cached blocks below block @end not written yet, contiguous runs in one write. */
static int emit_below(struct img_io_priv *p, uint64_t end)
{
	const struct cache_ent *list = p->emit;
	size_t bs = p->cbs, i = p->emit_pos;
	uint8_t *run;
	int r = 0;

	if (i >= p->emit_n || list[i].blk >= end)
		return 0;
	run = malloc(MAX_RUN * bs);
	if (!run)
		return -ENOMEM;
	while (r >= 0 && i < p->emit_n && list[i].blk < end) {
		size_t j = i;

		while (r >= 0 && j < p->emit_n && j - i < MAX_RUN && list[j].blk < end &&
		       list[j].blk == list[i].blk + (j - i)) {
			uint8_t *dst = run + (j - i) * bs;

			if (list[j].frame != NONE)
				memcpy(dst, frame_data(p, list[j].frame, bs), bs);
			else
				r = spill_io(p, 0, dst, bs, (uint64_t)list[j].slot * bs);
			j++;
		}
		if (r >= 0)
			r = img_dev_pwrite(p->dev, run, (j - i) * bs, list[i].blk * bs);
		i = j;
	}
	p->emit_pos = i;
	free(run);
	return r;
}

/* Write every cached block not written yet, in block order; then empty the cache. */
static int cache_flush(struct img_io_priv *p)
{
	int r, r2;

	if (p->failed)
		return -EIO;
	if (!p->n)
		return 0;
	r = emit_begin(p);
	if (r >= 0)
		r = emit_below(p, UINT64_MAX);
	free(p->emit);
	p->emit = NULL;
	p->emit_n = p->emit_pos = 0;
	r2 = cache_reset(p);
	return r < 0 ? r : r2;
}

int img_ext2_io_emit_until(io_channel io, uint64_t off)
{
	struct img_io_priv *p = io->private_data;
	int r;

	if (p->failed)
		return -EIO;
	if (!p->n || !p->cbs)
		return 0;
	r = emit_begin(p);
	if (r >= 0)
		r = emit_below(p, off / p->cbs);
	if (r == -ENOMEM)
		return img_set_error(io_ctx(p), r, "out of memory");
	return r;
}

int img_ext2_io_plan_until(io_channel io, uint64_t off)
{
	struct img_io_priv *p = io->private_data;
	size_t i;
	int r;

	if (p->failed)
		return -EIO;
	if (!p->n || !p->cbs)
		return 0;
	r = emit_begin(p);
	if (r < 0)
		return img_set_error(io_ctx(p), r, "out of memory");
	for (i = p->plan_pos; r >= 0 && i < p->emit_n && p->emit[i].blk < off / p->cbs;) {
		size_t j = i + 1;

		while (j < p->emit_n && p->emit[j].blk == p->emit[j - 1].blk + 1 &&
		       p->emit[j].blk < off / p->cbs)
			j++;
		r = img_dev_plan(p->dev, p->emit[i].blk * p->cbs, (uint64_t)(j - i) * p->cbs);
		i = j;
	}
	p->plan_pos = i;
	return r;
}

/*
 * Bytes [off, off+len) into the cache: whole blocks as they are, a part of
 * a block merged into its cached copy, or into the device's bytes.
 */
static int cache_write(struct img_io_priv *p, uint64_t off, const uint8_t *src, size_t len)
{
	size_t bs = p->cbs;

	if (p->emit)
		return img_set_error(io_ctx(p), -EINVAL,
		                     "ext4: metadata at byte %llu written after the output "
		                     "began to go out",
		                     (unsigned long long)off);
	while (len) {
		uint64_t blk = off / bs;
		size_t in = (size_t)(off % bs), n = IMG_MIN(bs - in, len);
		int r;

		if (n == bs) {
			r = cache_put(p, blk, src, bs);
		} else if (cache_find(p, blk)) {
			r = cache_update(p, blk, in, src, n, bs);
		} else {
			if (!p->tmp && !(p->tmp = malloc(bs)))
				return -ENOMEM;
			r = img_dev_pread(p->dev, p->tmp, bs, blk * bs);
			if (r >= 0) {
				memcpy(p->tmp + in, src, n);
				r = cache_put(p, blk, p->tmp, bs);
			}
		}
		if (r < 0)
			return r;
		off += n;
		src += n;
		len -= n;
	}
	return 0;
}

/* Cached bytes over @len bytes at @off; 1 if every block of it was cached. */
static int cache_overlay(struct img_io_priv *p, uint64_t off, uint8_t *dst, size_t len)
{
	size_t bs = p->cbs;
	int all = 1;

	while (len) {
		uint64_t blk = off / bs;
		size_t in = (size_t)(off % bs), n = IMG_MIN(bs - in, len);
		int r = cache_get(p, blk, in, dst, n, bs);

		if (r < 0)
			return r;
		if (!r)
			all = 0;
		off += n;
		dst += n;
		len -= n;
	}
	return all;
}

static void cache_drop(struct img_io_priv *p)
{
	frames_free(p);
	free(p->tmp);
	p->tmp = NULL;
	free(p->emit);
	p->emit = NULL;
	free(p->ents);
	p->ents = NULL;
	p->n = p->cap = 0;
	if (p->spill_fd >= 0)
		close(p->spill_fd);
	p->spill_fd = -1;
}

#define IMG_IO_PREFIX "img-dev:"

int img_ext2_io_name(const struct img_ext2_io_target *t, char *buf, size_t len)
{
	int n = snprintf(buf, len, IMG_IO_PREFIX "%p", (const void *)t);

	return n < 0 || (size_t)n >= len ? -ERANGE : 0;
}

static errcode_t io_open(const char *name, int flags, io_channel *channel)
{
	const struct img_ext2_io_target *t;
	struct img_io_priv *p = NULL;
	io_channel io = NULL;
	void *ptr = NULL;
	errcode_t err;

	(void)flags;
	if (!name || strncmp(name, IMG_IO_PREFIX, strlen(IMG_IO_PREFIX)) ||
	    sscanf(name + strlen(IMG_IO_PREFIX), "%p", &ptr) != 1 || !ptr)
		return EXT2_ET_BAD_DEVICE_NAME;
	t = ptr;
	if (!t->dev)
		return EXT2_ET_BAD_DEVICE_NAME;
	err = ext2fs_get_memzero(sizeof(*io), &io);
	if (err)
		return err;
	err = ext2fs_get_memzero(sizeof(*p), &p);
	if (err)
		goto fail;
	err = ext2fs_get_mem(strlen(name) + 1, &io->name);
	if (err)
		goto fail;
	strcpy(io->name, name);
	p->dev = t->dev;
	p->spill_fd = -1;
	p->cache_blocks = t->cache_blocks;
	if (t->spill_dir && !(p->spill_dir = img_strdup(t->spill_dir))) {
		err = EXT2_ET_NO_MEMORY;
		goto fail;
	}
	io->magic = EXT2_ET_MAGIC_IO_CHANNEL;
	io->manager = img_ext2_io_manager;
	io->block_size = 1024;
	io->refcount = 1;
	io->private_data = p;
	*channel = io;
	return 0;
fail:
	if (io)
		ext2fs_free_mem(&io->name);
	ext2fs_free_mem(&p);
	ext2fs_free_mem(&io);
	return err;
}

static errcode_t io_close(io_channel io)
{
	struct img_io_priv *p = io->private_data;

	if (--io->refcount > 0)
		return 0;
	/* unflushed blocks are dropped: close without flush is an abandoned build */
	cache_drop(p);
	free(p->spill_dir);
	ext2fs_free_mem(&p);
	ext2fs_free_mem(&io->name);
	ext2fs_free_mem(&io);
	return 0;
}

/* What a failed cache operation tells libext2fs (the detail is on the context). */
static errcode_t io_err(int r, errcode_t io_failure)
{
	return r == -ENOMEM ? EXT2_ET_NO_MEMORY : io_failure;
}

static errcode_t io_set_blksize(io_channel io, int blksize)
{
	if (blksize <= 0)
		return EXT2_ET_INVALID_ARGUMENT;
	/* the cache keeps its own block size: writes of another are merged */
	io->block_size = blksize;
	return 0;
}

/* A count < 0 means -count bytes, not blocks (ext2_io.h convention). */
static int io_range(io_channel io, unsigned long long block, int count, size_t *len, uint64_t *off)
{
	uint64_t bs = (uint64_t)io->block_size;

	*len = count < 0 ? (size_t) - (int64_t)count : (size_t)count * bs;
	if (block > UINT64_MAX / bs)
		return -EINVAL;
	*off = block * bs;
	return 0;
}

static errcode_t io_read_blk64(io_channel io, unsigned long long block, int count, void *data)
{
	struct img_io_priv *p = io->private_data;
	size_t len;
	uint64_t off;
	int r;

	if (p->failed)
		return EXT2_ET_SHORT_READ;
	if (io_range(io, block, count, &len, &off) < 0)
		return EXT2_ET_LLSEEK_FAILED;
	/* what the cache holds, and the device for the rest */
	r = p->n ? cache_overlay(p, off, data, len) : 0;
	if (r < 0)
		return EXT2_ET_SHORT_READ;
	if (r == 1)
		return 0;
	r = img_dev_pread(p->dev, data, len, off);
	if (r >= 0 && p->n)
		r = cache_overlay(p, off, data, len);
	return r < 0 ? EXT2_ET_SHORT_READ : 0;
}

/* Every write goes into the cache (in the cache's block size). */
static errcode_t cached_write(io_channel io, uint64_t off, const void *data, size_t len)
{
	struct img_io_priv *p = io->private_data;
	int r;

	if (p->failed)
		return EXT2_ET_SHORT_WRITE;
	if (!p->cbs)
		p->cbs = (size_t)io->block_size;
	if (off > img_dev_size(p->dev) || len > img_dev_size(p->dev) - off)
		return EXT2_ET_SHORT_WRITE;
	r = cache_write(p, off, data, len);
	return r < 0 ? io_err(r, EXT2_ET_SHORT_WRITE) : 0;
}

static errcode_t io_write_blk64(io_channel io, unsigned long long block, int count,
                                const void *data)
{
	size_t len;
	uint64_t off;

	if (io_range(io, block, count, &len, &off) < 0)
		return EXT2_ET_LLSEEK_FAILED;
	return cached_write(io, off, data, len);
}

static errcode_t io_read_blk(io_channel io, unsigned long block, int count, void *data)
{
	return io_read_blk64(io, block, count, data);
}

static errcode_t io_write_blk(io_channel io, unsigned long block, int count, const void *data)
{
	return io_write_blk64(io, block, count, data);
}

static errcode_t io_write_byte(io_channel io, unsigned long offset, int count, const void *data)
{
	if (count < 0)
		return EXT2_ET_INVALID_ARGUMENT;
	return cached_write(io, offset, data, (size_t)count);
}

static errcode_t io_flush(io_channel io)
{
	struct img_io_priv *p = io->private_data;
	int r = cache_flush(p);

	if (r < 0)
		return io_err(r, EXT2_ET_SHORT_WRITE);
	return img_dev_flush(p->dev) < 0 ? EXT2_ET_SHORT_WRITE : 0;
}

static errcode_t io_set_option(io_channel io, const char *option, const char *arg)
{
	(void)io;
	(void)option;
	(void)arg;
	return EXT2_ET_INVALID_ARGUMENT;
}

static errcode_t io_zeroout(io_channel io, unsigned long long block, unsigned long long count)
{
	struct img_io_priv *p = io->private_data;
	uint64_t bs = (uint64_t)io->block_size, off, len;
	int r;

	if (block > UINT64_MAX / bs || count > UINT64_MAX / bs)
		return EXT2_ET_INVALID_ARGUMENT;
	if (p->failed)
		return EXT2_ET_SHORT_WRITE;
	off = block * bs;
	len = count * bs;
	if (p->emit) {
		img_set_error(io_ctx(p), -EINVAL,
		              "ext4: blocks at byte %llu zeroed after the output began to go out",
		              (unsigned long long)off);
		return EXT2_ET_SHORT_WRITE;
	}
	/* cached copies in the range become zeros; nothing goes to the device */
	for (size_t i = 0; p->n && i < p->cap; i++) {
		const struct cache_ent *e = &p->ents[i];
		uint64_t lo, hi;

		if (!ent_used(e) || (e->blk + 1) * p->cbs <= off || e->blk * p->cbs >= off + len)
			continue;
		if (!p->tmp && !(p->tmp = malloc(p->cbs)))
			return EXT2_ET_NO_MEMORY;
		lo = IMG_MAX(off, e->blk * p->cbs);
		hi = IMG_MIN(off + len, (e->blk + 1) * p->cbs);
		memset(p->tmp, 0, p->cbs);
		r = cache_update(p, e->blk, (size_t)(lo - e->blk * p->cbs), p->tmp,
		                 (size_t)(hi - lo), p->cbs);
		if (r < 0)
			return io_err(r, EXT2_ET_SHORT_WRITE);
	}
	/* the device reads as zeros where nothing was written (fs-ext4.c) */
	return 0;
}

static struct struct_io_manager img_io_manager_struct = {
	.magic = EXT2_ET_MAGIC_IO_MANAGER,
	.name = "libimg img_dev I/O manager",
	.open = io_open,
	.close = io_close,
	.set_blksize = io_set_blksize,
	.read_blk = io_read_blk,
	.write_blk = io_write_blk,
	.flush = io_flush,
	.write_byte = io_write_byte,
	.set_option = io_set_option,
	.read_blk64 = io_read_blk64,
	.write_blk64 = io_write_blk64,
	.zeroout = io_zeroout,
};

io_manager const img_ext2_io_manager = &img_io_manager_struct;
