/* test-verity.c -- the dm-verity hash tree: for data sizes around every level
 * boundary the tree must be byte for byte what `veritysetup format`
 * (cryptsetup, a program we did not write) writes for the same data, salt
 * and UUID, and `veritysetup verify` must accept it; plus the planned sizes
 * and the failure cases of the plan. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ondisk/verity.h"
#include "testutil.h"
#include "verity.h"
#include <img/repro.h>

START_TEST(tree_sizes)
{
	/* levels: 128 digests per block */
	ck_assert_uint_eq(img_verity_tree_blocks(1), 0);
	ck_assert_uint_eq(img_verity_tree_blocks(2), 1);
	ck_assert_uint_eq(img_verity_tree_blocks(128), 1);
	ck_assert_uint_eq(img_verity_tree_blocks(129), 2 + 1);
	ck_assert_uint_eq(img_verity_tree_blocks(128 * 128), 128 + 1);
	ck_assert_uint_eq(img_verity_tree_blocks(128 * 128 + 1), 129 + 2 + 1);
}
END_TEST

START_TEST(plan_errors)
{
	struct img_ctx *ctx = t_ctx();
	struct img_verity v;

	ck_assert_int_eq(img_verity_init(ctx, &v, 0, 0, 0), -EINVAL);
	ck_assert_int_eq(img_verity_init(ctx, &v, 0, 4097, 8192), -EINVAL);
	ck_assert_int_eq(img_verity_init(ctx, &v, 0, 8192, 4096), -EINVAL);    /* overlap */
	ck_assert_int_eq(img_verity_init(ctx, &v, 8192, 8192, 4096), -EINVAL); /* overlap */
	/* a hash area before the data is fine */
	ck_assert_ok(img_verity_init(ctx, &v, 8192, 8192, 0), ctx);
	ck_assert_uint_eq(v.data_blocks, 2);
	ck_assert_uint_eq(v.hash_size, 2 * IMG_VERITY_BLOCK);
	img_ctx_free(ctx);
}
END_TEST

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

/* Build a tree over @blocks data blocks, compare with veritysetup's. */
static void against_veritysetup(uint64_t blocks, int holes)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("verity"), data[512], ref[512], salt[65], uuid[37], root[65];
	char hoff[64], opt_salt[80], opt_uuid[64], *out = NULL;
	uint64_t size = blocks * IMG_VERITY_BLOCK;
	struct img_verity v;
	struct img_dev *dev;
	uint8_t *buf = malloc(IMG_VERITY_BLOCK), *a, *b;
	int st;

	ck_assert_msg(t_have("veritysetup"), "veritysetup is not installed (scripts/setup.sh)");
	snprintf(data, sizeof(data), "%s/data.img", dir);
	snprintf(ref, sizeof(ref), "%s/ref.hash", dir);
	ck_assert_ok(img_ctx_set_seed(ctx, "verity-test", 11), ctx);
	ck_assert_ok(img_verity_init(ctx, &v, 0, size, size), ctx);
	ck_assert_uint_eq(v.hash_size, (1 + img_verity_tree_blocks(blocks)) * IMG_VERITY_BLOCK);
	ck_assert_ok(img_dev_raw_create(ctx, data, size + v.hash_size, &dev), ctx);
	for (uint64_t i = 0; i < blocks; i++) {
		/* with @holes, most blocks stay unwritten (read as zeros) */
		if (holes && i % 97 && i != blocks - 1)
			continue;
		t_fill(buf, IMG_VERITY_BLOCK, i + 1);
		ck_assert_ok(img_dev_pwrite(dev, buf, IMG_VERITY_BLOCK, i * IMG_VERITY_BLOCK), ctx);
	}
	ck_assert_ok(img_verity_write(ctx, dev, &v), ctx);
	ck_assert_ok(img_dev_finish(dev), ctx);
	img_dev_unref(dev);

	hex(v.salt, 32, salt);
	hex(v.root, 32, root);
	img_uuid_unparse(v.uuid, uuid);
	snprintf(hoff, sizeof(hoff), "--hash-offset=%llu", (unsigned long long)size);
	snprintf(opt_salt, sizeof(opt_salt), "--salt=%s", salt);
	snprintf(opt_uuid, sizeof(opt_uuid), "--uuid=%s", uuid);
	{
		char *argv[] = { "veritysetup", "verify", data, data, root, hoff, NULL };

		st = t_run(argv, NULL);
		ck_assert_msg(st == 0, "veritysetup verify (%llu blocks): exit %d",
		              (unsigned long long)blocks, st);
	}
	{
		/* veritysetup format of the data alone: the same tree and root */
		char *argv[] = { "veritysetup", "format", opt_salt, opt_uuid, "--data-blocks",
			         NULL,          data,     ref,      NULL };
		char nb[32];

		snprintf(nb, sizeof(nb), "%llu", (unsigned long long)blocks);
		argv[5] = nb;
		st = t_run(argv, &out);
		ck_assert_msg(st == 0, "veritysetup format: exit %d", st);
		ck_assert_msg(strstr(out, root), "veritysetup's root hash differs from %s:\n%s",
		              root, out);
		free(out);
	}
	{
		/* the hash area byte for byte */
		int fa = open(data, O_RDONLY), fb = open(ref, O_RDONLY);
		struct stat sb;

		ck_assert(fa >= 0 && fb >= 0);
		ck_assert_int_eq(fstat(fb, &sb), 0);
		ck_assert_uint_eq((uint64_t)sb.st_size, v.hash_size);
		a = malloc(v.hash_size);
		b = malloc(v.hash_size);
		ck_assert_int_eq(pread(fa, a, v.hash_size, (off_t)size), (ssize_t)v.hash_size);
		ck_assert_int_eq(pread(fb, b, v.hash_size, 0), (ssize_t)v.hash_size);
		ck_assert_msg(!memcmp(a, b, v.hash_size),
		              "tree differs from veritysetup's (%llu blocks)",
		              (unsigned long long)blocks);
		ck_assert(!memcmp(a + VERITY_SB_SIGNATURE, "verity\0\0", 8));
		free(a);
		free(b);
		close(fa);
		close(fb);
	}
	free(buf);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}

START_TEST(one_block)
{
	against_veritysetup(1, 0);
}
END_TEST

START_TEST(level_boundaries)
{
	static const uint64_t n[] = { 2, 127, 128, 129, 300 };

	for (size_t i = 0; i < sizeof(n) / sizeof(n[0]); i++)
		against_veritysetup(n[i], 0);
}
END_TEST

START_TEST(three_levels)
{
	/* 128*128+1 blocks (64 MiB), mostly holes */
	against_veritysetup(128 * 128 + 1, 1);
}
END_TEST

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("verity");
	TCase *tc;

	tc = tcase_create("plan");
	tcase_add_test(tc, tree_sizes);
	tcase_add_test(tc, plan_errors);
	suite_add_tcase(s, tc);
	tc = tcase_create("veritysetup");
	tcase_add_test(tc, one_block);
	tcase_add_test(tc, level_boundaries);
	tcase_add_test(tc, three_levels);
	suite_add_tcase(s, tc);
	return s;
}
