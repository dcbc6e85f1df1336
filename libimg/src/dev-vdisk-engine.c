/*
 * dev-vdisk-engine.c -- the block engine behind the VHD, VDI and VMDK
 * backends (dev-vdisk.h): block allocation on first write, reads and
 * writes split at block boundaries, file data through the direct writer
 * (dio.c), and the ops table. The formats are reached only through
 * v->format (their files call this one, never the other way).
 *
 * Allocation is in the order blocks are first written, which the writers
 * keep deterministic (as the qcow2 backend relies on too): the same calls
 * give the same bytes; planned, in the order of the blocks (the plan's).
 * A slot is never moved or freed. The file's sha256 is dio's when every
 * byte went out in order (planned, or fixed VHD written front to back).
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dev-vdisk.h"
#include "dio.h"

int vdisk_io_err(struct vdisk *v, int err, const char *what)
{
	return img_set_error(v->ctx, err, "%s %s: %s", what, v->path, strerror(-err));
}

/*
 * Through the writer when there is one (as dev-qcow2-write.c's flush_write):
 * a write straight to the file at or past its frontier would be overwritten
 * by the zeros it fills a short gap of its next run with.
 */
int vdisk_pwrite(struct vdisk *v, const void *buf, size_t len, uint64_t off)
{
	int e;

	if (v->dio)
		return img_dio_pwrite(v->dio, buf, len, off);
	e = img_pwrite_full(v->fd, buf, len, off);
	return e < 0 ? vdisk_io_err(v, e, "writing") : 0;
}

int vdisk_pread(struct vdisk *v, void *buf, size_t len, uint64_t off)
{
	int e = img_dio_fence(v->dio, off, len);

	if (e < 0)
		return e;
	e = img_pread_full(v->fd, buf, len, off);
	return e < 0 ? vdisk_io_err(v, e, "reading") : 0;
}

/* Host offset of slot @k's data. */
static uint64_t slot_data(const struct vdisk *v, uint64_t k)
{
	return v->data_start + k * v->stride + v->data_in_slot;
}

/*
 * Host offset of virtual @off, allocating its block if @alloc (never when
 * planned: the plan gave every slot): 1 and *host set when the block is
 * mapped, 0 when it is not, or -errno.
 */
static int host_of(struct vdisk *v, uint64_t off, int alloc, uint64_t *host)
{
	uint64_t b, slot;

	if (!v->bs) {
		*host = off;
		return 1;
	}
	b = off / v->bs;
	if (!v->map[b] && alloc && !v->planned) {
		slot = v->data_start + v->nalloc * v->stride;
		v->map[b] = slot + v->data_in_slot;
		v->nalloc++;
		/* The file covers every slot handed out, so reads inside one
		 * never run past its end. Only ever grows. */
		if (slot + v->stride > v->end) {
			v->end = slot + v->stride;
			if (ftruncate(v->fd, (off_t)v->end) < 0)
				return vdisk_io_err(v, -errno, "growing");
		}
	}
	*host = v->map[b] ? v->map[b] + off % v->bs : 0;
	return v->map[b] != 0;
}

/* Planned: the heads of slots [v->heads, @upto), in file order. */
static int write_heads(struct vdisk *v, uint64_t upto)
{
	int e = 0;

	if (!v->slot_head_len) {
		v->heads = IMG_MAX(v->heads, upto);
		return 0;
	}
	for (; v->heads < upto && e == 0; v->heads++)
		e = vdisk_pwrite(v, v->slot_head, v->slot_head_len,
		                 slot_data(v, v->heads) - v->slot_head_len);
	return e;
}

/*
 * Where a write or zeros of virtual @off go: host_of() with allocation;
 * planned, the heads of the slots up to this one go out first (they lie
 * in front of its data).
 */
static int place(struct vdisk *v, uint64_t off, uint64_t *host)
{
	int e = host_of(v, off, 1, host);

	if (e > 0 && v->planned && v->bs) {
		uint64_t k = (v->map[off / v->bs] - slot_data(v, 0)) / v->stride;
		int r = write_heads(v, k + 1);

		if (r < 0)
			return r;
	}
	return e;
}

