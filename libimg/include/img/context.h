/*
 * context.h -- the handle every libimg call takes.
 *
 * A context carries the message of the last failure, the log and progress
 * callbacks, the reproducibility settings (seed and epoch, see repro.h) and a
 * cancellation flag. It is not thread safe: one context per thread of work.
 *
 * Calling sequence:
 *   struct img_ctx *ctx;
 *   img_ctx_new(&ctx);
 *   img_ctx_set_seed(ctx, "my-seed", 7);     (optional; default: empty seed)
 *   img_ctx_set_epoch(ctx, 1);                (optional; default 1)
 *   ... libimg calls; on a negative return, img_ctx_error(ctx) says why ...
 *   img_ctx_free(ctx);
 *
 * The library never prints, exits or reads the environment: the tools map
 * SOURCE_DATE_EPOCH, -q/-v and the terminal into these settings.
 */
#ifndef IMG_CONTEXT_H
#define IMG_CONTEXT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Marks what libimg.so exports: the library is built with hidden visibility,
 * so a function is part of the ABI exactly when a public header declares it
 * with IMG_EXPORT (tests/integration/abi.sh checks the library against them).
 */
#if defined(__GNUC__)
#define IMG_EXPORT __attribute__((visibility("default")))
#else
#define IMG_EXPORT
#endif

struct img_ctx;

enum img_log_level {
	IMG_LOG_ERROR = 0,
	IMG_LOG_WARN = 1,
	IMG_LOG_INFO = 2,
	IMG_LOG_DEBUG = 3,
};

/* Progress of a long operation. Counters only grow; totals are 0 when unknown. */
struct img_progress {
	const char *phase;   /* short name of the current step, e.g. "ext4" */
	uint64_t bytes_done; /* file data bytes written so far */
	uint64_t bytes_total;
	uint64_t files_done; /* entries written so far */
	uint64_t files_total;
};

/*
 * Make input bytes safe to show on a terminal: control bytes (0x00-0x1f,
 * 0x7f), C1 controls (U+0080-U+009F), bidirectional overrides and line
 * separators (U+202A-U+202E, U+2066-U+2069, U+2028, U+2029) and every byte
 * that is not part of valid UTF-8 become "\xNN", one per byte; everything
 * else is copied. A backslash is kept as is, so escaping twice changes
 * nothing (the library escapes its messages and the tools escape what they
 * print). Writes at most @outsize bytes including the NUL, never cutting an
 * escape or a character in two; returns the length written.
 */
IMG_EXPORT size_t img_escape(const char *in, size_t len, char *out, size_t outsize);

typedef void (*img_log_fn)(void *user, enum img_log_level level, const char *msg);
typedef void (*img_progress_fn)(void *user, const struct img_progress *p);

/* Create a context with default settings (seed "", epoch 1, no callbacks). */
IMG_EXPORT int img_ctx_new(struct img_ctx **out);
/* Free a context. NULL is allowed. */
IMG_EXPORT void img_ctx_free(struct img_ctx *ctx);

/*
 * The message of the last failure ("" when none). Valid until the next libimg
 * call on this context. Messages (and log lines) are passed through
 * img_escape(): they hold no control byte and no invalid UTF-8, whatever
 * names or lines of the input they quote.
 */
IMG_EXPORT const char *img_ctx_error(const struct img_ctx *ctx);
/* The negative errno of the last failure (0 when none). */
IMG_EXPORT int img_ctx_errno(const struct img_ctx *ctx);
/* Forget the last failure. */
IMG_EXPORT void img_ctx_clear_error(struct img_ctx *ctx);

/* Messages at or below @level go to @fn. Default: no log. */
IMG_EXPORT void img_ctx_set_log(struct img_ctx *ctx, enum img_log_level level, img_log_fn fn,
                                void *user);
/* Progress reports go to @fn, at most every few MiB or files. Default: none. */
IMG_EXPORT void img_ctx_set_progress(struct img_ctx *ctx, img_progress_fn fn, void *user);

/* The reproducibility seed: all IDs derive from (seed, role). Bytes are copied. */
IMG_EXPORT int img_ctx_set_seed(struct img_ctx *ctx, const void *seed, size_t len);
/* The seed as set (borrowed, valid until the next set_seed). */
IMG_EXPORT const void *img_ctx_seed(const struct img_ctx *ctx, size_t *len);
/* The epoch every timestamp takes (SOURCE_DATE_EPOCH); default 1. */
IMG_EXPORT void img_ctx_set_epoch(struct img_ctx *ctx, int64_t epoch);
/*
 * Outputs made with this context write file data with O_DIRECT from a
 * writer thread (default, @on = 1), or through the page cache with
 * copy_file_range and a final fsync (@on = 0: where direct I/O is slow, or
 * to keep a fresh image cached for an immediate boot). Same bytes either way.
 */
IMG_EXPORT void img_ctx_set_direct_io(struct img_ctx *ctx, int on);
IMG_EXPORT int img_ctx_direct_io(const struct img_ctx *ctx);

/*
 * Ask the running operation to stop (async-signal-safe: it only sets a flag).
 * Long loops check it and fail with -ECANCELED.
 */
IMG_EXPORT void img_ctx_cancel(struct img_ctx *ctx);
IMG_EXPORT int img_ctx_cancelled(const struct img_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif
