/*
 * source.c -- a closure on disk into the tree: libarchive's read_disk walks
 * every store path under --root (symlinks not followed, no xattrs, ACLs or
 * file flags), hard links are recognised by (st_dev, st_ino) and handed to
 * the tree, whose policy decides (source.h). File data stays on disk: nodes
 * refer to their host path (IMG_DATA_PATH). The tar stream source is in
 * source-tar.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <archive.h>
#include <archive_entry.h>

#include "private.h"
#include <img/source.h>

/* (dev, ino) of files with more than one link -> the tree path seen first. */
struct link_map {
	struct link_ent {
		uint64_t dev, ino;
		char *path;
	} * ents;
	size_t n, cap; /* open addressing; cap is a power of two */
};

static uint64_t link_hash(uint64_t dev, uint64_t ino)
{
	uint64_t h = (dev * 0x9e3779b97f4a7c15ull) ^ (ino * 0xc2b2ae3d27d4eb4full);

	return h ^ (h >> 29);
}

static int link_grow(struct link_map *m)
{
	size_t cap = m->cap ? m->cap * 2 : 256;
	struct link_ent *e = calloc(cap, sizeof(*e));

	if (!e)
		return -ENOMEM;
	for (size_t i = 0; i < m->cap; i++) {
		size_t j;

		if (!m->ents[i].path)
			continue;
		j = link_hash(m->ents[i].dev, m->ents[i].ino) & (cap - 1);
		while (e[j].path)
			j = (j + 1) & (cap - 1);
		e[j] = m->ents[i];
	}
	free(m->ents);
	m->ents = e;
	m->cap = cap;
	return 0;
}

/* The first path of (dev, ino), or NULL after recording @path for it. */
static int link_seen(struct link_map *m, uint64_t dev, uint64_t ino, const char *path,
                     const char **first)
{
	size_t j;

	*first = NULL;
	if ((m->n + 1) * 2 > m->cap && link_grow(m) < 0)
		return -ENOMEM;
	j = link_hash(dev, ino) & (m->cap - 1);
	while (m->ents[j].path) {
		if (m->ents[j].dev == dev && m->ents[j].ino == ino) {
			*first = m->ents[j].path;
			return 0;
		}
		j = (j + 1) & (m->cap - 1);
	}
	m->ents[j].dev = dev;
	m->ents[j].ino = ino;
	m->ents[j].path = img_strdup(path);
	if (!m->ents[j].path)
		return -ENOMEM;
	m->n++;
	return 0;
}

static void link_free(struct link_map *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->ents[i].path);
	free(m->ents);
}

/* --- Nix's case hack -------------------------------------------------- */

size_t img_case_hack_len(const char *c, size_t len)
{
	static const char hack[] = "~nix~case~hack~";
	size_t hl = sizeof(hack) - 1, d = len;

	while (d > 0 && c[d - 1] >= '0' && c[d - 1] <= '9')
		d--;
	if (d == len || d < hl + 1 || memcmp(c + d - hl, hack, hl))
		return len;
	return d - hl;
}

/* Strip every component of @path in place; *last: the last one lost a suffix. */
static void case_hack_path(char *path, int *last)
{
	char *in = path, *o = path;

	*last = 0;
	while (*in) {
		size_t cl = strcspn(in, "/"), sl = img_case_hack_len(in, cl);

		memmove(o, in, sl);
		o += sl;
		in += cl;
		*last = sl != cl;
		while (*in == '/')
			*o++ = *in++;
	}
	*o = '\0';
}

int img_case_hack_target(const char *target, char **out)
{
	char *t;
	int last;

	*out = NULL;
	if (!strstr(target, "~nix~case~hack~"))
		return 0;
	t = img_strdup(target);
	if (!t)
		return -ENOMEM;
	case_hack_path(t, &last);
	if (!strcmp(t, target)) {
		free(t);
		return 0;
	}
	*out = t;
	return 0;
}

static int entry_type(mode_t ft, enum img_node_type *t)
{
	switch (ft) {
	case AE_IFREG:
		*t = IMG_NODE_REG;
		return 0;
	case AE_IFDIR:
		*t = IMG_NODE_DIR;
		return 0;
	case AE_IFLNK:
		*t = IMG_NODE_SYMLINK;
		return 0;
	case AE_IFCHR:
		*t = IMG_NODE_CHR;
		return 0;
	case AE_IFBLK:
		*t = IMG_NODE_BLK;
		return 0;
	case AE_IFIFO:
		*t = IMG_NODE_FIFO;
		return 0;
	case AE_IFSOCK:
		*t = IMG_NODE_SOCK;
		return 0;
	}
	return -EINVAL;
}

