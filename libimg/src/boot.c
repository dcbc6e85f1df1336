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
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "private.h"
#include <img/boot.h>
#include <img/repro.h>

#define DEFAULT_STUB  "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
#define SDBOOT_IN_PKG "lib/systemd/boot/efi/systemd-bootx64.efi"
#define STUB_IN_PKG   "lib/systemd/boot/efi/linuxx64.efi.stub"
#define MAX_LINKS     40

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
	chomp(buf);
	*out = buf;
	return 0;
}

int img_boot_kernel_params_read(struct img_ctx *ctx, const struct img_boot_opts *o, char **out)
{
	const char *system = o->system, *extra = o->kernel_params;
	char ns[PATH_MAX], *params = NULL;
	int r;

	*out = NULL;
	if (snprintf(ns, sizeof(ns), "%s/kernel-params", system) >= (int)sizeof(ns))
		return img_set_error(ctx, -ENAMETOOLONG, "%s: path too long", system);
	r = read_text(ctx, o, ns, &params, 1);
	if (r < 0)
		return r;
	r = img_asprintf(out, "%s%s%s", params ? params : "",
	                 params && *params && extra && *extra ? " " : "", extra ? extra : "");
	free(params);
	return r < 0 ? img_set_error(ctx, -ENOMEM, "out of memory") : 0;
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

/* The store-derived ESP name NixOS gives a file: /nix/store/h-n/bzImage -> h-n-bzImage.efi. */
static int efi_name(struct img_ctx *ctx, const char *store_dir, const char *resolved, char *out,
                    size_t len)
{
	size_t sd = strlen(store_dir);
	const char *rest;

	if (strncmp(resolved, store_dir, sd) || resolved[sd] != '/')
		return img_set_error(ctx, -EINVAL, "%s is not in the store %s", resolved,
		                     store_dir);
	rest = resolved + sd + 1;
	if (snprintf(out, len, "%s.efi", rest) >= (int)len)
		return img_set_error(ctx, -ENAMETOOLONG, "%s: name too long", resolved);
	for (char *p = out; *p; p++)
		if (*p == '/')
			*p = '-';
	return 0;
}

static void epoch_date(int64_t epoch, char out[16])
{
	time_t t = (time_t)epoch;
	struct tm b;

	gmtime_r(&t, &b);
	snprintf(out, 16, "%04d-%02d-%02d", b.tm_year + 1900, b.tm_mon + 1, b.tm_mday);
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
	free(esp->kernel_params);
	free(esp->cmdline);
	if (esp->uki_fd >= 0)
		close(esp->uki_fd);
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

static int add_uki(struct img_ctx *ctx, const struct img_boot_opts *o, struct img_boot_esp *e,
                   const struct bfile *kernel, const struct bfile *initrd, const char *label)
{
	char ns[PATH_MAX], *osrel = NULL, *gen = NULL;
	struct bfile stub = { .node = NULL };
	struct blob b[4] = { { 0 } };
	struct img_node_attr a = { .type = IMG_NODE_REG, .mode = 0644 };
	uint64_t total = 0;
	int r;

	if (o->uki_stub)
		snprintf(stub.host, sizeof(stub.host), "%s", o->uki_stub);
	else if (!find_in_closure(ctx, o, STUB_IN_PKG, &stub))
		snprintf(stub.host, sizeof(stub.host), "%s", DEFAULT_STUB);
	if (!stub.node && access(stub.host, R_OK) < 0)
		return img_set_error(ctx, -ENOENT,
		                     "--uki: no linuxx64.efi.stub in the closure and %s is not "
		                     "readable: give --uki-stub FILE",
		                     stub.host);
	snprintf(ns, sizeof(ns), "%s/etc/os-release", o->system);
	r = read_text(ctx, o, ns, &osrel, 1);
	if (r < 0)
		return r;
	if (!osrel) {
		if (img_asprintf(&gen, "NAME=NixOS\nID=nixos\nPRETTY_NAME=\"NixOS %s\"\n", label) <
		    0)
			return img_set_error(ctx, -ENOMEM, "out of memory");
	} else if (img_asprintf(&gen, "%s\n", osrel) < 0) {
		free(osrel);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	free(osrel);
	e->uki_fd = memfd_create("libimg-uki", MFD_CLOEXEC);
	if (e->uki_fd < 0) {
		free(gen);
		return img_set_error(ctx, -errno, "UKI: memfd_create: %s", strerror(errno));
	}
	/* ukify's order: .osrel, .cmdline, .initrd, then .linux. */
	b[0] = (struct blob){ ".osrel", -1, gen, NULL, strlen(gen) };
	b[1] = (struct blob){ ".cmdline", -1, e->cmdline, NULL, strlen(e->cmdline) };
	b[2] = (struct blob){ ".initrd", -1, NULL, NULL, 0 };
	b[3] = (struct blob){ ".linux", -1, NULL, NULL, 0 };
	r = blob_of(ctx, initrd, &b[2]);
	if (r >= 0)
		r = blob_of(ctx, kernel, &b[3]);
	if (r >= 0)
		r = build_uki(ctx, &stub, b, 4, e->uki_fd, &total);
	if (b[2].fd >= 0)
		close(b[2].fd);
	if (b[3].fd >= 0)
		close(b[3].fd);
	free(gen);
	if (r < 0)
		return r;
	a.size = total;
	a.data.kind = IMG_DATA_FD;
	a.data.fd = e->uki_fd;
	a.data.offset = 0;
	e->bootloader = "uki";
	return img_tree_add(e->tree, "EFI/BOOT/BOOTX64.EFI", &a, NULL);
}

int img_boot_esp_build(struct img_ctx *ctx, const struct img_boot_opts *o,
                       struct img_boot_esp **out)
{
	const char *store_dir = store_of(o);
	char ns[PATH_MAX], kname[PATH_MAX], iname[PATH_MAX], date[16], *label = NULL;
	struct bfile *bf, *kf, *inf, *sdboot; /* kernel, initrd, systemd-boot */
	char *entry = NULL, *path = NULL;
	struct img_tree_opts to = { 0 };
	struct img_boot_esp *e;
	int r;

	*out = NULL;
	if (!o->system)
		return img_set_error(ctx, -EINVAL,
		                     "no NixOS system to boot: the closure has no path holding "
		                     "kernel, initrd and init; give --system");
	e = calloc(1, sizeof(*e));
	if (!e)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	e->uki_fd = -1;
	bf = calloc(3, sizeof(*bf));
	if (!bf) {
		r = img_set_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}
	kf = bf;
	inf = bf + 1;
	sdboot = bf + 2;
	r = img_tree_new(ctx, &to, &e->tree);
	if (r < 0)
		goto out;

	/* kernel, initrd: resolved inside root (or the tree), named after their store paths. */
	snprintf(ns, sizeof(ns), "%s/kernel", o->system);
	r = resolve(ctx, o, ns, kf->ns, &kf->node);
	if (r >= 0) {
		snprintf(ns, sizeof(ns), "%s/initrd", o->system);
		r = resolve(ctx, o, ns, inf->ns, &inf->node);
	}
	if (r < 0) {
		img_error_prefix(ctx, r, "system %s", o->system);
		goto out;
	}
	if (!o->tree && (host_path(o->root, kf->ns, kf->host, sizeof(kf->host)) < 0 ||
	                 host_path(o->root, inf->ns, inf->host, sizeof(inf->host)) < 0)) {
		r = img_set_error(ctx, -ENAMETOOLONG, "%s: path too long", o->system);
		goto out;
	}
	r = efi_name(ctx, store_dir, kf->ns, kname, sizeof(kname));
	if (r >= 0)
		r = efi_name(ctx, store_dir, inf->ns, iname, sizeof(iname));
	if (r < 0)
		goto out;

	/* The command line: init=<toplevel>/init, kernel-params, extra. */
	r = img_boot_kernel_params_read(ctx, o, &e->kernel_params);
	if (r < 0)
		goto out;
	snprintf(ns, sizeof(ns), "%s/nixos-version", o->system);
	r = read_text(ctx, o, ns, &label, 1);
	if (r < 0)
		goto out;
	if (img_asprintf(&e->cmdline, "init=%s/init%s%s", o->system, *e->kernel_params ? " " : "",
	                 e->kernel_params) < 0) {
		r = img_set_error(ctx, -ENOMEM, "out of memory");
		goto out;
	}

	if (o->uki) {
		r = add_uki(ctx, o, e, kf, inf, label ? label : "");
		if (r < 0)
			goto out;
	} else {
		if (o->bootloader)
			snprintf(sdboot->host, sizeof(sdboot->host), "%s", o->bootloader);
		else if (!find_in_closure(ctx, o, SDBOOT_IN_PKG, sdboot)) {
			r = img_set_error(ctx, -ENOENT,
			                  "no systemd-boot in the closure (a path with %s): give "
			                  "--bootloader FILE, or --uki",
			                  SDBOOT_IN_PKG);
			goto out;
		}
		e->bootloader = "systemd-boot";
		epoch_date(img_repro_epoch(ctx), date);
		r = add_bfile(ctx, e->tree, "EFI/BOOT/BOOTX64.EFI", sdboot);
		if (r >= 0)
			r = add_bfile(ctx, e->tree, "EFI/systemd/systemd-bootx64.efi", sdboot);
		if (r >= 0 && img_asprintf(&path, "EFI/nixos/%s", kname) >= 0) {
			r = add_bfile(ctx, e->tree, path, kf);
			free(path);
			path = NULL;
		}
		if (r >= 0 && img_asprintf(&path, "EFI/nixos/%s", iname) >= 0) {
			r = add_bfile(ctx, e->tree, path, inf);
			free(path);
			path = NULL;
		}
		if (r < 0)
			goto out;
		if (img_asprintf(&entry,
		                 "title NixOS\n"
		                 "sort-key nixos\n"
		                 "version Generation 1%s%s, built on %s\n"
		                 "linux /EFI/nixos/%s\n"
		                 "initrd /EFI/nixos/%s\n"
		                 "options %s\n",
		                 label && *label ? " " : "", label ? label : "", date, kname, iname,
		                 e->cmdline) < 0) {
			r = img_set_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		r = add_text(e->tree, "loader/entries/nixos-generation-1.conf", entry);
		if (r >= 0)
			r = add_text(e->tree, "loader/loader.conf",
			             "timeout 0\n"
			             "default nixos-generation-1.conf\n"
			             "console-mode keep\n");
		if (r < 0)
			goto out;
	}
	r = img_tree_finish(e->tree);
out:
	free(bf);
	free(label);
	free(entry);
	if (r < 0) {
		img_boot_esp_free(e);
		return r;
	}
	*out = e;
	return 0;
}
