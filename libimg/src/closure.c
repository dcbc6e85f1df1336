/*
 * closure.c -- the set of store paths an image holds: store-paths lists and
 * closureInfo directories (docs/cli.md, Input), checked against the Nix
 * store path rules (nix-base32 hash part of 32 characters, '-', a name of
 * [A-Za-z0-9+-._?=], not starting with '.').
 *
 * The whole list is read into memory (it is small: one line per store path),
 * checked line by line so every error names file:line, then sorted bytewise
 * and made unique.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "private.h"
#include <img/closure.h>

/* Longer lines are refused: a store path is at most store dir + 1 + 32 + 1 + 211. */
#define CLOSURE_MAX_LINE 4096
/* A closure file larger than this is not a closure. */
#define CLOSURE_MAX_FILE (256u << 20)
#define STORE_HASH_LEN   32
#define STORE_NAME_MAX   211

static int is_base32(unsigned char c)
{
	/* nix-base32: 0-9 a-z without e o u t */
	if (c >= '0' && c <= '9')
		return 1;
	if (c < 'a' || c > 'z')
		return 0;
	return c != 'e' && c != 'o' && c != 'u' && c != 't';
}

static int is_name_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       strchr("+-._?=", c) != NULL;
}

int img_store_name_valid(const char *name, size_t len)
{
	if (len < STORE_HASH_LEN + 2 || len > STORE_HASH_LEN + 1 + STORE_NAME_MAX)
		return 0;
	for (size_t i = 0; i < STORE_HASH_LEN; i++)
		if (!is_base32((unsigned char)name[i]))
			return 0;
	if (name[STORE_HASH_LEN] != '-')
		return 0;
	if (name[STORE_HASH_LEN + 1] == '.')
		return 0;
	for (size_t i = STORE_HASH_LEN + 1; i < len; i++)
		if (!name[i] || !is_name_char((unsigned char)name[i]))
			return 0;
	return 1;
}

void img_closure_free(struct img_closure *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->npaths; i++)
		free(c->paths[i]);
	free(c->paths);
	free(c->store_dir);
	free(c->root);
	free(c->registration);
	free(c->source);
	free(c);
}

int img_closure_host_path(const struct img_closure *c, const char *path, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s%s", c->root, path);

	if (n < 0 || (size_t)n >= len)
		return -ERANGE;
	return 0;
}

