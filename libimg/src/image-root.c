/*
 * image-root.c -- the ROOT and EMPTY recipes: an ext4 file system (label
 * nixos, no partition table) holding a NixOS root for a closure, or empty;
 * and img_root_tree_build(), the root layout the disk recipes share
 * (docs/root-image.md says what the image holds and why).
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image-private.h"
#include <img/fs.h>
#include <img/source.h>

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

/*
 * Is the toplevel @base a specialisation of another candidate: one of
 * @cand's toplevels links it as specialisation/NAME (as NixOS does; its
 * boot.json names the same paths)?
 */
static int is_specialisation(struct img_tree *t, char **cand, size_t ncand, size_t sdl,
                             const char *base)
{
	for (size_t i = 0; i < ncand; i++) {
		struct img_node *d;
		char path[512];

		snprintf(path, sizeof(path), "nix/store/%s/specialisation", cand[i] + sdl + 1);
		d = img_tree_lookup(t, path);
		if (!d || d->type != IMG_NODE_DIR)
			continue;
		for (size_t k = 0; k < d->nchildren; k++) {
			const struct img_node *l = d->children[k];
			const char *slash;

			if (l->type != IMG_NODE_SYMLINK || !l->target)
				continue;
			slash = strrchr(l->target, '/');
			if (!strcmp(slash ? slash + 1 : l->target, base))
				return 1;
		}
	}
	return 0;
}

/* The toplevel to link as the system profile: --system, or the one store
 * path holding kernel, initrd and init that is not another's specialisation
 * (a NixOS closure with specialisations holds a toplevel for each). NULL
 * (no error) when there is none. The candidates are the closure's paths,
 * or without a closure (a tar stream) the store paths in the tree. */
int img_root_find_system(struct img_ctx *ctx, const struct img_build_opts *o,
                         const struct img_closure *c, struct img_tree *t, char **out)
{
	const char *sd = c ? c->store_dir : o->store_dir ? o->store_dir : "/nix/store";
	struct img_node *store = img_tree_lookup(t, "nix/store");
	size_t n = c ? c->npaths : store ? store->nchildren : 0, sdl = strlen(sd), ncand = 0;
	char **cand = calloc(n ? n : 1, sizeof(char *)), *p = NULL, *first = NULL;
	int r = 0;

	*out = NULL;
	if (!cand)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n && r >= 0; i++) {
		if (c)
			p = img_strdup(c->paths[i]);
		else if (img_asprintf(&p, "%s/%s", sd, store->children[i]->name) < 0)
			p = NULL;
		if (!p) {
			r = img_set_error(ctx, -ENOMEM, "out of memory");
			break;
		}
		if (o->system) {
			if (!strcmp(p, o->system)) {
				*out = p;
				p = NULL;
				break;
			}
		} else if (is_system(t, p + sdl + 1)) {
			cand[ncand++] = p;
			p = NULL;
		}
		free(p);
		p = NULL;
	}
	if (r >= 0 && o->system && !*out)
		r = img_set_error(ctx, -EINVAL, "--system %s is not in the closure %s", o->system,
		                  c ? c->source : o->tar);
	for (size_t i = 0; r >= 0 && !o->system && i < ncand; i++) {
		if (is_specialisation(t, cand, ncand, sdl, cand[i] + sdl + 1))
			continue;
		if (first) {
			r = img_set_error(
			    ctx, -EINVAL,
			    "%s: several system toplevels (%s, %s): choose one with --system",
			    c ? c->source : o->tar, first, cand[i]);
			break;
		}
		first = cand[i];
	}
	if (r >= 0 && first && !(*out = img_strdup(first)))
		r = img_set_error(ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < ncand; i++)
		free(cand[i]);
	free(cand);
	if (r < 0) {
		free(*out);
		*out = NULL;
	}
	return r;
}

