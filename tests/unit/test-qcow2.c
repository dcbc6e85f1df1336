/* test-qcow2.c -- the qcow2 backend: writer, planned layout, compression, reader, overlays. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dev-qcow2-header.h"
#include "testutil.h"

static uint64_t file_size(const char *path)
{
	struct stat st;

	ck_assert_int_eq(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

static uint64_t rng;
/*
 * The same random writes on both devices: random data, compressible text,
 * zero data, write_zeroes; aligned and unaligned.
 */
static void random_ops(struct img_ctx *ctx, struct img_dev *a, struct img_dev *b, uint64_t seed,
                       int count, size_t maxlen)
{
	uint64_t size = img_dev_size(a);
	uint8_t *buf = malloc(maxlen);

	rng = seed * 0x9E3779B97F4A7C15ull + 1;
	for (int i = 0; i < count; i++) {
		size_t len = (size_t)(t_rnd(&rng) % maxlen) + 1;
		uint64_t off = t_rnd(&rng) % (size - len + 1), kind = t_rnd(&rng) % 10;

		if (t_rnd(&rng) & 1)
			off &= ~4095ull;
		if (kind < 5)
			t_fill(buf, len, t_rnd(&rng));
		else if (kind < 7)
			for (size_t j = 0; j < len; j++)
				buf[j] = "compressible text "[j % 18];
		else
			memset(buf, 0, len);
		if (kind == 9) {
			ck_assert_ok(img_dev_write_zeroes(a, off, len), ctx);
			ck_assert_ok(img_dev_write_zeroes(b, off, len), ctx);
		} else {
			ck_assert_ok(img_dev_pwrite(a, buf, len, off), ctx);
			ck_assert_ok(img_dev_pwrite(b, buf, len, off), ctx);
		}
	}
	free(buf);
}

/* Both devices read the same everywhere (in odd-sized chunks). */
static void assert_same(struct img_ctx *ctx, struct img_dev *a, struct img_dev *b)
{
	size_t chunk = 300000;
	uint8_t *x = malloc(chunk), *y = malloc(chunk);

	ck_assert_uint_eq(img_dev_size(a), img_dev_size(b));
	for (uint64_t off = 0; off < img_dev_size(a); off += chunk) {
		size_t n = (size_t)IMG_MIN(chunk, img_dev_size(a) - off);

		ck_assert_ok(img_dev_pread(a, x, n, off), ctx);
		ck_assert_ok(img_dev_pread(b, y, n, off), ctx);
		ck_assert_msg(!memcmp(x, y, n), "devices differ in [%llu, +%zu)",
		              (unsigned long long)off, n);
	}
	free(x);
	free(y);
}

static void write_image(struct img_ctx *ctx, const char *path, struct img_qcow2_opts *o,
                        uint64_t seed, struct img_dev **mirror)
{
	struct img_dev *q, *m;

	ck_assert_ok(img_dev_qcow2_create(ctx, path, o, &q), ctx);
	ck_assert_ok(img_dev_mem_new(ctx, o->size, &m), ctx);
	random_ops(ctx, q, m, seed, 150, 150000);
	assert_same(ctx, q, m); /* reading back before finish */
	ck_assert_ok(img_dev_finish(q), ctx);
	img_dev_unref(q);
	if (mirror)
		*mirror = m;
	else
		img_dev_unref(m);
}

static void check_with_reader(struct img_ctx *ctx, const char *path, struct img_dev *mirror)
{
	struct img_dev *r;

	ck_assert_ok(img_dev_qcow2_open(ctx, path, 0, &r), ctx);
	ck_assert(img_dev_readonly(r));
	ck_assert_str_eq(img_dev_backend(r), "qcow2");
	assert_same(ctx, r, mirror);
	img_dev_unref(r);
}

