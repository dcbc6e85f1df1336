/*
 * source-tar.c -- a tar stream (file or pipe, any compression libarchive
 * reads) into the normalised tree.
 *
 * Spec: the entry names of docs/cli.md and docs/store-image.md (--tar), tar
 * extraction semantics (last entry wins, hard links name an earlier entry);
 * read a tar file twice rather than spool it, stage a pipe's data beside
 * the output, never in TMPDIR (docs/store-image.md, input forms).
 *
 * libarchive reads through our own callbacks, so for an uncompressed file we
 * know which file offset each buffer came from: the first data block of an
 * entry, returned in place from our buffer, gives the entry's data offset
 * and the tree refers to that range (copy_file_range later).
 */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "private.h"
#include <img/source.h>

#define TAR_BUF      (1u << 20)
#define TAR_PATH_MAX 4095u

struct img_tar_source {
	struct img_ctx *ctx;
	char *name; /* for messages: the path or "stdin" */
	int fd, own_fd;
	int seekable; /* a regular file we may read again */
	uint64_t file_size;
	uint8_t *buf;     /* the last buffer handed to libarchive */
	uint64_t buf_off; /* its file offset */
	size_t buf_len;
	uint64_t pos; /* file offset of the next read */
	int stage_fd; /* pipe (or no_replay): staged data, unlinked file */
	uint64_t stage_len;
	char *stage_dir; /* no_replay: where to open the staging file when needed */
	int no_replay;
	uint64_t pending; /* entries waiting for replay */
	char *store;      /* store dir without the leading '/', e.g. "nix/store" */
	char *prefix;
	uint64_t staged; /* bytes staged */

	/* In place (pipe + opts->inplace): entries in canonical order. */
	struct img_tar_inplace inplace;
	int inplace_on;    /* still in order */
	char *last;        /* tree path of the last entry placed */
	uint64_t next_off; /* where the next one goes */
	uint64_t inplace_bytes;
	struct placed {
		uint64_t base; /* the entry's staging offset (its key) */
		uint64_t off, span;
		int kept, copied;
	} * placed;
	size_t nplaced, capplaced;
};

/* --- reading through our own buffer ------------------------------------- */

static la_ssize_t tar_read(struct archive *a, void *user, const void **out)
{
	struct img_tar_source *s = user;
	ssize_t n;

	(void)a;
	for (;;) {
		n = s->seekable ? pread(s->fd, s->buf, TAR_BUF, (off_t)s->pos)
		                : read(s->fd, s->buf, TAR_BUF);
		if (n >= 0 || errno != EINTR)
			break;
		/* A signal: a pipe that stalls must not keep a cancelled build. */
		if (img_ctx_cancelled(s->ctx)) {
			img_check_cancel(s->ctx);
			archive_set_error(a, ECANCELED, "interrupted");
			return -1;
		}
	}
	if (n < 0) {
		archive_set_error(a, errno, "reading %s: %s", s->name, strerror(errno));
		return -1;
	}
	s->buf_off = s->pos;
	s->buf_len = (size_t)n;
	s->pos += (uint64_t)n;
	*out = s->buf;
	return n;
}

static la_int64_t tar_skip(struct archive *a, void *user, la_int64_t request)
{
	struct img_tar_source *s = user;

	(void)a;
	if (!s->seekable || request <= 0)
		return 0; /* libarchive reads and discards */
	s->pos += (uint64_t)request;
	return request;
}

static int tar_open_archive(struct img_tar_source *s, struct archive **out)
{
	struct archive *a = archive_read_new();

	if (!a)
		return img_set_error(s->ctx, -ENOMEM, "out of memory");
	archive_read_support_filter_all(a);
	archive_read_support_format_tar(a);
	archive_read_support_format_gnutar(a);
	archive_read_set_read_callback(a, tar_read);
	archive_read_set_skip_callback(a, tar_skip);
	archive_read_set_callback_data(a, s);
	s->pos = 0;
	s->buf_len = 0;
	if (archive_read_open1(a) != ARCHIVE_OK) {
		int r = img_set_error(s->ctx, -EINVAL, "%s: not a tar stream: %s", s->name,
		                      archive_error_string(a) ? archive_error_string(a) : "?");

		archive_read_free(a);
		return r;
	}
	*out = a;
	return 0;
}