/* Planned, a block outside the plan: zeros read as zeros already, data has no room. */
static int outside(struct vdisk *v, uint64_t off, const uint8_t *p, uint64_t n)
{
	if (img_all_zero(p, (size_t)n))
		return 0;
	return img_set_error(v->ctx, -EINVAL,
	                     "%s: data at virtual offset %llu is outside the planned layout",
	                     v->path, (unsigned long long)off);
}

/* The bytes of [off, off+len) that lie in one block. */
static uint64_t chunk(const struct vdisk *v, uint64_t off, uint64_t len)
{
	if (!v->bs)
		return len;
	return IMG_MIN(len, v->bs - off % v->bs);
}

/* ---- streamed (dev-vdisk.h) ---------------------------------------- */

/* The block in memory is final: to the format, unless it is all zeros. */
static int stream_put(void *user)
{
	struct vdisk *v = user;

	if (img_all_zero(v->bst.buf, (size_t)v->bs))
		return 0;
	return v->format->stream_grain(v, v->bst.cur, v->bst.buf);
}

static bool stream_has(void *user, uint64_t b)
{
	return ((struct vdisk *)user)->map[b] != 0;
}

/* Streamed block @b (v->map[b] set) into v->grain: out of the stream,
 * which stream_flush wrote out (and gave v->file_size). */
static int stream_grain_back(struct vdisk *v, uint64_t b)
{
	int e = v->format->stream_flush(v);

	return e < 0 ? e : v->format->read_grain(v, b, v->map[b]);
}

static int stream_read(void *user, uint64_t b, uint8_t *out)
{
	struct vdisk *v = user;
	int e = stream_grain_back(v, b);

	if (e == 0)
		memcpy(out, v->grain, (size_t)v->bs);
	return e;
}

static int stream_open(void *user, uint64_t b)
{
	struct vdisk *v = user;

	(void)b;
	memset(v->sbuf, 0, (size_t)v->bs);
	v->bst.buf = v->sbuf;
	return 0;
}

/* Out of order: every streamed block back into a slot; unplanned from here. */
static int stream_stage(void *user)
{
	struct vdisk *v = user;
	int e = 0;

	for (uint64_t b = 0; b < v->nblocks && e == 0; b++) {
		uint64_t host;

		if (!v->map[b])
			continue;
		e = stream_grain_back(v, b);
		v->map[b] = 0;
		if (e == 0 && (e = host_of(v, b * v->bs, 1, &host)) > 0)
			e = vdisk_pwrite(v, v->grain, (size_t)v->bs, host);
	}
	v->format->stream_free(v);
	v->grain_block = UINT64_MAX;
	return e;
}

int vdisk_stream_start(struct vdisk *v)
{
	int e;

	if (!v->format->stream_start || !v->bs)
		return 0;
	e = v->format->stream_start(v);
	if (e != 0)
		return e < 0 ? e : 0; /* 1: this layout does not stream */
	v->sbuf = malloc((size_t)v->bs);
	v->tmp = malloc((size_t)v->bs);
	if (!v->sbuf || !v->tmp)
		return img_set_error(v->ctx, -ENOMEM, "out of memory");
	e = v->format->stream_head(v);
	if (e < 0)
		return e;
	v->bst = (struct block_stream){ .ctx = v->ctx,
		                        .name = v->path,
		                        .on = true,
		                        .bs = v->bs,
		                        .tmp = v->tmp,
		                        .user = v,
		                        .has = stream_has,
		                        .read = stream_read,
		                        .put = stream_put,
		                        .open = stream_open,
		                        .stage = stream_stage };
	return 0;
}