START_TEST(create_readback)
{
	static const unsigned bits[] = { 9, 12, 16, 21 };
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("qcow2-rb"), path[4096];

	for (unsigned i = 0; i < IMG_ARRAY_SIZE(bits); i++) {
		struct img_qcow2_opts o = { .size = 12 << 20, .cluster_bits = bits[i] };
		struct img_qcow2_info info;
		struct img_dev *m;

		snprintf(path, sizeof(path), "%s/c%u.qcow2", dir, bits[i]);
		write_image(ctx, path, &o, bits[i], &m);
		ck_assert_uint_eq(file_size(path) % (1u << bits[i]), 0);
		check_with_reader(ctx, path, m);
		ck_assert_ok(img_qcow2_probe(ctx, path, &info), ctx);
		ck_assert_uint_eq(info.version, 3);
		ck_assert_uint_eq(info.cluster_bits, bits[i]);
		ck_assert_uint_eq(info.virtual_size, 12 << 20);
		ck_assert_str_eq(info.backing_file, "");
		img_dev_unref(m);
	}
	/* Refused: sizes that are not sectors, cluster sizes out of range. */
	{
		struct img_qcow2_opts o = { .size = 1000 };
		struct img_dev *d;

		ck_assert_int_eq(img_dev_qcow2_create(ctx, path, &o, &d), -EINVAL);
		o.size = 1 << 20;
		o.cluster_bits = 22;
		ck_assert_int_eq(img_dev_qcow2_create(ctx, path, &o, &d), -EINVAL);
		ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "cluster size"));
	}
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(zero_clusters)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("qcow2-zero"), path[4096];
	struct img_qcow2_opts o = { .size = 4 << 20 };
	uint64_t cs = 65536, empty = 4 * cs; /* header, L1, refcount table, block */
	uint8_t *buf = calloc(1, 3 * cs), back[4096];
	struct img_dev *d;

	snprintf(path, sizeof(path), "%s/z.qcow2", dir);
	/* Zeros, whole and partial clusters, and write_zeroes: nothing allocated. */
	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_ok(img_dev_pwrite(d, buf, 3 * cs, cs), ctx);
	ck_assert_ok(img_dev_pwrite(d, buf, 100, 7 * cs + 5), ctx);
	ck_assert_ok(img_dev_write_zeroes(d, 0, o.size), ctx);
	ck_assert_ok(img_dev_finish(d), ctx);
	img_dev_unref(d);
	ck_assert_uint_eq(file_size(path), empty);

	/* One non-zero byte in a zero buffer: exactly one data cluster + one L2. */
	buf[cs + 17] = 0xAA;
	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_ok(img_dev_pwrite(d, buf, 3 * cs, 0), ctx);
	/* Zeroing part of the allocated cluster, then all of it: reads zeros. */
	ck_assert_ok(img_dev_write_zeroes(d, cs + 16, 2), ctx);
	ck_assert_ok(img_dev_pread(d, back, sizeof(back), cs), ctx);
	for (size_t i = 0; i < sizeof(back); i++)
		ck_assert_uint_eq(back[i], 0);
	buf[cs + 17] = 0xBB;
	ck_assert_ok(img_dev_pwrite(d, buf + cs + 17, 1, cs + 17), ctx);
	ck_assert_ok(img_dev_finish(d), ctx);
	img_dev_unref(d);
	ck_assert_uint_eq(file_size(path), empty + 2 * cs);
	ck_assert_ok(img_dev_qcow2_open(ctx, path, 0, &d), ctx);
	ck_assert_ok(img_dev_pread(d, back, sizeof(back), cs), ctx);
	ck_assert_uint_eq(back[17], 0xBB);
	ck_assert_uint_eq(back[16] | back[18], 0);
	img_dev_unref(d);

	/* Compressed: a cluster zeroed after writing is dropped at finish. */
	o.compression = IMG_QCOW2_COMPRESS_ZSTD;
	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_ok(img_dev_pwrite(d, buf, 3 * cs, 0), ctx);
	ck_assert_ok(img_dev_write_zeroes(d, cs, cs), ctx);
	ck_assert_ok(img_dev_finish(d), ctx);
	img_dev_unref(d);
	ck_assert_uint_eq(file_size(path), empty);
	t_rmrf(dir);
	free(dir);
	free(buf);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(sparse)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("qcow2-sparse"), path[4096];
	struct img_qcow2_opts o = { .size = 1ull << 40 };
	uint8_t a[5000], b[5000];
	struct img_dev *d;

	snprintf(path, sizeof(path), "%s/s.qcow2", dir);
	t_fill(a, sizeof(a), 5);
	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_ok(img_dev_pwrite(d, a, sizeof(a), 0), ctx);
	ck_assert_ok(img_dev_pwrite(d, a, sizeof(a), (1ull << 40) - sizeof(a)), ctx);
	ck_assert_ok(img_dev_pwrite(d, a, sizeof(a), (1ull << 39) + 65530), ctx);
	ck_assert_ok(img_dev_finish(d), ctx);
	img_dev_unref(d);
	/* 1 TiB: L1 of 2048 entries = 16 KiB in one cluster; 4 data clusters, 3 L2. */
	ck_assert_uint_eq(file_size(path), (1 + 1 + 4 + 3 + 1 + 1) * 65536);
	ck_assert_ok(img_dev_qcow2_open(ctx, path, 0, &d), ctx);
	ck_assert_uint_eq(img_dev_size(d), 1ull << 40);
	ck_assert_ok(img_dev_pread(d, b, sizeof(b), (1ull << 39) + 65530), ctx);
	ck_assert_mem_eq(a, b, sizeof(a));
	ck_assert_ok(img_dev_pread(d, b, sizeof(b), (1ull << 40) - sizeof(b)), ctx);
	ck_assert_mem_eq(a, b, sizeof(a));
	ck_assert_ok(img_dev_pread(d, b, sizeof(b), 1ull << 38), ctx);
	for (size_t i = 0; i < sizeof(b); i++)
		ck_assert_uint_eq(b[i], 0);
	img_dev_unref(d);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/*
 * File data (written behind) and metadata (written by the caller) taking
 * turns in one cluster, front to back, as the ext4 writer emits them: the
 * metadata block in the short gap between two data runs must survive the
 * writer's filling of that gap.
 */
START_TEST(data_then_metadata)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("qcow2-turns"), path[4096];
	struct img_qcow2_opts o = { .size = 4u << 20 };
	uint8_t *a = malloc(3 * 4096), *b = malloc(3 * 4096);
	struct img_dev *d;

	snprintf(path, sizeof(path), "%s/t.qcow2", dir);
	t_fill(a, 3 * 4096, 7);
	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_ok(img_dev_write_data(d, a, 4096, 65536), ctx);
	ck_assert_ok(img_dev_pwrite(d, a + 4096, 4096, 65536 + 4096), ctx);
	ck_assert_ok(img_dev_write_data(d, a + 8192, 4096, 65536 + 8192), ctx);
	ck_assert_ok(img_dev_finish(d), ctx);
	img_dev_unref(d);
	ck_assert_ok(img_dev_qcow2_open(ctx, path, 0, &d), ctx);
	ck_assert_ok(img_dev_pread(d, b, 3 * 4096, 65536), ctx);
	ck_assert_msg(!memcmp(a, b, 4096), "first data block lost");
	ck_assert_msg(!memcmp(a + 4096, b + 4096, 4096), "the metadata block between lost");
	ck_assert_msg(!memcmp(a + 8192, b + 8192, 4096), "second data block lost");
	img_dev_unref(d);
	free(a);
	free(b);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

static void assert_files_equal(const char *p1, const char *p2)
{
	size_t n1, n2;
	uint8_t *a = t_read_file(p1, &n1), *b = t_read_file(p2, &n2);

	ck_assert_uint_eq(n1, n2);
	ck_assert_msg(!memcmp(a, b, n1), "%s and %s differ", p1, p2);
	free(a);
	free(b);
}

