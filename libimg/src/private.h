/*
 * private.h -- what libimg's own files share and nobody else may include.
 */
#ifndef IMG_PRIVATE_H
#define IMG_PRIVATE_H

#ifndef IMG_BUILDING_LIBIMG
#error "private.h is internal to libimg; include the public <img/*.h> headers"
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <img/context.h>
#include <img/dev.h>

#define IMG_ARRAY_SIZE(a)      (sizeof(a) / sizeof((a)[0]))
#define IMG_MIN(a, b)          ((a) < (b) ? (a) : (b))
#define IMG_MAX(a, b)          ((a) > (b) ? (a) : (b))
#define IMG_DIV_ROUND_UP(a, b) (((a) + (b)-1) / (b))
#define IMG_ALIGN_UP(a, b)     (IMG_DIV_ROUND_UP(a, b) * (b))

#if defined(__GNUC__)
#define IMG_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define IMG_PRINTF(f, a)
#endif

/*
 * Record a failure on the context and return @err (a negative errno), so a
 * caller can write `return img_set_error(ctx, -EINVAL, "...")`. The newest
 * message replaces the old one: a caller that only passes an error up does
 * not set it again, and one that adds context uses img_error_prefix().
 */
int img_set_error(struct img_ctx *ctx, int err, const char *fmt, ...) IMG_PRINTF(3, 4);
/* Prefix the current message: "what: <old message>". */
int img_error_prefix(struct img_ctx *ctx, int err, const char *fmt, ...) IMG_PRINTF(3, 4);
void img_log(struct img_ctx *ctx, enum img_log_level level, const char *fmt, ...) IMG_PRINTF(3, 4);

/*
 * A device's write tap (dev.c): from now on every write the front end takes
 * that reaches into [@off, @off+@len) of @dev is shown to @fn, clipped to
 * the range, as it is made: the bytes, or @buf NULL for zeros
 * (write_zeroes, a source's holes). File data copied from a descriptor into
 * the range go through memory then, so @fn sees exactly the bytes written.
 * Writes through a slice reach its parent's tap. One tap per device; @fn
 * NULL removes it. The tap cannot fail a write.
 */
typedef void (*img_dev_tap_fn)(void *user, const void *buf, uint64_t len, uint64_t off);
void img_dev_set_tap(struct img_dev *dev, uint64_t off, uint64_t len, img_dev_tap_fn fn,
                     void *user);

/*
 * A file backend's finish (dev.c): the output's SHA-256 from its writer
 * @dio when every byte of the file's @size went out in order (kept for
 * img_dev_sha256()), else the writer drained and the hash left unknown.
 * 0 or the first write failure. @dio NULL (no writer): drained, no hash.
 */
struct img_dio;
int img_dev_finish_hash(struct img_dev *dev, struct img_dio *dio, uint64_t size);

/* Progress accounting: writers add what they did; the context rate-limits reports. */
void img_progress_phase(struct img_ctx *ctx, const char *phase, uint64_t bytes_total,
                        uint64_t files_total);
void img_progress_add(struct img_ctx *ctx, uint64_t bytes, uint64_t files);
/* Fails with -ECANCELED (message set) once img_ctx_cancel() was called. */
int img_check_cancel(struct img_ctx *ctx);

/*
 * Nix's case hack (source.c): on a case-insensitive file system Nix stores
 * "Foo" beside "foo" as "foo~nix~case~hack~1". The length of name component
 * @c (@len bytes) without such a suffix (@len when it has none).
 */
size_t img_case_hack_len(const char *c, size_t len);
/* A symlink target with every component's suffix removed: *out malloc'ed,
 * or NULL when nothing changes. -ENOMEM. */
int img_case_hack_target(const char *target, char **out);

/* Are @len bytes at @buf all zero? (16 by hand, then the buffer against itself shifted) */
static inline bool img_all_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;

	for (size_t i = 0; i < len && i < 16; i++)
		if (p[i])
			return false;
	return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

/* Helpers (util.c). */
void *img_malloc0(size_t n);
char *img_strdup(const char *s);
char *img_strndup(const char *s, size_t n);
int img_asprintf(char **out, const char *fmt, ...) IMG_PRINTF(2, 3);
/* pread/pwrite that loop over short transfers; -errno or -EIO on EOF. */
int img_pread_full(int fd, void *buf, size_t len, uint64_t off);
int img_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
/*
 * A new unlinked file in @dir (the output's directory: never TMPDIR) into
 * *@fd: O_TMPFILE, else a named ".mkvmimage-@tag-XXXXXX" unlinked at once.
 * The error names @dir and says it could not create @what.
 */
int img_open_unlinked(struct img_ctx *ctx, const char *dir, const char *tag, const char *what,
                      int *fd);
/*
 * Copy @len bytes of @in at @src to @out at @dst: copy_file_range, or
 * pread + pwrite where the kernel cannot (across file systems, from a
 * pipe-like file). 0; -ENODATA when @in ends early; another -errno
 * otherwise. No message: the caller names its files.
 */
int img_copy_fd_range(int in, uint64_t src, int out, uint64_t dst, uint64_t len);
/* CRC32C (Castagnoli), reflected, as crc32c_le(crc, buf, len) in Linux. */
uint32_t img_crc32c(uint32_t crc, const void *buf, size_t len);
/* SHA-256 of a buffer, and of a whole file. */
void img_sha256(const void *buf, size_t len, uint8_t out[32]);
int img_sha256_file(struct img_ctx *ctx, const char *path, uint8_t out[32]);
void img_hex(const uint8_t *in, size_t len, char *out);

static inline void img_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = v;
	p[1] = v >> 8;
}
static inline void img_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
}
static inline void img_put_le64(uint8_t *p, uint64_t v)
{
	img_put_le32(p, (uint32_t)v);
	img_put_le32(p + 4, (uint32_t)(v >> 32));
}
static inline void img_put_be16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v;
}
static inline void img_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}
static inline void img_put_be64(uint8_t *p, uint64_t v)
{
	img_put_be32(p, (uint32_t)(v >> 32));
	img_put_be32(p + 4, (uint32_t)v);
}
static inline uint16_t img_get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}
static inline uint32_t img_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t img_get_le64(const uint8_t *p)
{
	return img_get_le32(p) | (uint64_t)img_get_le32(p + 4) << 32;
}
static inline uint16_t img_get_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t img_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}
static inline uint64_t img_get_be64(const uint8_t *p)
{
	return (uint64_t)img_get_be32(p) << 32 | img_get_be32(p + 4);
}

/* Overflow-checked arithmetic: true on overflow. */
static inline bool img_add_overflow(uint64_t a, uint64_t b, uint64_t *r)
{
	return __builtin_add_overflow(a, b, r);
}
static inline bool img_mul_overflow(uint64_t a, uint64_t b, uint64_t *r)
{
	return __builtin_mul_overflow(a, b, r);
}

#endif
