/*
 * dev-raw.c -- raw sparse file backend. Unwritten ranges stay holes;
 * write_zeroes punches holes (a new file's are holes already). Every write
 * goes through the writer (dio.c): direct where the file system takes
 * O_DIRECT, and hashed on the way while it comes in order, so finish knows
 * the file's SHA-256 without reading it; with img_ctx_set_direct_io(ctx, 0)
 * writes go straight to the file (copy_file_range for copies).
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dio.h"
#include "private.h"

struct raw {
	int fd;
	int owns_fd;
	char *path;
	struct img_dio *dio; /* NULL: no writer (read-only, or direct I/O off) */
};

static int raw_err(struct img_dev *dev, int err, const char *what)
{
	struct raw *r = img_dev_priv(dev);

	return img_set_error(img_dev_ctx(dev), err, "%s %s: %s", what,
	                     r->path ? r->path : "raw device", strerror(-err));
}

static int raw_pread(struct img_dev *dev, void *buf, size_t len, uint64_t off)
{
	struct raw *r = img_dev_priv(dev);
	int e = img_dio_read_fence(r->dio, off, len);

	if (e < 0)
		return e;
	e = img_pread_full(r->fd, buf, len, off);
	if (e == 0)
		img_dio_read_overlay(r->dio, buf, len, off);
	if (e == -EIO) {
		/* Past the end of a file shorter than the device: zeros. */
		struct stat st;

		if (fstat(r->fd, &st) == 0 && (uint64_t)st.st_size < off + len) {
			uint64_t have = (uint64_t)st.st_size > off ? (uint64_t)st.st_size - off : 0;

			memset((uint8_t *)buf + have, 0, len - have);
			e = have ? img_pread_full(r->fd, buf, (size_t)have, off) : 0;
			if (e == 0)
				img_dio_read_overlay(r->dio, buf, len, off);
			return e < 0 ? raw_err(dev, e, "reading") : 0;
		}
	}
	return e < 0 ? raw_err(dev, e, "reading") : 0;
}

static int raw_pwrite(struct img_dev *dev, const void *buf, size_t len, uint64_t off)
{
	struct raw *r = img_dev_priv(dev);
	int e;

	if (r->dio)
		return img_dio_pwrite(r->dio, buf, len, off);
	e = img_pwrite_full(r->fd, buf, len, off);
	return e < 0 ? raw_err(dev, e, "writing") : 0;
}

static int raw_write_data(struct img_dev *dev, const void *buf, size_t len, uint64_t off)
{
	struct raw *r = img_dev_priv(dev);

	if (r->dio)
		return img_dio_write(r->dio, buf, len, off);
	return raw_pwrite(dev, buf, len, off);
}

static int raw_write_zeroes(struct img_dev *dev, uint64_t off, uint64_t len)
{
	struct raw *r = img_dev_priv(dev);
	int e = img_dio_zero(r->dio, off, len);

	if (e != 0)
		return e < 0 ? e : 0;
	if (fallocate(r->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) ==
	    0)
		return 0;
	/* No hole punching here: write zeros. */
	{
		static const uint8_t z[65536];

		while (len) {
			size_t n = (size_t)IMG_MIN(len, sizeof(z));

			e = img_pwrite_full(r->fd, z, n, off);
			if (e < 0)
				return raw_err(dev, e, "writing");
			off += n;
			len -= n;
		}
	}
	return 0;
}

static int raw_copy_from_fd(struct img_dev *dev, int fd, uint64_t src_off, uint64_t len,
                            uint64_t dst_off)
{
	struct raw *r = img_dev_priv(dev);
	int e;

	if (r->dio)
		return img_dio_copy(r->dio, fd, src_off, len, dst_off);
	e = img_copy_fd_range(fd, src_off, r->fd, dst_off, len);
	if (e == -ENODATA)
		return img_set_error(img_dev_ctx(dev), -EIO,
		                     "input changed while reading (shorter than expected)");
	return e < 0 ? raw_err(dev, e, "copying into") : 0;
}

/* Everything handed over is in the file (not yet durable: that is finish). */
static int raw_flush(struct img_dev *dev)
{
	return img_dio_drain(((struct raw *)img_dev_priv(dev))->dio);
}

static int raw_finish(struct img_dev *dev)
{
	struct raw *r = img_dev_priv(dev);
	int e;

	if (img_dev_readonly(dev))
		return 0;
	e = img_dev_finish_hash(dev, r->dio, img_dev_size(dev));
	if (e < 0)
		return e;
	if (fsync(r->fd) < 0 && errno != EINVAL && errno != EROFS)
		return raw_err(dev, -errno, "syncing");
	return 0;
}

static void raw_destroy(struct img_dev *dev)
{
	struct raw *r = img_dev_priv(dev);

	img_dio_free(r->dio);
	if (r->owns_fd && r->fd >= 0)
		close(r->fd);
	free(r->path);
}

static const struct img_dev_ops raw_ops = {
	.name = "raw",
	.pread = raw_pread,
	.pwrite = raw_pwrite,
	.write_zeroes = raw_write_zeroes,
	.copy_from_fd = raw_copy_from_fd,
	.flush = raw_flush,
	.write_data = raw_write_data,
	.finish = raw_finish,
	.destroy = raw_destroy,
};

static int raw_wrap(struct img_ctx *ctx, int fd, int owns, const char *path, uint64_t size,
                    unsigned flags, struct img_dev **out)
{
	struct img_dev *dev;
	struct raw *r;
	int e = img_dev_new(ctx, &raw_ops, size, flags, sizeof(*r), &dev);

	if (e < 0) {
		if (owns)
			close(fd);
		return e;
	}
	r = img_dev_priv(dev);
	r->fd = fd;
	r->owns_fd = owns;
	r->path = img_strdup(path);
	*out = dev;
	return 0;
}

int img_dev_raw_create(struct img_ctx *ctx, const char *path, uint64_t size, struct img_dev **out)
{
	struct raw *raw;
	int r, fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		return img_set_error(ctx, -errno, "creating %s: %s", path, strerror(errno));
	if (ftruncate(fd, (off_t)size) < 0) {
		int e = -errno;

		close(fd);
		return img_set_error(ctx, e, "sizing %s to %llu bytes: %s", path,
		                     (unsigned long long)size, strerror(-e));
	}
	r = raw_wrap(ctx, fd, 1, path, size, 0, out);
	if (r < 0)
		return r;
	raw = img_dev_priv(*out);
	r = img_dio_new(ctx, fd, path, &raw->dio);
	if (r < 0) {
		img_dev_unref(*out);
		*out = NULL;
	}
	return r;
}

int img_dev_raw_open(struct img_ctx *ctx, const char *path, struct img_dev **out)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return img_set_error(ctx, -EINVAL, "%s: not a regular file", path);
	}
	return raw_wrap(ctx, fd, 1, path, (uint64_t)st.st_size, IMG_DEV_READONLY, out);
}

int img_dev_raw_from_fd(struct img_ctx *ctx, int fd, uint64_t size, unsigned flags,
                        struct img_dev **out)
{
	return raw_wrap(ctx, fd, 0, NULL, size, flags, out);
}