START_TEST(determinism)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("qcow2-det"), p1[4096], p2[4096];
	struct img_qcow2_opts o = { .size = 16 << 20 };

	snprintf(p1, sizeof(p1), "%s/a.qcow2", dir);
	snprintf(p2, sizeof(p2), "%s/b.qcow2", dir);
	write_image(ctx, p1, &o, 42, NULL);
	write_image(ctx, p2, &o, 42, NULL);
	assert_files_equal(p1, p2);
	/* Compression: the same bytes with 1 thread and with 7. */
	o.compression = IMG_QCOW2_COMPRESS_ZSTD;
	o.threads = 1;
	write_image(ctx, p1, &o, 43, NULL);
	o.threads = 7;
	write_image(ctx, p2, &o, 43, NULL);
	assert_files_equal(p1, p2);
	o.compression = IMG_QCOW2_COMPRESS_ZLIB;
	o.cluster_bits = 12;
	write_image(ctx, p1, &o, 44, NULL);
	o.threads = 2;
	write_image(ctx, p2, &o, 44, NULL);
	assert_files_equal(p1, p2);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(compression)
{
	static const enum img_qcow2_compression types[] = { IMG_QCOW2_COMPRESS_ZSTD,
		                                            IMG_QCOW2_COMPRESS_ZLIB };
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("qcow2-comp"), path[4096], plain[4096];
	struct img_qcow2_opts o = { .size = 16 << 20 };
	uint64_t plain_size;

	snprintf(plain, sizeof(plain), "%s/plain.qcow2", dir);
	write_image(ctx, plain, &o, 7, NULL);
	plain_size = file_size(plain);
	for (unsigned i = 0; i < 2; i++) {
		for (unsigned bits = 9; bits <= 21; bits += 6) {
			struct img_qcow2_opts c = { .size = 16 << 20,
				                    .compression = types[i],
				                    .cluster_bits = bits };
			struct img_qcow2_info info;
			struct img_dev *m;

			snprintf(path, sizeof(path), "%s/c%u-%u.qcow2", dir, i, bits);
			write_image(ctx, path, &c, 7, &m);
			check_with_reader(ctx, path, m);
			img_dev_unref(m);
			ck_assert_ok(img_qcow2_probe(ctx, path, &info), ctx);
			ck_assert_int_eq(info.compression_type,
			                 types[i] == IMG_QCOW2_COMPRESS_ZSTD ? 1 : 0);
			if (bits == 15)
				ck_assert_msg(file_size(path) < plain_size * 3 / 4,
				              "compressed %llu, plain %llu",
				              (unsigned long long)file_size(path),
				              (unsigned long long)plain_size);
		}
	}
	/* zstd sets incompatible bit 3 and byte 104 = 1; zlib neither. */
	{
		uint8_t h[112];
		int fd;

		snprintf(path, sizeof(path), "%s/c0-15.qcow2", dir);
		fd = open(path, O_RDONLY);
		ck_assert_int_eq(img_pread_full(fd, h, sizeof(h), 0), 0);
		close(fd);
		ck_assert_uint_eq(img_get_be64(h + 72), 8);
		ck_assert_uint_eq(h[104], 1);
		ck_assert_uint_eq(img_get_be32(h + 100), 112);
	}
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(copy_from_fd)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("qcow2-copy"), path[4096], src[4096];
	struct img_qcow2_opts o = { .size = 32 << 20 };
	size_t n = 6 << 20;
	uint8_t *buf = malloc(n);
	struct img_dev *d, *m;
	int fd;

	snprintf(path, sizeof(path), "%s/c.qcow2", dir);
	snprintf(src, sizeof(src), "%s/src", dir);
	t_fill(buf, n, 11);
	/* A source with a 2 MiB hole in the middle. */
	fd = open(src, O_RDWR | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(img_pwrite_full(fd, buf, 2 << 20, 0), 0);
	ck_assert_int_eq(img_pwrite_full(fd, buf + (4 << 20), 2 << 20, 4 << 20), 0);
	memset(buf + (2 << 20), 0, 2 << 20);
	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_ok(img_dev_mem_new(ctx, o.size, &m), ctx);
	/* Aligned, then unaligned on both sides, then overwriting. */
	ck_assert_ok(img_dev_copy_from_fd(d, fd, 0, n, 0), ctx);
	ck_assert_ok(img_dev_pwrite(m, buf, n, 0), ctx);
	ck_assert_ok(img_dev_copy_from_fd(d, fd, 12345, n - 20000, (8 << 20) + 777), ctx);
	ck_assert_ok(img_dev_pwrite(m, buf + 12345, n - 20000, (8 << 20) + 777), ctx);
	ck_assert_ok(img_dev_copy_from_fd(d, fd, 100, 70000, 30), ctx);
	ck_assert_ok(img_dev_pwrite(m, buf + 100, 70000, 30), ctx);
	/* A source shorter than asked for is an error. */
	ck_assert_int_eq(img_dev_copy_from_fd(d, fd, n - 10, 20, 0), -EIO);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "input changed"));
	close(fd);
	img_dev_unref(d);
	/* Again without the failure, then check the layout and contents. */
	fd = open(src, O_RDONLY);
	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_ok(img_dev_copy_from_fd(d, fd, 0, n, 0), ctx);
	ck_assert_ok(img_dev_copy_from_fd(d, fd, 12345, n - 20000, (8 << 20) + 777), ctx);
	ck_assert_ok(img_dev_copy_from_fd(d, fd, 100, 70000, 30), ctx);
	close(fd);
	ck_assert_ok(img_dev_finish(d), ctx);
	img_dev_unref(d);
	check_with_reader(ctx, path, m);
	/*
	 * The hole is not copied: 4 MiB of data at 0, and at 8 MiB+777 two
	 * data runs of 2 MiB - 12345 and ~2 MiB (each +1 partial cluster),
	 * so well under the 12 MiB the ranges span.
	 */
	ck_assert_uint_lt(file_size(path), (9 << 20) + 20 * 65536);
	img_dev_unref(m);
	free(buf);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* Zeros that are data in the source (not holes) allocate nothing either. */
