/* testutil.h -- helpers for the unit tests. */
#ifndef IMG_TESTUTIL_H
#define IMG_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <check.h>
#include <img/context.h>

/* A fresh directory for this test under $IMG_TEST_TMP (or /tmp); malloc'ed. */
char *t_tmpdir(const char *name);
/* rm -rf @path (no shell). */
void t_rmrf(const char *path);
/* Run a command (argv, no shell); return its exit status, -1 if it could not run.
 * If @out is not NULL, stdout is captured into a malloc'ed NUL-terminated buffer. */
int t_run(char *const argv[], char **out);
/* Is @prog on PATH? */
int t_have(const char *prog);
/* Deterministic pseudo-random bytes (xorshift) for test data. */
void t_fill(void *buf, size_t len, uint64_t seed);
/* One xorshift step of *@state (never 0 unless *@state is): the next number. */
uint64_t t_rnd(uint64_t *state);
/* A whole file, malloc'ed (one spare byte), its length in *@len; fails the test when unreadable. */
uint8_t *t_read_file(const char *path, size_t *len);
/*
 * A model test's write of [@off, @off+@len) to @d, of a kind drawn from
 * *@rng, mirrored into @model: left out, write_zeroes, zeros as data, or
 * bytes of @src (@srclen bytes, the content of @srcfd) by copy_from_fd,
 * write_data or pwrite.
 */
struct img_dev;
void t_dev_model_write(struct img_ctx *ctx, struct img_dev *d, uint8_t *model, int srcfd,
                       const uint8_t *src, size_t srclen, uint64_t off, uint64_t len,
                       uint64_t *rng);
/* t_dev_model_write() over [@off, @end) in pieces of random sizes. */
void t_dev_model_range(struct img_ctx *ctx, struct img_dev *d, uint8_t *model, int srcfd,
                       const uint8_t *src, size_t srclen, uint64_t off, uint64_t end,
                       uint64_t *rng);
/* @d reads [@off, @off+@len) as @model has it, or the test fails. */
void t_dev_model_check(struct img_ctx *ctx, struct img_dev *d, const uint8_t *model, uint64_t off,
                       uint64_t len);
/* One time in three, t_dev_model_check() of a random range starting below
 * @end (at most 300000 bytes, none past @size). */
void t_dev_model_maybe_read(struct img_ctx *ctx, struct img_dev *d, const uint8_t *model,
                            uint64_t size, uint64_t end, uint64_t *rng);
/* Rewrite @d's first non-zero byte below @end with itself (the model
 * says where): a write behind whatever came after it. */
void t_dev_rewrite_data(struct img_dev *d, const uint8_t *model, uint64_t end);
/* A new context that fails the test if it cannot be made. */
struct img_ctx *t_ctx(void);
/* Write a file (creating parents is the caller's job). */
void t_write_file(const char *path, const void *buf, size_t len);

#define ck_assert_ok(expr, ctx)                                                                    \
	do {                                                                                       \
		int r_ = (expr);                                                                   \
		ck_assert_msg(r_ >= 0, "%s failed: %d: %s", #expr, r_, img_ctx_error(ctx));        \
	} while (0)

#endif
