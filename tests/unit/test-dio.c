/*
 * test-dio.c -- the direct writer (dio.c) under the raw and qcow2 backends:
 * random mixes of copies, writes, zeros and reads against a model in memory,
 * O_DIRECT really in use, failures reported; random plans written in file
 * order hashed as they go out (the SHA-256 the model has), and a hash never
 * claimed for an output written out of order.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <img/qcow2.h>

#include "context-private.h"
#include "private.h"
#include "testutil.h"

#define DEV_SIZE (48u << 20)
#define SRC_SIZE (20u << 20)

static uint64_t rnd_state;

static uint64_t rnd(uint64_t n)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return n ? rnd_state % n : 0;
}

/* Does this directory's file system take O_DIRECT? */
static int direct_ok(const char *dir)
{
	char p[4096];
	int fd;

	snprintf(p, sizeof(p), "%s/probe", dir);
	fd = open(p, O_RDWR | O_CREAT | O_DIRECT, 0644);
	if (fd < 0)
		return 0;
	close(fd);
	unlink(p);
	return 1;
}

/* Is one of our fds open on @path with O_DIRECT? */
static int has_direct_fd(const char *path)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int found = 0;

	ck_assert_ptr_nonnull(d);
	while (!found && (e = readdir(d))) {
		char link[128], target[4096], info[128], line[256];
		ssize_t n;
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "/proc/self/fd/%s", e->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = 0;
		if (strcmp(target, path))
			continue;
		snprintf(info, sizeof(info), "/proc/self/fdinfo/%s", e->d_name);
		f = fopen(info, "r");
		while (f && fgets(line, sizeof(line), f)) {
			unsigned long flags;

			if (sscanf(line, "flags: %lo", &flags) == 1 && (flags & O_DIRECT))
				found = 1;
		}
		if (f)
			fclose(f);
	}
	closedir(d);
	return found;
}

enum kind { RAW, QCOW2 };

/* What every case starts from: a context, a directory, a source file of
 * pseudo-random bytes (also kept in memory) open for reading, an output path. */
struct fix {
	struct img_ctx *ctx;
	char *dir;
	char out[4096];
	uint8_t *data;
	int fd;
};

static void fix_open(struct fix *f, const char *name, size_t len, uint64_t seed)
{
	char src[4096];

	f->ctx = t_ctx();
	f->dir = t_tmpdir(name);
	snprintf(f->out, sizeof(f->out), "%s/out.img", f->dir);
	snprintf(src, sizeof(src), "%s/src", f->dir);
	f->data = malloc(len);
	ck_assert_ptr_nonnull(f->data);
	t_fill(f->data, len, seed);
	t_write_file(src, f->data, len);
	f->fd = open(src, O_RDONLY);
	ck_assert_int_ge(f->fd, 0);
}

static void fix_close(struct fix *f)
{
	close(f->fd);
	free(f->data);
	t_rmrf(f->dir);
	free(f->dir);
	img_ctx_free(f->ctx);
}

static struct img_dev *make_dev(struct img_ctx *ctx, enum kind k, const char *path)
{
	struct img_qcow2_opts o = { .size = DEV_SIZE };
	struct img_dev *dev;

	if (k == RAW)
		ck_assert_ok(img_dev_raw_create(ctx, path, DEV_SIZE, &dev), ctx);
	else
		ck_assert_ok(img_dev_qcow2_create(ctx, path, &o, &dev), ctx);
	return dev;
}

/*
 * Where an operation of @len bytes goes: right after the last one, over
 * what the last ones wrote (runs may still be in flight there), or anywhere,
 * page-aligned or not.
 */
static uint64_t pick(uint64_t len, uint64_t recent, uint64_t next)
{
	uint64_t lo, hi;

	switch (rnd(4)) {
	case 0:
		if (next + len <= DEV_SIZE)
			return next;
		break;
	case 1:
		lo = recent > (8u << 20) ? recent - (8u << 20) : 0;
		hi = IMG_MIN(next + 4096, DEV_SIZE - len);
		if (hi > lo)
			return lo + rnd(hi - lo);
		break;
	case 2:
		return IMG_ALIGN_UP(rnd(DEV_SIZE - len - 4096), 4096);
	default:
		break;
	}
	return rnd(DEV_SIZE - len);
}

/*
 * 600 random operations, as the writers mix them: copies that run on from
 * the last one (a file's blocks after the previous file's, with the last
 * block padded by zeros) or start anywhere, aligned or not, overlapping
 * earlier ones; file data from memory (small files, a tar's data); metadata
 * writes; zeros; reads in between.
 */
static void model_run(enum kind k, uint64_t seed, int direct)
{
	struct fix f;
	uint8_t *model = calloc(1, DEV_SIZE), *back = malloc(DEV_SIZE), small[9000], *data;
	uint64_t next = 0, recent = 0;
	struct img_ctx *ctx;
	const char *path;
	struct img_dev *dev;
	int fd;

	rnd_state = seed;
	fix_open(&f, "dio-model", SRC_SIZE, seed);
	ctx = f.ctx;
	path = f.out;
	data = f.data;
	fd = f.fd;
	img_ctx_set_direct_io(ctx, direct);
	dev = make_dev(ctx, k, path);
	if (direct && direct_ok(f.dir))
		ck_assert_msg(has_direct_fd(path), "no O_DIRECT descriptor on the output");
	if (!direct)
		ck_assert_msg(!has_direct_fd(path), "O_DIRECT although switched off");
	for (int op = 0; op < 600; op++) {
		unsigned what = (unsigned)rnd(100);
		uint64_t off, len, s;

		if (what < 55) { /* copy */
			len = rnd(4) ? 1 + rnd(200000) : 1 + rnd(6u << 20);
			s = rnd(SRC_SIZE - len);
			off = pick(len + 4096, recent, next);
			ck_assert_ok(img_dev_copy_from_fd(dev, fd, s, len, off), ctx);
			memcpy(model + off, data + s, len);
			recent = off;
			next = off + len;
			if (rnd(4) && next % 4096) { /* the padded last block */
				static const uint8_t zeros[4096];
				uint64_t pad = 4096 - next % 4096;

				/* as data (the writers do), or as zeros (punched, fenced) */
				if (rnd(2))
					ck_assert_ok(img_dev_write_data(dev, zeros, pad, next),
					             ctx);
				else
					ck_assert_ok(img_dev_write_zeroes(dev, next, pad), ctx);
				memset(model + next, 0, pad);
				next += pad;
			}
		} else if (what < 62) { /* file data from memory: small files, a tar's data */
			len = rnd(2) ? 1 + rnd(20000) : 65536 + rnd(1u << 20);
			s = rnd(SRC_SIZE - len);
			off = pick(len, recent, next);
			ck_assert_ok(img_dev_write_data(dev, data + s, len, off), ctx);
			memcpy(model + off, data + s, len);
			recent = off;
			next = off + len;
		} else if (what < 75) { /* metadata */
			len = 1 + rnd(sizeof(small));
			off = pick(len, recent, next);
			t_fill(small, len, seed + (uint64_t)op);
			ck_assert_ok(img_dev_pwrite(dev, small, len, off), ctx);
			memcpy(model + off, small, len);
		} else if (what < 85) { /* zeros */
			len = 1 + rnd(300000);
			off = pick(len, recent, next);
			ck_assert_ok(img_dev_write_zeroes(dev, off, len), ctx);
			memset(model + off, 0, len);
		} else { /* read back now, with runs still in flight */
			len = 1 + rnd(1u << 20);
			off = pick(len, recent, next);
			ck_assert_ok(img_dev_pread(dev, back, len, off), ctx);
			if (memcmp(back, model + off, len))
				ck_abort_msg("op %d: read [%llu, +%llu) differs from the model", op,
				             (unsigned long long)off, (unsigned long long)len);
		}
	}
	ck_assert_ok(img_dev_finish(dev), ctx);
	{
		/* A hash, if the device claims one, is the model's. */
		uint8_t got[32], want[32];

		if (img_dev_sha256(dev, got) == 0) {
			ck_assert_int_eq(k, RAW);
			img_sha256(model, DEV_SIZE, want);
			ck_assert_mem_eq(got, want, 32);
		}
	}
	img_dev_unref(dev);
	/* What is on disk now, read by another reader than the writer. */
	if (k == RAW) {
		int rfd = open(path, O_RDONLY);

		ck_assert_int_ge(rfd, 0);
		ck_assert_int_eq(img_pread_full(rfd, back, DEV_SIZE, 0), 0);
		close(rfd);
	} else {
		ck_assert_ok(img_dev_qcow2_open(ctx, path, IMG_DEV_READONLY, &dev), ctx);
		ck_assert_ok(img_dev_pread(dev, back, DEV_SIZE, 0), ctx);
		img_dev_unref(dev);
	}
	for (uint64_t i = 0; i < DEV_SIZE; i += 4096)
		if (memcmp(back + i, model + i, 4096))
			ck_abort_msg("page at %llu differs from the model", (unsigned long long)i);
	free(model);
	free(back);
	fix_close(&f);
}