/* The layout, the content (closure on disk or tar stream), the links. */
static int root_tree(struct img_ctx *ctx, const struct img_build_opts *o,
                     const struct img_closure *c, const char *stage_dir, struct img_tree **out,
                     struct img_tar_source **tar)
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
	struct img_source_opts so = {
		.prefix = "nix/store/",
		.store_dir = c ? c->store_dir : o->store_dir,
		.stage_dir = stage_dir,
		/* The ext4 writer reads each file's data as it lays out its blocks
		 * (blocks of zeros stay holes): a compressed tar's data is staged
		 * like a pipe's, never replayed into place afterwards. */
		.no_replay = 1,
	};
	struct img_tree *t;
	char *system = NULL;
	int r;

	r = img_tree_new(ctx, &to, &t);
	if (r < 0)
		return r;
	for (size_t i = 0; i < IMG_ARRAY_SIZE(dirs) && r >= 0; i++)
		r = add_dir(t, dirs[i], !strcmp(dirs[i], "nix/store") ? 01775 : 0755);
	if (r >= 0 && tar)
		r = img_source_tar(ctx, o->tar, &so, t, tar);
	else if (r >= 0 && c)
		r = img_source_closure(ctx, c, &so, t);
	/* the store directory keeps its mode whatever the source says */
	if (r >= 0)
		r = add_dir(t, "nix/store", 01775);
	if (r >= 0 && c && c->info_dir && !c->registration)
		img_log(ctx, IMG_LOG_WARN,
		        "%s: no registration file: the image's Nix will not know its store paths "
		        "(nix-store --load-db has nothing to load)",
		        o->closure ? o->closure : c->source);
	if (r >= 0 && c && c->registration) {
		struct img_node_attr a = { .type = IMG_NODE_REG, .mode = 0644 };
		char *reg;
		size_t len;

		r = img_closure_registration(ctx, c, &reg, &len);
		if (r >= 0) {
			a.size = len;
			a.data.kind = IMG_DATA_MEM;
			a.data.mem = reg;
			r = img_tree_add(t, "nix-path-registration", &a, NULL);
			free(reg);
		}
	}
	if (r >= 0 && (c || tar)) {
		r = img_root_find_system(ctx, o, c, t, &system);
		/* as nix-env --set makes it: system -> system-1-link -> toplevel */
		if (r >= 0 && system)
			r = add_symlink(t, ROOT_SYSTEM_LINK, system);
		if (r >= 0 && system)
			r = add_symlink(t, "nix/var/nix/profiles/system", "system-1-link");
		/* --bios, --hybrid: GRUB's menu in /boot/grub (image-disk.c) */
		if (r >= 0 && system && (o->mode == IMG_MODE_BIOS || o->mode == IMG_MODE_HYBRID))
			r = img_image_grub_cfg(ctx, o, c, t, system);
		free(system);
	}
	if (r >= 0)
		r = img_tree_finish(t);
	if (r >= 0 && (c || tar))
		r = img_source_store_policy(ctx, t, "nix/store", so.store_dir,
		                            tar ? (strcmp(o->tar, "-") ? o->tar : "stdin")
		                                : c->source);
	if (r < 0) {
		img_tree_free(t);
		return r;
	}
	*out = t;
	return 0;
}

int img_root_tree_build(struct img_ctx *ctx, const struct img_build_opts *o,
                        const struct img_closure *c, struct img_tree **out)
{
	return root_tree(ctx, o, c, NULL, out, NULL);
}

int img_root_tree_paths(struct img_ctx *ctx, const struct img_build_opts *o, struct img_tree *t,
                        char ***out, size_t *nout)
{
	const char *sd = o->store_dir ? o->store_dir : "/nix/store";
	struct img_node *store = img_tree_lookup(t, "nix/store");
	size_t n = store ? store->nchildren : 0;
	char **paths = calloc(n + 1, sizeof(*paths));

	*out = NULL;
	*nout = 0;
	if (!paths)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		if (img_asprintf(&paths[i], "%s/%s", sd, store->children[i]->name) < 0) {
			img_root_tree_paths_free(paths, i);
			return img_set_error(ctx, -ENOMEM, "out of memory");
		}
	*out = paths;
	*nout = n;
	return 0;
}

void img_root_tree_paths_free(char **paths, size_t n)
{
	for (size_t i = 0; paths && i < n; i++)
		free(paths[i]);
	free(paths);
}

/* The seed of a tar build without a closure: the store paths in the tree. */
static int seed_from_tree(struct img_ctx *ctx, const struct img_build_opts *o, struct img_tree *t)
{
	char **paths;
	size_t n;
	int r = img_root_tree_paths(ctx, o, t, &paths, &n);

	if (r >= 0)
		r = img_image_set_seed(ctx, o, (const char *const *)paths, n);
	img_root_tree_paths_free(paths, n);
	return r;
}