/* --- names -------------------------------------------------------------- */

/*
 * Map an entry name to a tree path under the prefix. Returns 1 with *out
 * (malloc'ed), 0 to skip the entry (the store directory or its parents).
 * *hacked (may be NULL) says whether the last component lost a case hack.
 */
static int map_name(struct img_tar_source *s, const char *name, char **out, int *hacked)
{
	const char *p = name, *rest;
	size_t storelen = strlen(s->store), plen = strlen(s->prefix), len, o;
	int absolute = 0;
	char *buf;

	if (strlen(name) > TAR_PATH_MAX)
		return img_set_error(s->ctx, -ENAMETOOLONG,
		                     "%s: entry name of %zu bytes (at most %u): %.60s...", s->name,
		                     strlen(name), TAR_PATH_MAX, name);
	while (p[0] == '.' && p[1] == '/')
		p += 2;
	while (*p == '/') {
		absolute = 1;
		p++;
	}
	if (!*p || !strcmp(p, "."))
		return 0;
	/* The store directory and its parents: nothing to add. */
	if (!strncmp(s->store, p, strlen(p)) ||
	    (!strncmp(s->store, p, strlen(p) - 1) && p[strlen(p) - 1] == '/')) {
		size_t l = strlen(p) - (p[strlen(p) - 1] == '/');

		if (l == storelen || s->store[l] == '/')
			return 0;
	}
	if (!strncmp(p, s->store, storelen) && p[storelen] == '/')
		rest = p + storelen + 1;
	else if (absolute)
		return img_set_error(s->ctx, -EINVAL, "%s: entry '%s' is outside the store /%s",
		                     s->name, name, s->store);
	else
		rest = p;
	len = strlen(rest);
	if (len && rest[len - 1] == '/')
		len--; /* a directory's trailing slash */
	if (!len)
		return 0;
	buf = malloc(plen + len + 1);
	if (!buf)
		return img_set_error(s->ctx, -ENOMEM, "out of memory");
	memcpy(buf, s->prefix, plen);
	o = plen;
	for (size_t i = 0; i <= len;) {
		size_t j = i, cl;

		while (j < len && rest[j] != '/')
			j++;
		cl = j - i;
		if (cl == 0 || (cl == 1 && rest[i] == '.') ||
		    (cl == 2 && rest[i] == '.' && rest[i + 1] == '.')) {
			free(buf);
			return img_set_error(s->ctx, -EINVAL,
			                     "%s: entry '%s': %s path component refused", s->name,
			                     name, cl ? "a '.' or '..'" : "an empty");
		}
		if (cl > 255) {
			free(buf);
			return img_set_error(
			    s->ctx, -ENAMETOOLONG,
			    "%s: entry '%.80s...': a name of %zu bytes (at most 255)", s->name,
			    name, cl);
		}
		if (i == 0 && !img_store_name_valid(rest, cl)) {
			free(buf);
			return img_set_error(s->ctx, -EINVAL,
			                     "%s: entry '%s' is outside the store ('%.*s' is not a "
			                     "store path name)",
			                     s->name, name, (int)cl, rest);
		}
		{
			size_t sl = img_case_hack_len(rest + i, cl);

			if (hacked)
				*hacked = sl != cl;
			cl = sl;
		}
		memcpy(buf + o, rest + i, cl);
		o += cl;
		if (j < len)
			buf[o++] = '/';
		i = j + 1;
	}
	buf[o] = '\0';
	*out = buf;
	return 1;
}

/* --- pass 1: headers into the tree -------------------------------------- */

static int entry_error(struct img_tar_source *s, struct archive *a, const char *what)
{
	const char *why = archive_error_string(a);

	return img_set_error(s->ctx, -EINVAL, "%s: %s: %s", s->name, what,
	                     why ? why : "corrupt or truncated stream");
}

/* Depth-first order with sorted children: bytewise, '/' below every byte. */
static int canon_cmp(const char *a, const char *b)
{
	for (;; a++, b++) {
		unsigned ca = *a == '/' ? 0 : (unsigned char)*a + 1u;
		unsigned cb = *b == '/' ? 0 : (unsigned char)*b + 1u;

		if (!*a || !*b)
			return !*a && !*b ? 0 : !*a ? -1 : 1;
		if (ca != cb)
			return ca < cb ? -1 : 1;
	}
}