START_TEST(raw_model)
{
	/* the last run: through the page cache (copy_file_range), as with --no-direct-io */
	model_run(RAW, 0x1234567 + (uint64_t)_i, _i < 3);
}
END_TEST

START_TEST(qcow2_model)
{
	model_run(QCOW2, 0x7654321 + (uint64_t)_i, _i < 3);
}
END_TEST

/*
 * A random plan written in file order, as the one-pass writers do: copies,
 * file data from memory, metadata and zeros at increasing offsets with
 * gaps of every size between them (none, inside a page, short enough to be
 * written as zeros, long enough to stay a hole, across a buffer), reads of
 * anything written so far in between. The device's SHA-256 is the model's,
 * the file is the model. Loop 3 ends with one write behind the frontier:
 * then no hash may be claimed. Loop 4: direct I/O off, no writer: no hash.
 * Loop 5: a build without a manifest: the writer takes no hash (it would
 * cost as much as the build and nobody asks for it), the file is the same.
 */
static void ordered_run(int loop)
{
	struct fix f;
	uint8_t *model = calloc(1, DEV_SIZE), *back = malloc(DEV_SIZE), small[9000];
	uint8_t got[32], want[32];
	uint64_t at = 0;
	struct img_dev *dev;
	int rfd, op;

	rnd_state = 0xabcdef + (uint64_t)loop;
	fix_open(&f, "dio-ordered", SRC_SIZE, rnd_state);
	img_ctx_set_direct_io(f.ctx, loop != 4);
	f.ctx->no_output_hash = loop == 5;
	dev = make_dev(f.ctx, RAW, f.out);
	for (op = 0; op < 400; op++) {
		static const uint64_t gaps[] = { 0,    0,     0,     1,     100,      4095,
			                         4096, 30000, 65536, 70000, 1u << 20, 5u << 20 };
		uint64_t len, s, gap = gaps[rnd(IMG_ARRAY_SIZE(gaps))];
		unsigned what = (unsigned)rnd(100);

		if (what < 40)
			len = rnd(4) ? 1 + rnd(200000) : 1 + rnd(6u << 20);
		else
			len = 1 + rnd(sizeof(small));
		if (at + gap + len > DEV_SIZE)
			break;
		at += gap;
		s = rnd(SRC_SIZE - len);
		if (what < 40) {
			ck_assert_ok(img_dev_copy_from_fd(dev, f.fd, s, len, at), f.ctx);
			memcpy(model + at, f.data + s, len);
		} else if (what < 60) {
			ck_assert_ok(img_dev_write_data(dev, f.data + s, len, at), f.ctx);
			memcpy(model + at, f.data + s, len);
		} else if (what < 80) {
			t_fill(small, len, rnd_state);
			ck_assert_ok(img_dev_pwrite(dev, small, len, at), f.ctx);
			memcpy(model + at, small, len);
		} else if (what < 90) {
			ck_assert_ok(img_dev_write_zeroes(dev, at, len), f.ctx);
		} else {
			uint64_t off = rnd(at + 1), n = IMG_MIN(1 + rnd(1u << 20), DEV_SIZE - off);

			ck_assert_ok(img_dev_pread(dev, back, n, off), f.ctx);
			if (memcmp(back, model + off, n))
				ck_abort_msg("op %d: read [%llu, +%llu) differs from the model", op,
				             (unsigned long long)off, (unsigned long long)n);
			continue;
		}
		at += len;
	}
	ck_assert_int_gt(op, 20);
	if (loop == 3) { /* one write behind the frontier */
		uint64_t off = rnd(at);

		t_fill(small, 100, 3);
		ck_assert_ok(img_dev_pwrite(dev, small, 100, off), f.ctx);
		memcpy(model + off, small, 100);
	}
	ck_assert_ok(img_dev_finish(dev), f.ctx);
	img_sha256(model, DEV_SIZE, want);
	if (loop >= 3) {
		ck_assert_int_eq(img_dev_sha256(dev, got), -ENODATA);
	} else {
		ck_assert_int_eq(img_dev_sha256(dev, got), 0);
		ck_assert_mem_eq(got, want, 32);
	}
	img_dev_unref(dev);
	rfd = open(f.out, O_RDONLY);
	ck_assert_int_ge(rfd, 0);
	ck_assert_int_eq(img_pread_full(rfd, back, DEV_SIZE, 0), 0);
	close(rfd);
	for (uint64_t i = 0; i < DEV_SIZE; i += 4096)
		if (memcmp(back + i, model + i, 4096))
			ck_abort_msg("page at %llu differs from the model", (unsigned long long)i);
	ck_assert_ok(img_sha256_file(f.ctx, f.out, got), f.ctx);
	ck_assert_mem_eq(got, want, 32);
	free(model);
	free(back);
	fix_close(&f);
}

