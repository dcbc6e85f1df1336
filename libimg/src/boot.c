/*
 * boot.c -- ESP contents for a NixOS system: systemd-boot with loader
 * entries, or a unified kernel image.
 *
 * Specs: NixOS systemd-boot-builder.py (file names under EFI/nixos, entry
 * and loader.conf keys; formats.md 6.2), the Boot Loader Specification
 * (type #1 entries), the UAPI Unified Kernel Image specification and the
 * PE/COFF specification (section table, alignment; formats.md 6.3).
 *
 * Everything is read under the closure's root: store symlinks such as
 * toplevel/kernel -> /nix/store/...-linux/bzImage are followed inside root.
 * With opts->tree (a closure read from a tar stream) the same paths are
 * looked up in that tree instead, symlinks followed inside it, and the ESP
 * files share the tree nodes' data (a range of the tar or of its staging
 * file): nothing is read from the host but the explicit --bootloader and
 * --uki-stub files. The only time in the output is the epoch (the entry's
 * "built on" date).
 */
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "private.h"
#include "tree-private.h"
#include <img/boot.h>
#include <img/bootspec.h>
#include <img/repro.h>

#define DEFAULT_STUB     "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
#define SDBOOT_IN_PKG    "lib/systemd/boot/efi/systemd-bootx64.efi"
#define STUB_IN_PKG      "lib/systemd/boot/efi/linuxx64.efi.stub"
#define MAX_LINKS        40
#define IMG_BOOT_TIMEOUT 0 /* loader.conf and grub.cfg: boot the default at once */

/* ---- paths under root ---------------------------------------------------- */

static const char *root_of(const char *root)
{
	return root && strcmp(root, "/") ? root : "";
}

static const char *store_of(const struct img_boot_opts *o)
{
	return o->store_dir ? o->store_dir : "/nix/store";
}

static const char *tree_name(const struct img_boot_opts *o)
{
	return o->tree_name ? o->tree_name : "the tree";
}

/*
 * The node of opts->tree at namespace path @ns: the store is the tree's
 * nix/store (where the root tree puts it, whatever the store directory).
 * 0 with *node NULL for a directory above the store; -EXDEV outside the
 * store, -ENOENT when the tree has no such entry.
 */
static int tree_node(const struct img_boot_opts *o, const char *ns, struct img_node **node)
{
	const char *sd = store_of(o);
	size_t n = strlen(sd), l = strlen(ns);
	char tp[PATH_MAX + 16];

	*node = NULL;
	if (!strncmp(ns, sd, n) && (ns[n] == '/' || !ns[n])) {
		if (snprintf(tp, sizeof(tp), "nix/store%s", ns + n) >= (int)sizeof(tp))
			return -ENAMETOOLONG;
		*node = img_tree_lookup((struct img_tree *)o->tree, tp);
		/* a hard link not yet resolved reads as its target (Nix's
		 * optimised stores hard-link identical files across paths) */
		if (*node)
			*node = img_tree_pending_target((struct img_tree *)o->tree, *node);
		return *node ? 0 : -ENOENT;
	}
	if (l < n && !strncmp(sd, ns, l) && sd[l] == '/')
		return 0;
	return -EXDEV;
}

/* A tree lookup failed at @done (with @rest still to go) resolving @path. */
static int tree_miss(struct img_ctx *ctx, const struct img_boot_opts *o, int e, const char *done,
                     const char *rest, const char *path, int links)
{
	char what[PATH_MAX * 3];
	size_t n;

	snprintf(what, sizeof(what), "%s%s", done, rest);
	for (n = strlen(what); n > 1 && what[n - 1] == '/';)
		what[--n] = 0;
	if (e == -ENAMETOOLONG)
		return img_set_error(ctx, e, "%s: path too long", what);
	/* ENOENT either way, so that optional files stay optional */
	return img_set_error(ctx, -ENOENT, "%s: %s %s%s%s%s", what,
	                     e == -EXDEV ? "outside the store, so not in" : "not in", tree_name(o),
	                     links ? " (" : "", links ? path : "", links ? " leads there)" : "");
}

/*
 * Resolve the image-namespace path @path under opts->root (or in
 * opts->tree), following symlinks inside it. @out gets the resolved
 * namespace path (PATH_MAX bytes); @node (may be NULL) the tree node there
 * (NULL on the host).
 */
static int resolve(struct img_ctx *ctx, const struct img_boot_opts *o, const char *path, char *out,
                   struct img_node **node)
{
	char rest[PATH_MAX * 2], done[PATH_MAX], host[PATH_MAX * 2], target[PATH_MAX];
	const char *root = o->root;
	struct img_node *tn = NULL;
	int links = 0;

	if (snprintf(rest, sizeof(rest), "%s", path) >= (int)sizeof(rest))
		return img_set_error(ctx, -ENAMETOOLONG, "%s: path too long", path);
	done[0] = 0;
	while (rest[0]) {
		char *p = rest, comp[NAME_MAX + 1];
		size_t n;
		struct stat st;

		while (*p == '/')
			p++;
		n = strcspn(p, "/");
		if (!n)
			break;
		if (n > NAME_MAX)
			return img_set_error(ctx, -ENAMETOOLONG, "%s: name too long", path);
		memcpy(comp, p, n);
		comp[n] = 0;
		memmove(rest, p + n, strlen(p + n) + 1);
		if (!strcmp(comp, "."))
			continue;
		if (!strcmp(comp, "..")) {
			char *slash = strrchr(done, '/');

			if (slash)
				*slash = 0;
			continue;
		}
		if (strlen(done) + 1 + n >= sizeof(done))
			return img_set_error(ctx, -ENAMETOOLONG, "%s: path too long", path);
		strcat(done, "/");
		strcat(done, comp);
		if (o->tree) {
			struct img_node *ln;
			int e = tree_node(o, done, &ln);

			if (e < 0)
				return tree_miss(ctx, o, e, done, rest, path, links);
			if (!ln || ln->type != IMG_NODE_SYMLINK)
				continue;
			if (++links > MAX_LINKS)
				return img_set_error(ctx, -ELOOP, "%s: too many symbolic links",
				                     path);
			snprintf(target, sizeof(target), "%s", ln->target);
		} else {
			snprintf(host, sizeof(host), "%s%s", root_of(root), done);
			if (lstat(host, &st) < 0) {
				int e = -errno;

				return img_set_error(ctx, e, "%s: %s", host, strerror(-e));
			}
			if (!S_ISLNK(st.st_mode))
				continue;
			if (++links > MAX_LINKS)
				return img_set_error(ctx, -ELOOP, "%s: too many symbolic links",
				                     path);
			ssize_t tl = readlink(host, target, sizeof(target) - 1);
			if (tl < 0) {
				int e = -errno;

				return img_set_error(ctx, e, "%s: %s", host, strerror(-e));
			}
			target[tl] = 0;
		}
		*strrchr(done, '/') = 0;
		if (target[0] == '/')
			done[0] = 0;
		{
			char tmp[PATH_MAX * 2];

			if (snprintf(tmp, sizeof(tmp), "%s/%s", target, rest) >= (int)sizeof(tmp))
				return img_set_error(ctx, -ENAMETOOLONG, "%s: path too long", path);
			memcpy(rest, tmp, strlen(tmp) + 1);
		}
	}
	snprintf(out, PATH_MAX, "%s", done[0] ? done : "/");
	if (node && o->tree && tree_node(o, out, &tn) < 0)
		tn = NULL;
	if (node)
		*node = tn;
	return 0;
}

