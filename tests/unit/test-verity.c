/* test-verity.c -- the dm-verity hash tree: for data sizes around every level
 * boundary the tree must be byte for byte what `veritysetup format`
 * (cryptsetup, a program we did not write) writes for the same data, salt
 * and UUID, and `veritysetup verify` must accept it, read back and hashed
 * as written (the tap); plus the planned sizes and the failure cases of the
 * plan. The tap's model: random writes (bytes, zeros, file copies with
 * holes, through slices, across the data range's edges) in order with gaps
 * and out of order, each compared byte for byte with the read-back tree
 * over the same writes. */
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

/* Build a tree over @blocks data blocks (@tapped: hashed as written),
 * compare with veritysetup's. */
static void against_veritysetup(uint64_t blocks, int holes, int tapped)
{
	struct img_verity_tap *tap = NULL;
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
	if (tapped)
		ck_assert_ok(img_verity_tap_new(ctx, dev, &v, &tap), ctx);
	for (uint64_t i = 0; i < blocks; i++) {
		/* with @holes, most blocks stay unwritten (read as zeros) */
		if (holes && i % 97 && i != blocks - 1)
			continue;
		t_fill(buf, IMG_VERITY_BLOCK, i + 1);
		ck_assert_ok(img_dev_pwrite(dev, buf, IMG_VERITY_BLOCK, i * IMG_VERITY_BLOCK), ctx);
	}
	ck_assert_ok(img_verity_write(ctx, dev, &v, tap), ctx);
	ck_assert_int_eq(v.hashed_as_written, tapped);
	img_verity_tap_free(tap);
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
	against_veritysetup(1, 0, 0);
	against_veritysetup(1, 0, 1);
}
END_TEST

START_TEST(level_boundaries)
{
	static const uint64_t n[] = { 2, 127, 128, 129, 300 };

	for (size_t i = 0; i < sizeof(n) / sizeof(n[0]); i++) {
		against_veritysetup(n[i], 0, 0);
		against_veritysetup(n[i], 0, 1);
	}
}
END_TEST

START_TEST(three_levels)
{
	/* 128*128+1 blocks (64 MiB), mostly holes */
	against_veritysetup(128 * 128 + 1, 1, 0);
	against_veritysetup(128 * 128 + 1, 1, 1);
}
END_TEST

/* ---- the tap's model ------------------------------------------------- */

enum wkind { W_BYTES, W_ZERO_BYTES, W_ZEROES, W_DATA, W_COPY, W_SLICE, W_NKINDS };

struct wop {
	enum wkind kind;
	uint64_t off, len, seed, src;
};

/* Do @w on @dev (@fd: the copy source). */
static void apply(struct img_ctx *ctx, struct img_dev *dev, const struct wop *w, int fd)
{
	uint8_t *buf = malloc(w->len ? w->len : 1);
	struct img_dev *s;

	t_fill(buf, w->len, w->seed);
	switch (w->kind) {
	case W_BYTES:
		ck_assert_ok(img_dev_pwrite(dev, buf, w->len, w->off), ctx);
		break;
	case W_ZERO_BYTES:
		memset(buf, 0, w->len);
		ck_assert_ok(img_dev_pwrite(dev, buf, w->len, w->off), ctx);
		break;
	case W_ZEROES:
		ck_assert_ok(img_dev_write_zeroes(dev, w->off, w->len), ctx);
		break;
	case W_DATA:
		ck_assert_ok(img_dev_write_data(dev, buf, w->len, w->off), ctx);
		break;
	case W_COPY:
		ck_assert_ok(img_dev_copy_from_fd(dev, fd, w->src, w->len, w->off), ctx);
		break;
	default:
		/* through a slice from the write's offset on: the parent's tap sees it */
		ck_assert_ok(img_dev_slice_new(dev, w->off, w->len, &s), ctx);
		ck_assert_ok(img_dev_write_data(s, buf, w->len, 0), ctx);
		img_dev_unref(s);
		break;
	}
	free(buf);
}

/* A copy source of @len bytes: data with holes (big copies keep them, dev.c). */
static int make_source(const char *dir, uint64_t len)
{
	char path[512];
	uint8_t *b = malloc(65536);
	int fd;

	snprintf(path, sizeof(path), "%s/src", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ck_assert(fd >= 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)len), 0);
	/* 64 KiB of data every 192 KiB (and a run of zero bytes inside one) */
	for (uint64_t o = 0; o + 65536 <= len; o += 3 * 65536) {
		t_fill(b, 65536, o + 7);
		if (o == 3 * 65536)
			memset(b + 1000, 0, 20000);
		ck_assert_int_eq(pwrite(fd, b, 65536, (off_t)o), 65536);
	}
	free(b);
	return fd;
}