static int vd_pread(struct img_dev *dev, void *buf, size_t len, uint64_t off)
{
	struct vdisk *v = img_dev_priv(dev);
	uint8_t *p = buf;
	const struct stream_op op = { .kind = STREAM_READ, .dst = buf };
	int r = block_stream_op(&v->bst, off, len, &op);

	if (r <= 0)
		return r;
	while (len) {
		uint64_t n = chunk(v, off, len), host;
		int e = host_of(v, off, 0, &host);

		if (e < 0)
			return e;
		if (!e) {
			memset(p, 0, n);
		} else if (v->compressed) {
			uint64_t b = off / v->bs;

			if (v->grain_block != b && (e = v->format->read_grain(v, b, v->map[b])) < 0)
				return e;
			memcpy(p, v->grain + off % v->bs, n);
		} else if ((e = vdisk_pread(v, p, n, host)) < 0) {
			return e;
		}
		e = 0;
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* pwrite and write_data: @data 1 for file data (written behind by dio). */
static int write_bytes(struct img_dev *dev, const void *buf, size_t len, uint64_t off, int data)
{
	struct vdisk *v = img_dev_priv(dev);
	const uint8_t *p = buf;
	const struct stream_op op = { .kind = STREAM_WRITE, .src = buf };
	int r = block_stream_op(&v->bst, off, len, &op);

	if (r <= 0)
		return r;
	while (len) {
		uint64_t n = chunk(v, off, len), host;
		int e = place(v, off, &host);

		if (e == 0)
			e = outside(v, off, p, n);
		else if (e > 0 && data && v->dio)
			e = img_dio_write(v->dio, p, n, host);
		else if (e > 0)
			e = vdisk_pwrite(v, p, n, host);
		if (e < 0)
			return e;
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

static int vd_pwrite(struct img_dev *dev, const void *buf, size_t len, uint64_t off)
{
	return write_bytes(dev, buf, len, off, 0);
}

static int vd_write_data(struct img_dev *dev, const void *buf, size_t len, uint64_t off)
{
	return write_bytes(dev, buf, len, off, 1);
}

/* Planned, a copy into a block outside the plan: only zeros are fine. */
static int copy_outside(struct vdisk *v, int fd, uint64_t src, uint64_t n, uint64_t off)
{
	uint8_t *buf = malloc((size_t)n);
	int e;

	if (!buf)
		return img_set_error(v->ctx, -ENOMEM, "out of memory");
	e = img_pread_full(fd, buf, (size_t)n, src);
	if (e == -EIO)
		e = img_set_error(v->ctx, e, "input changed while reading (shorter than expected)");
	else if (e < 0)
		e = img_set_error(v->ctx, e, "reading input: %s", strerror(-e));
	else
		e = outside(v, off, buf, n);
	free(buf);
	return e;
}

static int vd_copy_from_fd(struct img_dev *dev, int fd, uint64_t src, uint64_t len, uint64_t off)
{
	struct vdisk *v = img_dev_priv(dev);
	const struct stream_op op = { .kind = STREAM_COPY, .fd = fd, .from = src };
	int r = block_stream_op(&v->bst, off, len, &op);

	if (r <= 0)
		return r;
	while (len) {
		uint64_t n = chunk(v, off, len), host;
		int e = place(v, off, &host);

		if (e < 0)
			return e;
		if (e == 0) {
			e = copy_outside(v, fd, src, n, off);
		} else if (v->dio) {
			e = img_dio_copy(v->dio, fd, src, n, host);
		} else {
			e = img_copy_fd_range(fd, src, v->fd, host, n);
			if (e == -ENODATA)
				e = img_set_error(v->ctx, -EIO,
				                  "input changed while reading "
				                  "(shorter than expected)");
			else if (e < 0)
				e = vdisk_io_err(v, e, "copying into");
		}
		if (e < 0)
			return e;
		src += n;
		off += n;
		len -= n;
	}
	return 0;
}

/*
 * Host bytes to read as zeros, told to the writer first: in order they are
 * a hole of the new file already (or short zeros in the run), behind the
 * frontier (img_dio_zero fenced them) a punched hole.
 */
static int zero_host(struct vdisk *v, uint64_t host, uint64_t n)
{
	static const uint8_t z[65536];
	int e = img_dio_zero(v->dio, host, n);

	if (e != 0)
		return e < 0 ? e : 0;
	if (fallocate(v->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)host, (off_t)n) ==
	    0)
		return 0;
	for (uint64_t k = 0; k < n; k += sizeof(z)) {
		e = vdisk_pwrite(v, z, (size_t)IMG_MIN(sizeof(z), n - k), host + k);
		if (e < 0)
			return e;
	}
	return 0;
}

/* Zeros: an unallocated block already reads as zeros; an allocated one gets a hole. */
static int vd_write_zeroes(struct img_dev *dev, uint64_t off, uint64_t len)
{
	struct vdisk *v = img_dev_priv(dev);
	const struct stream_op op = { .kind = STREAM_ZERO };
	int r = block_stream_op(&v->bst, off, len, &op);

	if (r <= 0)
		return r;
	while (len) {
		uint64_t n = chunk(v, off, len), host;
		int e = v->planned ? place(v, off, &host) : host_of(v, off, 0, &host);

		if (e > 0)
			e = zero_host(v, host, n);
		if (e < 0)
			return e;
		off += n;
		len -= n;
	}
	return 0;
}

static int vd_flush(struct img_dev *dev)
{
	return img_dio_drain(((struct vdisk *)img_dev_priv(dev))->dio);
}

/* [off, off+len) will be written: its blocks get their slots, in virtual order. */
static int vd_plan(struct img_dev *dev, uint64_t off, uint64_t len)
{
	struct vdisk *v = img_dev_priv(dev);

	if (!v->can_plan)
		return 0;
	for (uint64_t b = off / v->bs; b <= (off + len - 1) / v->bs; b++)
		if (!v->map[b])
			v->map[b] = slot_data(v, v->nalloc++);
	return 0;
}

/* Every slot is known: the file's size, and its head, written first. */
static int vd_plan_done(struct img_dev *dev)
{
	struct vdisk *v = img_dev_priv(dev);

	if (!v->can_plan)
		return 0;
	v->planned = true;
	v->end = v->data_start + v->nalloc * v->stride;
	if (ftruncate(v->fd, (off_t)v->end) < 0)
		return vdisk_io_err(v, -errno, "sizing");
	return v->format->head(v);
}

int vdisk_write_tables(struct vdisk *v)
{
	int e = v->format->head(v);

	for (uint64_t b = 0; b < v->nblocks && v->slot_head_len && e == 0; b++)
		if (v->map[b])
			e = vdisk_pwrite(v, v->slot_head, v->slot_head_len,
			                 v->map[b] - v->slot_head_len);
	return e < 0 ? e : v->format->tail(v);
}

static int vd_finish(struct img_dev *dev)
{
	struct vdisk *v = img_dev_priv(dev);
	int e;

	if (img_dev_readonly(dev))
		return 0;
	if (v->bst.on) {
		/* the block in memory, then the format's tail: in order */
		e = block_stream_end(&v->bst);
		if (e == 0)
			e = v->format->stream_end(v);
		v->format->stream_free(v);
	} else if (v->planned) {
		/* the heads of slots never written, then the tail: still in order */
		e = write_heads(v, v->nalloc);
		if (e == 0)
			e = v->format->tail(v);
	} else {
		e = img_dio_drain(v->dio);
		if (e == 0)
			e = v->format->finish ? v->format->finish(v) : vdisk_write_tables(v);
	}
	/* the tables went through the writer too (vdisk_pwrite): on the file
	 * before it is sized and synced; hashed if everything came in order */
	if (e == 0)
		e = img_dev_finish_hash(dev, v->dio, v->end);
	if (e < 0)
		return e;
	if (ftruncate(v->fd, (off_t)v->end) < 0)
		return vdisk_io_err(v, -errno, "sizing");
	if (fsync(v->fd) < 0 && errno != EINVAL && errno != EROFS)
		return vdisk_io_err(v, -errno, "syncing");
	return 0;
}

void vdisk_release(struct vdisk *v)
{
	if (v->format && v->format->stream_free)
		v->format->stream_free(v);
	free(v->sbuf);
	free(v->tmp);
	img_dio_free(v->dio);
	if (v->fd >= 0)
		close(v->fd);
	free(v->path);
	free(v->map);
	free(v->extent_name);
	free(v->grain);
}

static void vd_destroy(struct img_dev *dev)
{
	vdisk_release(img_dev_priv(dev));
}

static const struct img_dev_ops vdisk_ops = {
	.name = "vdisk",
	.pread = vd_pread,
	.pwrite = vd_pwrite,
	.write_zeroes = vd_write_zeroes,
	.copy_from_fd = vd_copy_from_fd,
	.flush = vd_flush,
	.write_data = vd_write_data,
	.finish = vd_finish,
	.destroy = vd_destroy,
	.plan = vd_plan,
	.plan_done = vd_plan_done,
};

int vdisk_dev_new(struct vdisk *v, unsigned flags, struct img_dev **out)
{
	struct img_dev *dev;
	int e = img_dev_new(v->ctx, &vdisk_ops, v->vsize, flags, sizeof(*v), &dev);

	if (e < 0) {
		vdisk_release(v);
		return e;
	}
	memcpy(img_dev_priv(dev), v, sizeof(*v));
	*out = dev;
	return 0;
}
