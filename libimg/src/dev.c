/*
 * dev.c -- the block device front end: range checks, fallbacks for the
 * optional ops, reference counting, the sticky error flag, and the write
 * tap (img_dev_set_tap, private.h) that shows a range's writes to a hasher.
 */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dio.h"
#include "private.h"

struct img_dev {
	const struct img_dev_ops *ops;
	struct img_ctx *ctx;
	uint64_t size;
	unsigned flags;
	unsigned refs;
	int error; /* first failure; later calls fail with it */
	int finished;
	int wrote; /* a write op was called */
	enum { PLAN_NONE, PLAN_OPEN, PLAN_DONE } plan;
	uint64_t plan_end; /* end of the last planned range */
	/* The tap: writes into [tap_off, tap_end) are shown to tap_fn. */
	img_dev_tap_fn tap_fn;
	void *tap_user;
	uint64_t tap_off, tap_end;
	bool have_sha; /* img_dev_finish_hash: the file's hash, as its writer took it */
	uint8_t sha[32];
	max_align_t priv[]; /* backend state */
};

int img_dev_new(struct img_ctx *ctx, const struct img_dev_ops *ops, uint64_t size, unsigned flags,
                size_t priv_size, struct img_dev **out)
{
	struct img_dev *dev = calloc(1, sizeof(*dev) + priv_size);

	if (!dev)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	dev->ops = ops;
	dev->ctx = ctx;
	dev->size = size;
	dev->flags = flags;
	dev->refs = 1;
	*out = dev;
	return 0;
}

void *img_dev_priv(struct img_dev *dev)
{
	return dev->priv;
}

struct img_ctx *img_dev_ctx(const struct img_dev *dev)
{
	return dev->ctx;
}

struct img_dev *img_dev_ref(struct img_dev *dev)
{
	dev->refs++;
	return dev;
}

void img_dev_unref(struct img_dev *dev)
{
	if (!dev || --dev->refs)
		return;
	if (dev->ops->destroy)
		dev->ops->destroy(dev);
	free(dev);
}

uint64_t img_dev_size(const struct img_dev *dev)
{
	return dev->size;
}

const char *img_dev_backend(const struct img_dev *dev)
{
	return dev->ops->name;
}

int img_dev_readonly(const struct img_dev *dev)
{
	return (dev->flags & IMG_DEV_READONLY) != 0;
}

int img_dev_error(const struct img_dev *dev)
{
	return dev->error;
}

static int sticky(struct img_dev *dev, int r)
{
	if (r < 0 && !dev->error)
		dev->error = r;
	return r;
}

void img_dev_set_tap(struct img_dev *dev, uint64_t off, uint64_t len, img_dev_tap_fn fn, void *user)
{
	dev->tap_fn = fn;
	dev->tap_user = user;
	dev->tap_off = off;
	dev->tap_end = fn ? off + len : off;
}

/* Does [off, off+len) reach into the tapped range? */
static bool tapped(const struct img_dev *dev, uint64_t off, uint64_t len)
{
	return dev->tap_fn && off < dev->tap_end && dev->tap_off < off + len;
}

/* Show the part of a write inside the tapped range (@buf NULL: zeros). */
static void tap(struct img_dev *dev, const void *buf, uint64_t len, uint64_t off)
{
	uint64_t lo, hi;

	if (!tapped(dev, off, len))
		return;
	lo = IMG_MAX(off, dev->tap_off);
	hi = IMG_MIN(off + len, dev->tap_end);
	dev->tap_fn(dev->tap_user, buf ? (const uint8_t *)buf + (lo - off) : NULL, hi - lo, lo);
}

static int check_range(struct img_dev *dev, uint64_t off, uint64_t len, int write)
{
	uint64_t end;

	if (dev->error)
		return dev->error;
	if (write && (dev->flags & IMG_DEV_READONLY))
		return img_set_error(dev->ctx, -EROFS, "%s device is read-only", dev->ops->name);
	if (write && dev->finished)
		return img_set_error(dev->ctx, -EINVAL, "%s device already finished",
		                     dev->ops->name);
	if (img_add_overflow(off, len, &end) || end > dev->size)
		return img_set_error(dev->ctx, -EINVAL,
		                     "access [%llu, +%llu) beyond the end of a %llu-byte %s device",
		                     (unsigned long long)off, (unsigned long long)len,
		                     (unsigned long long)dev->size, dev->ops->name);
	if (write && dev->plan == PLAN_OPEN)
		return img_set_error(dev->ctx, -EINVAL,
		                     "%s device: write at %llu before img_dev_plan_done()",
		                     dev->ops->name, (unsigned long long)off);
	if (write)
		dev->wrote = 1;
	return 0;
}

