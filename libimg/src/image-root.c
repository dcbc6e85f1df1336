/*
 * image-root.c -- the ROOT and EMPTY recipes: an ext4 file system (label
 * nixos, no partition table) holding a NixOS root for a closure, or empty;
 * and img_root_tree_build(), the root layout the disk recipes share
 * (docs/root-image.md says what the image holds and why).
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "image-private.h"
#include <img/fs.h>
#include <img/source.h>

#define ROOT_LABEL "nixos"
/* Default free space: 64 MiB plus a tenth of the file data (docs/root-image.md). */
#define ROOT_HEADROOM_FIXED (64ull << 20)

uint64_t img_root_default_headroom(const struct img_tree *tree)
{
	return ROOT_HEADROOM_FIXED + (tree ? tree->data_bytes / 10 : 0);
}

static int add_dir(struct img_tree *t, const char *path, uint32_t mode)
{
	struct img_node_attr a = { .type = IMG_NODE_DIR, .mode = mode };

	return img_tree_add(t, path, &a, NULL);
}

static int add_symlink(struct img_tree *t, const char *path, const char *target)
{
	struct img_node_attr a = {
		.type = IMG_NODE_SYMLINK,
		.mode = 0777,
		.target = target,
		.size = strlen(target),
	};

	return img_tree_add(t, path, &a, NULL);
}

static int is_system(struct img_tree *t, const char *base)
{
	static const char *const need[] = { "kernel", "initrd", "init" };
	char path[512];

	for (size_t i = 0; i < IMG_ARRAY_SIZE(need); i++) {
		snprintf(path, sizeof(path), "nix/store/%s/%s", base, need[i]);
		if (!img_tree_lookup(t, path))
			return 0;
	}
	return 1;
}

/* The toplevel to link as the system profile: --system, or the one path
 * holding kernel, initrd and init. NULL (no error) when there is none. */
static int find_system(struct img_ctx *ctx, const struct img_build_opts *o,
                       const struct img_closure *c, struct img_tree *t, const char **out)
{
	size_t sd = strlen(c->store_dir);
	const char *found = NULL;

	*out = NULL;
	if (o->system) {
		for (size_t i = 0; i < c->npaths; i++)
			if (!strcmp(c->paths[i], o->system)) {
				*out = c->paths[i];
				return 0;
			}
		return img_set_error(ctx, -EINVAL, "--system %s is not in the closure %s",
		                     o->system, c->source);
	}
	for (size_t i = 0; i < c->npaths; i++) {
		if (!is_system(t, c->paths[i] + sd + 1))
			continue;
		if (found)
			return img_set_error(ctx, -EINVAL,
			                     "%s: several system toplevels (%s, %s): choose one "
			                     "with --system",
			                     c->source, found, c->paths[i]);
		found = c->paths[i];
	}
	*out = found;
	return 0;
}

int img_root_tree_build(struct img_ctx *ctx, const struct img_build_opts *o,
                        const struct img_closure *c, struct img_tree **out)
{
	static const char *const dirs[] = { "nix",
		                            "nix/store",
		                            "nix/var",
		                            "nix/var/nix",
		                            "nix/var/nix/db",
		                            "nix/var/nix/gcroots",
		                            "nix/var/nix/profiles",
		                            "boot",
		                            "etc" };
	struct img_tree_opts to = { .flags = o->tree_flags };
	struct img_tree *t;
	const char *system;
	int r;

	r = img_tree_new(ctx, &to, &t);
	if (r < 0)
		return r;
	for (size_t i = 0; i < IMG_ARRAY_SIZE(dirs) && r >= 0; i++)
		r = add_dir(t, dirs[i], !strcmp(dirs[i], "nix/store") ? 01775 : 0755);
	if (r >= 0 && c) {
		struct img_source_opts so = { .prefix = "nix/store/", .store_dir = c->store_dir };

		r = img_source_closure(ctx, c, &so, t);
		/* the store directory keeps its mode whatever the source says */
		if (r >= 0)
			r = add_dir(t, "nix/store", 01775);
	}
	if (r >= 0 && c && c->registration) {
		struct img_node_attr a = { .type = IMG_NODE_REG, .mode = 0644 };
		struct stat st;

		if (stat(c->registration, &st) < 0) {
			r = img_set_error(ctx, -errno, "%s: %s", c->registration, strerror(errno));
		} else {
			a.size = (uint64_t)st.st_size;
			a.data.kind = IMG_DATA_PATH;
			a.data.path = c->registration;
			r = img_tree_add(t, "nix-path-registration", &a, NULL);
		}
	}
	if (r >= 0 && c) {
		r = find_system(ctx, o, c, t, &system);
		/* as nix-env --set makes it: system -> system-1-link -> toplevel */
		if (r >= 0 && system)
			r = add_symlink(t, "nix/var/nix/profiles/system-1-link", system);
		if (r >= 0 && system)
			r = add_symlink(t, "nix/var/nix/profiles/system", "system-1-link");
	}
	if (r >= 0)
		r = img_tree_finish(t);
	if (r < 0) {
		img_tree_free(t);
		return r;
	}
	*out = t;
	return 0;
}

