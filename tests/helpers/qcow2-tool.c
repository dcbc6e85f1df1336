/*
 * qcow2-tool.c -- a small driver of libimg's devices for the qcow2 tests
 * and the benchmark (built only with the tests).
 *
 *   qcow2-tool write OUT [options] OP...    write through a raw, qcow2 or vdisk device
 *     --format raw|qcow2|vpc|vpc-dynamic|vdi|vmdk|vmdk-stream  --size BYTES
 *     --cluster-bits N
 *     --compress zstd|zlib  --level N  --threads N
 *     OPs, applied in order:
 *       pattern SEED COUNT MAXLEN  random writes: data, zeros, write_zeroes, text
 *       data OFF LEN SEED          pseudo-random bytes at OFF
 *       text OFF LEN               compressible bytes at OFF
 *       zero OFF LEN               img_dev_write_zeroes
 *       copy FILE DST              img_dev_copy_from_fd of the whole FILE to DST
 *       convert FILE               copy the data extents of FILE (a raw disk)
 *   qcow2-tool dump IN OUT [--allow-backing]   virtual disk -> sparse raw file
 *   qcow2-tool info IN                         img_qcow2_probe, key=value lines
 *   qcow2-tool overlay OUT BACKING [FMT]       img_qcow2_create_overlay
 *
 * Errors go to stderr as "qcow2-tool: <message>", exit 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <img/context.h>
#include <img/vdisk.h>
#include <img/dev.h>
#include <img/qcow2.h>

static struct img_ctx *ctx;

static int fail(const char *what)
{
	fprintf(stderr, "qcow2-tool: %s%s%s\n", what, *img_ctx_error(ctx) ? ": " : "",
	        img_ctx_error(ctx));
	exit(1);
}

static uint64_t num(const char *s)
{
	char *end;
	uint64_t v = strtoull(s, &end, 0);

	switch (*end) {
	case 'K':
		v <<= 10;
		break;
	case 'M':
		v <<= 20;
		break;
	case 'G':
		v <<= 30;
		break;
	default:
		break;
	}
	return v;
}

static uint64_t rng_state;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void fill_random(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;

	for (size_t i = 0; i < len; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		buf[i] = (uint8_t)(s >> 24);
	}
}

static void fill_text(uint8_t *buf, size_t len, uint64_t off)
{
	static const char words[] = "qcow2 cluster refcount table L1 L2 zstd zlib nix store ";

	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)words[(off + i) % (sizeof(words) - 1)];
}

static void op_write(struct img_dev *dev, uint64_t off, uint64_t len, int kind, uint64_t seed)
{
	uint8_t *buf = calloc(1, len ? len : 1);

	if (!buf)
		exit(1);
	if (kind == 1)
		fill_random(buf, len, seed);
	else if (kind == 2)
		fill_text(buf, len, off);
	if (img_dev_pwrite(dev, buf, len, off) < 0)
		fail("pwrite");
	free(buf);
}

static void op_pattern(struct img_dev *dev, uint64_t seed, uint64_t count, uint64_t maxlen)
{
	uint64_t size = img_dev_size(dev);

	rng_state = seed * 2654435761u + 7;
	for (uint64_t i = 0; i < count; i++) {
		uint64_t len = rnd() % maxlen + 1, off, kind = rnd() % 20;

		len = len > size ? size : len;
		off = rnd() % (size - len + 1);
		if (rnd() % 2) /* half aligned, half anywhere */
			off &= ~(uint64_t)511;
		if (kind < 11)
			op_write(dev, off, len, 1, rnd());
		else if (kind < 14)
			op_write(dev, off, len, 0, 0);
		else if (kind < 17)
			op_write(dev, off, len, 2, 0);
		else if (img_dev_write_zeroes(dev, off, len) < 0)
			fail("write_zeroes");
	}
}

static void op_copy(struct img_dev *dev, const char *file, uint64_t dst)
{
	struct stat st;
	int fd = open(file, O_RDONLY);

	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(file);
		exit(1);
	}
	if (img_dev_copy_from_fd(dev, fd, 0, (uint64_t)st.st_size, dst) < 0)
		fail("copy_from_fd");
	close(fd);
}

/* Like qemu-img convert: copy the data extents of a raw disk image. */
static void op_convert(struct img_dev *dev, const char *file)
{
	struct stat st;
	int fd = open(file, O_RDONLY);
	off_t pos = 0;

	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(file);
		exit(1);
	}
	while (pos < st.st_size) {
		off_t d = lseek(fd, pos, SEEK_DATA), h;

		if (d < 0)
			break;
		h = lseek(fd, d, SEEK_HOLE);
		if (h < 0)
			h = st.st_size;
		if ((uint64_t)h > img_dev_size(dev))
			h = (off_t)img_dev_size(dev);
		if (h > d &&
		    img_dev_copy_from_fd(dev, fd, (uint64_t)d, (uint64_t)(h - d), (uint64_t)d) < 0)
			fail("copy_from_fd");
		pos = h;
	}
	close(fd);
}

/* The vdisk.h formats by a short name; 0 for raw and qcow2. */
static enum img_vdisk_format vdisk_format(const char *f)
{
	return !strcmp(f, "vpc")           ? IMG_VDISK_VPC_FIXED
	       : !strcmp(f, "vpc-dynamic") ? IMG_VDISK_VPC_DYNAMIC
	       : !strcmp(f, "vdi")         ? IMG_VDISK_VDI
	       : !strcmp(f, "vmdk")        ? IMG_VDISK_VMDK_SPARSE
	       : !strcmp(f, "vmdk-stream") ? IMG_VDISK_VMDK_STREAM
	                                   : 0;
}

