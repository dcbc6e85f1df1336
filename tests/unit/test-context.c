/* test-context.c -- the img_ctx: errors, callbacks, settings, cancellation. */
#include <stdio.h>
#include <stdlib.h>

#include "private.h"
#include "testutil.h"

START_TEST(error_set_and_prefix)
{
	struct img_ctx *ctx = t_ctx();

	ck_assert_str_eq(img_ctx_error(ctx), "");
	ck_assert_int_eq(img_ctx_errno(ctx), 0);
	ck_assert_int_eq(img_set_error(ctx, -ENOENT, "closure.txt:%d: missing", 12), -ENOENT);
	ck_assert_str_eq(img_ctx_error(ctx), "closure.txt:12: missing");
	ck_assert_int_eq(img_ctx_errno(ctx), -ENOENT);
	/* The newest message replaces the old one. */
	ck_assert_int_eq(img_set_error(ctx, -EIO, "later"), -EIO);
	ck_assert_str_eq(img_ctx_error(ctx), "later");
	img_set_error(ctx, -EINVAL, "forced");
	ck_assert_str_eq(img_ctx_error(ctx), "forced");
	img_error_prefix(ctx, -EINVAL, "building %s", "x");
	ck_assert_str_eq(img_ctx_error(ctx), "building x: forced");
	img_ctx_clear_error(ctx);
	ck_assert_str_eq(img_ctx_error(ctx), "");
	/* A positive "errno" is turned into a failure, never a success. */
	ck_assert_int_lt(img_set_error(ctx, 5, "odd"), 0);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(error_prefix_without_message)
{
	struct img_ctx *ctx = t_ctx();

	img_error_prefix(ctx, -ENOSPC, "writing out.img");
	ck_assert_str_eq(img_ctx_error(ctx), "writing out.img: No space left on device");
	img_ctx_free(ctx);
}
END_TEST

START_TEST(error_long_message_truncated)
{
	struct img_ctx *ctx = t_ctx();
	char *big = malloc(10000);

	memset(big, 'a', 9999);
	big[9999] = 0;
	img_set_error(ctx, -EINVAL, "%s", big);
	ck_assert_uint_lt(strlen(img_ctx_error(ctx)), 4096);
	ck_assert_uint_gt(strlen(img_ctx_error(ctx)), 1000);
	free(big);
	img_ctx_free(ctx);
}
END_TEST

struct seen {
	int logs, progress;
	char last[256];
	uint64_t bytes;
};

static void on_log(void *user, enum img_log_level level, const char *msg)
{
	struct seen *s = user;

	(void)level;
	s->logs++;
	snprintf(s->last, sizeof(s->last), "%s", msg);
}

static void on_progress(void *user, const struct img_progress *p)
{
	struct seen *s = user;

	s->progress++;
	s->bytes = p->bytes_done;
}

START_TEST(log_levels)
{
	struct img_ctx *ctx = t_ctx();
	struct seen s = { 0 };

	img_log(ctx, IMG_LOG_ERROR, "nobody listens");
	img_ctx_set_log(ctx, IMG_LOG_WARN, on_log, &s);
	img_log(ctx, IMG_LOG_INFO, "too chatty");
	ck_assert_int_eq(s.logs, 0);
	img_log(ctx, IMG_LOG_WARN, "disk %d", 3);
	ck_assert_int_eq(s.logs, 1);
	ck_assert_str_eq(s.last, "disk 3");
	img_ctx_free(ctx);
}
END_TEST

START_TEST(progress_rate_limited)
{
	struct img_ctx *ctx = t_ctx();
	struct seen s = { 0 };

	img_ctx_set_progress(ctx, on_progress, &s);
	img_progress_phase(ctx, "test", 100 << 20, 0);
	ck_assert_int_eq(s.progress, 1);
	for (int i = 0; i < 100; i++)
		img_progress_add(ctx, 1 << 20, 1);
	/* 100 MiB in 1 MiB steps: reported every 8 MiB, not 100 times. */
	ck_assert_int_ge(s.progress, 10);
	ck_assert_int_le(s.progress, 14);
	ck_assert_uint_ge(s.bytes, 96u << 20);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(settings_and_cancel)
{
	struct img_ctx *ctx = t_ctx();
	size_t len;
	const void *seed;

	seed = img_ctx_seed(ctx, &len);
	ck_assert_uint_eq(len, 0);
	ck_assert_ptr_nonnull(seed);
	ck_assert_int_eq(img_ctx_set_seed(ctx, "abc\0def", 7), 0);
	seed = img_ctx_seed(ctx, &len);
	ck_assert_uint_eq(len, 7);
	ck_assert_mem_eq(seed, "abc\0def", 7);
	ck_assert_int_eq(img_check_cancel(ctx), 0);
	img_ctx_cancel(ctx);
	ck_assert(img_ctx_cancelled(ctx));
	ck_assert_int_eq(img_check_cancel(ctx), -ECANCELED);
	ck_assert_str_eq(img_ctx_error(ctx), "interrupted");
	img_ctx_free(ctx);
	img_ctx_free(NULL);
}
END_TEST

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("context");
	TCase *tc;

	tc = tcase_create("errors");
	tcase_add_test(tc, error_set_and_prefix);
	tcase_add_test(tc, error_prefix_without_message);
	tcase_add_test(tc, error_long_message_truncated);
	suite_add_tcase(s, tc);
	tc = tcase_create("callbacks");
	tcase_add_test(tc, log_levels);
	tcase_add_test(tc, progress_rate_limited);
	suite_add_tcase(s, tc);
	tc = tcase_create("settings");
	tcase_add_test(tc, settings_and_cancel);
	suite_add_tcase(s, tc);
	return s;
}
