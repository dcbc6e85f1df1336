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
	/* Tar streams that cannot be read twice (a pipe): the directory where
	 * their file data is staged, in an unlinked file (beside the output,
	 * never TMPDIR). NULL: such a stream is refused. */
	const char *stage_dir;
};

/* Read every path of @closure from the host into @tree (metadata only). */
int img_source_closure(struct img_ctx *ctx, const struct img_closure *closure,
                       const struct img_source_opts *opts, struct img_tree *tree);

/*
 * Read a tar stream into @tree (tar, GNU tar, pax, ustar; any compression
 * libarchive reads). @path is a file or "-" (stdin). Where the data goes:
 *   - uncompressed regular file: the tree refers to ranges of it
 *     (IMG_DATA_FD; the fd stays open in @src until img_tar_source_free),
 *     so writers copy it in-kernel;
 *   - compressed regular file: headers only now; the data is delivered by
 *     img_tar_source_replay() once the writer knows where it goes (those
 *     nodes have IMG_DATA_NONE and img_tar_source_pending() is non-zero);
 *   - a pipe: the data is staged in an unlinked file in opts->stage_dir and
 *     the tree refers to ranges of that (IMG_DATA_FD).
 * Errors name the entry: bad names (".." or empty components, outside the
 * store, over 255 bytes a component or 4095 in all), hard links to missing
 * entries, truncated or corrupt streams, sizes the stream does not hold.
 */
struct img_tar_source;
int img_source_tar(struct img_ctx *ctx, const char *path, const struct img_source_opts *opts,
		   struct img_tree *tree, struct img_tar_source **src);
/* How many entries wait for img_tar_source_replay(). */
uint64_t img_tar_source_pending(const struct img_tar_source *src);
/*
 * Read the stream again and hand every pending entry's data to @fn in
 * pieces (@off = offset in the file), once for each tree node that shares
 * it (a dereferenced hard link gets the same bytes). The tree must be
 * finished. Holes of sparse entries are not delivered (they read as zeros).
 */
typedef int (*img_tar_data_fn)(void *user, struct img_node *node, uint64_t off,
			       const void *buf, size_t len);
int img_tar_source_replay(struct img_tar_source *src, struct img_tree *tree,
			  img_tar_data_fn fn, void *user);
void img_tar_source_free(struct img_tar_source *src);

#ifdef __cplusplus
}
#endif
#endif
