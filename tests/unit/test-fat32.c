/* test-fat32.c -- the FAT32 writer, checked with fsck.fat and mtools (programs
 * we did not write): extraction equals the input, long names, 8.3 collisions,
 * 1,000 files in one directory, geometry, errors, determinism. */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "private.h"
#include "testutil.h"
#include "fs-fat32.h"
#include <img/tree.h>

#define MIB (1ull << 20)

static struct img_tree *g_tree;
static size_t g_prefix;

static int add_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	struct img_node_attr a = { .mode = st->st_mode & 07777, .mtime = 1 };
	const char *rel = path + g_prefix;

	(void)ftw;
	if (!*rel)
		return 0;
	rel++;
	if (flag == FTW_D) {
		a.type = IMG_NODE_DIR;
	} else if (flag == FTW_SL) {
		static char target[4096];
		ssize_t n = readlink(path, target, sizeof(target) - 1);

		target[n < 0 ? 0 : n] = 0;
		a.type = IMG_NODE_SYMLINK;
		a.target = target;
		a.size = strlen(target);
	} else {
		a.type = IMG_NODE_REG;
		a.size = (uint64_t)st->st_size;
		a.data.kind = IMG_DATA_PATH;
		a.data.path = (char *)path;
	}
	return img_tree_add(g_tree, rel, &a, NULL) < 0 ? 1 : 0;
}

/* A finished tree of everything under @dir. */
static struct img_tree *tree_of(struct img_ctx *ctx, const char *dir)
{
	struct img_tree_opts o = { 0 };

	ck_assert_ok(img_tree_new(ctx, &o, &g_tree), ctx);
	g_prefix = strlen(dir);
	ck_assert_int_eq(nftw(dir, add_entry, 16, FTW_PHYS), 0);
	ck_assert_ok(img_tree_finish(g_tree), ctx);
	return g_tree;
}

static void mkfile(const char *dir, const char *rel, size_t len, uint64_t seed)
{
	char path[4096], *p;
	uint8_t *buf = malloc(len ? len : 1);

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	for (p = path + strlen(dir) + 1; (p = strchr(p, '/')); p++) {
		*p = 0;
		mkdir(path, 0755);
		*p = '/';
	}
	t_fill(buf, len, seed);
	t_write_file(path, buf, len);
	free(buf);
}

/* The content the ESP tests use: what a NixOS ESP holds, plus the hard cases. */
static void make_content(const char *src)
{
	char name[300];

	mkdir(src, 0755);
	mkfile(src, "EFI/BOOT/BOOTX64.EFI", 3000, 1);
	mkfile(src, "EFI/systemd/systemd-bootx64.efi", 140000, 2);
	mkfile(src, "EFI/nixos/abcdefghijklmnopqrstuvwxyz012345-linux-6.1-bzImage.efi", 5 * MIB + 7,
	       3);
	mkfile(src, "loader/loader.conf", 40, 4);
	mkfile(src, "loader/entries/nixos-generation-1.conf", 300, 5);
	mkfile(src, "empty", 0, 6);
	mkfile(src, "archive.tar.gz", 10, 7);
	mkfile(src, ".hidden", 10, 8);
	mkfile(src, "with space.txt", 10, 9);
	mkfile(src,
	       "gr\xc3\xb6\xc3\x9f"
	       "e.txt",
	       11, 10);
	mkfile(src, "a/b/c/d/e/f/deep.txt", 12, 11);
	/* A name of 200 characters: 16 long-name slots. */
	memset(name, 'x', 200);
	memcpy(name, "long/", 5);
	name[200] = 0;
	mkfile(src, name, 13, 12);
	/* Names that collide in 8.3, and a file that already is one of the aliases. */
	for (int i = 0; i < 12; i++) {
		snprintf(name, sizeof(name), "collide/verylongname-%02d.txt", i);
		mkfile(src, name, (size_t)i, 100 + (uint64_t)i);
	}
	mkfile(src, "collide/VERYLO~1.TXT", 5, 99);
	/* 1,000 files in one directory (longer than one cluster of entries). */
	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof(name), "many/file-number-%04d.data", i);
		mkfile(src, name, (size_t)(i % 37), 1000 + (uint64_t)i);
	}
}

