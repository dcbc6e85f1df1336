/*
 * util.c -- small helpers: allocation, full reads/writes, CRC32C, SHA-256.
 *
 * SHA-256 comes from OpenSSL's libcrypto (a well-kept library does it);
 * CRC32C is Castagnoli's polynomial 0x82F63B78, reflected, table driven.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>

#include "private.h"

void *img_malloc0(size_t n)
{
	return calloc(1, n ? n : 1);
}

char *img_strdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

char *img_strndup(const char *s, size_t n)
{
	char *p = malloc(n + 1);

	if (!p)
		return NULL;
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

int img_asprintf(char **out, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(out, fmt, ap);
	va_end(ap);
	if (n < 0) {
		*out = NULL;
		return -ENOMEM;
	}
	return n;
}

int img_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int img_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int img_open_unlinked(struct img_ctx *ctx, const char *dir, const char *tag, const char *what,
                      int *fd)
{
	char *tmpl;

	*fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (*fd >= 0)
		return 0;
	/* No O_TMPFILE here: a named file, unlinked at once. */
	if (img_asprintf(&tmpl, "%s/.mkvmimage-%s-XXXXXX", dir, tag) < 0)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	*fd = mkostemp(tmpl, O_CLOEXEC);
	if (*fd < 0) {
		int r = img_set_error(ctx, -errno, "%s: cannot create %s: %s", dir, what,
		                      strerror(errno));

		free(tmpl);
		return r;
	}
	unlink(tmpl);
	free(tmpl);
	return 0;
}

int img_copy_fd_range(int in, uint64_t src, int out, uint64_t dst, uint64_t len)
{
	uint8_t buf[1 << 16];
	int kernel = 1;

	while (len) {
		loff_t i = (loff_t)src, o = (loff_t)dst;
		ssize_t n;

		if (kernel) {
			n = copy_file_range(in, &i, out, &o, (size_t)IMG_MIN(len, 1u << 30), 0);
			if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
			              errno == EOPNOTSUPP || errno == EBADF)) {
				kernel = 0;
				continue;
			}
		} else {
			n = pread(in, buf, (size_t)IMG_MIN(len, sizeof(buf)), (off_t)src);
			if (n > 0) {
				int e = img_pwrite_full(out, buf, (size_t)n, dst);

				if (e < 0)
					return e;
			}
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		src += (uint64_t)n;
		dst += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

/* Slicing-by-8 tables, built once (pthread_once) by whichever thread first
 * asks: the dio writer thread and the caller may both compute CRCs. */
static uint32_t crc32c_table[8][256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc32c_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc32c_table[t][i] = (crc32c_table[t - 1][i] >> 8) ^
			                     crc32c_table[0][crc32c_table[t - 1][i] & 0xff];
}

uint32_t img_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	pthread_once(&crc32c_once, crc32c_init);
	while (len >= 8) {
		uint32_t lo = crc ^ img_get_le32(p);
		uint32_t hi = img_get_le32(p + 4);

		crc = crc32c_table[7][lo & 0xff] ^ crc32c_table[6][(lo >> 8) & 0xff] ^
		      crc32c_table[5][(lo >> 16) & 0xff] ^ crc32c_table[4][lo >> 24] ^
		      crc32c_table[3][hi & 0xff] ^ crc32c_table[2][(hi >> 8) & 0xff] ^
		      crc32c_table[1][(hi >> 16) & 0xff] ^ crc32c_table[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = crc32c_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

void img_sha256(const void *buf, size_t len, uint8_t out[32])
{
	unsigned int n = 32;

	EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL);
}

#define SHA_AHEAD      (32u << 20)
#define SHA_AHEAD_STEP (8u << 20)

int img_sha256_file(struct img_ctx *ctx, const char *path, uint8_t out[32])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	size_t bufsz = 1u << 20;
	uint8_t *buf = malloc(bufsz);
	unsigned int n = 32;
	uint64_t pos = 0;
	int fd = -1, r = 0;

	if (!md || !buf) {
		r = img_set_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
		goto out;
	}
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	posix_fadvise(fd, 0, SHA_AHEAD, POSIX_FADV_WILLNEED);
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	for (;;) {
		ssize_t got;

		/*
		 * Keep the disk busy well ahead of the hash: outputs written with
		 * O_DIRECT are not in the page cache, and the default readahead
		 * window would make this one small read at a time.
		 */
		if (pos % SHA_AHEAD_STEP == 0) {
			posix_fadvise(fd, (off_t)(pos + SHA_AHEAD), SHA_AHEAD_STEP,
			              POSIX_FADV_WILLNEED);
			r = img_check_cancel(ctx);
			if (r < 0)
				goto out;
		}
		got = read(fd, buf, bufsz);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			r = img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		EVP_DigestUpdate(md, buf, (size_t)got);
		pos += (uint64_t)got;
	}
	EVP_DigestFinal_ex(md, out, &n);
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	EVP_MD_CTX_free(md);
	return r;
}

void img_hex(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}
