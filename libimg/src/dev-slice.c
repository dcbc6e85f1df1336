/*
 * dev-slice.c -- a window (offset, length) onto a parent device: what a
 * partition is to the file system written into it. Every op forwards with
 * the offset added, so a slice of a qcow2 device writes straight into the
 * qcow2 image; so does the plan (img_dev_plan), which lets the qcow2 parent
 * lay its file out for what the slice's writer will write.
 */
#include "private.h"

struct slice {
	struct img_dev *parent;
	uint64_t off;
};

static int slice_pread(struct img_dev *dev, void *buf, size_t len, uint64_t off)
{
	struct slice *s = img_dev_priv(dev);

	return img_dev_pread(s->parent, buf, len, s->off + off);
}

static int slice_pwrite(struct img_dev *dev, const void *buf, size_t len, uint64_t off)
{
	struct slice *s = img_dev_priv(dev);

	return img_dev_pwrite(s->parent, buf, len, s->off + off);
}

static int slice_write_data(struct img_dev *dev, const void *buf, size_t len, uint64_t off)
{
	struct slice *s = img_dev_priv(dev);

	return img_dev_write_data(s->parent, buf, len, s->off + off);
}

static int slice_write_zeroes(struct img_dev *dev, uint64_t off, uint64_t len)
{
	struct slice *s = img_dev_priv(dev);

	return img_dev_write_zeroes(s->parent, s->off + off, len);
}

static int slice_copy_from_fd(struct img_dev *dev, int fd, uint64_t src_off, uint64_t len,
                              uint64_t dst_off)
{
	struct slice *s = img_dev_priv(dev);

	return img_dev_copy_from_fd(s->parent, fd, src_off, len, s->off + dst_off);
}

static int slice_flush(struct img_dev *dev)
{
	struct slice *s = img_dev_priv(dev);

	return img_dev_flush(s->parent);
}

/* The plan in the parent's offsets, kept inside the window (dev.c has
 * refused ranges past the slice's end already). */
static int slice_plan(struct img_dev *dev, uint64_t off, uint64_t len)
{
	struct slice *s = img_dev_priv(dev);
	uint64_t end = IMG_MIN(off + len, img_dev_size(dev));

	return off < end ? img_dev_plan(s->parent, s->off + off, end - off) : 0;
}

static int slice_plan_done(struct img_dev *dev)
{
	struct slice *s = img_dev_priv(dev);

	return img_dev_plan_done(s->parent);
}

/* Finishing a slice only flushes: the parent is finished by its owner. */
static int slice_finish(struct img_dev *dev)
{
	return slice_flush(dev);
}

static void slice_destroy(struct img_dev *dev)
{
	struct slice *s = img_dev_priv(dev);

	img_dev_unref(s->parent);
}

static const struct img_dev_ops slice_ops = {
	.name = "slice",
	.pread = slice_pread,
	.pwrite = slice_pwrite,
	.write_zeroes = slice_write_zeroes,
	.copy_from_fd = slice_copy_from_fd,
	.flush = slice_flush,
	.write_data = slice_write_data,
	.finish = slice_finish,
	.destroy = slice_destroy,
	.plan = slice_plan,
	.plan_done = slice_plan_done,
};

int img_dev_slice_new(struct img_dev *parent, uint64_t off, uint64_t len, struct img_dev **out)
{
	struct img_ctx *ctx = img_dev_ctx(parent);
	struct img_dev *dev;
	struct slice *s;
	uint64_t end;
	int r;

	if (img_add_overflow(off, len, &end) || end > img_dev_size(parent))
		return img_set_error(ctx, -EINVAL,
		                     "slice [%llu, +%llu) does not fit a %llu-byte device",
		                     (unsigned long long)off, (unsigned long long)len,
		                     (unsigned long long)img_dev_size(parent));
	r = img_dev_new(ctx, &slice_ops, len, img_dev_readonly(parent) ? IMG_DEV_READONLY : 0,
	                sizeof(*s), &dev);
	if (r < 0)
		return r;
	s = img_dev_priv(dev);
	s->parent = img_dev_ref(parent);
	s->off = off;
	*out = dev;
	return 0;
}