START_TEST(zero_source)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("qcow2-zsrc"), path[4096], src[4096];
	struct img_qcow2_opts o = { .size = 16 << 20 };
	size_t cs = 65536, n = 6 * cs;
	uint8_t *buf = calloc(1, n), *back = malloc(n);
	uint64_t empty, with;
	struct img_dev *d;
	int fd;

	snprintf(path, sizeof(path), "%s/z.qcow2", dir);
	snprintf(src, sizeof(src), "%s/src", dir);
	/* data | 4 clusters of written zeros | 1 KiB of data at the very end */
	t_fill(buf, cs, 5);
	t_fill(buf + n - 1024, 1024, 6);
	t_write_file(src, buf, n);
	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_ok(img_dev_finish(d), ctx);
	img_dev_unref(d);
	empty = file_size(path);
	fd = open(src, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	/* Unaligned in the guest: zeros land in partial and whole clusters. */
	ck_assert_ok(img_dev_copy_from_fd(d, fd, 0, n, 4096), ctx);
	ck_assert_ok(img_dev_pread(d, back, n, 4096), ctx);
	ck_assert_mem_eq(back, buf, n);
	ck_assert_ok(img_dev_finish(d), ctx);
	img_dev_unref(d);
	close(fd);
	with = file_size(path);
	/* Guest clusters 0 (data + zeros), 5 and 6 (zeros + the last KiB)
	 * hold data; 1-4 are all zeros and stay unallocated. The L2 table
	 * adds one cluster. */
	ck_assert_uint_le(with - empty, 4 * cs);
	ck_assert_ok(img_dev_qcow2_open(ctx, path, 0, &d), ctx);
	ck_assert_ok(img_dev_pread(d, back, n, 4096), ctx);
	ck_assert_mem_eq(back, buf, n);
	img_dev_unref(d);
	free(buf);
	free(back);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* Read the whole virtual disk; stop at the first error. */
static int read_all(struct img_dev *d)
{
	size_t chunk = 1 << 20;
	uint8_t *buf = malloc(chunk);
	int r = 0;

	for (uint64_t off = 0; off < img_dev_size(d) && r == 0; off += chunk)
		r = img_dev_pread(d, buf, (size_t)IMG_MIN(chunk, img_dev_size(d) - off), off);
	free(buf);
	return r;
}

START_TEST(open_validation)
{
	struct img_ctx *ctx = t_ctx();
	char line[1024], path[4096];
	FILE *f;
	int n = 0;

	snprintf(path, sizeof(path), "%s/fixtures/qcow2/expected.txt", IMG_SOURCE_DIR);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) {
		char *name = strtok(line, "\t\n"), *allow = strtok(NULL, "\t\n");
		char *expect = strtok(NULL, "\t\n");
		struct img_dev *d = NULL;
		int r;

		if (!name || name[0] == '#' || !expect)
			continue;
		snprintf(path, sizeof(path), "%s/fixtures/qcow2/%s", IMG_SOURCE_DIR, name);
		img_ctx_clear_error(ctx);
		r = img_dev_qcow2_open(ctx, path, atoi(allow) ? IMG_QCOW2_ALLOW_BACKING : 0, &d);
		if (r == 0) {
			r = read_all(d);
			img_dev_unref(d);
		}
		if (!strcmp(expect, "-")) {
			ck_assert_msg(r == 0, "%s: %s", name, img_ctx_error(ctx));
		} else {
			ck_assert_msg(r < 0, "%s was accepted", name);
			ck_assert_msg(
			    strstr(img_ctx_error(ctx), expect) && strstr(img_ctx_error(ctx), name),
			    "%s: message '%s' lacks '%s'", name, img_ctx_error(ctx), expect);
		}
		n++;
	}
	fclose(f);
	ck_assert_int_ge(n, 20);
	/* Not a qcow2 at all: img_dev_open_image() falls back to raw. */
	{
		struct img_dev *d;

		snprintf(path, sizeof(path), "%s/fixtures/qcow2/bad-magic.qcow2", IMG_SOURCE_DIR);
		ck_assert_ok(img_dev_open_image(ctx, path, 0, &d), ctx);
		ck_assert_str_eq(img_dev_backend(d), "raw");
		img_dev_unref(d);
		snprintf(path, sizeof(path), "%s/fixtures/qcow2/valid.qcow2", IMG_SOURCE_DIR);
		ck_assert_ok(img_dev_open_image(ctx, path, 0, &d), ctx);
		ck_assert_str_eq(img_dev_backend(d), "qcow2");
		img_dev_unref(d);
	}
	img_ctx_free(ctx);
}
END_TEST