/* One entry of the walk into the tree at @tpath. */
static int add_entry(struct img_ctx *ctx, struct img_tree *tree, struct archive_entry *e,
                     const char *host, const char *tpath, struct link_map *links)
{
	struct img_node_attr a = { 0 };
	const char *first;
	char *target = NULL;
	int r;

	if (entry_type(archive_entry_filetype(e), &a.type) < 0)
		return img_set_error(ctx, -EINVAL, "%s: unsupported file type", host);
	if (a.type != IMG_NODE_DIR && archive_entry_nlink(e) > 1) {
		if (link_seen(links, (uint64_t)archive_entry_dev(e),
		              (uint64_t)archive_entry_ino64(e), tpath, &first) < 0)
			return img_set_error(ctx, -ENOMEM, "out of memory");
		if (first)
			return img_tree_add_hardlink(tree, tpath, first);
	}
	a.mode = archive_entry_perm(e) & 07777;
	a.uid = (uint32_t)archive_entry_uid(e);
	a.gid = (uint32_t)archive_entry_gid(e);
	a.mtime = archive_entry_mtime(e);
	switch (a.type) {
	case IMG_NODE_REG:
		a.size = (uint64_t)archive_entry_size(e);
		a.data.kind = IMG_DATA_PATH;
		a.data.path = (char *)host;
		break;
	case IMG_NODE_SYMLINK:
		a.target = archive_entry_symlink(e);
		if (!a.target)
			return img_set_error(ctx, -EINVAL, "%s: unreadable symlink", host);
		/* as for a tar: a link to a hacked name follows it to its real name */
		if (img_case_hack_target(a.target, &target) < 0)
			return img_set_error(ctx, -ENOMEM, "out of memory");
		if (target)
			a.target = target;
		a.size = strlen(a.target);
		break;
	case IMG_NODE_CHR:
	case IMG_NODE_BLK:
		a.rdev_major = (uint32_t)archive_entry_rdevmajor(e);
		a.rdev_minor = (uint32_t)archive_entry_rdevminor(e);
		break;
	default:
		break;
	}
	r = img_tree_add(tree, tpath, &a, NULL);
	free(target);
	return r < 0 ? img_error_prefix(ctx, r, "%s", host) : 0;
}

