/*
 * image-common.c -- what the recipes (image-*.c) share: seed derivation,
 * output creation, closure loading, the system a root tree links and its
 * grub.cfg. Below the recipes; image.c, the front door, is above them.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "image-private.h"
#include <img/boot.h>
#include <img/qcow2.h>

int img_image_set_seed(struct img_ctx *ctx, const struct img_build_opts *o,
                       const char *const *paths, size_t npaths)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f;
	uint8_t digest[32];
	char hex[65];

	if (o->seed)
		return img_ctx_set_seed(ctx, o->seed, o->seed_len ? o->seed_len : strlen(o->seed));
	/* The identity of the content: the store paths (sorted, unique) and the
	 * label. Deliberately not the mode or the sizes: a root file system keeps
	 * its UUID whether it is written bare, into --efi or into --hybrid, and
	 * adding a partition changes no other ID (every ID is then told apart by
	 * its role). An image without paths (--empty) takes its size instead,
	 * so two empty disks of one VM do not share a UUID by default. Never the
	 * output path or anything of the host. */
	f = open_memstream(&buf, &len);
	if (!f)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	fprintf(f, "libimg-seed-v2\nlabel=%s\n", o->label ? o->label : "");
	if (!npaths)
		fprintf(f, "size=%llu\n", (unsigned long long)o->size);
	for (size_t i = 0; i < npaths; i++)
		fprintf(f, "path=%s\n", paths[i]);
	if (fclose(f) != 0) {
		free(buf);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	img_sha256(buf, len, digest);
	free(buf);
	img_hex(digest, 16, hex);
	return img_ctx_set_seed(ctx, hex, 32);
}

enum img_vdisk_format img_image_vdisk_format(const struct img_build_opts *o)
{
	switch (o->format) {
	case IMG_FORMAT_VPC:
		return o->vdisk == IMG_VDISK_VPC_DYNAMIC ? IMG_VDISK_VPC_DYNAMIC
		                                         : IMG_VDISK_VPC_FIXED;
	case IMG_FORMAT_VDI:
		return IMG_VDISK_VDI;
	case IMG_FORMAT_VMDK:
		return o->vdisk == IMG_VDISK_VMDK_STREAM ? IMG_VDISK_VMDK_STREAM
		                                         : IMG_VDISK_VMDK_SPARSE;
	default:
		return 0;
	}
}

bool img_image_output_plans(const struct img_build_opts *o)
{
	switch (o->format) {
	case IMG_FORMAT_QCOW2:
		return o->compression == IMG_QCOW2_COMPRESS_NONE;
	case IMG_FORMAT_VPC:
	case IMG_FORMAT_VDI:
	case IMG_FORMAT_VMDK: {
		enum img_vdisk_format f = img_image_vdisk_format(o);

		return f != IMG_VDISK_VPC_FIXED && f != IMG_VDISK_VMDK_STREAM;
	}
	default:
		return false;
	}
}

const char *img_image_format_name(const struct img_build_opts *o)
{
	static const char *const names[] = { "raw", "qcow2", "vpc", "vdi", "vmdk" };

	return (unsigned)o->format < sizeof(names) / sizeof(names[0]) ? names[o->format] : "raw";
}