/* May this entry go in place? Only while the stream stays in canonical order. */
static int inplace_take(struct img_tar_source *s, struct img_tree *tree, const char *path)
{
	if (!s->inplace_on)
		return 0;
	if ((s->last && canon_cmp(s->last, path) >= 0) || img_tree_lookup(tree, path)) {
		s->inplace_on = 0; /* out of order or replaced: stage from here on */
		return 0;
	}
	if (s->nplaced == s->capplaced) {
		size_t ncap = s->capplaced ? s->capplaced * 2 : 1024;
		struct placed *np = realloc(s->placed, ncap * sizeof(*np));

		if (!np)
			return -ENOMEM;
		s->placed = np;
		s->capplaced = ncap;
	}
	free(s->last);
	s->last = img_strdup(path);
	return s->last ? 1 : -ENOMEM;
}

/* The output offset of byte @o of the entry being placed. */
static uint64_t off_place(const struct img_tar_source *s, uint64_t o)
{
	return s->placed[s->nplaced - 1].off + o;
}

static int open_stage(struct img_tar_source *s, const char *dir);

/* Stage the entry's data (pipe) or find its offset in the file. */
static int place_data(struct img_tar_source *s, struct archive *a, struct archive_entry *e,
                      const char *ename, uint64_t ordinal, struct img_node_attr *attr,
                      int uncompressed, struct img_tree *tree, const char *path)
{
	const void *blk = NULL;
	size_t sz = 0;
	la_int64_t off = 0;
	int r, first = ARCHIVE_FATAL; /* a block read already and not yet used */

	if (!attr->size)
		return 0;
	if (s->seekable && uncompressed && archive_entry_sparse_count(e) == 0) {
		r = archive_read_data_block(a, &blk, &sz, &off);
		if (r == ARCHIVE_OK && off == 0 && (const uint8_t *)blk >= s->buf &&
		    (const uint8_t *)blk < s->buf + s->buf_len) {
			uint64_t start = s->buf_off + (uint64_t)((const uint8_t *)blk - s->buf);

			if (start + attr->size > s->file_size || start + attr->size < start)
				return img_set_error(
				    s->ctx, -EINVAL,
				    "%s: entry '%s' claims %llu bytes but the file "
				    "ends %llu bytes after its start (truncated?)",
				    s->name, ename, (unsigned long long)attr->size,
				    (unsigned long long)(s->file_size - start));
			attr->data.kind = IMG_DATA_FD;
			attr->data.fd = s->fd;
			attr->data.offset = start;
			return 0;
		}
		if (r != ARCHIVE_OK && r != ARCHIVE_EOF)
			return entry_error(s, a, ename);
		/* Not in our buffer (libarchive copied it): read it again later,
		 * or with no_replay stage it, starting with this block. */
		first = r;
	}
	if (s->seekable && !s->no_replay) {
		attr->data.kind = IMG_DATA_NONE;
		attr->data.offset = ordinal + 1;
		s->pending++;
		return 0;
	}
	/* A pipe: stage the bytes, holes included, at the staging file's end;
	 * in order, the leading full blocks go straight into place instead (the
	 * staging file keeps a hole there and the tail after it). */
	{
		uint64_t base = s->stage_len, got = 0, span = 0;
		int inplace;

		if (s->stage_fd < 0 && s->stage_dir && (r = open_stage(s, s->stage_dir)) < 0)
			return r;
		if (s->stage_fd < 0)
			return img_set_error(s->ctx, -EINVAL,
			                     "%s: a tar stream that cannot be read twice needs a "
			                     "staging directory",
			                     s->name);
		inplace = inplace_take(s, tree, path);
		if (inplace < 0)
			return img_set_error(s->ctx, -ENOMEM, "out of memory");
		if (inplace) {
			span = s->inplace.body(attr->size);
			s->placed[s->nplaced++] = (struct placed){ base, s->next_off, span, 0, 0 };
			s->next_off += IMG_ALIGN_UP(span, s->inplace.align);
			s->inplace_bytes += span;
		}
		s->staged += attr->size - span;
		for (;;) {
			if (first != ARCHIVE_FATAL) {
				r = first;
				first = ARCHIVE_FATAL;
			} else {
				r = archive_read_data_block(a, &blk, &sz, &off);
			}
			if (r == ARCHIVE_EOF)
				break;
			if (r != ARCHIVE_OK)
				return entry_error(s, a, ename);
			if (off < 0 || (uint64_t)off + sz > attr->size)
				return img_set_error(s->ctx, -EINVAL,
				                     "%s: entry '%s': data beyond its size",
				                     s->name, ename);
			{
				/* Split at the span: in place before, staged after. */
				uint64_t o = (uint64_t)off,
				         n1 = o < span ? IMG_MIN(sz, span - o) : 0;

				r = 0;
				if (n1)
					r = img_pwrite_full(s->inplace.fd, blk, n1,
					                    off_place(s, o));
				if (r >= 0 && sz > n1)
					r = img_pwrite_full(s->stage_fd, (const uint8_t *)blk + n1,
					                    sz - n1, base + o + n1);
			}
			if (r < 0)
				return img_set_error(s->ctx, r, "staging %s: %s", ename,
				                     strerror(-r));
			got = IMG_MAX(got, (uint64_t)off + sz);
		}
		if (got < attr->size && ftruncate(s->stage_fd, (off_t)(base + attr->size)) < 0)
			return img_set_error(s->ctx, -errno, "staging %s: %s", ename,
			                     strerror(errno));
		s->stage_len = base + attr->size;
		attr->data.kind = IMG_DATA_FD;
		attr->data.fd = s->stage_fd;
		attr->data.offset = base;
		return 0;
	}
}

