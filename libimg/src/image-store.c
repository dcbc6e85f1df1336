/*
 * image-store.c -- the STORE recipe: an EROFS image (label nix-store) whose
 * root holds the closure's store paths by base name.
 *
 * Spec: docs/cli.md (--store-image, --tar), docs/store-image.md,
 * docs/architecture.md ("Rules every output keeps").
 * Input forms and what they cost (docs/store-image.md):
 *   closure on disk      tree from the host, data copied in-kernel once;
 *   uncompressed tar     tree from the headers, data copied in-kernel from
 *                        the tar file's ranges once;
 *   compressed tar file  headers first (decompressed once), the layout is
 *                        planned, then the data decompressed again straight
 *                        into its final blocks;
 *   tar on a pipe        data staged in an unlinked file beside the output
 *                        while reading, then copied in-kernel into place
 *                        (raw, sorted: straight into its final blocks).
 * The output is planned (img_dev_plan) before the emit, so a qcow2 (or
 * dynamic VHD, VDI, sparse VMDK) output goes out in file order and is
 * hashed as it is written, except where data comes after the emit (a
 * compressed tar's replay): then the manifest reads the output back. The
 * sorted pipe's raw output is written before any plan could be made, and
 * is read back too.
 * The image depends on the content only: the tree is canonical, so the
 * order of a tar stream's entries changes no byte.
 *
 * --verity appends a dm-verity hash tree (verity.c) right after the file
 * system: the EROFS bytes are the same as without it, the superblock of the
 * tree sits at the file system's size (the hash offset), and the root hash
 * goes into the manifest. The data blocks are hashed from a tap on the
 * device as the emit writes them, and the tree follows them in file order;
 * where the data were not all written in order through the device (a
 * compressed tar's replay, the sorted pipe's data put in place before the
 * device, --compress-fs, a compressed qcow2 packed at finish) the tree is
 * computed from the data read back.
 *
 * --compress-fs: the EROFS row compresses the file data as it emits
 * (fs-erofs-compress.c) onto an output sized for the uncompressed plan; the
 * file is then cut to the compressed size (and the verity tree after it).
 */
#include <fcntl.h>
#include <uuid/uuid.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <img/fs.h>
#include "image-private.h"
#include "verity.h"
#include <img/manifest.h>
#include <img/repro.h>
#include <img/source.h>

#define STORE_LABEL "nix-store"

/* The store paths the tree holds ("/nix/store/<name>" for each root child). */
static int tree_paths(struct img_ctx *ctx, struct img_tree *t, const char *store_dir, char ***out)
{
	struct img_node *root = t->root;
	char **v = calloc(root->nchildren + 1, sizeof(*v));

	if (!v)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < root->nchildren; i++) {
		if (img_asprintf(&v[i], "%s/%.*s", store_dir, (int)root->children[i]->name_len,
		                 root->children[i]->name) < 0) {
			for (size_t j = 0; j < i; j++)
				free(v[j]);
			free(v);
			return img_set_error(ctx, -ENOMEM, "out of memory");
		}
	}
	*out = v;
	return 0;
}

/* With both a closure and a tar: the tar must hold exactly the closure. */
static int check_against_closure(struct img_ctx *ctx, const struct img_closure *c,
                                 struct img_tree *t, const char *tar)
{
	size_t sl = strlen(c->store_dir) + 1;

	for (size_t i = 0; i < c->npaths; i++)
		if (!img_tree_lookup(t, c->paths[i] + sl))
			return img_set_error(ctx, -ENOENT,
			                     "%s: store path %s of the closure is "
			                     "not in the tar stream",
			                     tar, c->paths[i]);
	if (t->root->nchildren != c->npaths)
		return img_set_error(ctx, -EINVAL,
		                     "%s: the tar stream holds %zu store paths, the closure %zu",
		                     tar, (size_t)t->root->nchildren, c->npaths);
	return 0;
}