/* May the plan still be given? 0, or the error (message set). */
static int plan_open(struct img_dev *dev, const char *what)
{
	if (dev->error)
		return dev->error;
	if (dev->flags & IMG_DEV_READONLY)
		return img_set_error(dev->ctx, -EROFS, "%s device is read-only", dev->ops->name);
	if (dev->finished || dev->wrote || dev->plan == PLAN_DONE)
		return img_set_error(
		    dev->ctx, -EINVAL, "%s device: %s after %s", dev->ops->name, what,
		    dev->plan == PLAN_DONE ? "img_dev_plan_done()" : "the first write");
	return 0;
}

int img_dev_plan(struct img_dev *dev, uint64_t off, uint64_t len)
{
	uint64_t end;
	int r = plan_open(dev, "a plan range");

	if (r < 0)
		return sticky(dev, r);
	if (img_add_overflow(off, len, &end) || end > dev->size)
		return sticky(
		    dev, img_set_error(
		             dev->ctx, -EINVAL,
		             "plan range [%llu, +%llu) beyond the end of a %llu-byte %s device",
		             (unsigned long long)off, (unsigned long long)len,
		             (unsigned long long)dev->size, dev->ops->name));
	if (len == 0)
		return 0;
	if (dev->plan == PLAN_OPEN && off < dev->plan_end)
		return sticky(
		    dev, img_set_error(dev->ctx, -EINVAL,
		                       "%s device: plan range [%llu, +%llu) does not start "
		                       "after the one before, which ends at %llu",
		                       dev->ops->name, (unsigned long long)off,
		                       (unsigned long long)len, (unsigned long long)dev->plan_end));
	dev->plan = PLAN_OPEN;
	dev->plan_end = end;
	return dev->ops->plan ? sticky(dev, dev->ops->plan(dev, off, len)) : 0;
}

int img_dev_plan_done(struct img_dev *dev)
{
	int r = plan_open(dev, "img_dev_plan_done()");

	if (r < 0)
		return sticky(dev, r);
	dev->plan = PLAN_DONE;
	return dev->ops->plan_done ? sticky(dev, dev->ops->plan_done(dev)) : 0;
}

int img_dev_pread(struct img_dev *dev, void *buf, size_t len, uint64_t off)
{
	int r = check_range(dev, off, len, 0);

	if (r < 0 || len == 0)
		return r;
	/* Read errors are not sticky: a failed read does not spoil the output. */
	return dev->ops->pread(dev, buf, len, off);
}

int img_dev_pwrite(struct img_dev *dev, const void *buf, size_t len, uint64_t off)
{
	int r = check_range(dev, off, len, 1);

	if (r < 0 || len == 0)
		return r;
	tap(dev, buf, len, off);
	return sticky(dev, dev->ops->pwrite(dev, buf, len, off));
}

int img_dev_write_data(struct img_dev *dev, const void *buf, size_t len, uint64_t off)
{
	int r = check_range(dev, off, len, 1);

	if (r < 0 || len == 0)
		return r;
	tap(dev, buf, len, off);
	if (!dev->ops->write_data)
		return sticky(dev, dev->ops->pwrite(dev, buf, len, off));
	return sticky(dev, dev->ops->write_data(dev, buf, len, off));
}

static const uint8_t zero_block[65536];

static int zero_range(struct img_dev *dev, uint64_t off, uint64_t len)
{
	if (dev->ops->write_zeroes)
		return dev->ops->write_zeroes(dev, off, len);
	while (len) {
		size_t n = (size_t)IMG_MIN(len, sizeof(zero_block));
		int r = dev->ops->pwrite(dev, zero_block, n, off);

		if (r < 0)
			return r;
		off += n;
		len -= n;
	}
	return 0;
}

int img_dev_write_zeroes(struct img_dev *dev, uint64_t off, uint64_t len)
{
	int r = check_range(dev, off, len, 1);

	if (r < 0 || len == 0)
		return r;
	tap(dev, NULL, len, off);
	return sticky(dev, zero_range(dev, off, len));
}

/*
 * One range of data: the backend's in-kernel copy, else read + write. Into
 * a tapped range the bytes go through memory, so the tap sees exactly the
 * bytes written (the backend then takes them as write_data: the same bytes
 * in the same places).
 */