static void write_fat(struct img_ctx *ctx, struct img_tree *tree, const char *path, uint64_t size)
{
	struct img_fs_opts o = { .label = "ESP", .id_role = "fat-esp" };
	struct img_dev *dev;

	ck_assert_ok(img_dev_raw_create(ctx, path, size, &dev), ctx);
	ck_assert_ok(img_fs_fat32.write(ctx, tree, &o, dev), ctx);
	ck_assert_ok(img_dev_finish(dev), ctx);
	img_dev_unref(dev);
}

static void fsck_clean(const char *img)
{
	char *out = NULL;
	char *argv[] = { "fsck.fat", "-n", "-V", (char *)img, NULL };
	int st = t_run(argv, &out);

	ck_assert_msg(st == 0, "fsck.fat -n -V %s: exit %d: %s", img, st, out);
	free(out);
}

START_TEST(esp_extract_equals_input)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("fat32-esp"), src[4096], img[4096], img2[4096], out[4096], arg[4200],
	     *text = NULL;
	struct img_tree *tree;
	int st;

	ck_assert_msg(t_have("fsck.fat") && t_have("mcopy") && t_have("mdir"),
	              "dosfstools/mtools not installed");
	snprintf(src, sizeof(src), "%s/src", dir);
	snprintf(img, sizeof(img), "%s/esp.img", dir);
	snprintf(img2, sizeof(img2), "%s/esp2.img", dir);
	snprintf(out, sizeof(out), "%s/out", dir);
	make_content(src);
	tree = tree_of(ctx, src);
	write_fat(ctx, tree, img, 64 * MIB);
	fsck_clean(img);

	setenv("MTOOLS_SKIP_CHECK", "1", 1);
	{
		char *argv[] = { "mdir", "-i", img, "::/", NULL };
		ck_assert_int_eq(t_run(argv, &text), 0);
		ck_assert_msg(strstr(text, "Volume in drive : is ESP"), "%s", text);
		free(text);
	}
	{
		char *argv[] = { "mdir", "-i", img, "::/loader/entries", NULL };
		ck_assert_int_eq(t_run(argv, &text), 0);
		/* The alias mtools itself would make, and the long name beside it. */
		ck_assert_msg(strstr(text, "NIXOS-~1 CON") &&
		                  strstr(text, "nixos-generation-1.conf"),
		              "%s", text);
		free(text);
	}
	{
		char *argv[] = { "mdir", "-i", img, "::/collide", NULL };
		ck_assert_int_eq(t_run(argv, &text), 0);
		/* VERYLO~1.TXT is taken by the file of that name: aliases start at ~2. */
		ck_assert_msg(strstr(text, "VERYLO~2 TXT") && strstr(text, "VERYL~13 TXT"), "%s",
		              text);
		free(text);
	}
	{
		char *argv[] = { "mdir", "-i", img, "::/many", NULL };
		ck_assert_int_eq(t_run(argv, &text), 0);
		/* mdir counts "." and ".." too. */
		ck_assert_msg(strstr(text, " 1002 files"), "%.300s", text);
		free(text);
	}
	mkdir(out, 0755);
	snprintf(arg, sizeof(arg), "%s", img);
	{
		char *argv[] = { "mcopy",
			         "-s",
			         "-n",
			         "-i",
			         arg,
			         "::/EFI",
			         "::/loader",
			         "::/empty",
			         "::/archive.tar.gz",
			         "::/.hidden",
			         "::/with space.txt",
			         "::/gr\xc3\xb6\xc3\x9f"
			         "e.txt",
			         "::/a",
			         "::/long",
			         "::/collide",
			         "::/many",
			         out,
			         NULL };
		st = t_run(argv, NULL);
		ck_assert_int_eq(st, 0);
	}
	{
		char *argv[] = { "diff", "-r", src, out, NULL };
		st = t_run(argv, &text);
		ck_assert_msg(st == 0, "extracted tree differs: %s", text);
		free(text);
	}
	/* Same tree, same bytes. */
	write_fat(ctx, tree, img2, 64 * MIB);
	{
		char *argv[] = { "cmp", img, img2, NULL };
		ck_assert_int_eq(t_run(argv, NULL), 0);
	}
	img_tree_free(tree);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

