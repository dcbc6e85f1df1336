/*
 * image-manifest.c -- what the recipes share to describe their output in
 * the manifest (docs/manifest.md): the fields every manifest carries
 * (generator, image, format, compression, sha256, seed, epoch) and the file
 * system IDs read back from what was written (so the manifest says what
 * blkid will say, whatever role names a writer used).
 */
#include <stdio.h>
#include <stdlib.h>

#include "image-private.h"
#include <img/boot.h>
#include <img/manifest.h>
#include <img/repro.h>

static const char *mode_text(enum img_mode m)
{
	static const char *const names[] = { "root", "empty", "efi", "bios", "hybrid", "store" };

	return (unsigned)m < IMG_ARRAY_SIZE(names) ? names[m] : "root";
}

int img_image_fs_id(struct img_ctx *ctx, struct img_dev *dev, uint64_t off, const char *fs,
                    char *out, size_t len)
{
	uint8_t b[128];
	int r;

	out[0] = 0;
	if (!strcmp(fs, "vfat")) {
		r = img_dev_pread(dev, b, 0x47, off);
		if (r < 0)
			return r;
		snprintf(out, len, "%04X-%04X", img_get_le16(b + 0x45), img_get_le16(b + 0x43));
		return 0;
	}
	if (!strcmp(fs, "ext4")) {
		/* superblock at 1024: s_magic at 0x38, s_uuid at 0x68 */
		r = img_dev_pread(dev, b, 128, off + 1024);
		if (r < 0)
			return r;
		if (img_get_le16(b + 0x38) != 0xEF53)
			return img_set_error(ctx, -EIO, "manifest: no ext4 superblock at %llu",
			                     (unsigned long long)off);
		img_uuid_unparse(b + 0x68, out);
		return 0;
	}
	if (!strcmp(fs, "erofs")) {
		/* superblock at 1024: uuid at 0x30 (formats.md 1.2) */
		r = img_dev_pread(dev, b, 0x40, off + 1024);
		if (r < 0)
			return r;
		img_uuid_unparse(b + 0x30, out);
		return 0;
	}
	return 0;
}

/*
 * The output's SHA-256: taken as it was written when the device saw it go
 * out in order, else read back from the file (docs/manifest.md).
 */
static int output_sha256(struct img_ctx *ctx, const struct img_build_opts *o, struct img_dev *dev,
                         uint8_t digest[32])
{
	if (img_dev_sha256(dev, digest) == 0) {
		img_log(ctx, IMG_LOG_INFO, "sha256 of %s: taken as it was written", o->output);
		return 0;
	}
	img_log(ctx, IMG_LOG_INFO, "sha256 of %s: reading it back (not written in order)",
	        o->output);
	return img_sha256_file(ctx, o->output, digest);
}

int img_image_write_manifest(struct img_ctx *ctx, const struct img_build_opts *o,
                             struct img_dev *dev, struct img_manifest *m)
{
	char gen[64], sha[65], *seed;
	uint8_t digest[32];
	const char *sd;
	size_t sl;
	int r;

	if (!o->manifest)
		return 0;
	r = output_sha256(ctx, o, dev, digest);
	if (r < 0)
		return r;
	img_hex(digest, 32, sha);
	snprintf(gen, sizeof(gen), "mkvmimage %s", IMG_VERSION);
	sd = img_ctx_seed(ctx, &sl);
	seed = img_strndup(sd ? sd : "", sd ? sl : 0);
	if (!seed)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	m->manifest_version = IMG_MANIFEST_VERSION;
	m->generator = gen;
	m->image = (char *)(o->output_name ? o->output_name : o->output);
	m->format = (char *)img_image_format_name(o);
	m->compression = o->compression == IMG_QCOW2_COMPRESS_ZSTD   ? "zstd"
	                 : o->compression == IMG_QCOW2_COMPRESS_ZLIB ? "zlib"
	                                                             : "none";
	if (!m->mode)
		m->mode = (char *)mode_text(o->mode);
	if (!m->boot)
		m->boot = "none";
	if (!m->partition_table)
		m->partition_table = "none";
	m->sha256 = sha;
	m->seed = seed;
	m->epoch = img_repro_epoch(ctx);
	r = img_manifest_write(ctx, o->manifest, m);
	free(seed);
	m->generator = m->sha256 = m->seed = NULL;
	return r;
}

int img_image_manifest_bare(struct img_ctx *ctx, const struct img_build_opts *o,
                            struct img_dev *dev, const struct img_closure *c, struct img_tree *t,
                            const char *fs, const char *label, uint64_t size, const char *fs_uuid,
                            struct img_manifest_verity *verity, const char *fs_compression)
{
	struct img_manifest_partition p = { 0 };
	struct img_manifest m = { 0 };
	const char *system = img_root_tree_system(t);
	char *params = NULL;
	int r;

	if (!o->manifest)
		return 0;
	p.role = !strcmp(fs, "erofs") ? "store" : "root";
	p.size = size;
	p.filesystem = (char *)fs;
	p.label = (char *)label;
	p.fs_uuid = fs_uuid && *fs_uuid ? (char *)fs_uuid : NULL;
	p.verity = verity;
	p.fs_compression = (char *)fs_compression;
	m.virtual_size = verity ? verity->hash_offset + verity->hash_size : size;
	/* A format may round the device up (VHD: whole MiB). */
	if (dev && img_dev_size(dev) > m.virtual_size)
		m.virtual_size = img_dev_size(dev);
	m.partitions = &p;
	m.npartitions = 1;
	if (system) {
		struct img_boot_opts bo = {
			.system = system,
			.root = c ? c->root : o->root,
			.store_dir = c ? c->store_dir : o->store_dir,
			.kernel_params = o->kernel_params,
			.tree = t,
		};

		r = img_boot_kernel_params_read(ctx, &bo, &params);
		if (r < 0)
			return r;
		m.system = (char *)system;
		m.kernel_params = params;
		m.bootloader = "none";
	}
	r = img_image_write_manifest(ctx, o, dev, &m);
	free(params);
	return r;
}