static int read_entries(struct img_tar_source *s, struct archive *a, struct img_tree *tree)
{
	struct archive_entry *e;
	uint64_t ordinal = 0;
	int r, uncompressed = -1;

	for (;; ordinal++) {
		struct img_node_attr attr = { 0 };
		const char *ename, *hl;
		char *path = NULL, *linkto = NULL;
		la_int64_t size;
		int hacked = 0;

		r = archive_read_next_header(a, &e);
		if (r == ARCHIVE_EOF)
			return 0;
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
			return entry_error(s, a, ordinal ? "after the last good entry" : "header");
		if (uncompressed < 0)
			uncompressed = archive_filter_count(a) == 1 ||
			               (archive_filter_count(a) == 2 &&
			                archive_filter_code(a, 0) == ARCHIVE_FILTER_NONE);
		ename = archive_entry_pathname(e);
		if (!ename)
			ename = archive_entry_pathname_utf8(e);
		if (!ename)
			return img_set_error(s->ctx, -EINVAL, "%s: entry %llu has no name", s->name,
			                     (unsigned long long)ordinal);
		r = map_name(s, ename, &path, &hacked);
		if (r <= 0) {
			if (r < 0)
				return r;
			continue;
		}
		/* "x~nix~case~hack~1" beside "x": one would silently replace the
		 * other (a directory holds them both). */
		if (hacked && img_tree_lookup(tree, path)) {
			r = img_set_error(
			    s->ctx, -EINVAL,
			    "%s: entry '%s' becomes '%s' without its case hack suffix, "
			    "which is already there",
			    s->name, ename, path);
			free(path);
			return r;
		}
		hl = archive_entry_hardlink(e);
		if (hl) {
			char *target = NULL;

			r = map_name(s, hl, &target, NULL);
			if (r == 0)
				r = img_set_error(
				    s->ctx, -EINVAL,
				    "%s: entry '%s' is a hard link to '%s', not a file", s->name,
				    ename, hl);
			if (r > 0 && s->inplace_on) {
				/* A dereferenced link takes data blocks at its own place:
				 * keep the in-place offsets of later entries right. */
				struct img_node *tn = img_tree_lookup(tree, target);

				r = inplace_take(s, tree, path);
				if (r > 0 && tn && tn->type == IMG_NODE_REG)
					s->next_off += IMG_ALIGN_UP(s->inplace.body(tn->size),
					                            s->inplace.align);
				r = r < 0 ? img_set_error(s->ctx, -ENOMEM, "out of memory") : 1;
			}
			if (r > 0)
				r = img_tree_add_hardlink(tree, path, target);
			free(target);
			free(path);
			if (r < 0)
				return img_error_prefix(s->ctx, r, "%s: entry '%s'", s->name,
				                        ename);
			continue;
		}
		attr.mode = archive_entry_perm(e);
		attr.uid = (uint32_t)archive_entry_uid(e);
		attr.gid = (uint32_t)archive_entry_gid(e);
		attr.mtime = archive_entry_mtime(e);
		switch (archive_entry_filetype(e)) {
		case AE_IFREG:
			attr.type = IMG_NODE_REG;
			size = archive_entry_size(e);
			if (size < 0) {
				free(path);
				return img_set_error(s->ctx, -EINVAL, "%s: entry '%s': bad size",
				                     s->name, ename);
			}
			attr.size = (uint64_t)size;
			r = place_data(s, a, e, ename, ordinal, &attr, uncompressed, tree, path);
			if (r < 0) {
				free(path);
				return r;
			}
			break;
		case AE_IFDIR:
			attr.type = IMG_NODE_DIR;
			break;
		case AE_IFLNK:
			attr.type = IMG_NODE_SYMLINK;
			attr.target = archive_entry_symlink(e);
			if (!attr.target)
				attr.target = archive_entry_symlink_utf8(e);
			/* a link to a hacked name must follow it to its real name */
			if (attr.target && img_case_hack_target(attr.target, &linkto) < 0) {
				free(path);
				return img_set_error(s->ctx, -ENOMEM, "out of memory");
			}
			if (linkto)
				attr.target = linkto;
			break;
		case AE_IFCHR:
		case AE_IFBLK:
			attr.type =
			    archive_entry_filetype(e) == AE_IFCHR ? IMG_NODE_CHR : IMG_NODE_BLK;
			attr.rdev_major = (uint32_t)archive_entry_rdevmajor(e);
			attr.rdev_minor = (uint32_t)archive_entry_rdevminor(e);
			break;
		case AE_IFIFO:
			attr.type = IMG_NODE_FIFO;
			break;
		case AE_IFSOCK:
			attr.type = IMG_NODE_SOCK;
			break;
		default:
			free(path);
			return img_set_error(s->ctx, -EINVAL, "%s: entry '%s': unknown type %o",
			                     s->name, ename, (unsigned)archive_entry_filetype(e));
		}
		r = img_tree_add(tree, path, &attr, NULL);
		free(path);
		free(linkto);
		if (r < 0)
			return img_error_prefix(s->ctx, r, "%s: entry '%s'", s->name, ename);
		if ((ordinal & 255) == 0 && (r = img_check_cancel(s->ctx)) < 0)
			return r;
	}
}