int img_build_root(struct img_ctx *ctx, const struct img_build_opts *o)
{
	const struct img_fs_ops *fs = img_fs_find("ext4");
	struct img_fs_opts fo = { .label = o->label ? o->label : ROOT_LABEL, .id_role = "root" };
	struct img_closure *c = NULL;
	struct img_tree *t = NULL;
	struct img_dev *dev = NULL;
	uint64_t size = o->size;
	char fs_id[40] = "";
	int r;

	if (!fs)
		return img_set_error(ctx, -ENOSYS, "the ext4 writer is not built in");
	if (o->mode == IMG_MODE_EMPTY) {
		struct img_tree_opts to = { .flags = o->tree_flags };

		if (!o->size)
			return img_set_error(ctx, -EINVAL, "--empty needs --size");
		r = img_image_set_seed(ctx, o, NULL, 0);
		if (r >= 0)
			r = img_tree_new(ctx, &to, &t);
		if (r >= 0)
			r = img_tree_finish(t);
	} else {
		if (o->tar)
			return img_set_error(ctx, -ENOTSUP,
			                     "--tar is not supported for the root file system yet; "
			                     "give the closure on disk (--root)");
		r = img_image_load_closure(ctx, o, &c);
		if (r >= 0)
			r = img_image_set_seed(ctx, o, (const char *const *)c->paths, c->npaths);
		if (r >= 0)
			r = img_root_tree_build(ctx, o, c, &t);
	}
	if (r < 0)
		goto out;
	fo.extra = o->additional_space_set ? o->additional_space : img_root_default_headroom(t);
	if (!size) {
		r = fs->estimate(ctx, t, &fo, &size);
		if (r < 0)
			goto out;
	} else {
		/* too small is an error before the output exists */
		struct img_fs_opts none = fo;
		uint64_t min;

		none.extra = 0;
		r = fs->estimate(ctx, t, &none, &min);
		if (r >= 0 && size < min)
			r = img_set_error(ctx, -ENOSPC,
			                  "--size %llu is too small for the content: the file "
			                  "system needs at least %llu bytes (%llu MiB)",
			                  (unsigned long long)size, (unsigned long long)min,
			                  (unsigned long long)(min >> 20));
		if (r < 0)
			goto out;
	}
	fo.size = size;
	r = img_image_create_output(ctx, o, size, &dev);
	if (r < 0)
		goto out;
	r = fs->write(ctx, t, &fo, dev);
	if (r >= 0)
		r = img_image_fs_id(ctx, dev, 0, "ext4", fs_id, sizeof(fs_id));
	if (r >= 0)
		r = img_dev_finish(dev);
	if (r >= 0) /* the manifest (image-manifest.c) */
		r = img_image_manifest_bare(ctx, o, c, "ext4", fo.label, size, fs_id);
out:
	img_dev_unref(dev);
	img_tree_free(t);
	img_closure_free(c);
	return r;
}
