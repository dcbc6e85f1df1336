/* test-erofs-compress.c -- compressed EROFS (fs-erofs-compress.c): the bytes
 * do not depend on the number of compressing threads; fsck.erofs (a program
 * we did not write) checks and extracts the image and the files come back
 * byte for byte; the plan shrinks and the indexes say what the data hold. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs-erofs-layout.h"
#include "testutil.h"
#include <img/tree.h>

/* Text-like data (compressible), random data (not), zeros. */
static void fill_text(uint8_t *b, size_t n, uint64_t seed)
{
	static const char *const w[] = { "store ", "path ", "nix ", "erofs ", "block\n", "lz4 " };
	uint64_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < n;) {
		const char *s;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		s = w[x % 6];
		for (; *s && i < n; s++)
			b[i++] = (uint8_t)*s;
	}
}

static void add(struct img_tree *t, const char *path, size_t len, int kind, uint64_t seed)
{
	struct img_node_attr a = { .type = IMG_NODE_REG, .mode = 0444, .size = len };
	uint8_t *buf = calloc(1, len ? len : 1);

	if (kind == 1)
		fill_text(buf, len, seed);
	else if (kind == 2)
		t_fill(buf, len, seed);
	a.data.kind = IMG_DATA_MEM;
	a.data.mem = buf;
	ck_assert_ok(img_tree_add(t, path, &a, NULL), t->ctx);
	free(buf);
}

static struct img_tree *tree(struct img_ctx *ctx)
{
	struct img_tree_opts o = { 0 };
	struct img_tree *t;
	static const size_t sizes[] = { 4097, 8192, 8193, 65536, 1 << 20, (4 << 20) + 1 };
	char name[64];

	ck_assert_ok(img_tree_new(ctx, &o, &t), ctx);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		snprintf(name, sizeof(name), "a/text%zu", sizes[i]);
		add(t, name, sizes[i], 1, i + 1);
		snprintf(name, sizeof(name), "b/rand%zu", sizes[i]);
		add(t, name, sizes[i], 2, i + 100);
	}
	add(t, "a/text-three-segments", (8 << 20) + 4095, 1, 99);
	add(t, "c/zeros", 3 << 20, 0, 0);
	add(t, "c/small", 100, 1, 7);
	add(t, "c/one-block", 4096, 1, 8);
	ck_assert_ok(img_tree_finish(t), ctx);
	return t;
}

/* Build compressed with @threads; returns the image bytes (malloc'ed). */
static uint8_t *build(struct img_ctx *ctx, struct img_tree *t, enum img_erofs_compressor alg,
                      unsigned threads, uint64_t *len, uint64_t *plain)
{
	struct img_fs_opts o = { .label = "nix-store", .id_role = "erofs-uuid" };
	struct img_erofs_compress_opts z = { .alg = alg, .level = 1, .threads = threads };
	struct img_erofs_plan *p;
	struct img_dev *dev;
	uint8_t *out;

	ck_assert_ok(img_erofs_plan(ctx, t, &o, &p), ctx);
	*plain = img_erofs_plan_bytes(p);
	ck_assert_ok(img_dev_mem_new(ctx, *plain, &dev), ctx);
	ck_assert_ok(img_erofs_compress(ctx, p, dev, &z), ctx);
	*len = img_erofs_plan_bytes(p);
	ck_assert_uint_lt(*len, *plain);
	ck_assert_uint_ne(p->feature_incompat & EROFS_FEATURE_INCOMPAT_ZERO_PADDING, 0);
	ck_assert_ok(img_erofs_emit(ctx, p, dev, 0), ctx);
	out = malloc(*len);
	memcpy(out, img_dev_mem_data(dev), *len);
	/* the random files stay as they are; the big text files are compressed */
	for (uint64_t i = 0; i < t->nodes; i++) {
		struct img_node *n = p->nodes[i];

		if (n->type != IMG_NODE_REG)
			continue;
		if (!strncmp(n->name, "rand", 4) && n->size < (4u << 20))
			ck_assert_uint_ne(p->inode[i].layout, EROFS_INODE_COMPRESSED_COMPACT);
		if (!strncmp(n->name, "text", 4) || !strcmp(n->name, "zeros"))
			/* (text4097 may just miss a block; the rest must not) */
			if (n->size > 8192)
				ck_assert_uint_eq(p->inode[i].layout,
				                  EROFS_INODE_COMPRESSED_COMPACT);
		if (!strcmp(n->name, "small") || !strcmp(n->name, "one-block"))
			ck_assert_uint_ne(p->inode[i].layout, EROFS_INODE_COMPRESSED_COMPACT);
	}
	img_dev_unref(dev);
	img_erofs_plan_free(p);
	return out;
}