static int open_stage(struct img_tar_source *s, const char *dir)
{
	return img_open_unlinked(s->ctx, dir, "stage", "a staging file", &s->stage_fd);
}

int img_source_tar(struct img_ctx *ctx, const char *path, const struct img_source_opts *opts,
                   struct img_tree *tree, struct img_tar_source **out)
{
	struct img_tar_source *s = img_malloc0(sizeof(*s));
	const char *store = opts && opts->store_dir ? opts->store_dir : "/nix/store";
	struct archive *a = NULL;
	struct stat st;
	int r;

	*out = NULL;
	if (!s)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	s->ctx = ctx;
	s->fd = s->stage_fd = -1;
	while (*store == '/')
		store++;
	s->store = img_strdup(store);
	s->prefix = img_strdup(opts && opts->prefix ? opts->prefix : "");
	s->name = img_strdup(strcmp(path, "-") ? path : "stdin");
	s->buf = malloc(TAR_BUF);
	if (!s->store || !s->prefix || !s->name || !s->buf) {
		r = img_set_error(ctx, -ENOMEM, "out of memory");
		goto fail;
	}
	while (s->store[0] && s->store[strlen(s->store) - 1] == '/')
		s->store[strlen(s->store) - 1] = '\0';
	if (!strcmp(path, "-")) {
		s->fd = 0;
	} else {
		s->fd = open(path, O_RDONLY | O_CLOEXEC);
		if (s->fd < 0) {
			r = img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
			goto fail;
		}
		s->own_fd = 1;
	}
	if (fstat(s->fd, &st) < 0) {
		r = img_set_error(ctx, -errno, "%s: %s", s->name, strerror(errno));
		goto fail;
	}
	s->seekable = S_ISREG(st.st_mode);
	s->file_size = (uint64_t)st.st_size;
	/*
	 * A pipe holds 64 KiB by default: writer and reader then take turns on
	 * the pipe's lock every 64 KiB, which costs more than the copying. Ask
	 * for room for a whole read (refused beyond pipe-max-size: then as is).
	 */
	if (S_ISFIFO(st.st_mode))
		(void)fcntl(s->fd, F_SETPIPE_SZ, (int)TAR_BUF);
	if (!s->seekable && opts && opts->stage_dir && (r = open_stage(s, opts->stage_dir)) < 0)
		goto fail;
	if (s->seekable && opts && opts->no_replay && opts->stage_dir) {
		/* opened on the first entry that needs it */
		s->no_replay = 1;
		s->stage_dir = img_strdup(opts->stage_dir);
		if (!s->stage_dir) {
			r = img_set_error(ctx, -ENOMEM, "out of memory");
			goto fail;
		}
	}
	if (!s->seekable && opts && opts->inplace && opts->inplace->body && opts->inplace->align) {
		s->inplace = *opts->inplace;
		s->inplace_on = 1;
		s->next_off = s->inplace.start;
	}
	r = tar_open_archive(s, &a);
	if (r < 0)
		goto fail;
	r = read_entries(s, a, tree);
	archive_read_free(a);
	if (r < 0)
		goto fail;
	*out = s;
	return 0;
fail:
	img_tar_source_free(s);
	return r;
}

