/*
 * ext2-io.c -- a libext2fs io_manager that forwards every block read and
 * write to an img_dev, so libext2fs writes its metadata straight into a raw
 * file, a qcow2 image or a partition slice (e2fsprogs lib/ext2fs/ext2_io.h,
 * the io_manager ops table).
 *
 * libext2fs opens a channel by name only, so the device travels in the name:
 * img_ext2_io_name() formats "img-dev:<pointer>" and open() parses it back.
 * The caller keeps a reference on the device for as long as the file system
 * is open; the channel takes none.
 *
 * Single-block writes (inode table blocks, directory blocks, bitmaps: libext2fs
 * rewrites an inode table block once per inode) are kept in a write-back
 * cache and written once, sorted and coalesced, at flush. Metadata only, so
 * memory stays bounded by the metadata; file data never passes through here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs-ext4.h"

struct cache_ent {
	uint64_t blk;
	uint8_t *data; /* NULL = empty slot */
};

struct img_io_priv {
	struct img_dev *dev;
	struct cache_ent *ents; /* open addressing, power-of-two size */
	size_t n, cap;
	int failed;
};

static size_t cache_slot(const struct img_io_priv *p, uint64_t blk)
{
	uint64_t h = blk * 0x9e3779b97f4a7c15ull;

	return (size_t)(h ^ (h >> 31)) & (p->cap - 1);
}

static struct cache_ent *cache_find(struct img_io_priv *p, uint64_t blk)
{
	if (!p->cap)
		return NULL;
	for (size_t i = cache_slot(p, blk);; i = (i + 1) & (p->cap - 1)) {
		if (!p->ents[i].data)
			return NULL;
		if (p->ents[i].blk == blk)
			return &p->ents[i];
	}
}

static int cache_grow(struct img_io_priv *p)
{
	size_t cap = p->cap ? p->cap * 2 : 1024;
	struct cache_ent *e = calloc(cap, sizeof(*e)), *old = p->ents;
	size_t oldcap = p->cap;

	if (!e)
		return -ENOMEM;
	p->ents = e;
	p->cap = cap;
	for (size_t i = 0; i < oldcap; i++) {
		size_t j;

		if (!old[i].data)
			continue;
		for (j = cache_slot(p, old[i].blk); e[j].data; j = (j + 1) & (cap - 1))
			;
		e[j] = old[i];
	}
	free(old);
	return 0;
}

/* Put one block into the cache (copying @data). */
static int cache_put(struct img_io_priv *p, uint64_t blk, const void *data, size_t bs)
{
	struct cache_ent *e = cache_find(p, blk);
	size_t i;

	if (e) {
		memcpy(e->data, data, bs);
		return 0;
	}
	if ((p->n + 1) * 2 > p->cap && cache_grow(p) < 0)
		return -ENOMEM;
	for (i = cache_slot(p, blk); p->ents[i].data; i = (i + 1) & (p->cap - 1))
		;
	p->ents[i].data = malloc(bs);
	if (!p->ents[i].data)
		return -ENOMEM;
	p->ents[i].blk = blk;
	memcpy(p->ents[i].data, data, bs);
	p->n++;
	return 0;
}

static int cmp_ent(const void *a, const void *b)
{
	const struct cache_ent *x = a, *y = b;

	return x->blk < y->blk ? -1 : x->blk > y->blk;
}

/* Write every cached block, in block order, contiguous runs in one write. */
static int cache_flush(struct img_io_priv *p, size_t bs)
{
	struct cache_ent *list;
	uint8_t *run = NULL;
	size_t k = 0, maxrun = 256;
	int r = 0;

	if (!p->n)
		return 0;
	list = malloc(p->n * sizeof(*list));
	run = malloc(maxrun * bs);
	if (!list || !run) {
		free(list);
		free(run);
		return -ENOMEM;
	}
	for (size_t i = 0; i < p->cap; i++)
		if (p->ents[i].data)
			list[k++] = p->ents[i];
	qsort(list, k, sizeof(*list), cmp_ent);
	for (size_t i = 0; i < k && r >= 0;) {
		size_t j = i;

		while (j < k && j - i < maxrun && list[j].blk == list[i].blk + (j - i)) {
			memcpy(run + (j - i) * bs, list[j].data, bs);
			j++;
		}
		r = img_dev_pwrite(p->dev, run, (j - i) * bs, list[i].blk * bs);
		i = j;
	}
	free(list);
	free(run);
	for (size_t i = 0; i < p->cap; i++) {
		free(p->ents[i].data);
		p->ents[i].data = NULL;
	}
	p->n = 0;
	return r;
}

static void cache_drop(struct img_io_priv *p)
{
	for (size_t i = 0; i < p->cap; i++)
		free(p->ents[i].data);
	free(p->ents);
	p->ents = NULL;
	p->n = p->cap = 0;
}