static int walk_path(struct img_ctx *ctx, const struct img_closure *c, const char *store_path,
                     const char *prefix, struct img_tree *tree, struct link_map *links)
{
	size_t skip = strlen(c->root) + strlen(c->store_dir) + 1;
	struct archive *a = archive_read_disk_new();
	struct archive_entry *e = archive_entry_new();
	char *host = NULL, *tpath = NULL;
	int r = 0, ar;

	if (!a || !e) {
		r = img_set_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	if (img_asprintf(&host, "%s%s", c->root, store_path) < 0) {
		r = img_set_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	archive_read_disk_set_symlink_physical(a);
	archive_read_disk_set_behavior(a, ARCHIVE_READDISK_NO_XATTR | ARCHIVE_READDISK_NO_ACL |
	                                      ARCHIVE_READDISK_NO_FFLAGS |
	                                      ARCHIVE_READDISK_NO_SPARSE);
	if (archive_read_disk_open(a, host) != ARCHIVE_OK) {
		r = img_set_error(ctx, -ENOENT, "%s: %s", host, archive_error_string(a));
		goto out;
	}
	for (;;) {
		const char *p;

		r = img_check_cancel(ctx);
		if (r < 0)
			break;
		ar = archive_read_next_header2(a, e);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar != ARCHIVE_OK) {
			/* ARCHIVE_WARN included: an unreadable directory or file
			 * would silently be missing from the image. */
			r = img_set_error(ctx, -EIO, "%s: %s",
			                  archive_entry_pathname(e) ? archive_entry_pathname(e)
			                                            : host,
			                  archive_error_string(a));
			break;
		}
		p = archive_entry_pathname(e);
		if (!p || strlen(p) < skip || strncmp(p, host, strlen(host))) {
			r = img_set_error(ctx, -EINVAL, "%s: entry outside the store path: %s",
			                  host, p ? p : "?");
			break;
		}
		free(tpath);
		if (img_asprintf(&tpath, "%s%s", prefix, p + skip) < 0) {
			r = img_set_error(ctx, -ENOMEM, "out of memory");
			break;
		}
		/* The case hack as a tar gets it: names lose the suffix, and one
		 * that then meets a sibling of that name is refused (readdir order
		 * must not decide which of the two survives). */
		{
			int hacked;

			case_hack_path(tpath + strlen(prefix), &hacked);
			if (hacked) {
				const char *slash = strrchr(p, '/'), *base = strrchr(tpath, '/');
				char *sib = NULL;
				struct stat st;

				base = base ? base + 1 : tpath;
				if (img_asprintf(&sib, "%.*s/%s", (int)(slash - p), p, base) < 0) {
					r = img_set_error(ctx, -ENOMEM, "out of memory");
					break;
				}
				r = lstat(sib, &st) == 0
				        ? img_set_error(ctx, -EINVAL,
				                        "%s: becomes %s without its case hack "
				                        "suffix, which is there too",
				                        p, sib)
				        : 0;
				free(sib);
				if (r < 0)
					break;
			}
		}
		r = add_entry(ctx, tree, e, p, tpath, links);
		if (r < 0)
			break;
		if (archive_read_disk_can_descend(a))
			archive_read_disk_descend(a);
	}
	archive_read_close(a);
out:
	free(host);
	free(tpath);
	archive_entry_free(e);
	archive_read_free(a);
	return r;
}

int img_source_closure(struct img_ctx *ctx, const struct img_closure *closure,
                       const struct img_source_opts *opts, struct img_tree *tree)
{
	const char *prefix = opts && opts->prefix ? opts->prefix : "";
	struct link_map links = { 0 };
	int r = 0;

	for (size_t i = 0; i < closure->npaths && r >= 0; i++)
		r = walk_path(ctx, closure, closure->paths[i], prefix, tree, &links);
	link_free(&links);
	return r;
}

/* --- what a Nix store holds -------------------------------------------- */

struct policy {
	struct img_ctx *ctx;
	const struct img_node *store;
	unsigned depth; /* the store node's */
	int inside;
	size_t skip; /* bytes of the store node's tree path and its '/' */
	const char *store_dir, *input;
	uint64_t special, changed;
	char first[4096]; /* the first entry that had special bits */
};

/* "/nix/store/x-foo/bin/a" for the node, into @buf. */
static const char *shown_path(struct policy *p, const struct img_node *n, char *buf, size_t len)
{
	char tp[4096];

	if (img_node_path(n, tp, sizeof(tp)) < 0 || strlen(tp) < p->skip)
		snprintf(buf, len, "%s/.../%s", p->store_dir, n->name);
	else
		snprintf(buf, len, "%s/%s", p->store_dir, tp + p->skip);
	return buf;
}

static int policy_visit(void *user, struct img_node *n, unsigned depth)
{
	static const char *const kind[] = { [IMG_NODE_CHR] = "a character device",
		                            [IMG_NODE_BLK] = "a block device",
		                            [IMG_NODE_FIFO] = "a FIFO",
		                            [IMG_NODE_SOCK] = "a socket" };
	struct policy *p = user;
	char shown[4200];
	uint32_t m;

	if (n == p->store) {
		p->inside = 1;
		return 0;
	}
	if (p->inside && depth <= p->depth)
		p->inside = 0; /* past the store's subtree */
	if (!p->inside || img_node_inode(n) != n)
		return 0;
	switch (n->type) {
	case IMG_NODE_REG:
	case IMG_NODE_DIR:
		break;
	case IMG_NODE_SYMLINK:
		return 0;
	default:
		return img_set_error(p->ctx, -EINVAL,
		                     "%s: %s is %s; a Nix store holds only regular files, "
		                     "directories and symlinks",
		                     p->input, shown_path(p, n, shown, sizeof(shown)),
		                     kind[n->type]);
	}
	/* As Nix canonicalises a path it registers: r-x or r-- for all, no
	 * set-id or sticky bit, no write permission. */
	m = 0444 | (n->mode & 0100 ? 0111 : 0);
	if (n->mode & 07000 && !p->special++)
		shown_path(p, n, p->first, sizeof(p->first));
	if (m != n->mode) {
		p->changed++;
		n->mode = m;
	}
	return 0;
}

int img_source_store_policy(struct img_ctx *ctx, struct img_tree *tree, const char *store,
                            const char *store_dir, const char *input)
{
	struct policy *p = img_malloc0(sizeof(*p));
	const struct img_node *s = *store ? img_tree_lookup(tree, store) : tree->root;
	int r;

	if (!p)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	if (!s || s->type != IMG_NODE_DIR) {
		free(p);
		return 0;
	}
	p->ctx = ctx;
	p->store = s;
	for (const struct img_node *a = s; a->parent; a = a->parent)
		p->depth++;
	p->skip = *store ? strlen(store) + 1 : 0;
	p->store_dir = store_dir ? store_dir : "/nix/store";
	p->input = input;
	r = img_tree_walk(tree, policy_visit, p);
	if (r >= 0 && p->special)
		img_log(ctx, IMG_LOG_WARN,
		        "%s: set-user-ID, set-group-ID or sticky bits dropped from %llu "
		        "entr%s (first: %s): a Nix store holds none",
		        input, (unsigned long long)p->special, p->special == 1 ? "y" : "ies",
		        p->first);
	if (r >= 0 && p->changed)
		img_log(ctx, IMG_LOG_INFO,
		        "%s: %llu modes made what Nix makes them (0444, or 0555 where the owner "
		        "could execute)",
		        input, (unsigned long long)p->changed);
	free(p);
	return r;
}