uint64_t img_tar_source_pending(const struct img_tar_source *s)
{
	return s ? s->pending : 0;
}

/* --- pass 2: data of the pending entries -------------------------------- */

struct pend {
	uint64_t ordinal;
	struct img_node *node;
};

struct pend_list {
	struct pend *v;
	size_t n, cap;
	int err;
};

static int pend_visit(void *user, struct img_node *n, unsigned depth)
{
	struct pend_list *l = user;

	(void)depth;
	if (n->type != IMG_NODE_REG || n->link || n->data.kind != IMG_DATA_NONE ||
	    !n->data.offset || !n->size)
		return 0;
	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 256;
		struct pend *nv = realloc(l->v, ncap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		l->v = nv;
		l->cap = ncap;
	}
	l->v[l->n++] = (struct pend){ n->data.offset - 1, n };
	return 0;
}

static int pend_cmp(const void *a, const void *b)
{
	const struct pend *x = a, *y = b;

	if (x->ordinal != y->ordinal)
		return x->ordinal < y->ordinal ? -1 : 1;
	return x->node->seq < y->node->seq ? -1 : x->node->seq > y->node->seq;
}

int img_tar_source_replay(struct img_tar_source *s, struct img_tree *tree, img_tar_data_fn fn,
                          void *user)
{
	struct pend_list l = { 0 };
	struct archive *a = NULL;
	struct archive_entry *e;
	uint64_t ordinal = 0;
	size_t k = 0;
	int r;

	if (!s->pending)
		return 0;
	if (!s->seekable)
		return img_set_error(s->ctx, -EINVAL, "%s: cannot be read twice", s->name);
	r = img_tree_walk(tree, pend_visit, &l);
	if (r < 0) {
		free(l.v);
		return img_set_error(s->ctx, -ENOMEM, "out of memory");
	}
	qsort(l.v, l.n, sizeof(*l.v), pend_cmp);
	r = tar_open_archive(s, &a);
	for (; r >= 0 && k < l.n; ordinal++) {
		const void *blk;
		size_t sz;
		la_int64_t off;
		int rr = archive_read_next_header(a, &e);

		if (rr != ARCHIVE_OK && rr != ARCHIVE_WARN) {
			r = entry_error(s, a, "reading again (did the file change?)");
			break;
		}
		if (l.v[k].ordinal != ordinal)
			continue;
		while ((rr = archive_read_data_block(a, &blk, &sz, &off)) == ARCHIVE_OK) {
			for (size_t j = k; j < l.n && l.v[j].ordinal == ordinal && r >= 0; j++) {
				if (off < 0 || (uint64_t)off + sz > l.v[j].node->size)
					r = img_set_error(s->ctx, -EIO,
					                  "%s: entry %s changed on the second read",
					                  s->name, archive_entry_pathname(e));
				else
					r = fn(user, l.v[j].node, (uint64_t)off, blk, sz);
			}
			if (r < 0)
				break;
		}
		if (r >= 0 && rr != ARCHIVE_EOF)
			r = entry_error(s, a, archive_entry_pathname(e));
		while (k < l.n && l.v[k].ordinal == ordinal)
			k++;
		if (r >= 0)
			r = img_check_cancel(s->ctx);
	}
	if (a)
		archive_read_free(a);
	free(l.v);
	return r;
}