/* The format's plan, as the tar source's callbacks see it. */
struct store_plan {
	struct img_ctx *ctx;
	const struct img_fs_ops *fs;
	struct img_fs_plan *plan;
	struct img_dev *dev;
};

static int replay_data(void *user, struct img_node *node, uint64_t off, const void *buf, size_t len)
{
	struct store_plan *sp = user;

	img_progress_add(sp->ctx, len, 0);
	return sp->fs->write_data(sp->plan, sp->dev, node, off, buf, len);
}

/* Data a sorted pipe wrote in place: kept if the plan put it there. */
static int place_check(void *user, struct img_node *node, uint64_t off, uint64_t span)
{
	struct store_plan *sp = user;

	return sp->fs->place(sp->plan, node, off, span);
}

/* A store image boots nothing: no closure is passed, so no system. */
static int manifest(struct img_ctx *ctx, const struct img_build_opts *o, struct img_dev *dev,
                    const struct img_fs_ops *fs, struct img_fs_plan *plan, const char *label,
                    uint64_t fs_size, const struct img_verity *verity)
{
	char uuid[37], vuuid[37], root[65], salt[65], comp[32];
	struct img_manifest_verity mv = {
		.root_hash = root,
		.hash_algorithm = IMG_VERITY_ALGORITHM,
		.data_block_size = IMG_VERITY_BLOCK,
		.hash_block_size = IMG_VERITY_BLOCK,
		.data_offset = verity->data_offset,
		.data_blocks = verity->data_blocks,
		.hash_offset = verity->hash_offset,
		.hash_size = verity->hash_size,
		.salt = salt,
		.uuid = vuuid,
	};

	fs->volume_id(plan, uuid, sizeof(uuid));
	img_uuid_unparse(verity->uuid, vuuid);
	img_hex(verity->root, sizeof(verity->root), root);
	img_hex(verity->salt, sizeof(verity->salt), salt);
	if (o->fs_compression == IMG_FS_COMPRESS_LZ4HC)
		snprintf(comp, sizeof(comp), "lz4hc:%d",
		         o->fs_compression_level ? o->fs_compression_level : 9);
	else
		snprintf(comp, sizeof(comp), "lz4");
	return img_image_manifest_bare(ctx, o, dev, NULL, NULL, "erofs", label, fs_size, uuid,
	                               o->verity ? &mv : NULL, o->fs_compression ? comp : NULL);
}

/*
 * --compress-fs: raw output only, sized for the uncompressed plan (sparse),
 * the data at hand (a closure on disk, a tar file or a staged pipe). The
 * EROFS row compresses while it emits; then the verity tree follows the
 * compressed file system and the file is cut after it. Its SHA-256 is read
 * back from the file (manifest without a device).
 */
/*
 * The output's sizes for a file system of @need bytes: *size the file
 * system (--size if given, never less than @need), *total with the
 * dm-verity hash tree behind it (--verity: @verity set up for it).
 */
static int store_sizes(struct img_ctx *ctx, const struct img_build_opts *o, uint64_t need,
                       const char *what, struct img_verity *verity, uint64_t *size, uint64_t *total)
{
	int r;

	*size = need;
	if (o->size) {
		if (o->size < need)
			return img_set_error(ctx, -ENOSPC,
			                     "--size %llu is too small: the %s needs %llu bytes "
			                     "(%llu MiB)",
			                     (unsigned long long)o->size, what,
			                     (unsigned long long)need,
			                     (unsigned long long)IMG_DIV_ROUND_UP(need, 1 << 20));
		*size = o->size;
	}
	*total = *size;
	if (!o->verity)
		return 0;
	if (*size % IMG_VERITY_BLOCK)
		return img_set_error(ctx, -EINVAL,
		                     "--size %llu: with --verity the file system size must be "
		                     "a multiple of %u bytes",
		                     (unsigned long long)*size, IMG_VERITY_BLOCK);
	r = img_verity_init(ctx, verity, 0, *size, *size);
	if (r < 0)
		return r;
	*total = *size + verity->hash_size;
	return 0;
}