START_TEST(threads_do_not_matter)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = tree(ctx);
	uint64_t la, lb, pa, pb;
	uint8_t *a = build(ctx, t, IMG_EROFS_LZ4, 1, &la, &pa),
	        *b = build(ctx, t, IMG_EROFS_LZ4, 3, &lb, &pb);

	ck_assert_uint_eq(la, lb);
	ck_assert_msg(!memcmp(a, b, la), "1 and 3 threads gave other bytes");
	free(a);
	free(b);
	img_tree_free(t);
	img_ctx_free(ctx);
}
END_TEST

struct back {
	struct img_ctx *ctx;
	const char *dir;
	unsigned files;
};

static int file_back(void *user, struct img_node *n, unsigned depth)
{
	struct back *bk = user;
	char rel[256], path[1024];
	uint8_t *want, *got;
	int fd;

	(void)depth;
	if (n->type != IMG_NODE_REG)
		return 0;
	img_node_path(n, rel, sizeof(rel));
	snprintf(path, sizeof(path), "%s/x/%s", bk->dir, rel);
	want = malloc(n->size + 1);
	got = malloc(n->size + 1);
	ck_assert_ok(img_node_read_data(bk->ctx, n, 0, want, n->size), bk->ctx);
	fd = open(path, O_RDONLY);
	ck_assert_msg(fd >= 0, "%s not extracted", rel);
	ck_assert_int_eq(read(fd, got, n->size + 1), (ssize_t)n->size);
	close(fd);
	ck_assert_msg(!memcmp(want, got, n->size), "%s differs", rel);
	free(want);
	free(got);
	bk->files++;
	return 0;
}

START_TEST(fsck_extracts)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = tree(ctx);
	char *dir = t_tmpdir("erofs-compress"), img[512], x[512], *out = NULL;
	uint64_t len, plain;
	uint8_t *a = build(ctx, t, IMG_EROFS_LZ4HC, 2, &len, &plain);
	int st;

	snprintf(img, sizeof(img), "%s/z.img", dir);
	snprintf(x, sizeof(x), "--extract=%s/x", dir);
	t_write_file(img, a, len);
	ck_assert_msg(t_have("fsck.erofs"), "fsck.erofs is not installed (scripts/setup.sh)");
	{
		char *argv[] = { "fsck.erofs", x, img, NULL };

		st = t_run(argv, &out);
		ck_assert_msg(st == 0, "fsck.erofs --extract: exit %d: %s", st, out ? out : "");
		free(out);
	}
	/* every file back, byte for byte */
	{
		struct back bk = { ctx, dir, 0 };

		ck_assert_ok(img_tree_walk(t, file_back, &bk), ctx);
		ck_assert_uint_ge(bk.files, 16);
	}
	free(a);
	t_rmrf(dir);
	free(dir);
	img_tree_free(t);
	img_ctx_free(ctx);
}
END_TEST

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("erofs-compress");
	TCase *tc;

	tc = tcase_create("threads");
	tcase_add_test(tc, threads_do_not_matter);
	suite_add_tcase(s, tc);
	tc = tcase_create("fsck");
	tcase_add_test(tc, fsck_extracts);
	suite_add_tcase(s, tc);
	return s;
}
