/*
 * test-vdisk.c -- the VHD, VDI and VMDK backends (dev-vdisk*.c): the
 * planned layout (img_dev_plan) against a model, the unplanned one, and
 * what a plan refuses.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dev-vdisk.h"
#include "private.h"
#include "testutil.h"

static uint64_t rng;
/* One model case: a format, planned or not, writes in order or not. */
struct vcase {
	const char *name;
	enum img_vdisk_format f;
	uint64_t size;
	int plan;         /* declare the writes first */
	int out_of_order; /* planned: some writes behind the frontier after */
	int direct;       /* img_ctx_set_direct_io: 0 = no writer, no hash */
};

/* Sizes not a multiple of any block size: the last block is partial. */
static const struct vcase vcases[] = {
	{ "vpc-dynamic", IMG_VDISK_VPC_DYNAMIC, (21 << 20) + 512 * 7, 1, 0, 1 },
	{ "vdi", IMG_VDISK_VDI, (13 << 20) + 512 * 3, 1, 0, 1 },
	{ "vmdk", IMG_VDISK_VMDK_SPARSE, (9 << 20) + 512 * 5, 1, 0, 1 },
	{ "vpc-dynamic", IMG_VDISK_VPC_DYNAMIC, 16 << 20, 1, 1, 1 },
	{ "vdi", IMG_VDISK_VDI, 12 << 20, 1, 1, 1 },
	{ "vmdk", IMG_VDISK_VMDK_SPARSE, 12 << 20, 1, 1, 1 },
	{ "vdi", IMG_VDISK_VDI, 12 << 20, 1, 0, 0 },
	{ "vpc-dynamic", IMG_VDISK_VPC_DYNAMIC, 12 << 20, 1, 0, 0 },
	/* formats that ignore a plan: fixed VHD is in order anyway, a
	 * stream deflates its grains as the writes pass them (in order) */
	{ "vpc-fixed", IMG_VDISK_VPC_FIXED, (10 << 20) + 512, 1, 0, 1 },
	{ "vmdk-stream", IMG_VDISK_VMDK_STREAM, (6 << 20) + 512, 1, 0, 1 },
	{ "vmdk-stream", IMG_VDISK_VMDK_STREAM, 7 << 20, 1, 1, 1 },
	{ "vmdk-stream", IMG_VDISK_VMDK_STREAM, 7 << 20, 0, 0, 1 },
	/* unplanned: blocks in write order, tables at finish (read back) */
	{ "vpc-dynamic", IMG_VDISK_VPC_DYNAMIC, 14 << 20, 0, 0, 1 },
	{ "vdi", IMG_VDISK_VDI, 14 << 20, 0, 0, 1 },
	{ "vmdk", IMG_VDISK_VMDK_SPARSE, 14 << 20, 0, 0, 1 },
	{ "vpc-fixed", IMG_VDISK_VPC_FIXED, 14 << 20, 0, 0, 1 },
};

/* Every byte of @path, read by our reader and by qemu's, is the model's. */
static void model_compare(struct img_ctx *ctx, const struct vcase *vc, const char *dir,
                          const char *path, const uint8_t *model)
{
	size_t chunk = 1 << 20, n;
	uint8_t *back = malloc(chunk), *r;
	struct img_dev *d;

	ck_assert_ok(img_dev_vdisk_open(ctx, path, &d), ctx);
	ck_assert_uint_eq(img_dev_size(d), vc->size);
	for (uint64_t off = 0; off < vc->size; off += chunk) {
		n = (size_t)IMG_MIN(chunk, vc->size - off);
		ck_assert_ok(img_dev_pread(d, back, n, off), ctx);
		for (size_t i = 0; i < n; i += 512)
			if (memcmp(back + i, model + off + i, IMG_MIN(512, n - i)))
				ck_abort_msg("%s: sector at %llu differs from the model", vc->name,
				             (unsigned long long)(off + i));
	}
	img_dev_unref(d);
	free(back);
	if (t_have("qemu-img")) {
		const char *q = img_vdisk_qemu_name(vc->f);
		char raw[4096];
		char *cv[] = { "qemu-img", "convert",    "-f", (char *)q, "-O",
			       "raw",      (char *)path, raw,  NULL };
		char *ck[] = { "qemu-img", "check", "-q", "-f", (char *)q, (char *)path, NULL };
		char *out = NULL;

		snprintf(raw, sizeof(raw), "%s/back.raw", dir);
		ck_assert_int_eq(t_run(cv, NULL), 0);
		r = t_read_file(raw, &n);
		ck_assert_uint_eq(n, vc->size);
		ck_assert_msg(!memcmp(r, model, n), "%s: qemu-img convert differs from the model",
		              vc->name);
		free(r);
		unlink(raw);
		/* qemu checks VDI and VMDK (not VHD) */
		if (strcmp(q, "vpc")) {
			ck_assert_msg(t_run(ck, &out) == 0, "qemu-img check %s: %s", vc->name,
			              out ? out : "");
			free(out);
		}
	}
}