int img_image_create_output(struct img_ctx *ctx, const struct img_build_opts *o, uint64_t size,
                            struct img_dev **out)
{
	if (o->format == IMG_FORMAT_QCOW2) {
		struct img_qcow2_opts q = {
			.size = size,
			.cluster_bits = o->cluster_bits,
			.compression = o->compression,
		};

		return img_dev_qcow2_create(ctx, o->output, &q, out);
	}
	if (o->compression != IMG_QCOW2_COMPRESS_NONE)
		return img_set_error(ctx, -EINVAL, "compression needs the qcow2 format");
	if (o->format == IMG_FORMAT_VPC || o->format == IMG_FORMAT_VDI ||
	    o->format == IMG_FORMAT_VMDK) {
		struct img_vdisk_opts v = { .format = img_image_vdisk_format(o) };
		const char *name = o->output_name ? o->output_name : o->output;
		uint64_t align = o->format == IMG_FORMAT_VPC ? 1u << 20 : 512;

		/* A partition table's backup GPT sits at the very end: a disk
		 * is planned in whole MiB; a bare file system may be padded. */
		if (size % align && (o->mode == IMG_MODE_EFI || o->mode == IMG_MODE_BIOS ||
		                     o->mode == IMG_MODE_HYBRID))
			return img_set_error(
			    ctx, -EINVAL, "a %s disk needs a size in whole %s (--size %llu)",
			    img_vdisk_qemu_name(v.format), align == 512 ? "sectors" : "MiB",
			    (unsigned long long)size);
		v.size = IMG_ALIGN_UP(size, align);
		v.extent_name = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
		return img_dev_vdisk_create(ctx, o->output, &v, out);
	}
	return img_dev_raw_create(ctx, o->output, size, out);
}

char *img_image_output_dir(const struct img_build_opts *o)
{
	const char *slash = strrchr(o->output, '/');

	if (!slash)
		return img_strdup(".");
	if (slash == o->output)
		return img_strdup("/");
	return img_strndup(o->output, (size_t)(slash - o->output));
}

int img_image_load_closure(struct img_ctx *ctx, const struct img_build_opts *o,
                           struct img_closure **out)
{
	/* With a tar the contents come from the stream: the paths need not
	 * exist on this host (no host store at all is fine). */
	struct img_closure_opts co = {
		.store_dir = o->store_dir,
		.root = o->root,
		.no_check_exists = o->tar != NULL,
	};

	if (!o->closure)
		return img_set_error(ctx, -EINVAL, "no closure given");
	return img_closure_load(ctx, o->closure, &co, out);
}

const char *img_root_tree_system(struct img_tree *t)
{
	const struct img_node *link = t ? img_tree_lookup(t, ROOT_SYSTEM_LINK) : NULL;

	return link && link->type == IMG_NODE_SYMLINK ? link->target : NULL;
}

/* How the root tree's store is read for GRUB's plan (the tree itself). */
struct img_boot_opts img_image_grub_boot_opts(const struct img_build_opts *o,
                                              const struct img_closure *c, struct img_tree *t,
                                              const char *system, const char *tree_name)
{
	struct img_boot_opts bo = {
		.system = system,
		.store_dir = c ? c->store_dir : o->store_dir,
		.paths = c ? (const char *const *)c->paths : NULL,
		.npaths = c ? c->npaths : 0,
		.kernel_params = o->kernel_params,
		.specialisation = o->specialisation,
		.tree = t,
		.tree_name = tree_name,
	};

	return bo;
}

int img_image_grub_cfg(struct img_ctx *ctx, const struct img_build_opts *o,
                       const struct img_closure *c, struct img_tree *t, const char *system)
{
	struct img_node_attr a = { .type = IMG_NODE_REG, .mode = 0644 };
	char name[PATH_MAX + 32];
	struct img_boot_opts bo;
	struct img_boot_plan *p;
	char *cfg = NULL;
	int r;

	if (o->tar)
		snprintf(name, sizeof(name), "the tar stream %s",
		         strcmp(o->tar, "-") ? o->tar : "on stdin");
	else
		snprintf(name, sizeof(name), "the closure %s", c ? c->source : "");
	bo = img_image_grub_boot_opts(o, c, t, system, name);
	r = img_boot_plan_build(ctx, &bo, &p);
	if (r < 0)
		return r;
	r = img_boot_grub_cfg(ctx, p, o->label ? o->label : ROOT_LABEL, &cfg);
	img_boot_plan_free(p);
	if (r < 0)
		return r;
	a.size = strlen(cfg);
	a.data.kind = IMG_DATA_MEM;
	a.data.mem = cfg;
	r = img_tree_add(t, "boot/grub/grub.cfg", &a, NULL); /* copies the bytes */
	free(cfg);
	return r;
}
