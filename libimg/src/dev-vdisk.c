/*
 * dev-vdisk.c -- the block engine behind the VHD, VDI and VMDK backends
 * (dev-vdisk.h): block allocation on first write, reads and writes split
 * at block boundaries, file data through the direct writer (dio.c), and
 * the ops table.
 *
 * Allocation is in the order blocks are first written, which the writers
 * keep deterministic (as the qcow2 backend relies on too): the same calls
 * give the same bytes. A slot is never moved or freed.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dev-vdisk.h"
#include "dio.h"

const char *img_vdisk_qemu_name(enum img_vdisk_format f)
{
	switch (f) {
	case IMG_VDISK_VPC_FIXED:
	case IMG_VDISK_VPC_DYNAMIC:
		return "vpc";
	case IMG_VDISK_VDI:
		return "vdi";
	case IMG_VDISK_VMDK_SPARSE:
	case IMG_VDISK_VMDK_STREAM:
		return "vmdk";
	}
	return NULL;
}

static int io_err(struct vdisk *v, int err, const char *what)
{
	return img_set_error(v->ctx, err, "%s %s: %s", what, v->path, strerror(-err));
}

int vdisk_pwrite(struct vdisk *v, const void *buf, size_t len, uint64_t off)
{
	int e = img_dio_fence(v->dio, off, len);

	if (e < 0)
		return e;
	e = img_pwrite_full(v->fd, buf, len, off);
	return e < 0 ? io_err(v, e, "writing") : 0;
}

int vdisk_pread(struct vdisk *v, void *buf, size_t len, uint64_t off)
{
	int e = img_dio_fence(v->dio, off, len);

	if (e < 0)
		return e;
	e = img_pread_full(v->fd, buf, len, off);
	return e < 0 ? io_err(v, e, "reading") : 0;
}

/*
 * Host offset of virtual @off, allocating its block if @alloc: 1 and
 * *host set when the block is mapped, 0 when it is not, or -errno.
 */
static int host_of(struct vdisk *v, uint64_t off, int alloc, uint64_t *host)
{
	uint64_t b, slot;

	if (!v->bs) {
		*host = off;
		return 1;
	}
	b = off / v->bs;
	if (!v->map[b] && alloc) {
		slot = v->data_start + v->nalloc * v->stride;
		v->map[b] = slot + v->data_in_slot;
		v->nalloc++;
		/* The file covers every slot handed out, so reads inside one
		 * never run past its end. Only ever grows. */
		if (slot + v->stride > v->end) {
			v->end = slot + v->stride;
			if (ftruncate(v->fd, (off_t)v->end) < 0)
				return io_err(v, -errno, "growing");
		}
	}
	*host = v->map[b] ? v->map[b] + off % v->bs : 0;
	return v->map[b] != 0;
}

/* The bytes of [off, off+len) that lie in one block. */
static uint64_t chunk(const struct vdisk *v, uint64_t off, uint64_t len)
{
	if (!v->bs)
		return len;
	return IMG_MIN(len, v->bs - off % v->bs);
}