START_TEST(overlay)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("qcow2-overlay"), base[4096], ov[4096], raw[4096], ov2[4096];
	char cwd[4096];
	struct img_qcow2_opts o = { .size = 8 << 20 };
	struct img_qcow2_info info;
	struct img_dev *m, *d;

	snprintf(base, sizeof(base), "%s/base.qcow2", dir);
	snprintf(ov, sizeof(ov), "%s/ov.qcow2", dir);
	snprintf(ov2, sizeof(ov2), "%s/ov2.qcow2", dir);
	snprintf(raw, sizeof(raw), "%s/base.raw", dir);
	write_image(ctx, base, &o, 9, &m);
	/* A relative backing name is made absolute. */
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
	ck_assert_int_eq(chdir(dir), 0);
	ck_assert_ok(img_qcow2_create_overlay(ctx, ov, "base.qcow2", "qcow2"), ctx);
	ck_assert_int_eq(chdir(cwd), 0);
	ck_assert_ok(img_qcow2_probe(ctx, ov, &info), ctx);
	ck_assert_str_eq(info.backing_file, base);
	ck_assert_str_eq(info.backing_format, "qcow2");
	ck_assert_uint_eq(info.virtual_size, 8 << 20);
	/* Refused unless allowed, with the backing name in the message. */
	ck_assert_int_eq(img_dev_qcow2_open(ctx, ov, 0, &d), -EPERM);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), base));
	ck_assert_ok(img_dev_qcow2_open(ctx, ov, IMG_QCOW2_ALLOW_BACKING, &d), ctx);
	assert_same(ctx, d, m);
	img_dev_unref(d);
	/* An overlay of an overlay, and of a raw file (format probed). */
	ck_assert_ok(img_qcow2_create_overlay(ctx, ov2, ov, NULL), ctx);
	ck_assert_ok(img_dev_open_image(ctx, ov2, IMG_QCOW2_ALLOW_BACKING, &d), ctx);
	assert_same(ctx, d, m);
	img_dev_unref(d);
	t_write_file(raw, img_dev_mem_data(m), 8 << 20);
	ck_assert_ok(img_qcow2_create_overlay(ctx, ov, raw, NULL), ctx);
	ck_assert_ok(img_qcow2_probe(ctx, ov, &info), ctx);
	ck_assert_str_eq(info.backing_format, "raw");
	ck_assert_ok(img_dev_qcow2_open(ctx, ov, IMG_QCOW2_ALLOW_BACKING, &d), ctx);
	assert_same(ctx, d, m);
	img_dev_unref(d);
	/* Wrong format names and missing backing files are refused. */
	ck_assert_int_lt(img_qcow2_create_overlay(ctx, ov, raw, "qcow2"), 0);
	ck_assert_int_lt(img_qcow2_create_overlay(ctx, ov, raw, "vmdk"), 0);
	ck_assert_int_lt(img_qcow2_create_overlay(ctx, ov, "/nonexistent/x", NULL), 0);
	img_dev_unref(m);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(qemu_check)
{
	static const enum img_qcow2_compression types[] = { IMG_QCOW2_COMPRESS_NONE,
		                                            IMG_QCOW2_COMPRESS_ZSTD,
		                                            IMG_QCOW2_COMPRESS_ZLIB };
	struct img_ctx *ctx = t_ctx();
	char *dir, path[4096];

	if (!t_have("qemu-img"))
		return;
	dir = t_tmpdir("qcow2-check");
	for (unsigned i = 0; i < 3; i++) {
		struct img_qcow2_opts o = { .size = 8 << 20,
			                    .compression = types[i],
			                    .cluster_bits = 9 + 4 * i };
		char *argv[] = { "qemu-img", "check", "-q", path, NULL }, *out = NULL;

		snprintf(path, sizeof(path), "%s/q%u.qcow2", dir, i);
		write_image(ctx, path, &o, 100 + i, NULL);
		ck_assert_msg(t_run(argv, &out) == 0, "qemu-img check %s: %s", path,
		              out ? out : "");
		free(out);
	}
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* ---- the planned layout (img_dev_plan) ----------------------------- */

/* What a plan case writes: the disk, its cluster size, the source file. */
struct plan_case {
	unsigned cb;
	uint64_t size;
	int out_of_order; /* some writes behind the frontier: no hash */
	int direct;       /* img_ctx_set_direct_io: 0 = no writer, no hash */
};

static const struct plan_case plan_cases[] = {
	/* 4 KiB clusters: an L2 table maps 2 MiB, the disk spans several */
	{ 12, (9 << 20) + 4096 * 3, 0, 1 },
	/* 64 KiB: a table maps 512 MiB, the plan crosses into the second */
	{ 16, 520ull << 20, 0, 1 },
	/* 512 B: a table maps 32 KiB, hundreds of them */
	{ 9, 3 << 20, 0, 1 },
	{ 16, 24 << 20, 1, 1 },
	{ 12, 12 << 20, 1, 1 },
	{ 16, 20 << 20, 0, 0 },
};

/* Every byte of @path read by the qcow2 reader is the model's. */
static void plan_compare(struct img_ctx *ctx, const char *path, const uint8_t *model, uint64_t size)
{
	size_t chunk = 1 << 20;
	uint8_t *back = malloc(chunk);
	struct img_dev *r;

	ck_assert_ok(img_dev_qcow2_open(ctx, path, 0, &r), ctx);
	ck_assert_uint_eq(img_dev_size(r), size);
	for (uint64_t off = 0; off < size; off += chunk) {
		size_t n = (size_t)IMG_MIN(chunk, size - off);

		ck_assert_ok(img_dev_pread(r, back, n, off), ctx);
		for (size_t i = 0; i < n; i += 512)
			if (memcmp(back + i, model + off + i, IMG_MIN(512, n - i)))
				ck_abort_msg("%s: sector at %llu differs from the model", path,
				             (unsigned long long)(off + i));
	}
	img_dev_unref(r);
	free(back);
}

/*
 * A random plan: ranges with gaps of every size between them (none, inside
 * a cluster, across clusters and L2 tables), written in plan order as the
 * one-pass writers do (copies, data, metadata, zeros, pieces left out),
 * with reads in between and zeros written outside the plan; some cases
 * then write behind the frontier. The reader gives the model back, the
 * device's hash is the file's (or it claims none), qemu-img check finds
 * neither errors nor leaks, and the file is laid out as documented.
 */
START_TEST(plan_model)
{
	const struct plan_case *pc = &plan_cases[_i];
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("qcow2-plan"), path[4096], src[4096];
	struct img_qcow2_opts o = { .size = pc->size, .cluster_bits = pc->cb };
	uint64_t cs = 1ull << pc->cb, at = 0, nplan = 0, ranges[64][2];
	size_t srclen = 3 << 20;
	uint8_t *model = calloc(1, (size_t)pc->size), *data = malloc(srclen), got[32], want[32];
	struct img_dev *d;
	int srcfd;

	rng = 0x51a9 + (uint64_t)_i * 7919;
	ck_assert_ptr_nonnull(model);
	snprintf(path, sizeof(path), "%s/p.qcow2", dir);
	snprintf(src, sizeof(src), "%s/src", dir);
	t_fill(data, srclen, rng);
	t_write_file(src, data, srclen);
	srcfd = open(src, O_RDONLY);
	ck_assert_int_ge(srcfd, 0);
	img_ctx_set_direct_io(ctx, pc->direct);
	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	/* The plan. The 64 KiB case keeps one range just below 512 MiB. */
	while (nplan < 64) {
		static const uint64_t gaps[] = { 0, 0, 1, 100, 4096, 65536, 300000, 3 << 20 };
		uint64_t gap = gaps[t_rnd(&rng) % IMG_ARRAY_SIZE(gaps)],
		         len = 1 + t_rnd(&rng) % (700000);

		if (pc->size > (512ull << 20) && nplan == 8)
			at = IMG_MAX(at, (512ull << 20) - 200000);
		if (at + gap + len > pc->size)
			break;
		at += gap;
		ranges[nplan][0] = at;
		ranges[nplan][1] = len;
		ck_assert_ok(img_dev_plan(d, at, len), ctx);
		nplan++;
		at += len;
	}
	ck_assert_uint_gt(nplan, 5);
	ck_assert_ok(img_dev_plan_done(d), ctx);
	/* The writes, in plan order. */
	for (uint64_t i = 0; i < nplan; i++) {
		uint64_t off = ranges[i][0], end = off + ranges[i][1];

		t_dev_model_range(ctx, d, model, srcfd, data, srclen, off, end, &rng);
		/* a read of anything so far */
		t_dev_model_maybe_read(ctx, d, model, pc->size, end, &rng);
	}
	/* Zeros outside the plan are fine: they read as zeros already. */
	if (at + 2 * cs <= pc->size) {
		uint8_t *z = calloc(1, (size_t)cs);

		ck_assert_ok(img_dev_pwrite(d, z, (size_t)cs, pc->size - cs), ctx);
		ck_assert_ok(img_dev_write_zeroes(d, pc->size - 2 * cs, 2 * cs), ctx);
		free(z);
	}
	if (pc->out_of_order)
		for (int k = 0; k < 5; k++) {
			uint64_t i = t_rnd(&rng) % nplan, n = IMG_MIN(ranges[i][1], 5000);

			t_dev_model_write(ctx, d, model, srcfd, data, srclen, ranges[i][0], n,
			                  &rng);
		}
	ck_assert_ok(img_dev_finish(d), ctx);
	close(srcfd);
	if (pc->out_of_order || !pc->direct) {
		ck_assert_int_eq(img_dev_sha256(d, got), -ENODATA);
	} else {
		ck_assert_int_eq(img_dev_sha256(d, got), 0);
		ck_assert_ok(img_sha256_file(ctx, path, want), ctx);
		ck_assert_mem_eq(got, want, 32);
	}
	img_dev_unref(d);
	plan_compare(ctx, path, model, pc->size);
	/* Header, L1, refcounts, L2 and nothing else before the first data
	 * cluster, which is guest cluster 0's if it was planned: the layout. */
	{
		struct qcow2_hdr h;
		int fd = open(path, O_RDONLY);

		ck_assert_int_ge(fd, 0);
		ck_assert_ok(qcow2_read_header(ctx, path, fd, &h), ctx);
		close(fd);
		ck_assert_uint_eq(h.l1_offset, cs);
		ck_assert_uint_eq(h.refcount_order, 4);
		ck_assert_uint_eq(h.l1_size, qcow2_l1_entries(pc->size, pc->cb));
		ck_assert_uint_eq(h.reftable_offset, cs + IMG_ALIGN_UP(h.l1_size * 8ull, cs));
		ck_assert_uint_eq(file_size(path) % cs, 0);
	}
	if (t_have("qemu-img")) {
		char *argv[] = { "qemu-img", "check", "-q", path, NULL }, *out = NULL;

		ck_assert_msg(t_run(argv, &out) == 0, "qemu-img check %s: %s", path,
		              out ? out : "");
		free(out);
		/* qemu's own reader gives the model back too. */
		if (pc->size <= (32u << 20)) {
			char raw[4096];
			char *cv[] = { "qemu-img", "convert", "-O", "raw", path, raw, NULL };
			size_t n;
			uint8_t *r;

			snprintf(raw, sizeof(raw), "%s/p.raw", dir);
			ck_assert_int_eq(t_run(cv, NULL), 0);
			r = t_read_file(raw, &n);
			ck_assert_uint_eq(n, pc->size);
			ck_assert_msg(!memcmp(r, model, n),
			              "qemu-img convert differs from the model");
			free(r);
		}
	}
	free(model);
	free(data);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/*
 * What the plan refuses, with messages that name the offsets: data outside
 * it, ranges out of order or past the end, a plan after a write, writes
 * before plan_done. A slice forwards its plan at its offset.
 */
START_TEST(plan_refused)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("qcow2-planref"), path[4096];
	struct img_qcow2_opts o = { .size = 8 << 20 };
	uint8_t buf[4096], got[32], want[32];
	struct img_dev *d, *sl;

	snprintf(path, sizeof(path), "%s/r.qcow2", dir);
	t_fill(buf, sizeof(buf), 3);
	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_ok(img_dev_plan(d, 1 << 20, 100000), ctx);
	ck_assert_int_eq(img_dev_pwrite(d, buf, sizeof(buf), 1 << 20), -EINVAL);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "img_dev_plan_done"));
	img_dev_unref(d);

	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_ok(img_dev_plan(d, 1 << 20, 100000), ctx);
	ck_assert_int_eq(img_dev_plan(d, 1000000, 10), -EINVAL);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "[1000000, +10)"));
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "1148576"));
	img_dev_unref(d);

	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_int_eq(img_dev_plan(d, 8 << 20, 1), -EINVAL);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "beyond the end"));
	img_dev_unref(d);

	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_ok(img_dev_pwrite(d, buf, sizeof(buf), 0), ctx);
	ck_assert_int_eq(img_dev_plan(d, 0, 4096), -EINVAL);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "after the first write"));
	img_dev_unref(d);

	/* Outside the plan: zeros are fine, data is refused (and sticks). */
	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_ok(img_dev_plan(d, 0, 65536), ctx);
	ck_assert_ok(img_dev_plan_done(d), ctx);
	ck_assert_int_eq(img_dev_plan_done(d), -EINVAL);
	img_dev_unref(d);
	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_ok(img_dev_plan(d, 0, 65536), ctx);
	ck_assert_ok(img_dev_plan_done(d), ctx);
	ck_assert_ok(img_dev_pwrite(d, buf, sizeof(buf), 0), ctx);
	memset(buf, 0, sizeof(buf));
	ck_assert_ok(img_dev_pwrite(d, buf, sizeof(buf), 3 << 20), ctx);
	ck_assert_ok(img_dev_write_zeroes(d, 65536, 1 << 20), ctx);
	buf[100] = 1;
	ck_assert_int_eq(img_dev_pwrite(d, buf, sizeof(buf), (3 << 20) + 5), -EINVAL);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "outside the planned layout"));
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "guest offset 3145733"));
	ck_assert_int_eq(img_dev_finish(d), -EINVAL);
	img_dev_unref(d);

	/* Through a slice at 1 MiB: the plan lands at the slice's offset. */
	t_fill(buf, sizeof(buf), 4);
	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_ok(img_dev_slice_new(d, 1 << 20, 2 << 20, &sl), ctx);
	ck_assert_ok(img_dev_plan(sl, 0, 8192), ctx);
	ck_assert_int_eq(img_dev_plan(sl, 8192, 2 << 20), -EINVAL);
	img_dev_unref(sl);
	img_dev_unref(d);
	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_ok(img_dev_slice_new(d, 1 << 20, 2 << 20, &sl), ctx);
	ck_assert_ok(img_dev_plan(sl, 0, 8192), ctx);
	ck_assert_ok(img_dev_plan_done(sl), ctx);
	ck_assert_ok(img_dev_pwrite(sl, buf, sizeof(buf), 4096), ctx);
	ck_assert_int_eq(img_dev_pwrite(d, buf, sizeof(buf), 0), -EINVAL);
	img_dev_unref(sl);
	img_dev_unref(d);
	ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &d), ctx);
	ck_assert_ok(img_dev_slice_new(d, 1 << 20, 2 << 20, &sl), ctx);
	ck_assert_ok(img_dev_plan(sl, 0, 8192), ctx);
	ck_assert_ok(img_dev_plan_done(sl), ctx);
	ck_assert_ok(img_dev_pwrite(sl, buf, sizeof(buf), 4096), ctx);
	ck_assert_ok(img_dev_finish(sl), ctx);
	img_dev_unref(sl);
	ck_assert_ok(img_dev_finish(d), ctx);
	ck_assert_int_eq(img_dev_sha256(d, got), 0);
	ck_assert_ok(img_sha256_file(ctx, path, want), ctx);
	ck_assert_mem_eq(got, want, 32);
	img_dev_unref(d);
	{
		struct img_dev *r;
		uint8_t back[4096];

		ck_assert_ok(img_dev_qcow2_open(ctx, path, 0, &r), ctx);
		ck_assert_ok(img_dev_pread(r, back, sizeof(back), (1 << 20) + 4096), ctx);
		ck_assert_mem_eq(back, buf, sizeof(buf));
		img_dev_unref(r);
	}
	/* A mem device ignores the plan (but dev.c still checks it). */
	ck_assert_ok(img_dev_mem_new(ctx, 1 << 20, &d), ctx);
	ck_assert_ok(img_dev_plan(d, 4096, 10), ctx);
	ck_assert_int_eq(img_dev_plan(d, 0, 10), -EINVAL);
	img_dev_unref(d);
	ck_assert_ok(img_dev_mem_new(ctx, 1 << 20, &d), ctx);
	ck_assert_ok(img_dev_plan(d, 4096, 10), ctx);
	ck_assert_ok(img_dev_plan_done(d), ctx);
	ck_assert_ok(img_dev_pwrite(d, buf, sizeof(buf), 500000), ctx);
	img_dev_unref(d);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* Compressed images ignore the plan: the same bytes with and without one. */