/*
 * One case: a device of data (@blocks at @data_off) and tree, random writes
 * (@shuffle: then in random order, with some written twice), once tapped and
 * once not; both must end byte for byte the same, the tapped one hashed as
 * written exactly when the writes into the data range came in order.
 */
static void tap_case(const char *dir, int raw, uint64_t seed, uint64_t blocks, uint64_t data_off,
                     int shuffle, int *streamed)
{
	struct img_ctx *ctx = t_ctx();
	uint64_t s = seed * 2654435761u + 1, size = blocks * IMG_VERITY_BLOCK, devsize;
	uint64_t end = data_off + size, pos, front = 0, src_len = 4u << 20;
	struct img_verity va, vb;
	struct img_verity_tap *tap;
	struct img_dev *a, *b;
	struct wop *w = NULL;
	size_t n = 0, cap = 0;
	int fd = make_source(dir, src_len), in_order = 1;
	uint8_t *ba, *bb;

	ck_assert_ok(img_ctx_set_seed(ctx, "verity-tap", 10), ctx);
	ck_assert_ok(img_verity_init(ctx, &va, data_off, size, end + IMG_VERITY_BLOCK), ctx);
	vb = va;
	devsize = va.hash_offset + va.hash_size;
	if (raw) {
		char pa[512], pb[512];

		snprintf(pa, sizeof(pa), "%s/a.img", dir);
		snprintf(pb, sizeof(pb), "%s/b.img", dir);
		ck_assert_ok(img_dev_raw_create(ctx, pa, devsize, &a), ctx);
		ck_assert_ok(img_dev_raw_create(ctx, pb, devsize, &b), ctx);
	} else {
		ck_assert_ok(img_dev_mem_new(ctx, devsize, &a), ctx);
		ck_assert_ok(img_dev_mem_new(ctx, devsize, &b), ctx);
	}
	ck_assert_ok(img_verity_tap_new(ctx, a, &va, &tap), ctx);

	/* writes in order, from before the data range to just past it */
	pos = data_off ? t_rnd(&s) % data_off : 0;
	while (pos < end + IMG_VERITY_BLOCK) {
		struct wop o = { .kind = (enum wkind)(t_rnd(&s) % W_NKINDS), .seed = t_rnd(&s) };
		uint64_t gap = t_rnd(&s) % 4 == 0 ? 0 : t_rnd(&s) % (3 * IMG_VERITY_BLOCK);

		/* now and then a long gap (whole zero blocks never written) or a big copy */
		if (t_rnd(&s) % 16 == 0)
			gap = (t_rnd(&s) % 40) * IMG_VERITY_BLOCK + t_rnd(&s) % 3;
		o.off = pos + gap;
		o.len = 1 + t_rnd(&s) % (2 * IMG_VERITY_BLOCK + 100);
		if (o.kind == W_COPY && t_rnd(&s) % 4 == 0)
			o.len = 300000 + t_rnd(&s) % 200000;
		if (o.off >= end + IMG_VERITY_BLOCK)
			break;
		o.len = IMG_MIN(o.len, end + IMG_VERITY_BLOCK - o.off);
		o.src = t_rnd(&s) % (src_len - o.len);
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			w = realloc(w, cap * sizeof(*w));
		}
		w[n++] = o;
		pos = o.off + o.len;
	}
	if (shuffle) {
		for (size_t i = n; i > 1; i--) {
			size_t j = t_rnd(&s) % i;
			struct wop t = w[i - 1];

			w[i - 1] = w[j];
			w[j] = t;
		}
		/* and a few written again, over what is there */
		for (size_t i = 0; i < n && i < 4; i++) {
			if (n == cap)
				w = realloc(w, (cap *= 2) * sizeof(*w));
			w[n] = w[t_rnd(&s) % n];
			w[n++].seed ^= 0x55;
		}
	}
	/* the model: in order while no write into the data range starts behind
	 * the end of the one before */
	for (size_t i = 0; i < n; i++) {
		uint64_t lo = IMG_MAX(w[i].off, data_off), hi = IMG_MIN(w[i].off + w[i].len, end);

		if (lo >= hi)
			continue;
		if (lo - data_off < front)
			in_order = 0;
		front = hi - data_off;
	}
	for (size_t i = 0; i < n; i++) {
		apply(ctx, a, &w[i], fd);
		apply(ctx, b, &w[i], fd);
	}
	ck_assert_ok(img_verity_write(ctx, a, &va, tap), ctx);
	ck_assert_ok(img_verity_write(ctx, b, &vb, NULL), ctx);
	img_verity_tap_free(tap);
	ck_assert_msg(va.hashed_as_written == in_order,
	              "seed %llu: hashed as written %d, the writes %s in order",
	              (unsigned long long)seed, va.hashed_as_written,
	              in_order ? "were" : "were not");
	ck_assert(!vb.hashed_as_written);
	ck_assert_msg(!memcmp(va.root, vb.root, 32), "seed %llu (%llu blocks): root hashes differ",
	              (unsigned long long)seed, (unsigned long long)blocks);
	ba = malloc(devsize);
	bb = malloc(devsize);
	ck_assert_ok(img_dev_pread(a, ba, devsize, 0), ctx);
	ck_assert_ok(img_dev_pread(b, bb, devsize, 0), ctx);
	ck_assert_msg(!memcmp(ba, bb, devsize), "seed %llu (%llu blocks): the devices differ",
	              (unsigned long long)seed, (unsigned long long)blocks);
	*streamed += in_order;
	free(ba);
	free(bb);
	free(w);
	close(fd);
	ck_assert_ok(img_dev_finish(a), ctx);
	ck_assert_ok(img_dev_finish(b), ctx);
	img_dev_unref(a);
	img_dev_unref(b);
	img_ctx_free(ctx);
}

