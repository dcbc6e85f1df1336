/* testutil.c -- helpers for the unit tests. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <img/dev.h>

#include "private.h"
#include "testutil.h"

char *t_tmpdir(const char *name)
{
	const char *base = getenv("IMG_TEST_TMP");
	char *path;

	if (!base || !*base)
		base = "/tmp";
	mkdir(base, 0755);
	if (asprintf(&path, "%s/%s.%d", base, name, (int)getpid()) < 0)
		abort();
	t_rmrf(path);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	return path;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p) < 0 && errno != ENOENT ? -1 : 0;
}

void t_rmrf(const char *path)
{
	nftw(path, rm_one, 64, FTW_DEPTH | FTW_PHYS);
}

int t_run(char *const argv[], char **out)
{
	int pfd[2] = { -1, -1 }, status;
	pid_t pid;

	if (out && pipe(pfd) < 0)
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (out) {
			dup2(pfd[1], 1);
			close(pfd[0]);
			close(pfd[1]);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	if (out) {
		size_t len = 0, cap = 4096;
		char *buf = malloc(cap);
		ssize_t n;

		close(pfd[1]);
		while ((n = read(pfd[0], buf + len, cap - len - 1)) > 0) {
			len += (size_t)n;
			if (cap - len < 2)
				buf = realloc(buf, cap *= 2);
		}
		buf[len] = '\0';
		close(pfd[0]);
		*out = buf;
	}
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int t_have(const char *prog)
{
	const char *path = getenv("PATH");
	char *copy, *dir, *save = NULL, buf[4096];
	int found = 0;

	if (!path)
		path = "/usr/bin:/bin:/usr/sbin:/sbin";
	copy = strdup(path);
	for (dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		snprintf(buf, sizeof(buf), "%s/%s", dir, prog);
		if (access(buf, X_OK) == 0) {
			found = 1;
			break;
		}
	}
	free(copy);
	if (!found) {
		/* sbin is not always on PATH for non-login shells */
		snprintf(buf, sizeof(buf), "/usr/sbin/%s", prog);
		found = access(buf, X_OK) == 0;
	}
	return found;
}

void t_fill(void *buf, size_t len, uint64_t seed)
{
	uint8_t *p = buf;
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;

	for (size_t i = 0; i < len; i++) {
		if ((i & 7) == 0) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
		}
		p[i] = (uint8_t)(x >> ((i & 7) * 8));
	}
}

struct img_ctx *t_ctx(void)
{
	struct img_ctx *ctx;

	ck_assert_int_eq(img_ctx_new(&ctx), 0);
	return ctx;
}

void t_write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

uint64_t t_rnd(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return *state;
}

uint8_t *t_read_file(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	int fd = open(path, O_RDONLY);

	ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
	ck_assert_int_eq(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(img_pread_full(fd, buf, (size_t)st.st_size, 0), 0);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

void t_dev_model_write(struct img_ctx *ctx, struct img_dev *d, uint8_t *model, int srcfd,
                       const uint8_t *src, size_t srclen, uint64_t off, uint64_t len, uint64_t *rng)
{
	uint64_t kind = t_rnd(rng) % 10, s = t_rnd(rng) % (srclen - len + 1);
	uint8_t *buf;

	switch (kind) {
	case 0: /* left unwritten: planned, it reads as zeros */
		return;
	case 1:
		ck_assert_ok(img_dev_write_zeroes(d, off, len), ctx);
		memset(model + off, 0, (size_t)len);
		return;
	case 2: /* zeros as data */
		buf = calloc(1, (size_t)len);
		ck_assert_ok(img_dev_pwrite(d, buf, (size_t)len, off), ctx);
		free(buf);
		memset(model + off, 0, (size_t)len);
		return;
	case 3:
	case 4:
		ck_assert_ok(img_dev_copy_from_fd(d, srcfd, s, len, off), ctx);
		break;
	case 5:
	case 6:
		ck_assert_ok(img_dev_write_data(d, src + s, (size_t)len, off), ctx);
		break;
	default:
		ck_assert_ok(img_dev_pwrite(d, src + s, (size_t)len, off), ctx);
		break;
	}
	memcpy(model + off, src + s, (size_t)len);
}

void t_dev_model_range(struct img_ctx *ctx, struct img_dev *d, uint8_t *model, int srcfd,
                       const uint8_t *src, size_t srclen, uint64_t off, uint64_t end, uint64_t *rng)
{
	while (off < end) {
		uint64_t n = 1 + t_rnd(rng) % 200000;

		n = IMG_MIN(n, end - off); /* a macro: draw the number once */
		t_dev_model_write(ctx, d, model, srcfd, src, srclen, off, n, rng);
		off += n;
	}
}

void t_dev_model_check(struct img_ctx *ctx, struct img_dev *d, const uint8_t *model, uint64_t off,
                       uint64_t len)
{
	uint8_t *back = malloc((size_t)len ? (size_t)len : 1);

	ck_assert_ptr_nonnull(back);
	ck_assert_ok(img_dev_pread(d, back, (size_t)len, off), ctx);
	ck_assert_msg(!memcmp(back, model + off, (size_t)len),
	              "read [%llu, +%llu) differs from the model", (unsigned long long)off,
	              (unsigned long long)len);
	free(back);
}

void t_dev_model_maybe_read(struct img_ctx *ctx, struct img_dev *d, const uint8_t *model,
                            uint64_t size, uint64_t end, uint64_t *rng)
{
	if (t_rnd(rng) % 3 == 0) {
		uint64_t roff = t_rnd(rng) % end, n = 1 + t_rnd(rng) % 300000;

		t_dev_model_check(ctx, d, model, roff, IMG_MIN(n, size - roff));
	}
}

void t_dev_rewrite_data(struct img_dev *d, const uint8_t *model, uint64_t end)
{
	for (uint64_t j = 0; j < end; j++)
		if (model[j]) {
			ck_assert_ok(img_dev_pwrite(d, model + j, 1, j), img_dev_ctx(d));
			return;
		}
}