START_TEST(ordered_model)
{
	ordered_run(_i);
}
END_TEST

/* The source shrinks under a copy: the error says so and sticks, both paths. */
START_TEST(short_source)
{
	struct img_dev *dev;
	struct fix f;

	fix_open(&f, "dio-short", 1 << 20, 9);
	img_ctx_set_direct_io(f.ctx, _i < 2); /* the last two: copy_file_range */
	dev = make_dev(f.ctx, _i & 1 ? QCOW2 : RAW, f.out);
	ck_assert_ok(img_dev_copy_from_fd(dev, f.fd, 0, 100000, 0), f.ctx);
	ck_assert_int_eq(img_dev_copy_from_fd(dev, f.fd, 1000000, 100000, 100000), -EIO);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(f.ctx), "changed while reading"));
	ck_assert_int_eq(img_dev_finish(dev), -EIO);
	img_dev_unref(dev);
	fix_close(&f);
}
END_TEST

/*
 * The file may not grow past 8 MiB (RLIMIT_FSIZE, SIGXFSZ ignored: a full
 * disk as far as the writer thread can tell): the failure of a write made
 * in the background comes back to the caller, with the output named.
 */
START_TEST(write_fails)
{
	struct rlimit old, lim = { 8 << 20, 8 << 20 };
	struct img_dev *dev;
	struct fix f;
	int r = 0;

	fix_open(&f, "dio-full", 16 << 20, 10);
	dev = make_dev(f.ctx, QCOW2, f.out);
	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &old);
	lim.rlim_max = old.rlim_max;
	setrlimit(RLIMIT_FSIZE, &lim);
	for (uint64_t off = 0; off < (16u << 20) && r == 0; off += 1 << 20)
		r = img_dev_copy_from_fd(dev, f.fd, off, 1 << 20, off);
	if (r == 0)
		r = img_dev_finish(dev);
	setrlimit(RLIMIT_FSIZE, &old);
	ck_assert_int_eq(r, -EFBIG);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(f.ctx), f.out));
	img_dev_unref(dev);
	fix_close(&f);
}
END_TEST

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("dio");
	TCase *tc;

	tc = tcase_create("raw_model");
	tcase_add_loop_test(tc, raw_model, 0, 4);
	suite_add_tcase(s, tc);
	tc = tcase_create("qcow2_model");
	tcase_add_loop_test(tc, qcow2_model, 0, 4);
	suite_add_tcase(s, tc);
	tc = tcase_create("ordered_model");
	tcase_add_loop_test(tc, ordered_model, 0, 6);
	suite_add_tcase(s, tc);
	tc = tcase_create("short_source");
	tcase_add_loop_test(tc, short_source, 0, 4);
	suite_add_tcase(s, tc);
	tc = tcase_create("write_fails");
	tcase_add_test(tc, write_fails);
	suite_add_tcase(s, tc);
	return s;
}
