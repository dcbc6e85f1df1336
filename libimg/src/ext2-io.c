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
 */
#include <stdio.h>
#include <stdlib.h>

#include "fs-ext4.h"

struct img_io_priv {
	struct img_dev *dev;
};

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
	ext2fs_free_mem(&p);
	ext2fs_free_mem(&io->name);
	ext2fs_free_mem(&io);
	return 0;
}

static errcode_t io_set_blksize(io_channel io, int blksize)
{
	if (blksize <= 0)
		return EXT2_ET_INVALID_ARGUMENT;
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
	return r < 0 ? EXT2_ET_SHORT_READ : 0;
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
	return img_dev_pwrite(p->dev, data, (size_t)count, offset) < 0 ? EXT2_ET_SHORT_WRITE : 0;
}

static errcode_t io_flush(io_channel io)
{
	struct img_io_priv *p = io->private_data;

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

io_manager img_ext2_io_manager = &img_io_manager_struct;
