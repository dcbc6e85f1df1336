/*
 * dev-vdisk.c -- the front door of the VHD, VDI and VMDK backends
 * (vdisk.h): create or open a file in a format, probe a file's format by
 * its magic. The engine (dev-vdisk-engine.c) and the formats (dev-vpc.c,
 * dev-vdi.c, dev-vmdk.c) sit below it.
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

static const struct vdisk_format *format_of(enum img_vdisk_format f)
{
	switch (f) {
	case IMG_VDISK_VDI:
		return &vdisk_vdi;
	case IMG_VDISK_VMDK_SPARSE:
	case IMG_VDISK_VMDK_STREAM:
		return &vdisk_vmdk;
	default:
		return &vdisk_vpc;
	}
}

int img_dev_vdisk_create(struct img_ctx *ctx, const char *path, const struct img_vdisk_opts *o,
                         struct img_dev **out)
{
	struct vdisk v = {
		.ctx = ctx, .fd = -1, .fmt = o->format, .vsize = o->size, .grain_block = UINT64_MAX
	};
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
	v.format = format_of(o->format);
	e = v.format->layout(&v);
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
		e = vdisk_io_err(&v, -errno, "sizing");
		goto fail;
	}
	if ((e = img_dio_new(ctx, v.fd, path, &v.dio)) < 0)
		goto fail;
	/* the device holds its own copy of v: the stream starts on that */
	e = vdisk_dev_new(&v, 0, out);
	if (e == 0 && (e = vdisk_stream_start(img_dev_priv(*out))) < 0) {
		img_dev_unref(*out);
		*out = NULL;
	}
	return e;
fail:
	vdisk_release(&v);
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
	v.format = format_of(v.fmt);
	e = v.format->open(&v);
	if (e < 0)
		goto fail;
	return vdisk_dev_new(&v, IMG_DEV_READONLY, out);
fail:
	vdisk_release(&v);
	return e;
}