static const uint64_t tap_sizes[] = { 1, 2, 3, 127, 128, 129, 300, 128 * 3 + 5 };

START_TEST(tap_in_order)
{
	char *dir = t_tmpdir("verity-tap");
	int streamed = 0, cases = 0;

	for (uint64_t seed = 1; seed <= 120; seed++) {
		uint64_t blocks = tap_sizes[seed % IMG_ARRAY_SIZE(tap_sizes)];

		tap_case(dir, seed % 6 == 0, seed, blocks, (seed % 3) * IMG_VERITY_BLOCK, 0,
		         &streamed);
		cases++;
	}
	/* in order, every one of them is hashed as written */
	ck_assert_int_eq(streamed, cases);
	t_rmrf(dir);
	free(dir);
}
END_TEST

START_TEST(tap_out_of_order)
{
	char *dir = t_tmpdir("verity-tap");
	int streamed = 0;

	for (uint64_t seed = 1; seed <= 80; seed++) {
		uint64_t blocks = tap_sizes[seed % IMG_ARRAY_SIZE(tap_sizes)];

		tap_case(dir, seed % 5 == 0, seed, blocks, (seed % 2) * 2 * IMG_VERITY_BLOCK, 1,
		         &streamed);
	}
	/* shuffled, nearly all are out of order (and read back, still right) */
	ck_assert_int_lt(streamed, 8);
	t_rmrf(dir);
	free(dir);
}
END_TEST

START_TEST(tap_nothing_written)
{
	/* no write at all: the tree of zero blocks, from the tap alone */
	struct img_ctx *ctx = t_ctx();
	struct img_verity va, vb;
	struct img_verity_tap *tap;
	struct img_dev *a, *b;

	for (uint64_t blocks = 1; blocks <= 260; blocks += 129) {
		ck_assert_ok(img_verity_init(ctx, &va, 0, blocks * IMG_VERITY_BLOCK,
		                             blocks * IMG_VERITY_BLOCK),
		             ctx);
		vb = va;
		ck_assert_ok(img_dev_mem_new(ctx, va.hash_offset + va.hash_size, &a), ctx);
		ck_assert_ok(img_dev_mem_new(ctx, va.hash_offset + va.hash_size, &b), ctx);
		ck_assert_ok(img_verity_tap_new(ctx, a, &va, &tap), ctx);
		ck_assert_ok(img_verity_write(ctx, a, &va, tap), ctx);
		ck_assert_ok(img_verity_write(ctx, b, &vb, NULL), ctx);
		ck_assert(va.hashed_as_written);
		ck_assert(!memcmp(va.root, vb.root, 32));
		ck_assert(!memcmp(img_dev_mem_data(a), img_dev_mem_data(b), img_dev_size(a)));
		/* freed after the device: the tap holds its own reference */
		img_dev_unref(a);
		img_verity_tap_free(tap);
		img_dev_unref(b);
	}
	img_ctx_free(ctx);
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
	tc = tcase_create("tap");
	tcase_add_test(tc, tap_in_order);
	tcase_add_test(tc, tap_out_of_order);
	tcase_add_test(tc, tap_nothing_written);
	suite_add_tcase(s, tc);
	return s;
}