static int host_path(const char *root, const char *nspath, char *out, size_t len)
{
	if (snprintf(out, len, "%s%s", root_of(root), nspath) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

/* Cut trailing newlines. */
static void chomp(char *buf)
{
	for (size_t n = strlen(buf); n && (buf[n - 1] == '\n' || buf[n - 1] == '\r');)
		buf[--n] = 0;
}

/* Read a small text file (under root or in the tree) into a malloc'ed string; trailing newlines
 * cut. */
static int read_text(struct img_ctx *ctx, const struct img_boot_opts *o, const char *nspath,
                     char **out, int optional)
{
	char res[PATH_MAX], host[PATH_MAX];
	const char *root = o->root;
	struct img_node *node = NULL;
	struct stat st;
	char *buf;
	int fd, r;

	*out = NULL;
	r = resolve(ctx, o, nspath, res, &node);
	if (r < 0) {
		if (optional && r == -ENOENT) {
			img_ctx_clear_error(ctx);
			return 0;
		}
		return r;
	}
	if (o->tree) {
		if (!node || node->type != IMG_NODE_REG || node->size > (1 << 20))
			return img_set_error(ctx, -EINVAL, "%s: not a small regular file (in %s)",
			                     res, tree_name(o));
		buf = malloc((size_t)node->size + 1);
		if (!buf)
			return img_set_error(ctx, -ENOMEM, "out of memory");
		r = img_node_read_data(ctx, node, 0, buf, (size_t)node->size);
		if (r < 0) {
			free(buf);
			return img_error_prefix(ctx, r, "%s", res);
		}
		buf[node->size] = 0;
		if (memchr(buf, 0, (size_t)node->size)) {
			free(buf);
			return img_set_error(ctx, -EINVAL, "%s: holds a NUL byte (in %s)", res,
			                     tree_name(o));
		}
		chomp(buf);
		*out = buf;
		return 0;
	}
	if (host_path(root, res, host, sizeof(host)) < 0)
		return img_set_error(ctx, -ENAMETOOLONG, "%s: path too long", nspath);
	fd = open(host, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		return img_set_error(ctx, r, "%s: %s", host, strerror(-r));
	}
	if (!S_ISREG(st.st_mode) || st.st_size > (1 << 20)) {
		close(fd);
		return img_set_error(ctx, -EINVAL, "%s: not a small regular file", host);
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	r = img_pread_full(fd, buf, (size_t)st.st_size, 0);
	close(fd);
	if (r < 0) {
		free(buf);
		return img_set_error(ctx, r, "%s: %s", host, strerror(-r));
	}
	buf[st.st_size] = 0;
	if (memchr(buf, 0, (size_t)st.st_size)) {
		free(buf);
		return img_set_error(ctx, -EINVAL, "%s: holds a NUL byte", host);
	}
	chomp(buf);
	*out = buf;
	return 0;
}

/* The toplevel's kernel-params file ("" when it has none). */
static int kernel_params_file(struct img_ctx *ctx, const struct img_boot_opts *o, char **out)
{
	char ns[PATH_MAX];
	int r;

	*out = NULL;
	if (snprintf(ns, sizeof(ns), "%s/kernel-params", o->system) >= (int)sizeof(ns))
		return img_set_error(ctx, -ENAMETOOLONG, "%s: path too long", o->system);
	r = read_text(ctx, o, ns, out, 1);
	if (r < 0)
		return r;
	if (*out && !img_bootspec_text_ok(*out)) {
		free(*out);
		*out = NULL;
		return img_set_error(ctx, -EINVAL, "%s: holds a control character (a newline, ...)",
		                     ns);
	}
	if (!*out && !(*out = img_strdup("")))
		return img_set_error(ctx, -ENOMEM, "out of memory");
	return 0;
}

/* ---- tree building ------------------------------------------------------- */

static int add_file_host(struct img_ctx *ctx, struct img_tree *t, const char *path,
                         const char *host)
{
	struct img_node_attr a = { .type = IMG_NODE_REG, .mode = 0644 };
	struct stat st;

	if (stat(host, &st) < 0) {
		int e = -errno;

		return img_set_error(ctx, e, "%s: %s", host, strerror(-e));
	}
	if (!S_ISREG(st.st_mode))
		return img_set_error(ctx, -EINVAL, "%s: not a regular file", host);
	a.size = (uint64_t)st.st_size;
	a.data.kind = IMG_DATA_PATH;
	a.data.path = (char *)host;
	return img_tree_add(t, path, &a, NULL);
}

/* A boot file from opts->tree: the ESP file shares the node's data. */
static int add_file_node(struct img_ctx *ctx, struct img_tree *t, const char *path,
                         const char *what, struct img_node *node)
{
	struct img_node_attr a = { .type = IMG_NODE_REG, .mode = 0644 };
	struct img_node *ino = node ? img_node_inode(node) : NULL;

	if (!ino || ino->type != IMG_NODE_REG)
		return img_set_error(ctx, -EINVAL, "%s: not a regular file", what);
	if (ino->size && ino->data.kind == IMG_DATA_NONE)
		return img_set_error(ctx, -EINVAL, "%s: its data is not available yet", what);
	a.size = ino->size;
	a.data = ino->data;
	return img_tree_add(t, path, &a, NULL);
}

/* A boot file: a host path, or a node of opts->tree. */
struct bfile {
	char host[PATH_MAX];
	char ns[PATH_MAX]; /* the resolved namespace path, for messages */
	struct img_node *node;
};

static int add_bfile(struct img_ctx *ctx, struct img_tree *t, const char *path, struct bfile *f)
{
	if (f->node)
		return add_file_node(ctx, t, path, f->ns, f->node);
	return add_file_host(ctx, t, path, f->host);
}

static int add_text(struct img_tree *t, const char *path, const char *text)
{
	struct img_node_attr a = { .type = IMG_NODE_REG, .mode = 0644 };

	a.size = strlen(text);
	a.data.kind = IMG_DATA_MEM;
	a.data.mem = (void *)text;
	return img_tree_add(t, path, &a, NULL);
}

/* Find lib/systemd/boot/efi/<file> in the closure: a host path, or in
 * opts->tree a node (symlinks followed inside the tree). */
static int find_in_closure(struct img_ctx *ctx, const struct img_boot_opts *o, const char *rel,
                           struct bfile *out)
{
	struct stat st;

	out->node = NULL;
	for (size_t i = 0; i < o->npaths; i++) {
		char ns[PATH_MAX];
		struct img_node *n;

		if (o->tree) {
			if (snprintf(ns, sizeof(ns), "%s/%s", o->paths[i], rel) >= (int)sizeof(ns))
				continue;
			if (resolve(ctx, o, ns, out->ns, &n) < 0) {
				img_ctx_clear_error(ctx);
				continue;
			}
			if (n && n->type == IMG_NODE_REG) {
				out->node = n;
				return 1;
			}
			continue;
		}
		if (snprintf(out->host, sizeof(out->host), "%s%s/%s", root_of(o->root), o->paths[i],
		             rel) >= (int)sizeof(out->host))
			continue;
		if (stat(out->host, &st) == 0 && S_ISREG(st.st_mode))
			return 1;
	}
	return 0;
}

/* ---- the plan: the entries, from boot.json or the toplevel's files ------- */

/* The store path (<store>/<name>) @path lies in, into @out; -1 if none. */
static int store_path_of(const char *store, const char *path, char *out, size_t len)
{
	size_t n = strlen(store), l;

	if (strncmp(path, store, n) || path[n] != '/')
		return -1;
	l = strcspn(path + n + 1, "/");
	if (!l || n + 1 + l >= len)
		return -1;
	memcpy(out, path, n + 1 + l);
	out[n + 1 + l] = 0;
	return 0;
}

/* @path (for messages: @what) must lie in one of the closure's store paths;
 * without a list of paths only the store is checked. */
static int in_closure(struct img_ctx *ctx, const struct img_boot_opts *o, const char *what,
                      const char *path)
{
	char sp[PATH_MAX];

	if (store_path_of(store_of(o), path, sp, sizeof(sp)) < 0)
		return img_set_error(ctx, -EINVAL, "%s: '%s' is not in the store %s", what, path,
		                     store_of(o));
	if (!o->npaths)
		return 0;
	for (size_t i = 0; i < o->npaths; i++)
		if (!strcmp(o->paths[i], sp))
			return 0;
	return img_set_error(ctx, -EINVAL,
	                     "%s: '%s' is outside the closure (%s is not one of its paths)", what,
	                     path, sp);
}

/* The name NixOS's builder gives a file on the ESP: the store path's name,
 * then the file's own name unless it is the store path itself
 * (/nix/store/h-linux/bzImage -> h-linux-bzImage.efi). */
static int efi_name(struct img_ctx *ctx, const char *store_dir, const char *resolved, char *out,
                    size_t len)
{
	char sp[PATH_MAX];
	const char *sub, *base = strrchr(resolved, '/');

	if (store_path_of(store_dir, resolved, sp, sizeof(sp)) < 0)
		return img_set_error(ctx, -EINVAL, "%s is not in the store %s", resolved,
		                     store_dir);
	sub = sp + strlen(store_dir) + 1;
	if ((!strcmp(sp, resolved)
	         ? snprintf(out, len, "/EFI/nixos/%s.efi", sub)
	         : snprintf(out, len, "/EFI/nixos/%s-%s.efi", sub, base + 1)) >= (int)len)
		return img_set_error(ctx, -ENAMETOOLONG, "%s: name too long", resolved);
	return 0;
}

static void epoch_date(int64_t epoch, char out[16])
{
	time_t t = (time_t)epoch;
	struct tm b;

	gmtime_r(&t, &b);
	snprintf(out, 16, "%04d-%02d-%02d", b.tm_year + 1900, b.tm_mon + 1, b.tm_mday);
}

/* A boot file of an entry: resolved inside the closure, a regular file, in
 * the closure; @what names it ("x/boot.json: ...kernel"). */
static int boot_file(struct img_ctx *ctx, const struct img_boot_opts *o, const char *what,
                     const char *path, struct bfile *f)
{
	struct stat st;
	int r;

	memset(f, 0, sizeof(*f));
	r = resolve(ctx, o, path, f->ns, &f->node);
	if (r < 0)
		return img_error_prefix(ctx, r, "%s", what);
	r = in_closure(ctx, o, what, f->ns);
	if (r < 0)
		return r;
	if (o->tree) {
		struct img_node *ino = f->node ? img_node_inode(f->node) : NULL;

		if (!ino || ino->type != IMG_NODE_REG)
			return img_set_error(ctx, -EINVAL, "%s: %s is not a regular file", what,
			                     f->ns);
		return 0;
	}
	if (host_path(o->root, f->ns, f->host, sizeof(f->host)) < 0)
		return img_set_error(ctx, -ENAMETOOLONG, "%s: path too long", f->ns);
	if (stat(f->host, &st) < 0 || !S_ISREG(st.st_mode))
		return img_set_error(ctx, -EINVAL, "%s: %s is not a regular file", what, f->host);
	return 0;
}

void img_boot_plan_free(struct img_boot_plan *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nentries; i++) {
		struct img_boot_entry *e = &p->entries[i];

		free(e->id);
		free(e->title);
		free(e->grub_title);
		free(e->specialisation);
		free(e->toplevel);
		free(e->kernel);
		free(e->initrd);
		free(e->devicetree);
		free(e->init);
		free(e->label);
		free(e->nixos_version);
		free(e->sort_key);
		free(e->kernel_params);
		free(e->options);
		free(e->efi_kernel);
		free(e->efi_initrd);
		free(e->efi_devicetree);
	}
	free(p->entries);
	free(p->bootspec_file);
	free(p);
}

/* What one entry is made from (borrowed strings). */
struct src {
	const char *field; /* message prefix: "x/boot.json: org.nixos.bootspec.v1" or "system x" */
	const char *name;  /* specialisation, or NULL */
	const char *kernel, *initrd, *devicetree, *init, *toplevel, *label, *sort_key;
	const char *params; /* joined */
};

static char *dup_or_empty(const char *s)
{
	return img_strdup(s ? s : "");
}

static int plan_entry(struct img_ctx *ctx, const struct img_boot_opts *o, int bootspec,
                      const struct src *s, struct img_boot_entry *e)
{
	const char *extra = o->kernel_params;
	char what[PATH_MAX + 128], path[PATH_MAX];
	struct bfile f;
	int r;

	/* the unresolved paths too: a link out of the closure is no excuse */
	if (bootspec) {
		static const char *const keys[] = { "kernel", "initrd", "init", "toplevel",
			                            "devicetree" };
		const char *vals[] = { s->kernel, s->initrd, s->init, s->toplevel, s->devicetree };

		for (size_t i = 0; i < IMG_ARRAY_SIZE(keys); i++) {
			if (!vals[i])
				continue;
			snprintf(what, sizeof(what), "%s.%s", s->field, keys[i]);
			r = in_closure(ctx, o, what, vals[i]);
			if (r < 0)
				return r;
		}
	}
	snprintf(what, sizeof(what), "%s%skernel", s->field, bootspec ? "." : ": ");
	r = boot_file(ctx, o, what, s->kernel, &f);
	if (r < 0)
		return r;
	e->kernel = img_strdup(f.ns);
	e->efi_kernel = malloc(PATH_MAX);
	if (!e->kernel || !e->efi_kernel)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	r = efi_name(ctx, store_of(o), f.ns, e->efi_kernel, PATH_MAX);
	if (r < 0)
		return r;
	snprintf(what, sizeof(what), "%s%sinitrd", s->field, bootspec ? "." : ": ");
	r = boot_file(ctx, o, what, s->initrd, &f);
	if (r < 0)
		return r;
	e->initrd = img_strdup(f.ns);
	e->efi_initrd = malloc(PATH_MAX);
	if (!e->initrd || !e->efi_initrd)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	r = efi_name(ctx, store_of(o), f.ns, e->efi_initrd, PATH_MAX);
	if (r < 0)
		return r;
	if (s->devicetree) {
		snprintf(what, sizeof(what), "%s.devicetree", s->field);
		r = boot_file(ctx, o, what, s->devicetree, &f);
		if (r < 0)
			return r;
		e->devicetree = img_strdup(f.ns);
		e->efi_devicetree = malloc(PATH_MAX);
		if (!e->devicetree || !e->efi_devicetree)
			return img_set_error(ctx, -ENOMEM, "out of memory");
		r = efi_name(ctx, store_of(o), f.ns, e->efi_devicetree, PATH_MAX);
		if (r < 0)
			return r;
	}
	/* the toplevel's nixos-version: GRUB's titles show it */
	snprintf(path, sizeof(path), "%s/nixos-version", s->toplevel);
	r = read_text(ctx, o, path, &e->nixos_version, 1);
	if (r < 0)
		return r;
	if (e->nixos_version && !img_bootspec_text_ok(e->nixos_version))
		return img_set_error(ctx, -EINVAL, "%s: holds a control character", path);
	if (img_asprintf(&e->kernel_params, "%s%s%s", s->params,
	                 *s->params && extra && *extra ? " " : "", extra ? extra : "") < 0 ||
	    /* the builder's "init=%s " + " ".join(kernelParams) */
	    img_asprintf(&e->options, "init=%s %s", s->init, e->kernel_params) < 0)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	if (s->name
	        ? img_asprintf(&e->id, "nixos-generation-1-specialisation-%s", s->name) < 0 ||
	              img_asprintf(&e->title, "NixOS (%s)", s->name) < 0
	        : !(e->id = img_strdup("nixos-generation-1")) || !(e->title = img_strdup("NixOS")))
		return img_set_error(ctx, -ENOMEM, "out of memory");
	e->specialisation = s->name ? img_strdup(s->name) : NULL;
	e->init = img_strdup(s->init);
	e->toplevel = img_strdup(s->toplevel);
	e->label = dup_or_empty(s->label);
	e->sort_key = img_strdup(s->sort_key ? s->sort_key : "nixos");
	if ((s->name && !e->specialisation) || !e->init || !e->toplevel || !e->label ||
	    !e->sort_key)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	return 0;
}

static char *join_params(const struct img_bootspec_system *s)
{
	size_t n = 1;
	char *out, *p;

	for (size_t i = 0; i < s->nkernel_params; i++)
		n += strlen(s->kernel_params[i]) + 1;
	out = p = malloc(n);
	if (!out)
		return NULL;
	*p = 0;
	for (size_t i = 0; i < s->nkernel_params; i++)
		p += sprintf(p, "%s%s", i ? " " : "", s->kernel_params[i]);
	return out;
}

/* Read and parse <system>/boot.json; *bs NULL when there is none. */
static int read_bootspec(struct img_ctx *ctx, const struct img_boot_opts *o, char **file,
                         struct img_bootspec **bs)
{
	char *text = NULL;
	int r;

	*bs = NULL;
	if (img_asprintf(file, "%s/boot.json", o->system) < 0)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	r = read_text(ctx, o, *file, &text, 1);
	if (r < 0 || !text)
		return r;
	r = img_bootspec_parse(ctx, text, strlen(text), *file, store_of(o), bs);
	free(text);
	return r;
}

static int plan_files(struct img_ctx *ctx, const struct img_boot_opts *o, struct img_boot_plan *p)
{
	char k[PATH_MAX], i[PATH_MAX], in[PATH_MAX], field[PATH_MAX + 16], *params = NULL,
	                                                                   *label = NULL;
	struct src s = { 0 };
	int r;

	snprintf(k, sizeof(k), "%s/kernel", o->system);
	snprintf(i, sizeof(i), "%s/initrd", o->system);
	snprintf(in, sizeof(in), "%s/init", o->system);
	snprintf(field, sizeof(field), "system %s", o->system);
	r = kernel_params_file(ctx, o, &params);
	if (r >= 0) {
		char v[PATH_MAX];

		snprintf(v, sizeof(v), "%s/nixos-version", o->system);
		r = read_text(ctx, o, v, &label, 1);
		if (r >= 0 && label && !img_bootspec_text_ok(label))
			r = img_set_error(ctx, -EINVAL, "%s: holds a control character", v);
	}
	if (r >= 0) {
		s = (struct src){ .field = field,
			          .kernel = k,
			          .initrd = i,
			          .init = in,
			          .toplevel = o->system,
			          .label = label,
			          .params = params };
		p->source = "files";
		p->nentries = 1;
		r = plan_entry(ctx, o, 0, &s, &p->entries[0]);
	}
	free(params);
	free(label);
	return r;
}

int img_boot_plan_build(struct img_ctx *ctx, const struct img_boot_opts *o,
                        struct img_boot_plan **out)
{
	struct img_boot_plan *p;
	struct img_bootspec *bs = NULL;
	char *file = NULL;
	int r;

	*out = NULL;
	if (!o->system)
		return img_set_error(ctx, -EINVAL,
		                     "no NixOS system to boot: the closure has no path holding "
		                     "kernel, initrd and init; give --system");
	if (o->kernel_params && !img_bootspec_text_ok(o->kernel_params))
		return img_set_error(ctx, -EINVAL,
		                     "--kernel-params: holds a control character (a newline, a "
		                     "tab, ...): it would break the boot entries");
	r = read_bootspec(ctx, o, &file, &bs);
	if (r < 0) {
		free(file);
		return r;
	}
	p = calloc(1, sizeof(*p));
	if (p)
		p->entries = calloc(1 + (bs ? bs->nspecs : 0), sizeof(*p->entries));
	if (!p || !p->entries) {
		free(p);
		free(file);
		img_bootspec_free(bs);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	if (!bs) {
		free(file);
		r = plan_files(ctx, o, p);
	} else {
		p->source = "bootspec";
		p->bootspec_file = file;
		for (size_t i = 0; i <= bs->nspecs && r >= 0; i++) {
			const struct img_bootspec_system *b = i ? &bs->specs[i - 1] : &bs->sys;
			char field[PATH_MAX + 600], *params = join_params(b);

			if (!params) {
				r = img_set_error(ctx, -ENOMEM, "out of memory");
				break;
			}
			if (b->name)
				snprintf(field, sizeof(field),
				         "%s: org.nixos.specialisation.v1.%s.org.nixos.bootspec.v1",
				         file, b->name);
			else
				snprintf(field, sizeof(field), "%s: org.nixos.bootspec.v1", file);
			struct src s = { .field = field,
				         .name = b->name,
				         .kernel = b->kernel,
				         .initrd = b->initrd,
				         .devicetree = b->devicetree,
				         .init = b->init,
				         .toplevel = b->toplevel,
				         .label = b->label,
				         .sort_key = b->sort_key,
				         .params = params };
			p->nentries = i + 1;
			r = plan_entry(ctx, o, 1, &s, &p->entries[i]);
			free(params);
		}
	}
	img_bootspec_free(bs);
	if (r >= 0) {
		char date[16];
		const char *ver;

		epoch_date(img_repro_epoch(ctx), date);
		for (size_t i = 0; i < p->nentries && r >= 0; i++) {
			struct img_boot_entry *e = &p->entries[i];

			ver = e->nixos_version ? e->nixos_version : e->label;
			if (i ? img_asprintf(&e->grub_title, "NixOS (%s - %s - %s)",
			                     e->specialisation, date, ver) < 0
			      : !(e->grub_title =
			              img_strdup(p->nentries > 1 ? "NixOS - Default" : "NixOS")))
				r = img_set_error(ctx, -ENOMEM, "out of memory");
		}
	}
	if (r >= 0 && o->specialisation) {
		size_t i;

		for (i = 1; i < p->nentries; i++)
			if (!strcmp(p->entries[i].specialisation, o->specialisation))
				break;
		if (i == p->nentries) {
			char names[512] = "";

			for (i = 1; i < p->nentries; i++)
				snprintf(names + strlen(names), sizeof(names) - strlen(names),
				         "%s%s", i > 1 ? ", " : "", p->entries[i].specialisation);
			r = img_set_error(
			    ctx, -EINVAL,
			    "--specialisation %s: system %s has no such specialisation "
			    "(%s%s)",
			    o->specialisation, o->system,
			    p->nentries > 1 ? "it has: " : "it has none",
			    p->nentries > 1 ? names : "");
		} else
			p->default_entry = i;
	}
	if (r < 0) {
		img_boot_plan_free(p);
		return r;
	}
	*out = p;
	return 0;
}

/* ---- grub.cfg -------------------------------------------------------------- */

struct sbuf {
	char *s;
	size_t len, cap;
	int oom;
};

static void sb_add(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->oom = 1;
		return;
	}
	if (!b->s || b->len + (size_t)n >= b->cap) {
		size_t cap = (b->cap ? b->cap : 1024);
		char *ns;

		while (cap <= b->len + (size_t)n)
			cap *= 2;
		ns = realloc(b->s, cap);
		if (!ns) {
			b->oom = 1;
			return;
		}
		b->s = ns;
		b->cap = cap;
		va_start(ap, fmt);
		vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
}

/* @s inside GRUB double quotes: \, " and $ escaped. */
static void sb_quoted(struct sbuf *b, const char *s)
{
	for (; *s; s++)
		sb_add(b, "%s%c", strchr("\\\"$", *s) ? "\\" : "", *s);
}

/* One word of a GRUB command: as is when plain, else in single quotes. */
static void sb_word(struct sbuf *b, const char *w)
{
	const char *plain = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	                    "_./:=,+-@%^~";

	if (*w && strspn(w, plain) == strlen(w)) {
		sb_add(b, "%s", w);
		return;
	}
	sb_add(b, "'");
	for (; *w; w++)
		sb_add(b, *w == '\'' ? "'\\''" : "%c", *w);
	sb_add(b, "'");
}

static void grub_entry(struct sbuf *b, const struct img_boot_entry *e, const char *label,
                       const char *title, const char *options)
{
	char *p, *save = NULL, *params = img_strdup(e->kernel_params);

	sb_add(b, "menuentry \"");
	sb_quoted(b, title);
	sb_add(b, "\" %s {\n", options);
	sb_add(b, "search --set=drive1 --label %s\n", label);
	sb_add(b, "search --set=drive2 --label %s\n", label);
	sb_add(b, "  linux ($drive2)%s init=", e->kernel);
	sb_word(b, e->init);
	if (!params)
		b->oom = 1;
	for (p = params ? strtok_r(params, " ", &save) : NULL; p; p = strtok_r(NULL, " ", &save)) {
		sb_add(b, " ");
		sb_word(b, p);
	}
	sb_add(b, "\n  initrd ($drive2)%s\n}\n\n", e->initrd);
	free(params);
}

int img_boot_grub_cfg(struct img_ctx *ctx, const struct img_boot_plan *p, const char *label,
                      char **out)
{
	struct sbuf b = { 0 };
	char date[16], title[1024];
	const struct img_boot_entry *sys = &p->entries[0];
	const char *ver = sys->nixos_version ? sys->nixos_version : sys->label;
	int specs = p->nentries > 1;

	*out = NULL;
	if (strspn(label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") !=
	    strlen(label))
		return img_set_error(
		    ctx, -EINVAL,
		    "GRUB: the root label '%s' is not usable in grub.cfg (letters, "
		    "digits, '_', '-', '.')",
		    img_bootspec_text_ok(label) ? label : "?");
	epoch_date(img_repro_epoch(ctx), date);
	sb_add(&b, "# Automatically generated.  DO NOT EDIT THIS FILE!\n\n");
	sb_add(&b, "search --set=drive2 --label %s\n", label);
	sb_add(&b, "search --set=drive1 --label %s\n", label);
	sb_add(&b, "if [ -s $prefix/grubenv ]; then\n  load_env\nfi\n\n");
	sb_add(&b, "# 'grub-reboot' sets a one-time saved entry, which we process here and\n"
	           "# then delete.\n");
	sb_add(&b,
	       "if [ \"${next_entry}\" ]; then\n"
	       "  set default=\"${next_entry}\"\n"
	       "  set next_entry=\n"
	       "  save_env next_entry\n"
	       "  set timeout=1\n"
	       "else\n"
	       "  set default=%zu\n"
	       "  set timeout=%d\n"
	       "fi\n\n",
	       p->default_entry, IMG_BOOT_TIMEOUT);
	/* the default generation, then its specialisations */
	grub_entry(&b, sys, label, sys->grub_title, "--class nixos --unrestricted");
	for (size_t i = 1; i < p->nentries; i++)
		grub_entry(&b, &p->entries[i], label, p->entries[i].grub_title, "");
	/* every generation (here: the one) under "All configurations" */
	sb_add(&b, "submenu \"NixOS - All configurations\" --class submenu {\n");
	if (specs) {
		snprintf(title, sizeof(title), "> NixOS - Configuration 1 (%s - %s)", date, ver);
		sb_add(&b, "submenu \"");
		sb_quoted(&b, title);
		sb_add(&b, "\" --class submenu {\n");
	}
	snprintf(title, sizeof(title), "NixOS%s - Configuration 1 (%s - %s)",
	         specs ? " - Default" : "", date, ver);
	grub_entry(&b, sys, label, title, "--class nixos");
	for (size_t i = 1; i < p->nentries; i++)
		grub_entry(&b, &p->entries[i], label, p->entries[i].grub_title, "");
	if (specs)
		sb_add(&b, "}\n");
	sb_add(&b, "}\n");
	if (b.oom) {
		free(b.s);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	*out = b.s;
	return 0;
}

/* ---- UKI --------------------------------------------------------------- */

struct blob {
	const char *name;            /* section name, <= 8 bytes */
	int fd;                      /* data from fd (size bytes) or ... */
	const void *mem;             /* ... from memory, or ... */
	const struct img_node *node; /* ... from a node of opts->tree */
	uint64_t size;
};

static int file_size_fd(struct img_ctx *ctx, const char *host, int *fd, uint64_t *size)
{
	struct stat st;

	*fd = open(host, O_RDONLY | O_CLOEXEC);
	if (*fd < 0 || fstat(*fd, &st) < 0) {
		int e = -errno;

		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return img_set_error(ctx, e, "%s: %s", host, strerror(-e));
	}
	*size = (uint64_t)st.st_size;
	return 0;
}

/* Copy @b's data (an fd from offset 0, or a tree node) to @off in @out. */
static int copy_blob(struct img_ctx *ctx, int out, uint64_t off, const struct blob *b)
{
	uint8_t *buf = malloc(1 << 20);
	uint64_t done = 0;
	int r = 0;

	if (!buf)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	while (done < b->size && r == 0) {
		size_t n = (size_t)IMG_MIN(b->size - done, 1u << 20);

		if (b->node) {
			r = img_node_read_data(ctx, b->node, done, buf, n);
			if (r < 0) {
				free(buf);
				return img_error_prefix(ctx, r, "UKI: copying %s", b->name);
			}
		} else {
			r = img_pread_full(b->fd, buf, n, done);
		}
		if (r == 0)
			r = img_pwrite_full(out, buf, n, off + done);
		done += n;
	}
	free(buf);
	if (r < 0)
		return img_set_error(ctx, r, "UKI: copying %s: %s", b->name, strerror(-r));
	return 0;
}

/*
 * Append @n sections to the PE image @stub (a host file, or a node of
 * opts->tree) and write the result to the memfd @out. Section placement
 * follows ukify: headers must fit in SizeOfHeaders, raw data at
 * FileAlignment, virtual addresses at SectionAlignment after the stub's
 * last section.
 */
static int build_uki(struct img_ctx *ctx, const struct bfile *stub, const struct blob *b, size_t n,
                     int out, uint64_t *total)
{
	const char *stub_path = stub->node ? stub->ns : stub->host;
	uint8_t *d = NULL;
	int fd = -1, r;
	uint64_t size;
	uint32_t pe, nsec, optsz, opt, sectab, falign, salign, soh, raw_end = 0, va_end = 0;

	if (stub->node) {
		size = img_node_inode(stub->node)->size;
	} else {
		r = file_size_fd(ctx, stub_path, &fd, &size);
		if (r < 0)
			return r;
	}
	if (size < 0x200 || size > (64u << 20)) {
		if (fd >= 0)
			close(fd);
		return img_set_error(ctx, -EINVAL, "%s: not a PE stub (size)", stub_path);
	}
	d = malloc(size);
	if (!d) {
		if (fd >= 0)
			close(fd);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	if (stub->node) {
		r = img_node_read_data(ctx, stub->node, 0, d, size);
		if (r < 0) {
			free(d);
			return img_error_prefix(ctx, r, "%s", stub_path);
		}
	} else {
		r = img_pread_full(fd, d, size, 0);
		close(fd);
		if (r < 0) {
			free(d);
			return img_set_error(ctx, r, "%s: %s", stub_path, strerror(-r));
		}
	}
#define BAD(why)                                                                                   \
	do {                                                                                       \
		free(d);                                                                           \
		return img_set_error(ctx, -EINVAL, "%s: not a usable UEFI stub: %s", stub_path,    \
		                     why);                                                         \
	} while (0)
	if (d[0] != 'M' || d[1] != 'Z')
		BAD("no MZ header");
	pe = img_get_le32(d + 0x3C);
	if ((uint64_t)pe + 24 > size || memcmp(d + pe, "PE\0\0", 4))
		BAD("no PE signature");
	nsec = img_get_le16(d + pe + 6);
	optsz = img_get_le16(d + pe + 20);
	opt = pe + 24;
	if ((uint64_t)opt + optsz > size || optsz < 112 || img_get_le16(d + opt) != 0x20B)
		BAD("not PE32+");
	salign = img_get_le32(d + opt + 32);
	falign = img_get_le32(d + opt + 36);
	soh = img_get_le32(d + opt + 60);
	if (!falign || !salign || (falign & (falign - 1)) || (salign & (salign - 1)) || soh > size)
		BAD("bad alignment fields");
	sectab = opt + optsz;
	if ((uint64_t)sectab + 40ull * (nsec + n) > soh)
		BAD("no room for more section headers");
	for (uint32_t i = 0; i < nsec; i++) {
		const uint8_t *s = d + sectab + 40 * i;
		uint32_t vs = img_get_le32(s + 8), va = img_get_le32(s + 12);
		uint32_t rs = img_get_le32(s + 16), rp = img_get_le32(s + 20);

		if ((uint64_t)rp + rs > size)
			BAD("section beyond the end of the file");
		for (size_t k = 0; k < n; k++)
			if (!strncmp((const char *)s, b[k].name, 8))
				BAD("the stub already has the sections a UKI adds");
		raw_end = IMG_MAX(raw_end, rp + rs);
		va_end = IMG_MAX(va_end, va + IMG_MAX(vs, rs));
	}
	/* Drop what follows the sections (COFF symbols, debug data). */
	img_put_le32(d + pe + 12, 0);
	img_put_le32(d + pe + 16, 0);
	uint64_t off = IMG_ALIGN_UP((uint64_t)raw_end, falign);
	uint64_t va = IMG_ALIGN_UP((uint64_t)va_end, salign);
	uint32_t init_data = img_get_le32(d + opt + 8);
	uint8_t *hdrs = d;

	for (size_t k = 0; k < n; k++) {
		uint8_t *s = hdrs + sectab + 40 * (nsec + k);
		uint64_t rs = IMG_ALIGN_UP(b[k].size, falign);

		if (off + rs > 0xFFFFFFFFull || va + b[k].size > 0xFFFFFFFFull)
			BAD("the kernel and initrd are too large for a PE image");
		memset(s, 0, 40);
		memcpy(s, b[k].name, strlen(b[k].name));
		img_put_le32(s + 8, (uint32_t)b[k].size);
		img_put_le32(s + 12, (uint32_t)va);
		img_put_le32(s + 16, (uint32_t)rs);
		img_put_le32(s + 20, (uint32_t)off);
		img_put_le32(s + 36, 0x40000040u); /* INITIALIZED_DATA | MEM_READ */
		init_data += (uint32_t)rs;
		if (b[k].fd >= 0 || b[k].node)
			r = copy_blob(ctx, out, off, &b[k]);
		else
			r = img_pwrite_full(out, b[k].mem, b[k].size, off) < 0
			        ? img_set_error(ctx, -EIO, "UKI: writing %s", b[k].name)
			        : 0;
		if (r < 0) {
			free(d);
			return r;
		}
		off += rs;
		va = IMG_ALIGN_UP(va + b[k].size, salign);
	}
	img_put_le16(d + pe + 6, (uint16_t)(nsec + n));
	img_put_le32(d + opt + 8, init_data);
	img_put_le32(d + opt + 56, (uint32_t)va); /* SizeOfImage */
	img_put_le32(d + opt + 64, 0);            /* CheckSum */
	r = img_pwrite_full(out, d, raw_end, 0);
	free(d);
#undef BAD
	if (r < 0)
		return img_set_error(ctx, r, "UKI: %s", strerror(-r));
	/* Zero padding up to each section's file offset is a hole in the memfd. */
	if (ftruncate(out, (off_t)off) < 0)
		return img_set_error(ctx, -errno, "UKI: %s", strerror(errno));
	*total = off;
	return 0;
}

/* ---- the ESP ------------------------------------------------------------- */

void img_boot_esp_free(struct img_boot_esp *esp)
{
	if (!esp)
		return;
	img_tree_free(esp->tree);
	for (size_t i = 0; esp->plan && i < esp->plan->nentries; i++) {
		if (esp->uki_fds && esp->uki_fds[i] >= 0)
			close(esp->uki_fds[i]);
		if (esp->uki_paths)
			free(esp->uki_paths[i]);
	}
	free(esp->uki_fds);
	free(esp->uki_paths);
	img_boot_plan_free(esp->plan);
	free(esp);
}

/* The data of a kernel or initrd section: a host file or a tree node. */
static int blob_of(struct img_ctx *ctx, const struct bfile *f, struct blob *b)
{
	b->fd = -1;
	if (f->node) {
		struct img_node *ino = img_node_inode(f->node);

		if (ino->type != IMG_NODE_REG)
			return img_set_error(ctx, -EINVAL, "%s: not a regular file", f->ns);
		b->node = ino;
		b->size = ino->size;
		return 0;
	}
	return file_size_fd(ctx, f->host, &b->fd, &b->size);
}

/* The UKI of entry @i at @path in the ESP tree. */
static int add_uki(struct img_ctx *ctx, const struct img_boot_opts *o, struct img_boot_esp *e,
                   size_t i, const struct bfile *stub, const char *path)
{
	const struct img_boot_entry *en = &e->plan->entries[i];
	char ns[PATH_MAX], *osrel = NULL, *gen = NULL;
	struct bfile *kf = NULL, *inf;
	struct blob b[4] = { { 0 } };
	struct img_node_attr a = { .type = IMG_NODE_REG, .mode = 0644 };
	uint64_t total = 0;
	int fd, r;

	snprintf(ns, sizeof(ns), "%s/etc/os-release", en->toplevel);
	r = read_text(ctx, o, ns, &osrel, 1);
	if (r < 0)
		return r;
	if (!osrel) {
		if (img_asprintf(&gen, "NAME=NixOS\nID=nixos\nPRETTY_NAME=\"NixOS %s\"\n",
		                 en->nixos_version ? en->nixos_version : "") < 0)
			return img_set_error(ctx, -ENOMEM, "out of memory");
	} else if (img_asprintf(&gen, "%s\n", osrel) < 0) {
		free(osrel);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	free(osrel);
	kf = calloc(2, sizeof(*kf));
	if (!kf) {
		free(gen);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	inf = kf + 1;
	fd = memfd_create("libimg-uki", MFD_CLOEXEC);
	if (fd < 0) {
		free(gen);
		free(kf);
		return img_set_error(ctx, -errno, "UKI: memfd_create: %s", strerror(errno));
	}
	e->uki_fds[i] = fd;
	/* ukify's order: .osrel, .cmdline, .initrd, then .linux. */
	b[0] = (struct blob){ ".osrel", -1, gen, NULL, strlen(gen) };
	b[1] = (struct blob){ ".cmdline", -1, en->options, NULL, strlen(en->options) };
	b[2] = (struct blob){ ".initrd", -1, NULL, NULL, 0 };
	b[3] = (struct blob){ ".linux", -1, NULL, NULL, 0 };
	r = boot_file(ctx, o, en->id, en->kernel, kf);
	if (r >= 0)
		r = boot_file(ctx, o, en->id, en->initrd, inf);
	if (r >= 0)
		r = blob_of(ctx, inf, &b[2]);
	if (r >= 0)
		r = blob_of(ctx, kf, &b[3]);
	if (r >= 0)
		r = build_uki(ctx, stub, b, 4, fd, &total);
	if (b[2].fd >= 0)
		close(b[2].fd);
	if (b[3].fd >= 0)
		close(b[3].fd);
	free(gen);
	free(kf);
	if (r < 0)
		return r;
	a.size = total;
	a.data.kind = IMG_DATA_FD;
	a.data.fd = fd;
	a.data.offset = 0;
	e->uki_paths[i] = img_strdup(path);
	if (!e->uki_paths[i])
		return img_set_error(ctx, -ENOMEM, "out of memory");
	return img_tree_add(e->tree, path, &a, NULL);
}

/* Copy a kernel, initrd or devicetree to its /EFI/nixos name, once: entries
 * share files; two different files under one name are refused. */
static int add_efi_file(struct img_ctx *ctx, const struct img_boot_opts *o, struct img_tree *t,
                        const struct img_boot_plan *p, size_t upto, const char *resolved,
                        const char *efi)
{
	struct bfile *f;
	int r;

	for (size_t i = 0; i <= upto; i++) {
		const struct img_boot_entry *x = &p->entries[i];
		const char *names[] = { x->efi_kernel, x->efi_initrd, x->efi_devicetree };
		const char *srcs[] = { x->kernel, x->initrd, x->devicetree };

		for (size_t k = 0; k < 3; k++) {
			if (!names[k] || (i == upto && names[k] == efi))
				break;
			if (strcmp(names[k], efi))
				continue;
			if (!strcmp(srcs[k], resolved))
				return 0; /* already there */
			return img_set_error(ctx, -EINVAL,
			                     "boot entry %s: %s and %s would both be %s on the ESP",
			                     p->entries[upto].id, srcs[k], resolved, efi);
		}
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	r = boot_file(ctx, o, p->entries[upto].id, resolved, f);
	if (r >= 0)
		r = add_bfile(ctx, t, efi + 1, f);
	free(f);
	return r;
}

/* loader/entries/<id>.conf, as the builder writes it. */
static int add_entry_conf(struct img_ctx *ctx, struct img_tree *t, const struct img_boot_plan *p,
                          size_t i, const char *date)
{
	const struct img_boot_entry *en = &p->entries[i];
	int bootspec = !strcmp(p->source, "bootspec");
	char *text = NULL, *path = NULL;
	int r;

	/* "version Generation 1 {label}, built on {date}"; without a boot.json
	 * and a nixos-version there is no label (nor its space) */
	if (img_asprintf(&text,
	                 "title %s\n"
	                 "sort-key %s\n"
	                 "version Generation 1%s%s, built on %s\n"
	                 "linux %s\n"
	                 "initrd %s\n"
	                 "options %s\n"
	                 "%s%s%s",
	                 en->title, en->sort_key, bootspec || *en->label ? " " : "", en->label,
	                 date, en->efi_kernel, en->efi_initrd, en->options,
	                 en->efi_devicetree ? "devicetree " : "",
	                 en->efi_devicetree ? en->efi_devicetree : "",
	                 en->efi_devicetree ? "\n" : "") < 0 ||
	    img_asprintf(&path, "loader/entries/%s.conf", en->id) < 0) {
		free(text);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	r = add_text(t, path, text); /* the tree copies the bytes */
	free(path);
	free(text);
	return r;
}

static int add_loader_conf(struct img_ctx *ctx, struct img_tree *t, const char *def)
{
	char *text;
	int r;

	/* the builder's order: timeout, default, editor (off), console-mode */
	if (img_asprintf(&text, "timeout %d\ndefault %s\neditor 0\nconsole-mode keep\n",
	                 IMG_BOOT_TIMEOUT, def) < 0)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	r = add_text(t, "loader/loader.conf", text);
	free(text);
	return r;
}

int img_boot_esp_build(struct img_ctx *ctx, const struct img_boot_opts *o,
                       struct img_boot_esp **out)
{
	char date[16], def[PATH_MAX];
	struct bfile *sdboot = NULL, *stub = NULL;
	struct img_tree_opts to = { 0 };
	struct img_boot_plan *p;
	struct img_boot_esp *e;
	int have_sdboot, r;

	*out = NULL;
	r = img_boot_plan_build(ctx, o, &p);
	if (r < 0)
		return r;
	e = calloc(1, sizeof(*e));
	sdboot = calloc(2, sizeof(*sdboot));
	if (!e || !sdboot) {
		free(e);
		free(sdboot);
		img_boot_plan_free(p);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	stub = sdboot + 1;
	e->plan = p;
	e->kernel_params = p->entries[0].kernel_params;
	e->cmdline = p->entries[0].options;
	e->uki_fds = malloc(p->nentries * sizeof(int));
	e->uki_paths = calloc(p->nentries, sizeof(char *));
	if (!e->uki_fds || !e->uki_paths) {
		r = img_set_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < p->nentries; i++)
		e->uki_fds[i] = -1;
	r = img_tree_new(ctx, &to, &e->tree);
	if (r < 0)
		goto out;
	epoch_date(img_repro_epoch(ctx), date);

	if (o->bootloader)
		snprintf(sdboot->host, sizeof(sdboot->host), "%s", o->bootloader);
	have_sdboot = o->bootloader || find_in_closure(ctx, o, SDBOOT_IN_PKG, sdboot);
	if (!o->uki && !have_sdboot) {
		r = img_set_error(ctx, -ENOENT,
		                  "no systemd-boot in the closure (a path with %s): give "
		                  "--bootloader FILE, or --uki",
		                  SDBOOT_IN_PKG);
		goto out;
	}
	/* --uki with one entry: the firmware starts the UKI itself */
	if (o->uki && p->nentries == 1)
		have_sdboot = 0;
	if (o->uki && !have_sdboot && p->nentries > 1) {
		r = img_set_error(ctx, -ENOENT,
		                  "--uki: system %s has %zu specialisations, and choosing among "
		                  "their UKIs needs systemd-boot, which the closure lacks (%s): "
		                  "give --bootloader FILE",
		                  o->system, p->nentries - 1, SDBOOT_IN_PKG);
		goto out;
	}
	if (have_sdboot) {
		r = add_bfile(ctx, e->tree, "EFI/BOOT/BOOTX64.EFI", sdboot);
		if (r >= 0)
			r = add_bfile(ctx, e->tree, "EFI/systemd/systemd-bootx64.efi", sdboot);
		if (r < 0)
			goto out;
	}
	if (o->uki) {
		if (o->uki_stub)
			snprintf(stub->host, sizeof(stub->host), "%s", o->uki_stub);
		else if (!find_in_closure(ctx, o, STUB_IN_PKG, stub))
			snprintf(stub->host, sizeof(stub->host), "%s", DEFAULT_STUB);
		if (!stub->node && access(stub->host, R_OK) < 0) {
			r = img_set_error(
			    ctx, -ENOENT,
			    "--uki: no linuxx64.efi.stub in the closure and %s is not "
			    "readable: give --uki-stub FILE",
			    stub->host);
			goto out;
		}
		e->bootloader = "uki";
		for (size_t i = 0; i < p->nentries && r >= 0; i++) {
			char path[PATH_MAX];

			if (have_sdboot)
				snprintf(path, sizeof(path), "EFI/Linux/%s.efi", p->entries[i].id);
			else
				snprintf(path, sizeof(path), "EFI/BOOT/BOOTX64.EFI");
			r = add_uki(ctx, o, e, i, stub, path);
		}
		if (r >= 0 && have_sdboot) {
			snprintf(def, sizeof(def), "%s.efi", p->entries[p->default_entry].id);
			r = add_loader_conf(ctx, e->tree, def);
		}
		if (r < 0)
			goto out;
	} else {
		e->bootloader = "systemd-boot";
		for (size_t i = 0; i < p->nentries && r >= 0; i++) {
			const struct img_boot_entry *en = &p->entries[i];

			r = add_efi_file(ctx, o, e->tree, p, i, en->kernel, en->efi_kernel);
			if (r >= 0)
				r = add_efi_file(ctx, o, e->tree, p, i, en->initrd, en->efi_initrd);
			if (r >= 0 && en->devicetree)
				r = add_efi_file(ctx, o, e->tree, p, i, en->devicetree,
				                 en->efi_devicetree);
			if (r >= 0)
				r = add_entry_conf(ctx, e->tree, p, i, date);
		}
		if (r >= 0) {
			snprintf(def, sizeof(def), "%s.conf", p->entries[p->default_entry].id);
			r = add_loader_conf(ctx, e->tree, def);
		}
		if (r < 0)
			goto out;
	}
	r = img_tree_finish(e->tree);
out:
	free(sdboot);
	if (r < 0) {
		img_boot_esp_free(e);
		return r;
	}
	*out = e;
	return 0;
}

int img_boot_kernel_params_read(struct img_ctx *ctx, const struct img_boot_opts *o, char **out)
{
	const char *extra = o->kernel_params;
	struct img_bootspec *bs = NULL;
	char *file = NULL, *params = NULL;
	int r;

	*out = NULL;
	if (extra && !img_bootspec_text_ok(extra))
		return img_set_error(ctx, -EINVAL,
		                     "--kernel-params: holds a control character (a newline, a "
		                     "tab, ...): it would break the boot entries");
	r = read_bootspec(ctx, o, &file, &bs);
	free(file);
	if (r < 0)
		return r;
	if (bs) {
		params = join_params(&bs->sys);
		img_bootspec_free(bs);
		if (!params)
			return img_set_error(ctx, -ENOMEM, "out of memory");
	} else {
		r = kernel_params_file(ctx, o, &params);
		if (r < 0)
			return r;
	}
	r = img_asprintf(out, "%s%s%s", params, *params && extra && *extra ? " " : "",
	                 extra ? extra : "");
	free(params);
	return r < 0 ? img_set_error(ctx, -ENOMEM, "out of memory") : 0;
}
