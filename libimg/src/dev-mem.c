/*
 * dev-mem.c -- a device in memory, for tests and small staging.
 */
#include <stdlib.h>

#include "private.h"

struct mem {
	uint8_t *buf;
};

static int mem_pread(struct img_dev *dev, void *buf, size_t len, uint64_t off)
{
	struct mem *m = img_dev_priv(dev);

	memcpy(buf, m->buf + off, len);
	return 0;
}

static int mem_pwrite(struct img_dev *dev, const void *buf, size_t len, uint64_t off)
{
	struct mem *m = img_dev_priv(dev);

	memcpy(m->buf + off, buf, len);
	return 0;
}

static int mem_write_zeroes(struct img_dev *dev, uint64_t off, uint64_t len)
{
	struct mem *m = img_dev_priv(dev);

	memset(m->buf + off, 0, (size_t)len);
	return 0;
}

static int mem_flush(struct img_dev *dev)
{
	(void)dev;
	return 0;
}

static void mem_destroy(struct img_dev *dev)
{
	struct mem *m = img_dev_priv(dev);

	free(m->buf);
}

static const struct img_dev_ops mem_ops = {
	.name = "mem",
	.pread = mem_pread,
	.pwrite = mem_pwrite,
	.write_zeroes = mem_write_zeroes,
	.flush = mem_flush,
	.destroy = mem_destroy,
};

int img_dev_mem_new(struct img_ctx *ctx, uint64_t size, struct img_dev **out)
{
	struct img_dev *dev;
	struct mem *m;
	int r;

	if (size > SIZE_MAX)
		return img_set_error(ctx, -EFBIG, "a %llu-byte memory device is too large",
		                     (unsigned long long)size);
	r = img_dev_new(ctx, &mem_ops, size, 0, sizeof(*m), &dev);
	if (r < 0)
		return r;
	m = img_dev_priv(dev);
	m->buf = calloc(1, size ? (size_t)size : 1);
	if (!m->buf) {
		img_dev_unref(dev);
		return img_set_error(ctx, -ENOMEM, "out of memory for a %llu-byte device",
		                     (unsigned long long)size);
	}
	*out = dev;
	return 0;
}

const uint8_t *img_dev_mem_data(const struct img_dev *dev)
{
	const struct mem *m = img_dev_priv((struct img_dev *)dev);

	return m->buf;
}