START_TEST(plan_compressed)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("qcow2-planz"), p1[4096], p2[4096];
	struct img_qcow2_opts o = { .size = 16 << 20, .compression = IMG_QCOW2_COMPRESS_ZSTD };
	struct img_dev *q, *m;

	snprintf(p1, sizeof(p1), "%s/a.qcow2", dir);
	snprintf(p2, sizeof(p2), "%s/b.qcow2", dir);
	write_image(ctx, p1, &o, 61, NULL);
	ck_assert_ok(img_dev_qcow2_create(ctx, p2, &o, &q), ctx);
	ck_assert_ok(img_dev_plan(q, 0, 4096), ctx);
	ck_assert_ok(img_dev_plan_done(q), ctx);
	ck_assert_ok(img_dev_mem_new(ctx, o.size, &m), ctx);
	random_ops(ctx, q, m, 61, 150, 150000);
	ck_assert_ok(img_dev_finish(q), ctx);
	img_dev_unref(q);
	img_dev_unref(m);
	assert_files_equal(p1, p2);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* ---- compressed, streamed ------------------------------------------ */

/* Counts the lines saying a compressed image went back to staging. */
static void count_staged(void *user, enum img_log_level level, const char *msg)
{
	(void)level;
	if (strstr(msg, "written out of order"))
		++*(int *)user;
}