static void read_bpb(const char *img, uint8_t bs[512])
{
	int fd = open(img, O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(img_pread_full(fd, bs, 512, 0), 0);
	close(fd);
}

START_TEST(geometry)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("fat32-geom"), src[4096], img[4096];
	static const struct {
		uint64_t mib;
		unsigned spc;
	} cases[] = { { 34, 1 }, { 256, 1 }, { 300, 8 }, { 1024, 8 } };
	struct img_tree *tree;
	uint8_t bs[512], b6[512];
	int fd;

	snprintf(src, sizeof(src), "%s/src", dir);
	mkdir(src, 0755);
	mkfile(src, "EFI/BOOT/BOOTX64.EFI", 100, 1);
	tree = tree_of(ctx, src);
	for (size_t i = 0; i < IMG_ARRAY_SIZE(cases); i++) {
		uint64_t sectors, clusters, fatlen, rsvd;

		snprintf(img, sizeof(img), "%s/g%zu.img", dir, i);
		write_fat(ctx, tree, img, cases[i].mib * MIB);
		fsck_clean(img);
		read_bpb(img, bs);
		ck_assert_uint_eq(bs[13], cases[i].spc);
		ck_assert_uint_eq(img_get_le16(bs + 0x16), 0); /* FATSz16: FAT32 */
		ck_assert_uint_eq(img_get_le16(bs + 0x28), 0); /* mirrored FATs */
		ck_assert_uint_eq(img_get_le16(bs + 0x2A), 0);
		ck_assert(!memcmp(bs + 0x47, "ESP        ", 11));
		sectors = img_get_le32(bs + 0x20);
		fatlen = img_get_le32(bs + 0x24);
		rsvd = img_get_le16(bs + 0x0E);
		ck_assert_uint_eq(sectors, cases[i].mib * MIB / 512);
		clusters = (sectors - rsvd - 2 * fatlen) / bs[13];
		ck_assert_uint_ge(clusters, 65525);
		ck_assert_uint_le(clusters + 2, fatlen * 128);
		/* Data area cluster aligned; backup boot sector identical. */
		ck_assert_uint_eq((rsvd + 2 * fatlen) % bs[13], 0);
		fd = open(img, O_RDONLY);
		ck_assert_int_eq(img_pread_full(fd, b6, 512, 6 * 512), 0);
		close(fd);
		ck_assert(!memcmp(bs, b6, 512));
	}
	img_tree_free(tree);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(errors)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("fat32-err"), src[4096], img[4096], big[4096];
	struct img_fs_opts o = { .label = "ESP" };
	struct img_tree *tree;
	struct img_dev *dev;
	uint64_t est;
	int fd;

	/* Too small for FAT32 at all. */
	snprintf(src, sizeof(src), "%s/src", dir);
	mkdir(src, 0755);
	mkfile(src, "a", 1, 1);
	tree = tree_of(ctx, src);
	ck_assert_ok(img_dev_mem_new(ctx, 20 * MIB, &dev), ctx);
	ck_assert_int_eq(img_fs_fat32.write(ctx, tree, &o, dev), -ENOSPC);
	ck_assert_msg(strstr(img_ctx_error(ctx), "too small"), "%s", img_ctx_error(ctx));
	img_dev_unref(dev);
	/* Lower-case labels are refused (fsck.fat warns about them). */
	o.label = "esp";
	ck_assert_ok(img_dev_mem_new(ctx, 40 * MIB, &dev), ctx);
	ck_assert_int_eq(img_fs_fat32.write(ctx, tree, &o, dev), -EINVAL);
	img_dev_unref(dev);
	o.label = "ESP";
	img_tree_free(tree);

	/* Content larger than the partition: a clear error naming --boot-size. */
	snprintf(big, sizeof(big), "%s/src/big.bin", dir);
	fd = open(big, O_CREAT | O_WRONLY, 0644);
	ck_assert_int_eq(ftruncate(fd, 50 * MIB), 0);
	close(fd);
	tree = tree_of(ctx, src);
	ck_assert_ok(img_dev_mem_new(ctx, 40 * MIB, &dev), ctx);
	ck_assert_int_eq(img_fs_fat32.write(ctx, tree, &o, dev), -ENOSPC);
	ck_assert_msg(strstr(img_ctx_error(ctx), "--boot-size"), "%s", img_ctx_error(ctx));
	img_dev_unref(dev);
	/* The estimate is enough, and fsck.fat agrees with the result. */
	o.extra = 0;
	ck_assert_ok(img_fs_fat32.estimate(ctx, tree, &o, &est), ctx);
	ck_assert_uint_ge(est, 50 * MIB);
	ck_assert_uint_le(est, 60 * MIB);
	snprintf(img, sizeof(img), "%s/est.img", dir);
	write_fat(ctx, tree, img, est);
	fsck_clean(img);
	img_tree_free(tree);

	/* Names that differ only in case, symlinks. */
	mkfile(src, "README", 1, 2);
	mkfile(src, "readme", 1, 3);
	tree = tree_of(ctx, src);
	ck_assert_ok(img_dev_mem_new(ctx, 40 * MIB, &dev), ctx);
	unlink(big);
	ck_assert_int_eq(img_fs_fat32.write(ctx, tree, &o, dev), -EEXIST);
	ck_assert_msg(strstr(img_ctx_error(ctx), "only in case"), "%s", img_ctx_error(ctx));
	img_tree_free(tree);
	snprintf(img, sizeof(img), "%s/src/readme", dir);
	unlink(img);
	snprintf(img, sizeof(img), "%s/src/link", dir);
	ck_assert_int_eq(symlink("README", img), 0);
	tree = tree_of(ctx, src);
	ck_assert_int_eq(img_fs_fat32.write(ctx, tree, &o, dev), -EINVAL);
	ck_assert_msg(strstr(img_ctx_error(ctx), "/link"), "%s", img_ctx_error(ctx));
	img_tree_free(tree);
	img_dev_unref(dev);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/*
 * What a disk's plan is told of the ESP (img_fat32_written_bytes): every
 * byte the writer puts data in lies below it, and the cluster it ends in
 * holds data (the bound is tight, not the whole volume).
 */
START_TEST(written_bytes)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("fat32-written"), src[4096];
	struct img_fs_opts o = { .label = "ESP" };
	const uint64_t size = 64 * MIB;
	struct img_tree *tree;
	struct img_dev *dev;
	const uint8_t *m;
	uint64_t end, last = 0;

	snprintf(src, sizeof(src), "%s/src", dir);
	make_content(src);
	tree = tree_of(ctx, src);
	ck_assert_ok(img_fat32_written_bytes(ctx, tree, size, &end), ctx);
	ck_assert_uint_lt(end, size);
	ck_assert_ok(img_dev_mem_new(ctx, size, &dev), ctx);
	ck_assert_ok(img_fs_fat32.write(ctx, tree, &o, dev), ctx);
	m = img_dev_mem_data(dev);
	for (uint64_t i = 0; i < size; i++)
		if (m[i])
			last = i;
	ck_assert_msg(last < end, "data at %llu, past the %llu bytes planned",
	              (unsigned long long)last, (unsigned long long)end);
	ck_assert_msg(end - last <= 64 * 1024, "%llu bytes planned, data ends at %llu",
	              (unsigned long long)end, (unsigned long long)last);
	img_dev_unref(dev);
	img_tree_free(tree);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("fat32");
	TCase *tc;

	tc = tcase_create("esp");
	tcase_add_test(tc, esp_extract_equals_input);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	tc = tcase_create("geometry");
	tcase_add_test(tc, geometry);
	suite_add_tcase(s, tc);
	tc = tcase_create("errors");
	tcase_add_test(tc, errors);
	tcase_add_test(tc, written_bytes);
	suite_add_tcase(s, tc);
	return s;
}