/* --- in-place data: keep what is right, move out what is not --------- */

static struct placed *placed_find(struct img_tar_source *s, uint64_t base)
{
	size_t lo = 0, hi = s->nplaced;

	while (lo < hi) { /* appended in increasing base order */
		size_t mid = (lo + hi) / 2;

		if (s->placed[mid].base < base)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < s->nplaced && s->placed[lo].base == base ? &s->placed[lo] : NULL;
}

struct settle {
	struct img_tar_source *s;
	img_tar_place_fn fn;
	void *user;
};

static int copy_range(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t len)
{
	while (len) {
		loff_t i = (loff_t)in_off, o = (loff_t)out_off;
		ssize_t n = copy_file_range(in, &i, out, &o, (size_t)IMG_MIN(len, 1u << 30), 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* Not on this pair of file systems: plain reads and writes. */
			uint8_t buf[65536];
			size_t l = (size_t)IMG_MIN(len, sizeof(buf));
			int r = img_pread_full(in, buf, l, in_off);

			if (r < 0 || (r = img_pwrite_full(out, buf, l, out_off)) < 0)
				return r;
			n = (ssize_t)l;
		}
		in_off += (uint64_t)n;
		out_off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

static int settle_visit(void *user, struct img_node *n, unsigned depth)
{
	struct settle *st = user;
	struct img_tar_source *s = st->s;
	struct placed *p;
	int r;

	(void)depth;
	if (n->type != IMG_NODE_REG || n->link || n->data.kind != IMG_DATA_FD ||
	    n->data.fd != s->stage_fd || !(p = placed_find(s, n->data.offset)) || !p->span)
		return 0;
	r = st->fn(st->user, n, p->off, p->span);
	if (r < 0)
		return r;
	if (r > 0) {
		p->kept = 1;
		return 0;
	}
	if (p->copied)
		return 0;
	/* Not where the writer wants it: complete the staged copy. */
	r = copy_range(s->inplace.fd, p->off, s->stage_fd, p->base, p->span);
	if (r < 0)
		return img_set_error(s->ctx, r, "moving staged data of %s: %s", n->name,
		                     strerror(-r));
	p->copied = 1;
	s->staged += p->span;
	return 0;
}

int img_tar_source_settle(struct img_tar_source *s, struct img_tree *tree, img_tar_place_fn fn,
                          void *user)
{
	struct settle st = { s, fn, user };
	int r;

	if (!s || !s->nplaced)
		return 0;
	r = img_tree_walk(tree, settle_visit, &st);
	if (r < 0)
		return r;
	/* Whatever is not kept must read as zeros again. */
	for (size_t i = 0; i < s->nplaced; i++) {
		struct placed *p = &s->placed[i];
		uint64_t len = IMG_ALIGN_UP(p->span, s->inplace.align);

		if (p->kept || !len)
			continue;
		s->inplace_bytes -= p->span;
		if (fallocate(s->inplace.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		              (off_t)p->off, (off_t)len) < 0) {
			static const uint8_t zero[4096];

			for (uint64_t o = 0; o < len; o += sizeof(zero)) {
				r = img_pwrite_full(s->inplace.fd, zero,
				                    (size_t)IMG_MIN(sizeof(zero), len - o),
				                    p->off + o);
				if (r < 0)
					return img_set_error(s->ctx, r, "clearing moved data: %s",
					                     strerror(-r));
			}
		}
	}
	return 0;
}

void img_tar_source_stats(const struct img_tar_source *s, uint64_t *inplace, uint64_t *staged)
{
	*inplace = s ? s->inplace_bytes : 0;
	*staged = s ? s->staged : 0;
}

void img_tar_source_free(struct img_tar_source *s)
{
	if (!s)
		return;
	free(s->placed);
	free(s->last);
	if (s->own_fd && s->fd >= 0)
		close(s->fd);
	if (s->stage_fd >= 0)
		close(s->stage_fd);
	free(s->buf);
	free(s->stage_dir);
	free(s->store);
	free(s->prefix);
	free(s->name);
	free(s);
}