static const struct stream_case {
	enum img_qcow2_compression type;
	unsigned cb;
} stream_cases[] = {
	{ IMG_QCOW2_COMPRESS_ZSTD, 16 },
	{ IMG_QCOW2_COMPRESS_ZLIB, 9 },
	{ IMG_QCOW2_COMPRESS_ZSTD, 12 },
	{ IMG_QCOW2_COMPRESS_ZLIB, 21 },
};

/* Both devices get the same write. */
static void stream_write(struct img_dev *a, struct img_dev *b, uint8_t *model, int srcfd,
                         const uint8_t *src, size_t srclen, uint64_t off, uint64_t len)
{
	uint64_t ra = rng, rb = rng;

	t_dev_model_write(img_dev_ctx(a), a, model, srcfd, src, srclen, off, len, &ra);
	t_dev_model_write(img_dev_ctx(b), b, model, srcfd, src, srclen, off, len, &rb);
	rng = ra;
}

/*
 * Compressed images compress their clusters as in-order writes pass them.
 * Random ascending ranges (gaps of every size, pieces sharing clusters)
 * written as the emitters write (copies, data, zeros, pieces left out),
 * with reads of everything so far (clusters in the ring, laid out in
 * memory and in the file, compressed and not), and zeros written behind
 * where nothing was ever written: image a streams to the end. Image b gets
 * the same, and at a random write (after the last one in one case) a
 * write behind, of the bytes already there, into a cluster with data,
 * which stages every cluster back in the file (unpacking them) and goes
 * on staged. Both files are the same bytes (streamed layout = staged
 * layout), the reader and qemu-img give the model back, and qemu-img
 * check is clean.
 */
