/*
 * fs.h -- file system writers behind one ops table.
 *
 * Each format (ext4, erofs, vfat) is one fs-<name>.c with one row in the
 * table in fs.c. Every row plans, then emits: the plan lays the file system
 * out for a finished tree and knows its size and volume ID before a byte is
 * written (so the device can be sized, and a recipe never reads the file
 * system back for its ID); emit writes it onto a device that reads as zeros.
 * Formats that can take the data of a sorted stream (a tar on a pipe) in
 * place say where (stream) and accept or refuse what arrived (place);
 * write_data puts data in that emit could not reach (IMG_DATA_NONE files).
 *
 * Calling sequence:
 *   const struct img_fs_ops *fs = img_fs_find("ext4");
 *   fs->plan(ctx, tree, &opts, &plan);       opts->size 0: the estimate
 *   size = fs->planned_size(plan);
 *   fs->volume_id(plan, id, sizeof(id));      as blkid shows it
 *   ... create a device of at least size bytes ...
 *   fs->plan_writes(plan, dev); img_dev_plan_done(dev);   optional (dev.h)
 *   fs->emit(plan, dev);
 *   fs->plan_free(plan);
 * estimate and write are the same in one call each.
 *
 * What emit does in file order (so the device hashes the output as it goes
 * out, dio.c): erofs everything; ext4 and vfat not yet (their metadata is
 * written last, at the front: the output is read back for its sha256).
 */
#ifndef IMG_FS_H
#define IMG_FS_H

#include <stdint.h>
#include <img/context.h>
#include <img/dev.h>
#include <img/tree.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Compressed file data (the erofs row only; docs/store-image.md). */
struct img_fs_compress {
	const char *alg;  /* "lz4" or "lz4hc" */
	int level;        /* lz4hc 1..12; 0 = 9 */
	unsigned threads; /* compressing threads; 0 = 2 */
};

/*
 * img_fs_opts.flags: the device is the writer's alone (a whole output, not
 * a partition of one), so it may declare its layout with img_dev_plan()
 * before the first write (ext4).
 */
#define IMG_FS_OWN_DEVICE 0x1u

struct img_fs_opts {
	const char *label;   /* volume label */
	const char *id_role; /* repro role for UUID/volume ID, e.g. "root" */
	const uint8_t *uuid; /* this UUID instead (16 bytes; EROFS), or NULL */
	uint64_t size;       /* exact size in bytes; 0 = the estimate */
	uint64_t extra;      /* free space added to the estimate */
	unsigned flags;
	/* Compress file data as emit goes (erofs), or NULL. Borrowed until
	 * plan_free. The device must hold the uncompressed planned_size; after
	 * emit, planned_size is the compressed size. */
	const struct img_fs_compress *compress;
	/* A directory a writer may keep an unlinked temporary file in, the
	 * output's own (ext4 spills its metadata block cache there, keeping
	 * 8 MiB in memory). NULL: everything stays in memory, as before.
	 * Copied by plan. */
	const char *spill_dir;
};

/* One format's layout of one finished tree (fs.c and the format's file). */
struct img_fs_plan;

/*
 * Where a format wants the data of files streamed in canonical order: the
 * first at byte @start, each next one after the previous one's span rounded
 * up to @align; @body(size) leading bytes of a file of @size go there (the
 * rest, a tail, is placed by the format).
 */
struct img_fs_stream {
	uint64_t start;
	uint64_t align;
	uint64_t (*body)(uint64_t size);
};

struct img_fs_ops {
	const char *name;
	/* Plan @tree (finished; not written to until plan_free): layout, size
	 * (opts->size, or the estimate with opts->extra), volume ID. */
	int (*plan)(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *opts,
	            struct img_fs_plan **out);
	/* Bytes the file system takes. */
	uint64_t (*planned_size)(const struct img_fs_plan *plan);
	/* The volume ID as blkid shows it (UUID, or XXXX-XXXX for vfat). */
	void (*volume_id)(const struct img_fs_plan *plan, char *out, size_t len);
	/* Write it all on @dev (planned_size bytes at least, reading as zeros). */
	int (*emit)(struct img_fs_plan *plan, struct img_dev *dev);
	/* NULL allowed. */
	void (*plan_free)(struct img_fs_plan *plan);
	/* Streamed data in place (NULL: the format takes none). */
	const struct img_fs_stream *stream;
	/* @node's data is at [off, off+span) already: 1 if the plan put it
	 * there (emit then leaves it alone), 0 if not. Before emit. */
	int (*place)(struct img_fs_plan *plan, struct img_node *node, uint64_t off, uint64_t span);
	/* Bytes of @node's data at file offset @off that emit could not reach
	 * (IMG_DATA_NONE files), after emit. NULL: the format needs all data
	 * readable at emit. */
	int (*write_data)(struct img_fs_plan *plan, struct img_dev *dev, struct img_node *node,
	                  uint64_t off, const void *buf, size_t len);
	/* Bytes the tree needs with opts->extra free space (opts->size ignored). */
	int (*estimate)(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *opts,
	                uint64_t *size);
	/* Plan and emit on the whole of @dev (whose size is the fs size). */
	int (*write)(struct img_ctx *ctx, struct img_tree *tree, const struct img_fs_opts *opts,
	             struct img_dev *dev);
	/* Before emit: img_dev_plan() on @dev for every range emit will write,
	 * ascending; the caller may add ranges after them, then calls
	 * img_dev_plan_done(). NULL: the format does not know them up front. */
	int (*plan_writes)(struct img_fs_plan *plan, struct img_dev *dev);
};

/* The writer called @name, or NULL. */
IMG_EXPORT const struct img_fs_ops *img_fs_find(const char *name);

#ifdef __cplusplus
}
#endif
#endif
