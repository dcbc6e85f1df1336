/*
 * dev-qcow2.c -- the qcow2 front door: probing a file, opening "any image"
 * by its magic, and creating overlays with a backing file.
 *
 * The header codec is dev-qcow2-header.c, the writer dev-qcow2-write.c, the
 * reader dev-qcow2-read.c, compression dev-qcow2-compress.c. The dependency
 * goes one way: this file uses the reader and the writer, they use the
 * header codec and the compressor, and none of them uses this file.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <img/vdisk.h>

#include "dev-qcow2-header.h"
#include "dev-qcow2-writer.h"

int img_qcow2_probe(struct img_ctx *ctx, const char *path, struct img_qcow2_info *info)
{
	struct qcow2_hdr h;
	int fd = open(path, O_RDONLY | O_CLOEXEC), r;

	if (fd < 0)
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	r = qcow2_read_header(ctx, path, fd, &h);
	close(fd);
	if (r < 0)
		return r;
	memset(info, 0, sizeof(*info));
	info->version = h.version;
	info->virtual_size = h.size;
	info->cluster_bits = h.cluster_bits;
	info->compression_type = h.compression_type;
	memcpy(info->backing_file, h.backing_file, sizeof(info->backing_file));
	memcpy(info->backing_format, h.backing_format, sizeof(info->backing_format));
	return 0;
}

/* Is @path a qcow2 file (by its magic)? 1 yes, 0 no, <0 error. */
static int has_qcow2_magic(struct img_ctx *ctx, const char *path)
{
	uint8_t m[4];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	n = pread(fd, m, sizeof(m), 0);
	close(fd);
	return n == sizeof(m) && img_get_be32(m) == QCOW2_MAGIC;
}

int img_dev_open_image(struct img_ctx *ctx, const char *path, unsigned flags, struct img_dev **out)
{
	enum img_vdisk_format vf;
	int r = has_qcow2_magic(ctx, path);

	if (r < 0)
		return r;
	if (r)
		return img_dev_qcow2_open(ctx, path, flags, out);
	if ((r = img_vdisk_probe(ctx, path, &vf, NULL)) < 0)
		return r;
	return vf ? img_dev_vdisk_open(ctx, path, out) : img_dev_raw_open(ctx, path, out);
}

/* Backing formats an overlay may name: ours, and what vdisk.h reads. */
static int backing_format_known(const char *f)
{
	static const char *const known[] = { "qcow2", "raw", "vpc", "vdi", "vmdk" };

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (!strcmp(f, known[i]))
			return 1;
	return 0;
}

int img_qcow2_create_overlay(struct img_ctx *ctx, const char *path, const char *backing,
                             const char *backing_fmt)
{
	struct img_qcow2_opts o = { 0 };
	struct img_dev *dev = NULL;
	char *abs = realpath(backing, NULL);
	int r, is_qcow2;

	if (!abs)
		return img_set_error(ctx, -errno, "backing image %s: %s", backing, strerror(errno));
	if (strlen(abs) > QCOW2_MAX_BACKING_NAME) {
		r = img_set_error(ctx, -ENAMETOOLONG,
		                  "backing image %s: absolute path longer than %d bytes", abs,
		                  QCOW2_MAX_BACKING_NAME);
		goto out;
	}
	r = has_qcow2_magic(ctx, abs);
	if (r < 0)
		goto out;
	is_qcow2 = r;
	if (!backing_fmt)
		backing_fmt = is_qcow2 ? "qcow2" : "raw";
	if (!backing_format_known(backing_fmt)) {
		r = img_set_error(ctx, -EINVAL,
		                  "backing format '%s' is not qcow2, raw, vpc, vdi or vmdk",
		                  backing_fmt);
		goto out;
	}
	if (!strcmp(backing_fmt, "qcow2") && !is_qcow2) {
		r = img_set_error(ctx, -EINVAL, "backing image %s is not a qcow2 image", abs);
		goto out;
	}
	/* The size comes from the backing image as qemu would read it. */
	if (!strcmp(backing_fmt, "qcow2")) {
		r = img_dev_qcow2_open(ctx, abs, IMG_QCOW2_ALLOW_BACKING, &dev);
	} else if (!strcmp(backing_fmt, "raw")) {
		r = img_dev_raw_open(ctx, abs, &dev);
	} else {
		enum img_vdisk_format vf;
		const char *name = NULL;

		r = img_vdisk_probe(ctx, abs, &vf, &name);
		if (r == 0 && (!vf || strcmp(name, backing_fmt)))
			r = img_set_error(ctx, -EINVAL, "backing image %s is not a %s image", abs,
			                  backing_fmt);
		if (r == 0)
			r = img_dev_vdisk_open(ctx, abs, &dev);
	}
	if (r < 0) {
		r = img_error_prefix(ctx, r, "backing image");
		goto out;
	}
	o.size = IMG_ALIGN_UP(img_dev_size(dev), 512);
	img_dev_unref(dev);
	dev = NULL;
	r = qcow2_create_with_backing(ctx, path, &o, abs, backing_fmt, &dev);
	if (r == 0)
		r = img_dev_finish(dev);
	img_dev_unref(dev);
	if (r < 0)
		unlink(path);
out:
	free(abs);
	return r;
}
