/* test-dev.c -- the device front end and the raw, mem and slice backends. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "private.h"
#include "testutil.h"
#include <img/vdisk.h>

START_TEST(mem_rw_and_ranges)
{
	struct img_ctx *ctx = t_ctx();
	struct img_dev *dev;
	uint8_t buf[100], back[100];

	ck_assert_ok(img_dev_mem_new(ctx, 4096, &dev), ctx);
	ck_assert_str_eq(img_dev_backend(dev), "mem");
	ck_assert_uint_eq(img_dev_size(dev), 4096);
	t_fill(buf, sizeof(buf), 1);
	ck_assert_ok(img_dev_pwrite(dev, buf, sizeof(buf), 3996), ctx);
	ck_assert_ok(img_dev_pread(dev, back, sizeof(back), 3996), ctx);
	ck_assert_mem_eq(buf, back, sizeof(buf));
	/* Past the end: refused with a message, and the refusal is sticky for writes. */
	ck_assert_int_eq(img_dev_pread(dev, back, 100, 3997), -EINVAL);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "beyond the end"));
	ck_assert_int_eq(img_dev_pwrite(dev, buf, 1, UINT64_MAX), -EINVAL);
	ck_assert_int_eq(img_dev_error(dev), 0); /* range errors do not poison */
	ck_assert_ok(img_dev_write_zeroes(dev, 4000, 96), ctx);
	ck_assert_ok(img_dev_pread(dev, back, 96, 4000), ctx);
	for (int i = 0; i < 96; i++)
		ck_assert_uint_eq(back[i], 0);
	ck_assert_ok(img_dev_finish(dev), ctx);
	ck_assert_int_eq(img_dev_pwrite(dev, buf, 1, 0), -EINVAL); /* finished */
	img_dev_unref(dev);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(slice_window)
{
	struct img_ctx *ctx = t_ctx();
	struct img_dev *dev, *s;
	uint8_t buf[512];
	const uint8_t *mem;

	ck_assert_ok(img_dev_mem_new(ctx, 1 << 20, &dev), ctx);
	ck_assert_ok(img_dev_slice_new(dev, 4096, 8192, &s), ctx);
	img_dev_unref(dev); /* the slice keeps the parent alive */
	t_fill(buf, sizeof(buf), 2);
	ck_assert_ok(img_dev_pwrite(s, buf, sizeof(buf), 8192 - 512), ctx);
	ck_assert_int_eq(img_dev_pwrite(s, buf, sizeof(buf), 8192 - 511), -EINVAL);
	mem = img_dev_mem_data(dev);
	ck_assert_mem_eq(mem + 4096 + 8192 - 512, buf, sizeof(buf));
	ck_assert_int_eq(img_dev_slice_new(s, 4096, 8192, &dev), -EINVAL);
	img_dev_unref(s);
	img_ctx_free(ctx);
}
END_TEST

static int count_allocated_blocks(const char *path)
{
	struct stat st;

	ck_assert_int_eq(stat(path, &st), 0);
	return (int)st.st_blocks;
}

START_TEST(raw_sparse_and_copy)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("dev-raw"), path[4096], src[4096];
	struct img_dev *dev;
	uint8_t *buf = malloc(1 << 20), *back = malloc(1 << 20);
	int fd;

	snprintf(path, sizeof(path), "%s/disk.raw", dir);
	snprintf(src, sizeof(src), "%s/src", dir);
	t_fill(buf, 1 << 20, 3);
	t_write_file(src, buf, 1 << 20);
	ck_assert_ok(img_dev_raw_create(ctx, path, 1ull << 30, &dev), ctx);
	/* A 1 GiB device with nothing written holds no blocks. */
	ck_assert_int_eq(count_allocated_blocks(path), 0);
	fd = open(src, O_RDONLY);
	ck_assert_ok(img_dev_copy_from_fd(dev, fd, 4096, (1 << 20) - 4096, 512ull << 20), ctx);
	ck_assert_ok(img_dev_pread(dev, back, (1 << 20) - 4096, 512ull << 20), ctx);
	ck_assert_mem_eq(back, buf + 4096, (1 << 20) - 4096);
	/* A short source is an error naming what happened. */
	ck_assert_int_eq(img_dev_copy_from_fd(dev, fd, (1 << 20) - 10, 100, 0), -EIO);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "changed while reading"));
	/* ... and it is sticky: the output is spoiled. */
	ck_assert_int_eq(img_dev_pwrite(dev, buf, 1, 0), -EIO);
	ck_assert_int_eq(img_dev_finish(dev), -EIO);
	close(fd);
	img_dev_unref(dev);

	img_ctx_clear_error(ctx);
	ck_assert_ok(img_dev_raw_create(ctx, path, 64ull << 20, &dev), ctx);
	ck_assert_ok(img_dev_pwrite(dev, buf, 1 << 20, 8 << 20), ctx);
	ck_assert_ok(img_dev_flush(dev), ctx); /* in the file now (it may have been in flight) */
	ck_assert_int_ge(count_allocated_blocks(path), 2048);
	ck_assert_ok(img_dev_write_zeroes(dev, 8 << 20, 1 << 20), ctx);
	ck_assert_int_lt(count_allocated_blocks(path), 2048); /* hole punched */
	ck_assert_ok(img_dev_pread(dev, back, 1 << 20, 8 << 20), ctx);
	for (int i = 0; i < (1 << 20); i++)
		if (back[i])
			ck_abort_msg("byte %d not zero", i);
	ck_assert_ok(img_dev_finish(dev), ctx);
	img_dev_unref(dev);

	ck_assert_ok(img_dev_raw_open(ctx, path, &dev), ctx);
	ck_assert_uint_eq(img_dev_size(dev), 64ull << 20);
	ck_assert(img_dev_readonly(dev));
	ck_assert_int_eq(img_dev_pwrite(dev, buf, 1, 0), -EROFS);
	img_dev_unref(dev);
	ck_assert_int_eq(img_dev_raw_open(ctx, "/nonexistent/x", &dev), -ENOENT);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "/nonexistent/x"));

	free(buf);
	free(back);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* A sparse source keeps its holes on every backend: dev.c copies only the
 * data segments. And a source shorter than promised is refused. */