static int cmd_write(int argc, char **argv)
{
	struct img_qcow2_opts o = { 0 };
	const char *out = argv[0], *format = "qcow2";
	struct img_dev *dev;
	int i = 1;

	for (; i < argc && !strncmp(argv[i], "--", 2); i += 2) {
		const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";

		if (!strcmp(k, "--format"))
			format = v;
		else if (!strcmp(k, "--size"))
			o.size = num(v);
		else if (!strcmp(k, "--cluster-bits"))
			o.cluster_bits = (unsigned)num(v);
		else if (!strcmp(k, "--compress"))
			o.compression =
			    !strcmp(v, "zstd") ? IMG_QCOW2_COMPRESS_ZSTD : IMG_QCOW2_COMPRESS_ZLIB;
		else if (!strcmp(k, "--level"))
			o.level = (int)num(v);
		else if (!strcmp(k, "--threads"))
			o.threads = (unsigned)num(v);
		else {
			fprintf(stderr, "qcow2-tool: unknown option %s\n", k);
			return 2;
		}
	}
	if (vdisk_format(format)) {
		struct img_vdisk_opts v = { .format = vdisk_format(format), .size = o.size };

		if (img_dev_vdisk_create(ctx, out, &v, &dev) < 0)
			fail("create");
	} else if (!strcmp(format, "raw") ? img_dev_raw_create(ctx, out, o.size, &dev) < 0
	                                  : img_dev_qcow2_create(ctx, out, &o, &dev) < 0) {
		fail("create");
	}
	while (i < argc) {
		const char *op = argv[i];

		if (!strcmp(op, "pattern") && i + 3 < argc) {
			op_pattern(dev, num(argv[i + 1]), num(argv[i + 2]), num(argv[i + 3]));
			i += 4;
		} else if (!strcmp(op, "data") && i + 3 < argc) {
			op_write(dev, num(argv[i + 1]), num(argv[i + 2]), 1, num(argv[i + 3]));
			i += 4;
		} else if (!strcmp(op, "text") && i + 2 < argc) {
			op_write(dev, num(argv[i + 1]), num(argv[i + 2]), 2, 0);
			i += 3;
		} else if (!strcmp(op, "zero") && i + 2 < argc) {
			if (img_dev_write_zeroes(dev, num(argv[i + 1]), num(argv[i + 2])) < 0)
				fail("write_zeroes");
			i += 3;
		} else if (!strcmp(op, "copy") && i + 2 < argc) {
			op_copy(dev, argv[i + 1], num(argv[i + 2]));
			i += 3;
		} else if (!strcmp(op, "convert") && i + 1 < argc) {
			op_convert(dev, argv[i + 1]);
			i += 2;
		} else {
			fprintf(stderr, "qcow2-tool: bad operation at '%s'\n", op);
			return 2;
		}
	}
	if (img_dev_finish(dev) < 0)
		fail("finish");
	img_dev_unref(dev);
	return 0;
}

static int cmd_dump(const char *in, const char *out, unsigned flags)
{
	struct img_dev *dev;
	uint64_t size, off;
	size_t bs = 1 << 20;
	uint8_t *buf = malloc(bs), *zero = calloc(1, bs);
	int fd;

	if (img_dev_open_image(ctx, in, flags, &dev) < 0)
		fail("open");
	size = img_dev_size(dev);
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || !buf || !zero || ftruncate(fd, (off_t)size) < 0) {
		perror(out);
		return 1;
	}
	for (off = 0; off < size; off += bs) {
		size_t n = size - off < bs ? (size_t)(size - off) : bs;

		if (img_dev_pread(dev, buf, n, off) < 0)
			fail("read");
		if (memcmp(buf, zero, n) && pwrite(fd, buf, n, (off_t)off) != (ssize_t)n) {
			perror(out);
			return 1;
		}
	}
	close(fd);
	img_dev_unref(dev);
	free(buf);
	free(zero);
	return 0;
}

static int cmd_info(const char *in)
{
	struct img_qcow2_info i;

	if (img_qcow2_probe(ctx, in, &i) < 0)
		fail("probe");
	printf("version=%u\nvirtual_size=%" PRIu64 "\ncluster_bits=%u\ncompression_type=%d\n"
	       "backing_file=%s\nbacking_format=%s\n",
	       i.version, i.virtual_size, i.cluster_bits, i.compression_type, i.backing_file,
	       i.backing_format);
	return 0;
}

int main(int argc, char **argv)
{
	if (img_ctx_new(&ctx) < 0)
		return 1;
	if (argc >= 3 && !strcmp(argv[1], "write"))
		return cmd_write(argc - 2, argv + 2);
	if (argc >= 4 && !strcmp(argv[1], "dump"))
		return cmd_dump(
		    argv[2], argv[3],
		    argc > 4 && !strcmp(argv[4], "--allow-backing") ? IMG_QCOW2_ALLOW_BACKING : 0);
	if (argc == 3 && !strcmp(argv[1], "info"))
		return cmd_info(argv[2]);
	if (argc >= 4 && !strcmp(argv[1], "overlay")) {
		if (img_qcow2_create_overlay(ctx, argv[2], argv[3], argc > 4 ? argv[4] : NULL) < 0)
			fail("overlay");
		return 0;
	}
	fprintf(stderr, "usage: qcow2-tool write|dump|info|overlay ... (see the source)\n");
	return 2;
}