START_TEST(stream_model)
{
	const struct stream_case *sc = &stream_cases[_i];
	struct img_ctx *ca = t_ctx(), *cb = t_ctx();
	char *dir = t_tmpdir("qcow2-stream"), pa[4096], pb[4096], src[4096];
	struct img_qcow2_opts o = { .size = 40 << 20,
		                    .compression = sc->type,
		                    .cluster_bits = sc->cb };
	uint64_t cs = 1ull << sc->cb, at = 0;
	size_t srclen = 3 << 20;
	uint8_t *model = calloc(1, (size_t)o.size), *data = malloc(srclen);
	struct img_dev *a, *b;
	int srcfd, staged_a = 0, staged_b = 0, stage_at;

	rng = 0x57e4 + (uint64_t)_i * 104729;
	stage_at = _i == 3 ? 1000 : 4 + (int)(t_rnd(&rng) % 30);
	ck_assert_ptr_nonnull(model);
	/* noise, then text with a little noise: raw and compressed clusters */
	t_fill(data, srclen, rng);
	for (size_t j = srclen / 2; j < srclen; j++)
		if (t_rnd(&rng) % 64)
			data[j] = (uint8_t) "compressible text "[j % 18];
	snprintf(pa, sizeof(pa), "%s/a.qcow2", dir);
	snprintf(pb, sizeof(pb), "%s/b.qcow2", dir);
	snprintf(src, sizeof(src), "%s/src", dir);
	t_write_file(src, data, srclen);
	srcfd = open(src, O_RDONLY);
	ck_assert_int_ge(srcfd, 0);
	img_ctx_set_log(ca, IMG_LOG_INFO, count_staged, &staged_a);
	img_ctx_set_log(cb, IMG_LOG_INFO, count_staged, &staged_b);
	ck_assert_ok(img_dev_qcow2_create(ca, pa, &o, &a), ca);
	ck_assert_ok(img_dev_qcow2_create(cb, pb, &o, &b), cb);
	for (int i = 0;; i++) {
		static const uint64_t gaps[] = { 0, 0, 1, 100, 4096, 65536, 300000, 3 << 20 };
		uint64_t gap = gaps[t_rnd(&rng) % IMG_ARRAY_SIZE(gaps)],
		         len = 1 + t_rnd(&rng) % 400000;
		uint64_t hole = IMG_ALIGN_UP(at, cs) + cs, last;

		if (at + gap + len > o.size)
			break;
		at += gap;
		stream_write(a, b, model, srcfd, data, srclen, at, len);
		last = (at + len - 1) & ~(cs - 1);
		/* the last cluster and past it; now and then all of it */
		t_dev_model_check(ca, a, model, last, IMG_MIN(2 * cs, o.size - last));
		if (i % 5 == 4)
			t_dev_model_check(ca, a, model, 0, at + len);
		/* a cluster inside the gap, never written: zeros behind */
		if (hole + 2 * cs <= at) {
			ck_assert_ok(img_dev_write_zeroes(a, hole, cs), ca);
			ck_assert_ok(img_dev_write_zeroes(b, hole, cs), cb);
			t_dev_model_check(ca, a, model, hole, cs);
		}
		if (i == stage_at)
			t_dev_rewrite_data(b, model, at + len);
		at += len;
	}
	if (stage_at == 1000)
		t_dev_rewrite_data(b, model, o.size);
	t_dev_model_check(cb, b, model, 0, o.size);
	ck_assert_ok(img_dev_finish(a), ca);
	ck_assert_ok(img_dev_finish(b), cb);
	img_dev_unref(a);
	img_dev_unref(b);
	close(srcfd);
	ck_assert_int_eq(staged_a, 0);
	ck_assert_int_eq(staged_b, 1);
	assert_files_equal(pa, pb);
	plan_compare(ca, pa, model, o.size);
	if (t_have("qemu-img")) {
		char raw[4096];
		char *check[] = { "qemu-img", "check", "-q", pa, NULL }, *out = NULL;
		char *cv[] = { "qemu-img", "convert", "-O", "raw", pa, raw, NULL };
		size_t n;
		uint8_t *r;

		ck_assert_msg(t_run(check, &out) == 0, "qemu-img check %s: %s", pa, out ? out : "");
		free(out);
		snprintf(raw, sizeof(raw), "%s/a.raw", dir);
		ck_assert_int_eq(t_run(cv, NULL), 0);
		r = t_read_file(raw, &n);
		ck_assert_uint_eq(n, o.size);
		ck_assert_msg(!memcmp(r, model, n), "qemu-img convert differs from the model");
		free(r);
	}
	free(model);
	free(data);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ca);
	img_ctx_free(cb);
}
END_TEST

/* One literal tcase_create() call per case: tests.cmake finds them for CTest. */
static void add(Suite *s, TCase *tc, const TTest *t)
{
	tcase_add_test(tc, t);
	suite_add_tcase(s, tc);
}

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("qcow2");
	TCase *tc;

	add(s, tcase_create("create_readback"), create_readback);
	add(s, tcase_create("zero_clusters"), zero_clusters);
	add(s, tcase_create("sparse"), sparse);
	add(s, tcase_create("data_then_metadata"), data_then_metadata);
	add(s, tcase_create("determinism"), determinism);
	add(s, tcase_create("compression"), compression);
	add(s, tcase_create("copy_from_fd"), copy_from_fd);
	add(s, tcase_create("zero_source"), zero_source);
	add(s, tcase_create("open_validation"), open_validation);
	add(s, tcase_create("overlay"), overlay);
	add(s, tcase_create("qemu_check"), qemu_check);
	tc = tcase_create("plan_model");
	tcase_add_loop_test(tc, plan_model, 0, (int)IMG_ARRAY_SIZE(plan_cases));
	suite_add_tcase(s, tc);
	add(s, tcase_create("plan_refused"), plan_refused);
	add(s, tcase_create("plan_compressed"), plan_compressed);
	tc = tcase_create("stream_model");
	tcase_add_loop_test(tc, stream_model, 0, (int)IMG_ARRAY_SIZE(stream_cases));
	suite_add_tcase(s, tc);
	return s;
}