START_TEST(copy_keeps_holes)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("dev-holes"), path[4096], src[4096];
	uint8_t *buf = malloc(1 << 20), *back = malloc(8 << 20);
	struct img_dev *dev;
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/disk.raw", dir);
	snprintf(src, sizeof(src), "%s/sparse", dir);
	t_fill(buf, 1 << 20, 4);
	fd = open(src, O_RDWR | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(img_pwrite_full(fd, buf, 1 << 20, 0), 0);
	ck_assert_int_eq(img_pwrite_full(fd, buf, 1 << 20, 7 << 20), 0); /* 6 MiB hole */
	ck_assert_int_eq(lseek(fd, 12345, SEEK_SET), 12345);
	ck_assert_ok(img_dev_raw_create(ctx, path, 16 << 20, &dev), ctx);
	ck_assert_ok(img_dev_pwrite(dev, buf, 1 << 20, 3 << 20), ctx); /* old data under the hole */
	ck_assert_ok(img_dev_copy_from_fd(dev, fd, 0, 8 << 20, 0), ctx);
	ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), 12345); /* file position kept */
	ck_assert_ok(img_dev_pread(dev, back, 8 << 20, 0), ctx);
	ck_assert_mem_eq(back, buf, 1 << 20);
	ck_assert_mem_eq(back + (7 << 20), buf, 1 << 20);
	for (size_t i = 1 << 20; i < (7u << 20); i++)
		if (back[i])
			ck_abort_msg("byte %zu of the hole is not zero", i);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_lt(st.st_blocks, 3 * 2048); /* 2 MiB of data, not 8 */
	ck_assert_int_eq(img_dev_copy_from_fd(dev, fd, 1 << 20, 8 << 20, 0), -EIO);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "changed while reading"));
	close(fd);
	img_dev_unref(dev);
	free(buf);
	free(back);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/*
 * Every file backend: file data (written behind) and a metadata block
 * (written by the caller) taking turns front to back, as the ext4 writer
 * emits them; the block in the short gap between two data runs must
 * survive the writer's filling of that gap (it did not in qcow2 and the
 * virtual disk formats).
 */
START_TEST(data_and_metadata_turns)
{
	static const struct {
		const char *name;
		enum img_vdisk_format f; /* 0: raw */
	} kinds[] = { { "raw", 0 },
		      { "vpc-fixed", IMG_VDISK_VPC_FIXED },
		      { "vpc-dynamic", IMG_VDISK_VPC_DYNAMIC },
		      { "vdi", IMG_VDISK_VDI },
		      { "vmdk", IMG_VDISK_VMDK_SPARSE } };
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("dev-turns"), path[4096];
	uint8_t *a = malloc(3 * 4096), *b = malloc(3 * 4096);
	const uint64_t size = 8u << 20, at = 1u << 20;

	t_fill(a, 3 * 4096, 11);
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		struct img_vdisk_opts o = { .format = kinds[k].f, .size = size };
		struct img_dev *d;

		snprintf(path, sizeof(path), "%s/%s.img", dir, kinds[k].name);
		if (kinds[k].f)
			ck_assert_ok(img_dev_vdisk_create(ctx, path, &o, &d), ctx);
		else
			ck_assert_ok(img_dev_raw_create(ctx, path, size, &d), ctx);
		ck_assert_ok(img_dev_write_data(d, a, 4096, at), ctx);
		ck_assert_ok(img_dev_pwrite(d, a + 4096, 4096, at + 4096), ctx);
		ck_assert_ok(img_dev_write_data(d, a + 8192, 4096, at + 8192), ctx);
		ck_assert_ok(img_dev_finish(d), ctx);
		img_dev_unref(d);
		if (kinds[k].f)
			ck_assert_ok(img_dev_vdisk_open(ctx, path, &d), ctx);
		else
			ck_assert_ok(img_dev_raw_open(ctx, path, &d), ctx);
		ck_assert_ok(img_dev_pread(d, b, 3 * 4096, at), ctx);
		ck_assert_msg(!memcmp(a, b, 3 * 4096), "%s: a block of the three was lost",
		              kinds[k].name);
		img_dev_unref(d);
	}
	free(a);
	free(b);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("dev");
	TCase *tc;

	tc = tcase_create("mem");
	tcase_add_test(tc, mem_rw_and_ranges);
	suite_add_tcase(s, tc);
	tc = tcase_create("slice");
	tcase_add_test(tc, slice_window);
	suite_add_tcase(s, tc);
	tc = tcase_create("raw");
	tcase_add_test(tc, raw_sparse_and_copy);
	tcase_add_test(tc, copy_keeps_holes);
	suite_add_tcase(s, tc);
	tc = tcase_create("turns");
	tcase_add_test(tc, data_and_metadata_turns);
	suite_add_tcase(s, tc);
	return s;
}
