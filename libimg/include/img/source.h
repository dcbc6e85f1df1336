/*
 * source.h -- entry streams from libarchive into a tree.
 *
 * Two sources fill the same normalised tree (tree.h):
 *   - a closure on disk, read with libarchive's read_disk (symlinks not
 *     followed, hard links recognised by the source's inode identity);
 *   - a tar stream (any compression libarchive reads), from a file or a pipe.
 *
 * Entry names are mapped into the tree under @prefix: a store path
 * /nix/store/x-foo lands at "<prefix>x-foo" ("nix/store/" for a root file
 * system, "" for a store image). Tar names may be absolute
 * (/nix/store/x/...), relative with the store prefix (nix/store/x/...) or
 * relative to the store (x/...); `~nix~case~hack~N` suffixes are removed;
 * ".." and names outside the store are refused naming the entry.
 */
#ifndef IMG_SOURCE_H
#define IMG_SOURCE_H

#include <img/closure.h>
#include <img/context.h>
#include <img/tree.h>

#ifdef __cplusplus
extern "C" {
#endif

struct img_source_opts {
	const char *prefix;    /* tree path under which store paths land */
	const char *store_dir; /* default "/nix/store" */
};

/* Read every path of @closure from the host into @tree (metadata only). */
int img_source_closure(struct img_ctx *ctx, const struct img_closure *closure,
                       const struct img_source_opts *opts, struct img_tree *tree);

/*
 * Read a tar stream into @tree. @path is a file or "-" (stdin). When the
 * stream is an uncompressed regular file the tree's data refers to ranges
 * of it (IMG_DATA_FD; the fd stays open in @src until img_tar_source_free);
 * otherwise see the store-image writer for how data is staged.
 */
struct img_tar_source;
int img_source_tar(struct img_ctx *ctx, const char *path, const struct img_source_opts *opts,
                   struct img_tree *tree, struct img_tar_source **src);
void img_tar_source_free(struct img_tar_source *src);

#ifdef __cplusplus
}
#endif
#endif
