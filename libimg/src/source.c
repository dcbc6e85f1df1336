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
