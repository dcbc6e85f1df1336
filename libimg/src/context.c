/*
 * context.c -- the libimg handle: last error, log and progress callbacks,
 * reproducibility settings, cancellation.
 */
#include <stdio.h>
#include <stdlib.h>

#include "private.h"
#include "context-private.h"

int img_ctx_new(struct img_ctx **out)
{
	struct img_ctx *ctx = calloc(1, sizeof(*ctx));

	if (!ctx)
		return -ENOMEM;
	ctx->epoch = 1;
	ctx->progress_step_bytes = 8u << 20;
	*out = ctx;
	return 0;
}

void img_ctx_free(struct img_ctx *ctx)
{
	if (!ctx)
		return;
	free(ctx->seed);
	free(ctx);
}

const char *img_ctx_error(const struct img_ctx *ctx)
{
	return ctx->msg;
}

int img_ctx_errno(const struct img_ctx *ctx)
{
	return ctx->err;
}

void img_ctx_clear_error(struct img_ctx *ctx)
{
	ctx->err = 0;
	ctx->msg[0] = '\0';
}

void img_ctx_set_log(struct img_ctx *ctx, enum img_log_level level, img_log_fn fn, void *user)
{
	ctx->log_level = level;
	ctx->log_fn = fn;
	ctx->log_user = user;
}

void img_ctx_set_progress(struct img_ctx *ctx, img_progress_fn fn, void *user)
{
	ctx->progress_fn = fn;
	ctx->progress_user = user;
}

int img_ctx_set_seed(struct img_ctx *ctx, const void *seed, size_t len)
{
	void *copy = malloc(len ? len : 1);

	if (!copy)
		return -ENOMEM;
	if (len)
		memcpy(copy, seed, len);
	free(ctx->seed);
	ctx->seed = copy;
	ctx->seed_len = len;
	return 0;
}

const void *img_ctx_seed(const struct img_ctx *ctx, size_t *len)
{
	*len = ctx->seed_len;
	return ctx->seed ? ctx->seed : "";
}

void img_ctx_set_epoch(struct img_ctx *ctx, int64_t epoch)
{
	ctx->epoch = epoch;
}

void img_ctx_set_direct_io(struct img_ctx *ctx, int on)
{
	ctx->no_direct_io = !on;
}

int img_ctx_direct_io(const struct img_ctx *ctx)
{
	return !ctx->no_direct_io;
}

void img_ctx_cancel(struct img_ctx *ctx)
{
	ctx->cancelled = 1;
}

int img_ctx_cancelled(const struct img_ctx *ctx)
{
	return ctx->cancelled != 0;
}

int img_check_cancel(struct img_ctx *ctx)
{
	if (!ctx->cancelled)
		return 0;
	return img_set_error(ctx, -ECANCELED, "interrupted");
}

/* The length of the valid UTF-8 character at @s (at most @len bytes), or 0. */
static size_t utf8_char(const unsigned char *s, size_t len, uint32_t *cp)
{
	size_t n;
	uint32_t c, min;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if ((s[0] & 0xe0) == 0xc0) {
		n = 2;
		c = s[0] & 0x1f;
		min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3;
		c = s[0] & 0x0f;
		min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4;
		c = s[0] & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3f);
	}
	/* overlong forms, UTF-16 surrogates, beyond U+10FFFF */
	if (c < min || (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
		return 0;
	*cp = c;
	return n;
}

/* Characters a terminal acts on or that reorder what is shown. */
static int dangerous(uint32_t c)
{
	return c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f) || c == 0x2028 || c == 0x2029 ||
	       (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

size_t img_escape(const char *in, size_t len, char *out, size_t outsize)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)in;
	size_t o = 0, i = 0;

	if (!outsize)
		return 0;
	while (i < len) {
		uint32_t cp = 0;
		size_t n = utf8_char(s + i, len - i, &cp);
		int esc = !n || dangerous(cp);

		if (!n)
			n = 1;
		if (o + (esc ? 4 * n : n) >= outsize)
			break;
		for (size_t k = 0; k < n; k++) {
			if (esc) {
				out[o++] = '\\';
				out[o++] = 'x';
				out[o++] = hex[s[i + k] >> 4];
				out[o++] = hex[s[i + k] & 15];
			} else {
				out[o++] = (char)s[i + k];
			}
		}
		i += n;
	}
	out[o] = '\0';
	return o;
}

static int set_error_v(struct img_ctx *ctx, int err, const char *fmt, va_list ap)
{
	char raw[sizeof(ctx->msg)];
	int n;

	if (err >= 0)
		err = -EIO;
	ctx->err = err;
	n = vsnprintf(raw, sizeof(raw), fmt, ap);
	img_escape(raw, n < 0 ? 0 : IMG_MIN((size_t)n, sizeof(raw) - 1), ctx->msg,
	           sizeof(ctx->msg));
	return err;
}

int img_set_error(struct img_ctx *ctx, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err = set_error_v(ctx, err, fmt, ap);
	va_end(ap);
	return err;
}

int img_error_prefix(struct img_ctx *ctx, int err, const char *fmt, ...)
{
	char prefix[512], old[sizeof(ctx->msg)], raw[sizeof(ctx->msg)];
	va_list ap;
	int n;

	if (err >= 0)
		err = -EIO;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, ctx->msg, sizeof(old));
	if (!ctx->err) {
		ctx->err = err;
		n = snprintf(raw, sizeof(raw), "%s: %s", prefix, strerror(-err));
	} else {
		n = snprintf(raw, sizeof(raw), "%s: %s", prefix, old);
	}
	img_escape(raw, n < 0 ? 0 : IMG_MIN((size_t)n, sizeof(raw) - 1), ctx->msg,
	           sizeof(ctx->msg));
	return ctx->err;
}

void img_log(struct img_ctx *ctx, enum img_log_level level, const char *fmt, ...)
{
	char raw[1024], buf[1024];
	va_list ap;
	int n;

	if (!ctx->log_fn || level > ctx->log_level)
		return;
	va_start(ap, fmt);
	n = vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	img_escape(raw, n < 0 ? 0 : IMG_MIN((size_t)n, sizeof(raw) - 1), buf, sizeof(buf));
	ctx->log_fn(ctx->log_user, level, buf);
}

static void progress_report(struct img_ctx *ctx)
{
	if (ctx->progress_fn)
		ctx->progress_fn(ctx->progress_user, &ctx->progress);
	ctx->last_report_bytes = ctx->progress.bytes_done;
	ctx->last_report_files = ctx->progress.files_done;
}

void img_progress_phase(struct img_ctx *ctx, const char *phase, uint64_t bytes_total,
                        uint64_t files_total)
{
	ctx->progress.phase = phase;
	ctx->progress.bytes_total = bytes_total;
	ctx->progress.files_total = files_total;
	ctx->progress.bytes_done = 0;
	ctx->progress.files_done = 0;
	progress_report(ctx);
}

void img_progress_add(struct img_ctx *ctx, uint64_t bytes, uint64_t files)
{
	ctx->progress.bytes_done += bytes;
	ctx->progress.files_done += files;
	if (!ctx->progress_fn)
		return;
	if (ctx->progress.bytes_done - ctx->last_report_bytes >= ctx->progress_step_bytes ||
	    ctx->progress.files_done - ctx->last_report_files >= 1000)
		progress_report(ctx);
}