static int vd_pread(struct img_dev *dev, void *buf, size_t len, uint64_t off)
{
	struct vdisk *v = img_dev_priv(dev);
	uint8_t *p = buf;

	while (len) {
		uint64_t n = chunk(v, off, len), host;
		int e = host_of(v, off, 0, &host);

		if (e < 0)
			return e;
		if (!e) {
			memset(p, 0, n);
		} else if (v->compressed) {
			uint64_t b = off / v->bs;

			if (v->grain_block != b && (e = vmdk_read_grain(v, b, v->map[b])) < 0)
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

static int vd_pwrite(struct img_dev *dev, const void *buf, size_t len, uint64_t off)
{
	struct vdisk *v = img_dev_priv(dev);
	const uint8_t *p = buf;

	while (len) {
		uint64_t n = chunk(v, off, len), host;
		int e = host_of(v, off, 1, &host);

		if (e < 0 || (e = vdisk_pwrite(v, p, n, host)) < 0)
			return e;
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

static int vd_write_data(struct img_dev *dev, const void *buf, size_t len, uint64_t off)
{
	struct vdisk *v = img_dev_priv(dev);
	const uint8_t *p = buf;

	if (!v->dio)
		return vd_pwrite(dev, buf, len, off);
	while (len) {
		uint64_t n = chunk(v, off, len), host;
		int e = host_of(v, off, 1, &host);

		if (e < 0 || (e = img_dio_write(v->dio, p, n, host)) < 0)
			return e;
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

static int vd_copy_from_fd(struct img_dev *dev, int fd, uint64_t src, uint64_t len, uint64_t off)
{
	struct vdisk *v = img_dev_priv(dev);

	while (len) {
		uint64_t n = chunk(v, off, len), host;
		int e = host_of(v, off, 1, &host);

		if (e < 0)
			return e;
		if (v->dio) {
			e = img_dio_copy(v->dio, fd, src, n, host);
		} else {
			e = img_copy_fd_range(fd, src, v->fd, host, n);
			if (e == -ENODATA)
				e = img_set_error(v->ctx, -EIO,
				                  "input changed while reading "
				                  "(shorter than expected)");
			else if (e < 0)
				e = io_err(v, e, "copying into");
		}
		if (e < 0)
			return e;
		src += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* Zeros: an unallocated block already reads as zeros; an allocated one gets a hole. */
static int vd_write_zeroes(struct img_dev *dev, uint64_t off, uint64_t len)
{
	static const uint8_t z[65536];
	struct vdisk *v = img_dev_priv(dev);

	while (len) {
		uint64_t n = chunk(v, off, len), host;
		int e = host_of(v, off, 0, &host);

		if (e < 0)
			return e;
		if (e) {
			if ((e = img_dio_fence(v->dio, host, n)) < 0)
				return e;
			if (fallocate(v->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			              (off_t)host, (off_t)n) < 0) {
				for (uint64_t k = 0; k < n; k += sizeof(z)) {
					e = vdisk_pwrite(v, z, (size_t)IMG_MIN(sizeof(z), n - k),
					                 host + k);
					if (e < 0)
						return e;
				}
			}
		}
		off += n;
		len -= n;
	}
	return 0;
}

static int vd_flush(struct img_dev *dev)
{
	return img_dio_drain(((struct vdisk *)img_dev_priv(dev))->dio);
}

static int vd_finish(struct img_dev *dev)
{
	struct vdisk *v = img_dev_priv(dev);
	int e;

	if (img_dev_readonly(dev))
		return 0;
	if ((e = img_dio_drain(v->dio)) < 0)
		return e;
	switch (v->fmt) {
	case IMG_VDISK_VPC_FIXED:
	case IMG_VDISK_VPC_DYNAMIC:
		e = vpc_finish(v);
		break;
	case IMG_VDISK_VDI:
		e = vdi_finish(v);
		break;
	case IMG_VDISK_VMDK_SPARSE:
	case IMG_VDISK_VMDK_STREAM:
		e = vmdk_finish(v);
		break;
	}
	if (e < 0)
		return e;
	if (ftruncate(v->fd, (off_t)v->end) < 0)
		return io_err(v, -errno, "sizing");
	if (fsync(v->fd) < 0 && errno != EINVAL && errno != EROFS)
		return io_err(v, -errno, "syncing");
	return 0;
}

static void vd_destroy(struct img_dev *dev)
{
	struct vdisk *v = img_dev_priv(dev);

	img_dio_free(v->dio);
	if (v->fd >= 0)
		close(v->fd);
	free(v->path);
	free(v->map);
	free(v->extent_name);
	free(v->grain);
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
};

int img_dev_vdisk_create(struct img_ctx *ctx, const char *path, const struct img_vdisk_opts *o,
                         struct img_dev **out)
{
	struct vdisk v = {
		.ctx = ctx, .fd = -1, .fmt = o->format, .vsize = o->size, .grain_block = UINT64_MAX
	};
	struct img_dev *dev;
	const char *base;
	int e;

	*out = NULL;
	if (!img_vdisk_qemu_name(o->format))
		return img_set_error(ctx, -EINVAL, "unknown virtual disk format %d", o->format);
	if (!o->size || o->size % 512)
		return img_set_error(ctx, -EINVAL, "%s: virtual size %llu is not a multiple of 512",
		                     path, (unsigned long long)o->size);
	base = o->extent_name ? o->extent_name : strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	v.path = img_strdup(path);
	v.extent_name = img_strdup(base);
	if (!v.path || !v.extent_name) {
		e = img_set_error(ctx, -ENOMEM, "out of memory");
		goto fail;
	}
	e = o->format == IMG_VDISK_VDI ? vdi_layout(&v)
	    : o->format == IMG_VDISK_VMDK_SPARSE || o->format == IMG_VDISK_VMDK_STREAM
	        ? vmdk_layout(&v)
	        : vpc_layout(&v);
	if (e < 0)
		goto fail;
	if (v.bs) {
		v.nblocks = IMG_DIV_ROUND_UP(v.vsize, v.bs);
		v.map = calloc(v.nblocks, sizeof(*v.map));
		if (!v.map) {
			e = img_set_error(ctx, -ENOMEM, "out of memory");
			goto fail;
		}
	}
	v.fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (v.fd < 0) {
		e = img_set_error(ctx, -errno, "creating %s: %s", path, strerror(errno));
		goto fail;
	}
	if (ftruncate(v.fd, (off_t)v.end) < 0) {
		e = io_err(&v, -errno, "sizing");
		goto fail;
	}
	if ((e = img_dio_new(ctx, v.fd, path, &v.dio)) < 0)
		goto fail;
	e = img_dev_new(ctx, &vdisk_ops, v.vsize, 0, sizeof(v), &dev);
	if (e < 0)
		goto fail;
	memcpy(img_dev_priv(dev), &v, sizeof(v));
	*out = dev;
	return 0;
fail:
	img_dio_free(v.dio);
	if (v.fd >= 0)
		close(v.fd);
	free(v.path);
	free(v.extent_name);
	free(v.map);
	return e;
}

int img_vdisk_probe(struct img_ctx *ctx, const char *path, enum img_vdisk_format *format,
                    const char **qemu_name)
{
	uint8_t h[512];
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC), e = 0;

	*format = 0;
	if (qemu_name)
		*qemu_name = NULL;
	if (fd < 0)
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	memset(h, 0, sizeof(h));
	if (fstat(fd, &st) == 0 && st.st_size >= 512) {
		e = img_pread_full(fd, h, sizeof(h), 0);
		if (e == 0 && !memcmp(h, "conectix", 8)) {
			*format = IMG_VDISK_VPC_DYNAMIC;
		} else if (e == 0 && img_get_le32(h + 0x40) == 0xbeda107f) {
			*format = IMG_VDISK_VDI;
		} else if (e == 0 && !memcmp(h, "KDMV", 4)) {
			*format = (img_get_le32(h + 8) & (1u << 16)) ? IMG_VDISK_VMDK_STREAM
			                                             : IMG_VDISK_VMDK_SPARSE;
		} else if (e == 0) {
			e = img_pread_full(fd, h, 512, (uint64_t)st.st_size - 512);
			if (e == 0 && !memcmp(h, "conectix", 8))
				*format = IMG_VDISK_VPC_FIXED;
		}
	}
	close(fd);
	if (e < 0)
		return img_set_error(ctx, e, "%s: %s", path, strerror(-e));
	if (*format && qemu_name)
		*qemu_name = img_vdisk_qemu_name(*format);
	return 0;
}

int img_dev_vdisk_open(struct img_ctx *ctx, const char *path, struct img_dev **out)
{
	struct vdisk v = { .ctx = ctx, .fd = -1, .grain_block = UINT64_MAX };
	struct img_dev *dev;
	struct stat st;
	int e;

	*out = NULL;
	if ((e = img_vdisk_probe(ctx, path, &v.fmt, NULL)) < 0)
		return e;
	if (!v.fmt)
		return img_set_error(ctx, -EINVAL, "%s: not a VHD, VDI or VMDK image", path);
	v.path = img_strdup(path);
	v.fd = open(path, O_RDONLY | O_CLOEXEC);
	if (!v.path || v.fd < 0 || fstat(v.fd, &st) < 0) {
		e = v.path ? img_set_error(ctx, -errno, "%s: %s", path, strerror(errno))
		           : img_set_error(ctx, -ENOMEM, "out of memory");
		goto fail;
	}
	v.file_size = (uint64_t)st.st_size;
	e = v.fmt == IMG_VDISK_VDI                                             ? vdi_open(&v)
	    : v.fmt == IMG_VDISK_VMDK_SPARSE || v.fmt == IMG_VDISK_VMDK_STREAM ? vmdk_open(&v)
	                                                                       : vpc_open(&v);
	if (e < 0)
		goto fail;
	e = img_dev_new(ctx, &vdisk_ops, v.vsize, IMG_DEV_READONLY, sizeof(v), &dev);
	if (e < 0)
		goto fail;
	memcpy(img_dev_priv(dev), &v, sizeof(v));
	*out = dev;
	return 0;
fail:
	if (v.fd >= 0)
		close(v.fd);
	free(v.path);
	free(v.map);
	free(v.grain);
	free(v.extent_name);
	return e;
}