/* Where a new device puts its slots (the reader does not know). */
struct slots {
	uint64_t data_start, in_slot, stride, tail;
};

/*
 * Planned, the blocks the plan touched got their slots in virtual order
 * from the first slot on, one after the other, and no other block has one;
 * the file ends at the last slot (a dynamic VHD: and its footer).
 */
static void check_layout(struct img_ctx *ctx, const struct vcase *vc, const char *path,
                         const uint8_t *touched, const struct slots *sl)
{
	struct img_dev *d;
	const struct vdisk *v;
	uint64_t k = 0;
	struct stat st;

	ck_assert_ok(img_dev_vdisk_open(ctx, path, &d), ctx);
	v = img_dev_priv(d);
	for (uint64_t b = 0; b < v->nblocks; b++) {
		ck_assert_msg(!v->map[b] == !touched[b], "%s: block %llu %s", vc->name,
		              (unsigned long long)b,
		              touched[b] ? "was planned but has no slot" : "has a slot, unplanned");
		if (!v->map[b])
			continue;
		ck_assert_msg(v->map[b] == sl->data_start + k * sl->stride + sl->in_slot,
		              "%s: block %llu is not in slot %llu", vc->name, (unsigned long long)b,
		              (unsigned long long)k);
		if (vc->f == IMG_VDISK_VPC_DYNAMIC) { /* its sector bitmap: all in the block */
			uint8_t bm[512];

			ck_assert_int_eq(img_pread_full(v->fd, bm, sizeof(bm), v->map[b] - 512), 0);
			for (size_t i = 0; i < sizeof(bm); i++)
				ck_assert_msg(bm[i] == 0xff, "%s: block %llu's bitmap", vc->name,
				              (unsigned long long)b);
		}
		k++;
	}
	img_dev_unref(d);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq((uint64_t)st.st_size, sl->data_start + k * sl->stride + sl->tail);
}

/*
 * A random plan: ranges with gaps of every size between them (none, inside
 * a block, across blocks), written in plan order as the one-pass writers
 * do (copies, data, metadata, zeros, pieces left out), with reads in
 * between and zeros written outside the plan; some cases then write behind
 * the frontier. Unplanned cases write in random order. Our reader and
 * qemu's give the model back, qemu-img check is happy, the device's hash
 * is the file's (or it claims none, where it cannot know), and a planned
 * file is laid out as dev-vdisk.h says.
 */