static int build_compressed(struct img_ctx *ctx, const struct img_build_opts *o,
                            const struct img_fs_ops *fs, const struct img_tree *t,
                            struct img_fs_plan *plan, struct img_tar_source *tar,
                            struct img_verity *verity, uint64_t *fs_size)
{
	uint64_t room = IMG_MAX(fs->planned_size(plan), o->size), size, total;
	struct img_dev *dev = NULL;
	int fd, r = 0;

	if (o->format != IMG_FORMAT_RAW)
		return img_set_error(ctx, -EINVAL, "--compress-fs writes raw output, not qcow2");
	if (img_tar_source_pending(tar))
		return img_set_error(ctx, -EINVAL,
		                     "%s: --compress-fs needs the file data at hand: a compressed "
		                     "tar is read twice; give an uncompressed tar or the closure",
		                     o->tar);
	/*
	 * Every file the row compresses takes fewer bytes than before
	 * (fs-erofs-compress.c), but the metadata is packed again: the slack
	 * covers a repacking that comes out a little longer. The file is sparse
	 * and cut to size after, so the room costs nothing.
	 */
	room += IMG_ALIGN_UP(t->nodes * 8, (uint64_t)IMG_VERITY_BLOCK) +
	        16 * (uint64_t)IMG_VERITY_BLOCK;
	room = IMG_ALIGN_UP(room, (uint64_t)IMG_VERITY_BLOCK);
	if (o->verity)
		room += (1 + img_verity_tree_blocks(room / IMG_VERITY_BLOCK)) * IMG_VERITY_BLOCK;
	fd = open(o->output, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return img_set_error(ctx, -errno, "creating %s: %s", o->output, strerror(errno));
	if (ftruncate(fd, (off_t)room) < 0)
		r = img_set_error(ctx, -errno, "sizing %s: %s", o->output, strerror(errno));
	if (r >= 0)
		r = img_dev_raw_from_fd(ctx, fd, room, 0, &dev);
	if (r >= 0)
		r = fs->emit(plan, dev);
	if (r < 0)
		goto out;
	*fs_size = fs->planned_size(plan);
	r = store_sizes(ctx, o, *fs_size, "compressed store image", verity, &size, &total);
	if (r >= 0 && o->verity)
		r = img_verity_write(ctx, dev, verity, NULL);
	if (r < 0)
		goto out;
	r = img_dev_finish(dev);
	img_dev_unref(dev);
	dev = NULL;
	if (r >= 0 && (ftruncate(fd, (off_t)total) < 0 || fsync(fd) < 0))
		r = img_set_error(ctx, -errno, "%s: %s", o->output, strerror(errno));
out:
	img_dev_unref(dev);
	close(fd);
	return r;
}

/*
 * Declare what the output will get (img_dev_plan): the EROFS emit writes
 * the file system's blocks in block order but for a sparse file's holes
 * (the row's plan_writes knows which, fs-erofs-emit.c), the dm-verity tree
 * follows at its hash offset; what --size adds in between is never
 * written. A qcow2 output (and a dynamic VHD, VDI, sparse VMDK) lays itself
 * out for this and goes out in file order, so its sha256 is taken as it is
 * written, and a sparse file's holes stay unallocated clusters (blocks).
 */
static int plan_output(struct img_dev *dev, const struct img_build_opts *o,
                       const struct img_fs_ops *fs, struct img_fs_plan *plan,
                       const struct img_verity *verity)
{
	int r;

	/* Only an output that lays itself out uses the plan (qcow2, the
	 * sparse vdisk formats): raw would pay the probe for nothing. */
	if (!img_image_output_plans(o))
		return 0;
	r = fs->plan_writes ? fs->plan_writes(plan, dev)
	                    : img_dev_plan(dev, 0, fs->planned_size(plan));

	if (r >= 0 && o->verity)
		r = img_dev_plan(dev, verity->hash_offset, verity->hash_size);
	return r < 0 ? r : img_dev_plan_done(dev);
}

/* Is the tar a pipe (or anything that cannot be read twice)? */
static int tar_is_stream(const char *tar)
{
	struct stat st;

	if (!strcmp(tar, "-"))
		return fstat(0, &st) == 0 && !S_ISREG(st.st_mode);
	return stat(tar, &st) == 0 && !S_ISREG(st.st_mode);
}

int img_build_store(struct img_ctx *ctx, const struct img_build_opts *o)
{
	struct img_tree_opts to = { .flags = o->tree_flags };
	struct img_fs_opts fo = { .label = o->label ? o->label : STORE_LABEL,
		                  .id_role = "erofs-uuid" };
	struct img_fs_compress zc = {
		.alg = o->fs_compression == IMG_FS_COMPRESS_LZ4 ? "lz4" : "lz4hc",
		.level = o->fs_compression_level,
		.threads = o->threads,
	};
	struct img_source_opts so = { .prefix = "",
		                      .store_dir = o->store_dir ? o->store_dir : "/nix/store" };
	struct img_closure *c = NULL;
	struct img_tar_source *tar = NULL;
	const struct img_fs_ops *fs = img_fs_find("erofs");
	struct store_plan sp = { .ctx = ctx, .fs = fs };
	struct img_tree *t = NULL;
	struct img_dev *dev = NULL;
	char **paths = NULL, *outdir = NULL;
	struct img_tar_inplace inplace = { .fd = -1 };
	struct img_verity verity = { 0 };
	struct img_verity_tap *vtap = NULL;
	uint64_t size, fs_size, total;
	uint8_t fixed_uuid[16];
	int r;

	if (!fs)
		return img_set_error(ctx, -ENOSYS, "the EROFS writer is not built in");
	if (o->fs_compression)
		fo.compress = &zc;
	if (o->uuid) {
		if (uuid_parse(o->uuid, fixed_uuid) != 0)
			return img_set_error(ctx, -EINVAL, "UUID '%s' is not a UUID", o->uuid);
		fo.uuid = fixed_uuid;
	}
	r = img_tree_new(ctx, &to, &t);
	if (r < 0)
		return r;
	if (o->closure) {
		r = img_image_load_closure(ctx, o, &c);
		if (r < 0)
			goto out;
	}
	if (o->tar) {
		/* A pipe's data is staged beside the output, never in TMPDIR. */
		outdir = img_image_output_dir(o);
		if (!outdir) {
			r = img_set_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
		so.stage_dir = outdir;
		/* A sorted stream into a raw image: file data straight into its
		 * final blocks (the layout puts file data first, in canonical
		 * order, from block 1). Owner/time/link options could change an
		 * inode's form and so the layout: then everything is staged. */
		if (o->format == IMG_FORMAT_RAW && !o->tree_flags && !o->fs_compression &&
		    fs->stream && tar_is_stream(o->tar)) {
			inplace.fd = open(o->output, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
			if (inplace.fd < 0) {
				r = img_set_error(ctx, -errno, "creating %s: %s", o->output,
				                  strerror(errno));
				goto out;
			}
			inplace.start = fs->stream->start;
			inplace.align = fs->stream->align;
			inplace.body = fs->stream->body;
			so.inplace = &inplace;
		}
		img_progress_phase(ctx, "reading the tar stream", 0, 0);
		r = img_source_tar(ctx, o->tar, &so, t, &tar);
	} else if (c) {
		img_progress_phase(ctx, "reading the closure", 0, c->npaths);
		r = img_source_closure(ctx, c, &so, t);
	} else {
		r = img_set_error(ctx, -EINVAL, "no closure or tar stream given");
	}
	if (r >= 0) {
		r = img_tree_finish(t);
		/* Link errors are found only now: say which input held them. */
		if (r < 0 && o->tar)
			img_error_prefix(ctx, r, "%s", strcmp(o->tar, "-") ? o->tar : "stdin");
	}
	if (r >= 0)
		r = img_source_store_policy(ctx, t, "", so.store_dir,
		                            o->tar ? (strcmp(o->tar, "-") ? o->tar : "stdin")
		                                   : o->closure);
	if (r >= 0 && c && tar)
		r = check_against_closure(ctx, c, t, strcmp(o->tar, "-") ? o->tar : "stdin");
	if (r < 0)
		goto out;
	if (!t->root->nchildren) {
		r = img_set_error(ctx, -EINVAL, "%s: no store paths in the input",
		                  o->tar ? o->tar : o->closure);
		goto out;
	}
	/* The seed depends on the store paths, not on how they came in. */
	if (c) {
		r = img_image_set_seed(ctx, o, (const char *const *)c->paths, c->npaths);
	} else {
		r = tree_paths(ctx, t, so.store_dir, &paths);
		if (r >= 0)
			r = img_image_set_seed(ctx, o, (const char *const *)paths,
			                       t->root->nchildren);
	}
	if (r >= 0)
		r = fs->plan(ctx, t, &fo, &sp.plan);
	if (r < 0)
		goto out;
	fs_size = size = fs->planned_size(sp.plan);
	if (o->fs_compression) {
		r = build_compressed(ctx, o, fs, t, sp.plan, tar, &verity, &fs_size);
		if (r >= 0)
			r = manifest(ctx, o, NULL, fs, sp.plan, fo.label, fs_size, &verity);
		goto out;
	}
	r = store_sizes(ctx, o, size, "store image", &verity, &size, &total);
	if (r < 0)
		goto out;
	if (inplace.fd >= 0) {
		uint64_t in, st;

		r = img_tar_source_settle(tar, t, place_check, &sp);
		if (r >= 0 && ftruncate(inplace.fd, (off_t)total) < 0)
			r = img_set_error(ctx, -errno, "sizing %s: %s", o->output, strerror(errno));
		if (r >= 0)
			r = img_dev_raw_from_fd(ctx, inplace.fd, total, 0, &dev);
		img_tar_source_stats(tar, &in, &st);
		img_log(ctx, IMG_LOG_INFO,
		        "tar stream: %llu bytes went straight into place, %llu staged",
		        (unsigned long long)in, (unsigned long long)st);
	} else {
		/* (The data a sorted pipe put in place above is written already:
		 * that raw output is not planned.) */
		r = img_image_create_output(ctx, o, total, &dev);
		if (r >= 0)
			r = plan_output(dev, o, fs, sp.plan, &verity);
		/* a new output: the emit's writes are the data, hashed as they go
		 * (every format writes them in order or falls back, verity.c) */
		if (r >= 0 && o->verity)
			r = img_verity_tap_new(ctx, dev, &verity, &vtap);
	}
	if (r < 0)
		goto out;
	r = fs->emit(sp.plan, dev);
	if (r >= 0 && img_tar_source_pending(tar)) {
		sp.dev = dev;
		img_log(ctx, IMG_LOG_INFO, "%s: reading %llu entries' data a second time", o->tar,
		        (unsigned long long)img_tar_source_pending(tar));
		img_progress_phase(ctx, "decompressing file data into place", t->data_bytes, 0);
		r = img_tar_source_replay(tar, t, replay_data, &sp);
	}
	/* The data are complete only now (a replay may have filled them in). */
	if (r >= 0 && o->verity)
		r = img_verity_write(ctx, dev, &verity, vtap);
	if (r >= 0)
		r = img_dev_finish(dev);
	if (r >= 0)
		r = manifest(ctx, o, dev, fs, sp.plan, fo.label, fs_size, &verity);
out:
	img_verity_tap_free(vtap);
	img_dev_unref(dev);
	if (sp.plan)
		fs->plan_free(sp.plan);
	img_tar_source_free(tar);
	if (inplace.fd >= 0)
		close(inplace.fd);
	if (paths)
		for (size_t i = 0; paths[i]; i++)
			free(paths[i]);
	free(paths);
	free(outdir);
	img_tree_free(t);
	img_closure_free(c);
	return r;
}