/* Strip trailing slashes; "/" becomes "" when @empty_root, else stays "/". */
static char *normalise_dir(const char *d, int empty_root)
{
	size_t n = strlen(d);

	while (n > 1 && d[n - 1] == '/')
		n--;
	if (n == 1 && d[0] == '/' && empty_root)
		n = 0;
	return img_strndup(d, n);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * A line of a file that was reached through a symlink is not quoted in
 * messages: a closure or registration "file" that is a link to /etc/shadow
 * must not have its first line printed. The file and line number still say
 * where the problem is.
 */
#define HIDDEN          "(not shown: the file is reached through a symlink)"
#define QUOTE_LEN(q, l) ((q) ? (int)(l) : (int)strlen(HIDDEN))
#define QUOTE(q, s)     ((q) ? (s) : HIDDEN)

/* Check one line (without its newline) and append it to @c. */
static int check_line(struct img_ctx *ctx, struct img_closure *c, const char *name, size_t lineno,
                      const char *line, size_t len, const struct img_closure_opts *o, size_t *cap,
                      int quote)
{
	size_t sd = strlen(c->store_dir);
	const char *base, *slash;
	char host[8192];
	struct stat st;

	if (memchr(line, '\0', len))
		return img_set_error(ctx, -EINVAL, "%s:%zu: NUL byte in line", name, lineno);
	if (len && line[len - 1] == '\r')
		return img_set_error(ctx, -EINVAL,
		                     "%s:%zu: line ends in a carriage return (DOS line endings?)",
		                     name, lineno);
	if (len > CLOSURE_MAX_LINE)
		return img_set_error(ctx, -EINVAL, "%s:%zu: line of %zu bytes is too long", name,
		                     lineno, len);
	if (line[0] != '/')
		return img_set_error(ctx, -EINVAL, "%s:%zu: not a store path (not absolute): %.*s",
		                     name, lineno, QUOTE_LEN(quote, len), QUOTE(quote, line));
	if (len <= sd + 1 || memcmp(line, c->store_dir, sd) || line[sd] != '/')
		return img_set_error(ctx, -EINVAL, "%s:%zu: not a store path (not under %s): %.*s",
		                     name, lineno, c->store_dir, QUOTE_LEN(quote, len),
		                     QUOTE(quote, line));
	base = line + sd + 1;
	slash = memchr(base, '/', len - sd - 1);
	if (slash) {
		if (slash == line + len - 1 && img_store_name_valid(base, (size_t)(slash - base)))
			len--; /* one trailing slash: the store path itself */
		else
			return img_set_error(ctx, -EINVAL,
			                     "%s:%zu: not a store path (a path inside store path "
			                     "%.*s): %.*s",
			                     name, lineno, QUOTE_LEN(quote, (size_t)(slash - line)),
			                     QUOTE(quote, line), QUOTE_LEN(quote, len),
			                     QUOTE(quote, line));
	}
	if (!img_store_name_valid(base, (size_t)(line + len - base)))
		return img_set_error(ctx, -EINVAL,
		                     "%s:%zu: not a store path (bad hash or name): %.*s", name,
		                     lineno, QUOTE_LEN(quote, len), QUOTE(quote, line));
	if (!o->no_check_exists) {
		int n = snprintf(host, sizeof(host), "%s%.*s", c->root, (int)len, line);

		if (n < 0 || (size_t)n >= sizeof(host))
			return img_set_error(ctx, -ENAMETOOLONG, "%s:%zu: host path too long", name,
			                     lineno);
		if (lstat(host, &st) < 0)
			return img_set_error(ctx, -errno, "%s:%zu: %.*s: cannot read %s: %s", name,
			                     lineno, (int)len, line, host, strerror(errno));
	}
	if (c->npaths == *cap) {
		size_t ncap = *cap ? *cap * 2 : 64;
		char **p = realloc(c->paths, ncap * sizeof(*p));

		if (!p)
			return img_set_error(ctx, -ENOMEM, "out of memory");
		c->paths = p;
		*cap = ncap;
	}
	c->paths[c->npaths] = img_strndup(line, len);
	if (!c->paths[c->npaths])
		return img_set_error(ctx, -ENOMEM, "out of memory");
	c->npaths++;
	return 0;
}

/* Sort bytewise and drop duplicates (nesting was refused line by line). */
static void sort_unique(struct img_closure *c)
{
	size_t j = 0;

	qsort(c->paths, c->npaths, sizeof(*c->paths), cmp_str);
	for (size_t i = 0; i < c->npaths; i++) {
		if (j && !strcmp(c->paths[j - 1], c->paths[i])) {
			free(c->paths[i]);
			continue;
		}
		c->paths[j++] = c->paths[i];
	}
	c->npaths = j;
}

static int closure_new(struct img_ctx *ctx, const char *name, const struct img_closure_opts *o,
                       struct img_closure **out)
{
	struct img_closure *c = img_malloc0(sizeof(*c));
	const char *sd = o && o->store_dir ? o->store_dir : "/nix/store";
	const char *root = o && o->root ? o->root : "/";

	if (!c)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	if (sd[0] != '/' || !strcmp(sd, "/")) {
		free(c);
		return img_set_error(ctx, -EINVAL,
		                     "--store-dir '%s': must be an absolute directory other than /",
		                     sd);
	}
	if (!root[0]) {
		free(c);
		return img_set_error(ctx, -EINVAL, "--root: empty directory name");
	}
	c->store_dir = normalise_dir(sd, 0);
	c->root = normalise_dir(root, 1);
	c->source = img_strdup(name);
	if (!c->store_dir || !c->root || !c->source) {
		img_closure_free(c);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	*out = c;
	return 0;
}

static int parse(struct img_ctx *ctx, const char *name, const char *buf, size_t len,
                 const struct img_closure_opts *opts, int quote, struct img_closure **out)
{
	struct img_closure_opts none = { 0 };
	struct img_closure *c = NULL;
	size_t cap = 0, lineno = 0, pos = 0;
	int r;

	if (!opts)
		opts = &none;
	r = closure_new(ctx, name, opts, &c);
	if (r < 0)
		return r;
	while (pos < len) {
		const char *nl = memchr(buf + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - buf) : len;

		lineno++;
		/* Empty lines carry nothing (closureInfo ends with one). */
		if (end > pos) {
			r = check_line(ctx, c, name, lineno, buf + pos, end - pos, opts, &cap,
			               quote);
			if (r < 0) {
				img_closure_free(c);
				return r;
			}
		}
		pos = end + 1;
	}
	if (!c->npaths) {
		img_closure_free(c);
		return img_set_error(ctx, -EINVAL, "%s: empty closure: no store paths", name);
	}
	sort_unique(c);
	*out = c;
	return 0;
}

int img_closure_parse(struct img_ctx *ctx, const char *name, const char *buf, size_t len,
                      const struct img_closure_opts *opts, struct img_closure **out)
{
	return parse(ctx, name, buf, len, opts, 1, out);
}

/* Was @path's last component a symlink? (Its content is then not quoted.) */
static int is_link(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0 && S_ISLNK(st.st_mode);
}

/* Read all of @fd (a file or a pipe) into a malloc'ed buffer. */
static int read_all(struct img_ctx *ctx, int fd, const char *name, char **out, size_t *outlen)
{
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap);

	if (!buf)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	for (;;) {
		ssize_t n;

		if (len == cap) {
			char *nb;

			if (cap >= CLOSURE_MAX_FILE) {
				free(buf);
				return img_set_error(ctx, -EFBIG, "%s: over %u MiB, not a closure",
				                     name, CLOSURE_MAX_FILE >> 20);
			}
			nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				return img_set_error(ctx, -ENOMEM, "out of memory");
			}
			buf = nb;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR) {
			/* A signal: stop if the caller was asked to, else go on. */
			if (img_ctx_cancelled(ctx)) {
				free(buf);
				return img_check_cancel(ctx);
			}
			continue;
		}
		if (n < 0) {
			int e = errno;

			free(buf);
			return img_set_error(ctx, -e, "%s: %s", name, strerror(e));
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	*out = buf;
	*outlen = len;
	return 0;
}

static int load_file(struct img_ctx *ctx, const char *path, const char *name,
                     const struct img_closure_opts *o, struct img_closure **out)
{
	struct stat st;
	char *buf;
	size_t len;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return img_set_error(ctx, -errno, "%s: %s", name, strerror(errno));
	if (fstat(fd, &st) < 0 || S_ISDIR(st.st_mode)) {
		close(fd);
		return img_set_error(ctx, -EISDIR, "%s: is a directory, not a store-paths file",
		                     name);
	}
	r = read_all(ctx, fd, name, &buf, &len);
	close(fd);
	if (r < 0)
		return r;
	r = parse(ctx, name, buf, len, o, !is_link(path), out);
	free(buf);
	return r;
}

int img_closure_load(struct img_ctx *ctx, const char *spec, const struct img_closure_opts *opts,
                     struct img_closure **out)
{
	struct img_closure_opts none = { 0 };
	struct stat st;
	char *sp = NULL, *reg = NULL;
	int r;

	if (!opts)
		opts = &none;
	if (!strcmp(spec, "-")) {
		char *buf;
		size_t len;

		r = read_all(ctx, STDIN_FILENO, "<stdin>", &buf, &len);
		if (r < 0)
			return r;
		r = img_closure_parse(ctx, "<stdin>", buf, len, opts, out);
		free(buf);
		return r;
	}
	if (stat(spec, &st) < 0)
		return img_set_error(ctx, -errno, "closure %s: %s", spec, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return load_file(ctx, spec, spec, opts, out);

	/* A closureInfo directory: store-paths, and registration if present. */
	if (img_asprintf(&sp, "%s/store-paths", spec) < 0 ||
	    img_asprintf(&reg, "%s/registration", spec) < 0) {
		free(sp);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	if (stat(sp, &st) < 0) {
		r = img_set_error(ctx, -errno,
		                  "closure %s: no store-paths file in the directory: %s", spec,
		                  strerror(errno));
		goto out;
	}
	r = load_file(ctx, sp, sp, opts, out);
	if (r < 0)
		goto out;
	(*out)->info_dir = 1;
	if (stat(reg, &st) == 0) {
		if (!S_ISREG(st.st_mode)) {
			img_closure_free(*out);
			*out = NULL;
			r = img_set_error(ctx, -EINVAL, "%s: not a regular file", reg);
			goto out;
		}
		(*out)->registration = reg;
		reg = NULL;
	} else if (errno != ENOENT) {
		img_closure_free(*out);
		*out = NULL;
		r = img_set_error(ctx, -errno, "%s: %s", reg, strerror(errno));
		goto out;
	}
out:
	free(sp);
	free(reg);
	return r;
}

/*
 * The registration in canonical form. closureInfo writes its records in
 * whatever order Nix emitted them; the image must not depend on that, so the
 * records are parsed (path, narHash, narSize, deriver, count, references),
 * checked, and written back sorted by path with sorted references.
 */
struct reg_record {
	const char *line[5]; /* path, hash, size, deriver, count */
	size_t len[5];
	const char **ref;
	size_t *reflen;
	size_t nref;
};

static int bytes_cmp(const char *a, size_t al, const char *b, size_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);

	return c ? c : (al > bl) - (al < bl);
}

static int rec_cmp(const void *x, const void *y)
{
	const struct reg_record *a = x, *b = y;

	return bytes_cmp(a->line[0], a->len[0], b->line[0], b->len[0]);
}

struct ref_item {
	const char *s;
	size_t len;
};

static int ref_cmp(const void *x, const void *y)
{
	const struct ref_item *a = x, *b = y;

	return bytes_cmp(a->s, a->len, b->s, b->len);
}

/* Is @s (@len bytes, not NUL-terminated) a store path under c's store dir? */
static int store_path_ok(const struct img_closure *c, const char *s, size_t len)
{
	size_t sd = strlen(c->store_dir);

	return len > sd + 1 && !memcmp(s, c->store_dir, sd) && s[sd] == '/' &&
	       img_store_name_valid(s + sd + 1, len - sd - 1);
}

static int bytes_str_cmp(const void *key, const void *elem)
{
	const struct ref_item *k = key;
	const char *e = *(char *const *)elem;
	size_t el = strlen(e);
	int c = memcmp(k->s, e, IMG_MIN(k->len, el));

	return c ? c : (k->len > el) - (k->len < el);
}

/* Is @s one of the closure's paths (which are sorted bytewise)? */
static int in_closure(const struct img_closure *c, const char *s, size_t len)
{
	struct ref_item k = { s, len };

	return bsearch(&k, c->paths, c->npaths, sizeof(*c->paths), bytes_str_cmp) != NULL;
}

static int all_of(const char *s, size_t len, const char *set)
{
	for (size_t i = 0; i < len; i++)
		if (!s[i] || !strchr(set, s[i]))
			return 0;
	return 1;
}

/* What Nix's hash parser takes for a SHA-256 NAR hash: "sha256:" with
 * nix-base32, base16 or base64, or the SRI form "sha256-<base64>". */
static int nar_hash_ok(const char *s, size_t len)
{
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *h = s + 7;
	size_t n = len - 7;

	if (len < 7 || (memcmp(s, "sha256:", 7) && memcmp(s, "sha256-", 7)))
		return 0;
	if (n == 44 && all_of(h, 43, b64) && h[43] == '=')
		return 1;
	if (s[6] == '-')
		return 0;
	return (n == 52 && all_of(h, n, "0123456789abcdfghijklmnpqrsvwxyz")) ||
	       (n == 64 && all_of(h, n, "0123456789abcdefABCDEF"));
}

/* 1 to 20 decimal digits that fit 64 bits. */
static int decimal_ok(const char *s, size_t len)
{
	char num[24];
	unsigned long long v;

	if (!len || len > 20 || !all_of(s, len, "0123456789"))
		return 0;
	memcpy(num, s, len);
	num[len] = '\0';
	errno = 0;
	v = strtoull(num, NULL, 10);
	(void)v;
	return errno == 0;
}

int img_closure_registration(struct img_ctx *ctx, const struct img_closure *c, char **out,
                             size_t *outlen)
{
	const char *name = c->registration;
	struct reg_record *recs = NULL;
	size_t nrec = 0, caprec = 0, len, pos = 0, lineno = 0;
	struct ref_item *refs = NULL;
	char *buf = NULL, *res = NULL;
	size_t reslen = 0;
	FILE *f = NULL;
	int fd, r = 0, quote = !is_link(name);

	*out = NULL;
	*outlen = 0;
	fd = open(name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return img_set_error(ctx, -errno, "%s: %s", name, strerror(errno));
	r = read_all(ctx, fd, name, &buf, &len);
	close(fd);
	if (r < 0)
		return r;
	if (memchr(buf, '\0', len)) {
		r = img_set_error(ctx, -EINVAL, "%s: holds a NUL byte, not a registration", name);
		goto out;
	}

#define NEXT_LINE(s, l)                                                                            \
	do {                                                                                       \
		const char *nl_;                                                                   \
		if (pos >= len) {                                                                  \
			r = img_set_error(ctx, -EINVAL, "%s:%zu: record cut short", name,          \
			                  lineno + 1);                                             \
			goto out;                                                                  \
		}                                                                                  \
		nl_ = memchr(buf + pos, '\n', len - pos);                                          \
		(s) = buf + pos;                                                                   \
		(l) = nl_ ? (size_t)(nl_ - (buf + pos)) : len - pos;                               \
		pos += (l) + (nl_ ? 1 : 0);                                                        \
		lineno++;                                                                          \
	} while (0)

	while (pos < len) {
		struct reg_record *rec;
		unsigned long long n;
		size_t first;
		char num[32];

		if (nrec == caprec) {
			size_t cap = caprec ? caprec * 2 : 64;
			struct reg_record *nr = realloc(recs, cap * sizeof(*nr));

			if (!nr) {
				r = img_set_error(ctx, -ENOMEM, "out of memory");
				goto out;
			}
			recs = nr;
			caprec = cap;
		}
		rec = &recs[nrec];
		memset(rec, 0, sizeof(*rec));
		for (int i = 0; i < 5; i++)
			NEXT_LINE(rec->line[i], rec->len[i]);
		nrec++;
		first = lineno - 4;
		if (!store_path_ok(c, rec->line[0], rec->len[0])) {
			r = img_set_error(ctx, -EINVAL, "%s:%zu: not a store path: %.*s", name,
			                  first, QUOTE_LEN(quote, IMG_MIN(rec->len[0], 200)),
			                  QUOTE(quote, rec->line[0]));
			goto out;
		}
		if (!in_closure(c, rec->line[0], rec->len[0])) {
			r = img_set_error(ctx, -EINVAL,
			                  "%s:%zu: registers %.*s, which is not in the closure %s",
			                  name, first, QUOTE_LEN(quote, rec->len[0]),
			                  QUOTE(quote, rec->line[0]), c->source);
			goto out;
		}
		if (!nar_hash_ok(rec->line[1], rec->len[1])) {
			r = img_set_error(
			    ctx, -EINVAL,
			    "%s:%zu: not a NAR hash (sha256: and 52 nix-base32, 64 hex "
			    "or 44 base64 characters): %.*s",
			    name, first + 1, QUOTE_LEN(quote, IMG_MIN(rec->len[1], 200)),
			    QUOTE(quote, rec->line[1]));
			goto out;
		}
		if (!decimal_ok(rec->line[2], rec->len[2])) {
			r = img_set_error(ctx, -EINVAL, "%s:%zu: not a NAR size: %.*s", name,
			                  first + 2, QUOTE_LEN(quote, IMG_MIN(rec->len[2], 200)),
			                  QUOTE(quote, rec->line[2]));
			goto out;
		}
		if (rec->len[3] && !store_path_ok(c, rec->line[3], rec->len[3])) {
			r = img_set_error(
			    ctx, -EINVAL,
			    "%s:%zu: the deriver is neither empty nor a store path: %.*s", name,
			    first + 3, QUOTE_LEN(quote, IMG_MIN(rec->len[3], 200)),
			    QUOTE(quote, rec->line[3]));
			goto out;
		}
		if (!decimal_ok(rec->line[4], rec->len[4])) {
			r = img_set_error(ctx, -EINVAL, "%s:%zu: not a reference count: %.*s", name,
			                  lineno, QUOTE_LEN(quote, IMG_MIN(rec->len[4], 200)),
			                  QUOTE(quote, rec->line[4]));
			goto out;
		}
		memcpy(num, rec->line[4], rec->len[4]);
		num[rec->len[4]] = '\0';
		n = strtoull(num, NULL, 10);
		if (n > len) {
			r = img_set_error(ctx, -EINVAL,
			                  "%s:%zu: %llu references is more than the file holds",
			                  name, lineno, n);
			goto out;
		}
		rec->nref = (size_t)n;
		rec->ref = calloc(n ? n : 1, sizeof(*rec->ref));
		rec->reflen = calloc(n ? n : 1, sizeof(*rec->reflen));
		if (!rec->ref || !rec->reflen) {
			r = img_set_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < rec->nref; i++) {
			NEXT_LINE(rec->ref[i], rec->reflen[i]);
			/* A reference to something the image does not hold would
			 * make the guest's Nix believe in a path it does not have. */
			if (!store_path_ok(c, rec->ref[i], rec->reflen[i]) ||
			    !in_closure(c, rec->ref[i], rec->reflen[i])) {
				r = img_set_error(
				    ctx, -EINVAL,
				    "%s:%zu: reference %.*s of %.*s is not a store path "
				    "of the closure %s",
				    name, lineno, QUOTE_LEN(quote, IMG_MIN(rec->reflen[i], 200)),
				    QUOTE(quote, rec->ref[i]), QUOTE_LEN(quote, rec->len[0]),
				    QUOTE(quote, rec->line[0]), c->source);
				goto out;
			}
		}
	}
#undef NEXT_LINE

	if (nrec > 1) /* recs is NULL for an empty registration */
		qsort(recs, nrec, sizeof(*recs), rec_cmp);
	for (size_t i = 1; i < nrec; i++)
		if (!rec_cmp(&recs[i - 1], &recs[i])) {
			r = img_set_error(ctx, -EINVAL, "%s: two records for %.*s", name,
			                  QUOTE_LEN(quote, recs[i].len[0]),
			                  QUOTE(quote, recs[i].line[0]));
			goto out;
		}
	/* Paths the registration leaves out: the guest's Nix will not know
	 * they are valid (and may collect them). Said once, not refused. */
	{
		size_t missing = 0, k = 0;
		const char *first = NULL;

		for (size_t i = 0; i < c->npaths; i++) {
			while (k < nrec &&
			       bytes_str_cmp(&(struct ref_item){ recs[k].line[0], recs[k].len[0] },
			                     &c->paths[i]) < 0)
				k++;
			if (k < nrec &&
			    !bytes_str_cmp(&(struct ref_item){ recs[k].line[0], recs[k].len[0] },
			                   &c->paths[i]))
				continue;
			if (!missing++)
				first = c->paths[i];
		}
		if (missing)
			img_log(ctx, IMG_LOG_WARN,
			        "%s: %zu store path(s) of the closure have no record (first: %s); "
			        "the image's Nix will not know them as valid",
			        name, missing, first);
	}
	f = open_memstream(&res, &reslen);
	if (!f) {
		r = img_set_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < nrec; i++) {
		struct reg_record *rec = &recs[i];

		for (int k = 0; k < 5; k++)
			fprintf(f, "%.*s\n", (int)rec->len[k], rec->line[k]);
		free(refs);
		refs = calloc(rec->nref ? rec->nref : 1, sizeof(*refs));
		if (!refs) {
			r = img_set_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		for (size_t k = 0; k < rec->nref; k++)
			refs[k] = (struct ref_item){ rec->ref[k], rec->reflen[k] };
		qsort(refs, rec->nref, sizeof(*refs), ref_cmp);
		for (size_t k = 0; k < rec->nref; k++)
			fprintf(f, "%.*s\n", (int)refs[k].len, refs[k].s);
	}
	if (fclose(f) != 0) {
		f = NULL;
		r = img_set_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	f = NULL;
	*out = res;
	*outlen = reslen;
	res = NULL;
out:
	if (f)
		fclose(f);
	free(res);
	free(refs);
	for (size_t i = 0; i < nrec; i++) {
		free(recs[i].ref);
		free(recs[i].reflen);
	}
	free(recs);
	free(buf);
	return r;
}