static int copy_range(struct img_dev *dev, int fd, uint64_t src_off, uint64_t len, uint64_t dst_off)
{
	bool through = tapped(dev, dst_off, len);
	size_t bufsz;
	uint8_t *buf;
	int r = 0;

	if (dev->ops->copy_from_fd && !through)
		return dev->ops->copy_from_fd(dev, fd, src_off, len, dst_off);
	bufsz = (size_t)IMG_MIN(len, (uint64_t)1 << 20);
	buf = malloc(bufsz);
	if (!buf)
		return img_set_error(dev->ctx, -ENOMEM, "out of memory");
	while (len) {
		size_t n = (size_t)IMG_MIN(len, bufsz);

		r = img_pread_full(fd, buf, n, src_off);
		if (r < 0) {
			r = img_set_error(
			    dev->ctx, r,
			    r == -EIO ? "input changed while reading (shorter than expected)"
			              : "reading input: %s",
			    strerror(-r));
			break;
		}
		tap(dev, buf, n, dst_off);
		if (through && dev->ops->write_data)
			r = dev->ops->write_data(dev, buf, n, dst_off);
		else
			r = dev->ops->pwrite(dev, buf, n, dst_off);
		if (r < 0)
			break;
		src_off += n;
		dst_off += n;
		len -= n;
	}
	free(buf);
	return r;
}

/*
 * Large copies from a regular file keep its holes: only the data segments
 * (SEEK_DATA/SEEK_HOLE) are copied, holes become write_zeroes (unallocated
 * in qcow2, punched in raw), so every writer keeps sparse inputs sparse
 * without doing it itself. SEEK_DATA moves the fd's file position, which a
 * caller may be using (a tar reader), so it is put back. Small copies skip
 * the probe: it would cost more system calls than it could save.
 */
#define HOLE_PROBE_MIN (256u << 10)

static int copy_segments(struct img_dev *dev, int fd, uint64_t src, uint64_t len, uint64_t dst)
{
	struct stat st;
	off_t pos;
	int r = 0;

	if (len < HOLE_PROBE_MIN || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return copy_range(dev, fd, src, len, dst);
	/* A hole past the end would read as zeros: a short source is an error. */
	if ((uint64_t)st.st_size < src + len)
		return img_set_error(dev->ctx, -EIO,
		                     "input changed while reading (shorter than expected)");
	pos = lseek(fd, 0, SEEK_CUR);
	while (len && r == 0) {
		off_t d = lseek(fd, (off_t)src, SEEK_DATA), h;
		uint64_t n;

		if (d < 0 && errno != ENXIO) {
			r = copy_range(dev, fd, src, len, dst); /* no hole support here */
			break;
		}
		if (d < 0 || (uint64_t)d >= src + len) {
			tap(dev, NULL, len, dst);
			r = zero_range(dev, dst, len); /* the rest is a hole */
			break;
		}
		if ((uint64_t)d > src) {
			n = (uint64_t)d - src;
			tap(dev, NULL, n, dst);
			r = zero_range(dev, dst, n);
		} else {
			h = lseek(fd, d, SEEK_HOLE);
			n = h < 0 ? len : IMG_MIN((uint64_t)h - src, len);
			r = copy_range(dev, fd, src, n, dst);
		}
		src += n;
		dst += n;
		len -= n;
	}
	if (pos >= 0)
		lseek(fd, pos, SEEK_SET);
	return r;
}

int img_dev_copy_from_fd(struct img_dev *dev, int fd, uint64_t src_off, uint64_t len,
                         uint64_t dst_off)
{
	int r = check_range(dev, dst_off, len, 1);

	if (r < 0 || len == 0)
		return r;
	return sticky(dev, copy_segments(dev, fd, src_off, len, dst_off));
}

int img_dev_flush(struct img_dev *dev)
{
	if (dev->error)
		return dev->error;
	return sticky(dev, dev->ops->flush(dev));
}

int img_dev_finish(struct img_dev *dev)
{
	int r;

	if (dev->error)
		return dev->error;
	if (dev->finished)
		return img_set_error(dev->ctx, -EINVAL, "%s device finished twice", dev->ops->name);
	r = dev->ops->finish ? dev->ops->finish(dev) : dev->ops->flush(dev);
	dev->finished = 1;
	return sticky(dev, r);
}

int img_dev_finish_hash(struct img_dev *dev, struct img_dio *dio, uint64_t size)
{
	int e = img_dio_digest(dio, size, dev->sha);

	if (e == -ENODATA)
		return img_dio_drain(dio);
	dev->have_sha = e == 0;
	return e;
}

int img_dev_sha256(struct img_dev *dev, uint8_t out[32])
{
	if (!dev || !dev->finished || dev->error || !dev->have_sha)
		return -ENODATA;
	memcpy(out, dev->sha, 32);
	return 0;
}