START_TEST(plan_model)
{
	const struct vcase *vc = &vcases[_i];
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("vdisk-plan"), path[4096], src[4096];
	struct img_vdisk_opts o = { .format = vc->f, .size = vc->size };
	uint64_t at = 0, nplan = 0, ranges[64][2], bs = 0;
	size_t srclen = 3 << 20;
	uint8_t *model = calloc(1, (size_t)vc->size), *data = malloc(srclen), got[32], want[32];
	uint8_t *touched = NULL;
	struct slots sl;
	struct img_dev *d;
	int srcfd, zfd, r;

	rng = 0x7d15 + (uint64_t)_i * 104729;
	ck_assert_ptr_nonnull(model);
	snprintf(path, sizeof(path), "%s/p.%s", dir, vc->name);
	snprintf(src, sizeof(src), "%s/src", dir);
	t_fill(data, srclen, rng);
	t_write_file(src, data, srclen);
	srcfd = open(src, O_RDONLY);
	ck_assert_int_ge(srcfd, 0);
	img_ctx_set_direct_io(ctx, vc->direct);
	ck_assert_ok(img_dev_vdisk_create(ctx, path, &o, &d), ctx);
	{
		const struct vdisk *v = img_dev_priv(d);

		bs = v->bs;
		sl = (struct slots){ v->data_start, v->data_in_slot, v->stride,
			             vc->f == IMG_VDISK_VPC_DYNAMIC ? 512 : 0 };
	}
	if (bs)
		touched = calloc(1, (size_t)IMG_DIV_ROUND_UP(vc->size, bs));
	while (nplan < 64) {
		static const uint64_t gaps[] = { 0, 0, 1, 100, 4096, 65536, 300000, 3 << 20 };
		uint64_t gap = gaps[t_rnd(&rng) % IMG_ARRAY_SIZE(gaps)],
		         len = 1 + t_rnd(&rng) % 700000;

		if (at + gap + len > vc->size)
			break;
		at += gap;
		ranges[nplan][0] = at;
		ranges[nplan][1] = len;
		if (vc->plan)
			ck_assert_ok(img_dev_plan(d, at, len), ctx);
		for (uint64_t b = bs ? at / bs : 0; bs && b <= (at + len - 1) / bs; b++)
			touched[b] = 1;
		nplan++;
		at += len;
	}
	ck_assert_uint_gt(nplan, 5);
	if (vc->plan)
		ck_assert_ok(img_dev_plan_done(d), ctx);
	for (uint64_t j = 0; j < nplan; j++) {
		/* unplanned: the ranges in a random order */
		uint64_t i = vc->plan ? j : t_rnd(&rng) % nplan;
		uint64_t off = ranges[i][0], end = off + ranges[i][1];

		if (vc->plan && (i == nplan / 2 || i == nplan - 1))
			continue; /* planned, never written: slots of zeros */

		t_dev_model_range(ctx, d, model, srcfd, data, srclen, off, end, &rng);
		/* a read of anything so far */
		t_dev_model_maybe_read(ctx, d, model, vc->size, end, &rng);
	}
	/* Zeros past the last range: fine planned or not, and nothing is allocated
	 * (write_zeroes; pwrite of zeros only where a plan makes it skip). */
	if (vc->plan && bs && IMG_ALIGN_UP(at, bs) + 2 * bs <= vc->size) {
		uint64_t z0 = IMG_ALIGN_UP(at, bs);
		uint8_t *z = calloc(1, (size_t)bs);

		ck_assert_ok(img_dev_pwrite(d, z, (size_t)bs, z0), ctx);
		zfd = open("/dev/zero", O_RDONLY);
		ck_assert_int_ge(zfd, 0);
		ck_assert_ok(img_dev_copy_from_fd(d, zfd, 0, 1000, z0 + bs), ctx);
		close(zfd);
		ck_assert_ok(img_dev_write_zeroes(d, z0, 2 * bs), ctx);
		free(z);
	}
	if (vc->out_of_order)
		for (int k = 0; k < 5; k++) {
			uint64_t i = t_rnd(&rng) % nplan, n = IMG_MIN(ranges[i][1], 5000);

			t_dev_model_write(ctx, d, model, srcfd, data, srclen, ranges[i][0], n,
			                  &rng);
		}
	ck_assert_ok(img_dev_finish(d), ctx);
	close(srcfd);
	r = img_dev_sha256(d, got);
	/* Hashed as written exactly where everything went out in order. */
	if (vc->direct && !vc->out_of_order && vc->plan) {
		ck_assert_msg(r == 0, "%s: not hashed as written", vc->name);
		ck_assert_ok(img_sha256_file(ctx, path, want), ctx);
		ck_assert_mem_eq(got, want, 32);
	} else if (r == 0) {
		/* a fixed VHD written out of order, and any claim, must be right */
		ck_assert_msg(vc->f == IMG_VDISK_VPC_FIXED, "%s: claims a hash", vc->name);
		ck_assert_ok(img_sha256_file(ctx, path, want), ctx);
		ck_assert_mem_eq(got, want, 32);
	} else {
		ck_assert_int_eq(r, -ENODATA);
	}
	img_dev_unref(d);
	model_compare(ctx, vc, dir, path, model);
	if (vc->plan && bs && vc->f != IMG_VDISK_VMDK_STREAM)
		check_layout(ctx, vc, path, touched, &sl);
	free(touched);
	free(model);
	free(data);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* Counts the lines saying a stream went back to staging. */
static void count_staged(void *user, enum img_log_level level, const char *msg)
{
	(void)level;
	if (strstr(msg, "written out of order"))
		++*(int *)user;
}

/*
 * A streamOptimized VMDK streams while the writes come in order and
 * stages its grains back on the first write behind: the same ascending
 * writes (every kind, reads of everything so far) on three images, the
 * second also rewriting its first data byte with itself halfway, the
 * third after the last write. All three files are the same bytes, only
 * the first is hashed as written (and right), the others each staged
 * once; reader and qemu-img give the model back.
 */
START_TEST(stream_same_bytes)
{
	static const struct vcase vc = {
		"vmdk-stream", IMG_VDISK_VMDK_STREAM, (11 << 20) + 1024, 1, 0, 1
	};
	struct img_ctx *ctx[3];
	char *dir = t_tmpdir("vdisk-stream"), path[3][4096], src[4096];
	struct img_vdisk_opts o = { .format = vc.f, .size = vc.size };
	size_t srclen = 3 << 20;
	uint8_t *model = calloc(1, (size_t)vc.size), *data = malloc(srclen), got[32], want[32];
	struct img_dev *d[3];
	uint64_t at = 0;
	int srcfd, staged[3] = { 0 }, nw = 0;

	rng = 0x5e7;
	t_fill(data, srclen, rng);
	for (size_t j = srclen / 2; j < srclen; j++) /* and deflatable text */
		if (t_rnd(&rng) % 32)
			data[j] = (uint8_t) "streamOptimized "[j % 16];
	snprintf(src, sizeof(src), "%s/src", dir);
	t_write_file(src, data, srclen);
	srcfd = open(src, O_RDONLY);
	ck_assert_int_ge(srcfd, 0);
	for (int k = 0; k < 3; k++) {
		ctx[k] = t_ctx();
		ck_assert_ok(img_ctx_set_seed(ctx[k], "vdisk-stream", 12), ctx[k]); /* one CID */
		img_ctx_set_log(ctx[k], IMG_LOG_INFO, count_staged, &staged[k]);
		/* the same name (the descriptor holds it), in a directory each */
		snprintf(path[k], sizeof(path[k]), "%s/%d", dir, k);
		ck_assert_int_eq(mkdir(path[k], 0755), 0);
		snprintf(path[k], sizeof(path[k]), "%s/%d/s.vmdk", dir, k);
		ck_assert_ok(img_dev_vdisk_create(ctx[k], path[k], &o, &d[k]), ctx[k]);
	}
	for (;; nw++) {
		static const uint64_t gaps[] = { 0, 0, 1, 100, 4096, 65536, 300000, 3 << 20 };
		uint64_t gap = gaps[t_rnd(&rng) % IMG_ARRAY_SIZE(gaps)],
		         len = 1 + t_rnd(&rng) % 300000;
		uint64_t r0 = rng;

		if (at + gap + len > vc.size)
			break;
		at += gap;
		for (int k = 0; k < 3; k++) {
			rng = r0;
			t_dev_model_write(ctx[k], d[k], model, srcfd, data, srclen, at, len, &rng);
		}
		at += len;
		if (nw % 4 == 3)
			t_dev_model_check(ctx[0], d[0], model, 0, at);
		if (nw == 5)
			t_dev_rewrite_data(d[1], model, at);
	}
	ck_assert_int_gt(nw, 5);
	t_dev_rewrite_data(d[2], model, vc.size);
	close(srcfd);
	for (int k = 0; k < 3; k++) {
		ck_assert_ok(img_dev_finish(d[k]), ctx[k]);
		ck_assert_int_eq(img_dev_sha256(d[k], got), k ? -ENODATA : 0);
		if (!k) {
			ck_assert_ok(img_sha256_file(ctx[0], path[0], want), ctx[0]);
			ck_assert_mem_eq(got, want, 32);
		}
		img_dev_unref(d[k]);
		ck_assert_int_eq(staged[k], k ? 1 : 0);
	}
	{
		size_t n0, n;
		uint8_t *f0 = t_read_file(path[0], &n0);

		for (int k = 1; k < 3; k++) {
			uint8_t *f = t_read_file(path[k], &n);

			ck_assert_msg(n == n0 && !memcmp(f, f0, n), "%s differs from %s", path[k],
			              path[0]);
			free(f);
		}
		free(f0);
	}
	model_compare(ctx[0], &vc, dir, path[0], model);
	for (int k = 0; k < 3; k++)
		img_ctx_free(ctx[k]);
	free(model);
	free(data);
	t_rmrf(dir);
	free(dir);
}
END_TEST

/*
 * Planned, data for a block outside the plan is refused with a message
 * naming its offset (and sticks); zeros there, as data, copied or
 * write_zeroes, are fine. A stream and a fixed VHD ignore the plan.
 */
START_TEST(plan_refused)
{
	static const enum img_vdisk_format fs[] = { IMG_VDISK_VPC_DYNAMIC, IMG_VDISK_VDI,
		                                    IMG_VDISK_VMDK_SPARSE };
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("vdisk-planref"), path[4096], src[4096];
	uint8_t buf[4096], z[4096], got[32], want[32];
	struct img_dev *d;
	int fd;

	snprintf(src, sizeof(src), "%s/src", dir);
	t_fill(buf, sizeof(buf), 5);
	t_write_file(src, buf, sizeof(buf));
	memset(z, 0, sizeof(z));
	for (size_t i = 0; i < IMG_ARRAY_SIZE(fs); i++) {
		struct img_vdisk_opts o = { .format = fs[i], .size = 16 << 20 };

		snprintf(path, sizeof(path), "%s/r%zu", dir, i);
		ck_assert_ok(img_dev_vdisk_create(ctx, path, &o, &d), ctx);
		ck_assert_ok(img_dev_plan(d, 0, 4096), ctx);
		ck_assert_ok(img_dev_plan_done(d), ctx);
		ck_assert_ok(img_dev_pwrite(d, buf, sizeof(buf), 0), ctx);
		ck_assert_ok(img_dev_pwrite(d, z, sizeof(z), 8 << 20), ctx);
		ck_assert_ok(img_dev_write_zeroes(d, 4 << 20, 1 << 20), ctx);
		fd = open(src, O_RDONLY);
		ck_assert_int_eq(img_dev_copy_from_fd(d, fd, 0, sizeof(buf), 10 << 20), -EINVAL);
		close(fd);
		ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "outside the planned layout"));
		ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "virtual offset 10485760"));
		ck_assert_int_eq(img_dev_finish(d), -EINVAL);
		img_dev_unref(d);

		ck_assert_ok(img_dev_vdisk_create(ctx, path, &o, &d), ctx);
		ck_assert_ok(img_dev_plan(d, 0, 4096), ctx);
		ck_assert_ok(img_dev_plan_done(d), ctx);
		buf[0] ^= 1;
		ck_assert_int_eq(img_dev_write_data(d, buf, 100, (12 << 20) + 7), -EINVAL);
		ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "virtual offset 12582919"));
		img_dev_unref(d);
	}
	for (int k = 0; k < 2; k++) {
		struct img_vdisk_opts o = { .format =
			                        k ? IMG_VDISK_VMDK_STREAM : IMG_VDISK_VPC_FIXED,
			                    .size = 4 << 20 };
		uint8_t back[4096];

		snprintf(path, sizeof(path), "%s/ign%d", dir, k);
		ck_assert_ok(img_dev_vdisk_create(ctx, path, &o, &d), ctx);
		ck_assert_ok(img_dev_plan(d, 0, 4096), ctx);
		ck_assert_ok(img_dev_plan_done(d), ctx);
		ck_assert_ok(img_dev_pwrite(d, buf, sizeof(buf), 2 << 20), ctx);
		/* zeros over data written in order: behind the frontier, so no
		 * hash may be claimed that the file does not have */
		ck_assert_ok(img_dev_write_zeroes(d, 2 << 20, 512), ctx);
		ck_assert_ok(img_dev_finish(d), ctx);
		if (img_dev_sha256(d, got) == 0) {
			ck_assert_ok(img_sha256_file(ctx, path, want), ctx);
			ck_assert_mem_eq(got, want, 32);
		}
		img_dev_unref(d);
		memset(buf, 0, 512);
		ck_assert_ok(img_dev_vdisk_open(ctx, path, &d), ctx);
		ck_assert_ok(img_dev_pread(d, back, sizeof(back), 2 << 20), ctx);
		ck_assert_mem_eq(back, buf, sizeof(buf));
		img_dev_unref(d);
	}
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("vdisk");
	TCase *tc;

	tc = tcase_create("plan_model");
	tcase_add_loop_test(tc, plan_model, 0, (int)IMG_ARRAY_SIZE(vcases));
	suite_add_tcase(s, tc);
	tc = tcase_create("stream_same_bytes");
	tcase_add_test(tc, stream_same_bytes);
	suite_add_tcase(s, tc);
	tc = tcase_create("plan_refused");
	tcase_add_test(tc, plan_refused);
	suite_add_tcase(s, tc);
	return s;
}