#define IMG_IO_PREFIX "img-dev:"

int img_ext2_io_name(struct img_dev *dev, char *buf, size_t len)
{
	int n = snprintf(buf, len, IMG_IO_PREFIX "%p", (void *)dev);

	return n < 0 || (size_t)n >= len ? -ERANGE : 0;
}

static errcode_t io_open(const char *name, int flags, io_channel *channel)
{
	struct img_io_priv *p = NULL;
	io_channel io = NULL;
	void *ptr = NULL;
	errcode_t err;

	(void)flags;
	if (!name || strncmp(name, IMG_IO_PREFIX, strlen(IMG_IO_PREFIX)) ||
	    sscanf(name + strlen(IMG_IO_PREFIX), "%p", &ptr) != 1 || !ptr)
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
	p->dev = ptr;
	io->magic = EXT2_ET_MAGIC_IO_CHANNEL;
	io->manager = img_ext2_io_manager;
	io->block_size = 1024;
	io->refcount = 1;
	io->private_data = p;
	*channel = io;
	return 0;
fail:
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
	ext2fs_free_mem(&p);
	ext2fs_free_mem(&io->name);
	ext2fs_free_mem(&io);
	return 0;
}

static errcode_t io_set_blksize(io_channel io, int blksize)
{
	struct img_io_priv *p = io->private_data;

	if (blksize <= 0)
		return EXT2_ET_INVALID_ARGUMENT;
	if (blksize != io->block_size && cache_flush(p, (size_t)io->block_size) < 0)
		return EXT2_ET_SHORT_WRITE;
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

	if (io_range(io, block, count, &len, &off) < 0)
		return EXT2_ET_LLSEEK_FAILED;
	r = img_dev_pread(p->dev, data, len, off);
	if (r < 0)
		return EXT2_ET_SHORT_READ;
	for (uint64_t b = 0; p->n && b * (uint64_t)io->block_size < len; b++) {
		struct cache_ent *e = cache_find(p, block + b);
		size_t bs = (size_t)io->block_size, n = IMG_MIN(bs, len - b * bs);

		if (e)
			memcpy((uint8_t *)data + b * bs, e->data, n);
	}
	return 0;
}

static errcode_t io_write_blk64(io_channel io, unsigned long long block, int count,
                                const void *data)
{
	struct img_io_priv *p = io->private_data;
	size_t len;
	uint64_t off;
	int r;

	if (io_range(io, block, count, &len, &off) < 0)
		return EXT2_ET_LLSEEK_FAILED;
	if (len == (size_t)io->block_size)
		return cache_put(p, block, data, len) < 0 ? EXT2_ET_NO_MEMORY : 0;
	/* a larger write supersedes cached copies of its blocks */
	for (uint64_t b = 0; p->n && b * (uint64_t)io->block_size < len; b++) {
		struct cache_ent *e = cache_find(p, block + b);

		if (e) {
			size_t bs = (size_t)io->block_size;

			if ((b + 1) * bs <= len)
				memcpy(e->data, (const uint8_t *)data + b * bs, bs);
			else
				memcpy(e->data, (const uint8_t *)data + b * bs, len - b * bs);
		}
	}
	r = img_dev_pwrite(p->dev, data, len, off);
	return r < 0 ? EXT2_ET_SHORT_WRITE : 0;
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
	struct img_io_priv *p = io->private_data;

	if (count < 0)
		return EXT2_ET_INVALID_ARGUMENT;
	/* keep a cached copy of the touched blocks current */
	for (unsigned long o = offset; o < offset + (unsigned long)count;) {
		size_t bs = (size_t)io->block_size;
		struct cache_ent *e = cache_find(p, o / bs);
		size_t in = o % bs, n = IMG_MIN(bs - in, offset + (unsigned long)count - o);

		if (e)
			memcpy(e->data + in, (const uint8_t *)data + (o - offset), n);
		o += n;
	}
	return img_dev_pwrite(p->dev, data, (size_t)count, offset) < 0 ? EXT2_ET_SHORT_WRITE : 0;
}

static errcode_t io_flush(io_channel io)
{
	struct img_io_priv *p = io->private_data;

	if (cache_flush(p, (size_t)io->block_size) < 0)
		return EXT2_ET_SHORT_WRITE;
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
	uint64_t bs = (uint64_t)io->block_size;

	if (block > UINT64_MAX / bs || count > UINT64_MAX / bs)
		return EXT2_ET_INVALID_ARGUMENT;
	if (cache_flush(p, (size_t)bs) < 0)
		return EXT2_ET_SHORT_WRITE;
	return img_dev_write_zeroes(p->dev, block * bs, count * bs) < 0 ? EXT2_ET_SHORT_WRITE : 0;
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