int img_root_tree_build_tar(struct img_ctx *ctx, const struct img_build_opts *o,
                            const struct img_closure *c, struct img_tree **out,
                            struct img_tar_source **tar)
{
	char *stage = img_image_output_dir(o);
	int r;

	*out = NULL;
	*tar = NULL;
	if (!stage)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	r = root_tree(ctx, o, c, stage, out, tar);
	free(stage);
	if (r >= 0)
		r = c ? img_image_set_seed(ctx, o, (const char *const *)c->paths, c->npaths)
		      : seed_from_tree(ctx, o, *out);
	if (r >= 0 && img_tar_source_pending(*tar))
		r = img_set_error(ctx, -EIO, "%s: %llu entries left unread", o->tar,
		                  (unsigned long long)img_tar_source_pending(*tar));
	if (r < 0) {
		img_tree_free(*out);
		img_tar_source_free(*tar);
		*out = NULL;
		*tar = NULL;
	}
	return r;
}

int img_build_root(struct img_ctx *ctx, const struct img_build_opts *o)
{
	const struct img_fs_ops *fs = img_fs_find("ext4");
	struct img_fs_opts fo = { .label = o->label ? o->label : ROOT_LABEL, .id_role = "root" };
	struct img_closure *c = NULL;
	struct img_tree *t = NULL;
	struct img_dev *dev = NULL;
	struct img_fs_plan *plan = NULL;
	struct img_tar_source *tar = NULL;
	char *outdir;
	uint64_t size = o->size;
	char fs_id[40] = "";
	int r;

	if (!fs)
		return img_set_error(ctx, -ENOSYS, "the ext4 writer is not built in");
	if (o->mode == IMG_MODE_EMPTY && !o->size)
		return img_set_error(ctx, -EINVAL, "--empty needs --size");
	/* a tar's staging file and the ext4 cache's spill go beside the output */
	outdir = img_image_output_dir(o);
	if (!outdir)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	fo.spill_dir = outdir;
	/* The whole output: ext4 declares its layout when the output can use it
	 * (qcow2, the sparse vdisk formats: img_image_output_plans; a raw file
	 * needs none, and the declaring walk reads every inode again). */
	if (img_image_output_plans(o))
		fo.flags |= IMG_FS_OWN_DEVICE;
	if (o->mode == IMG_MODE_EMPTY) {
		struct img_tree_opts to = { .flags = o->tree_flags };

		r = img_image_set_seed(ctx, o, NULL, 0);
		if (r >= 0)
			r = img_tree_new(ctx, &to, &t);
		if (r >= 0)
			r = img_tree_finish(t);
	} else {
		r = 0;
		if (o->closure && o->tar) {
			/* the contents come from the tar: the paths need not exist here */
			struct img_closure_opts co = { .store_dir = o->store_dir,
				                       .root = o->root,
				                       .no_check_exists = 1 };

			r = img_closure_load(ctx, o->closure, &co, &c);
		} else if (!o->tar) {
			r = img_image_load_closure(ctx, o, &c);
		}
		if (r >= 0 && o->tar) {
			r = root_tree(ctx, o, c, outdir, &t, &tar);
			if (r >= 0)
				r = c ? img_image_set_seed(ctx, o, (const char *const *)c->paths,
				                           c->npaths)
				      : seed_from_tree(ctx, o, t);
		} else if (r >= 0) {
			r = img_image_set_seed(ctx, o, (const char *const *)c->paths, c->npaths);
			if (r >= 0)
				r = img_root_tree_build(ctx, o, c, &t);
		}
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
	r = fs->plan(ctx, t, &fo, &plan);
	if (r < 0)
		goto out;
	fs->volume_id(plan, fs_id, sizeof(fs_id));
	r = img_image_create_output(ctx, o, fs->planned_size(plan), &dev);
	if (r < 0)
		goto out;
	/* A format may round the device up (VHD: whole MiB); ext4 fills it. */
	size = img_dev_size(dev);
	r = fs->emit(plan, dev);
	if (r >= 0)
		r = img_dev_finish(dev);
	if (r >= 0) /* the manifest (image-manifest.c) */
		r = img_image_manifest_bare(ctx, o, dev, c, t, "ext4", fo.label, size, fs_id, NULL,
		                            NULL);
out:
	img_dev_unref(dev);
	if (plan)
		fs->plan_free(plan);
	img_tree_free(t);
	img_tar_source_free(tar);
	img_closure_free(c);
	free(outdir);
	return r;
}
