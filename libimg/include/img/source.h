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
 * relative to the store (x/...). For both sources `~nix~case~hack~N`
 * suffixes are removed from names and from the components of symlink
 * targets, and a name that would then meet a sibling of that name is refused;
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
	/* A tar file (seekable) whose data cannot be referred to in place (it is
	 * compressed, or an entry is sparse): stage that data in stage_dir as
	 * for a pipe instead of leaving it for img_tar_source_replay(), so every
	 * regular file's bytes are readable as soon as the stream is read (the
	 * partitioned disks need the boot files before the root is written). */
	int no_replay;
	/* Optional, for a pipe: entries that arrive in canonical order (as
	 * `tar --sort=name` makes them) go straight into the output. */
	const struct img_tar_inplace *inplace;
};

/*
 * Where a writer wants the data of files that arrive in canonical order:
 * the first at byte @start of @fd, each next one after the previous one's
 * span rounded up to @align. @body(size) is how many leading bytes of a file
 * of @size go there (the rest, a tail, is staged). After the stream,
 * img_tar_source_settle() checks every such file against the real layout.
 */
struct img_tar_inplace {
	int fd;
	uint64_t start;
	uint64_t align;
	uint64_t (*body)(uint64_t size);
};

/*
 * What a Nix store holds, applied to the finished @tree below the node at
 * tree path @store ("" = the root: a store image; "nix/store" for a root
 * file system), whichever source filled it: regular files, directories and
 * symlinks only (a device node, FIFO or socket is an error naming it as
 * @store_dir/...), and modes as Nix canonicalises a path it registers: 0555
 * where the owner may execute, else 0444 (no write bits, no set-user-ID,
 * set-group-ID or sticky bit; one warning names the first entry that had
 * one). Symlinks are left alone. @input names the input in messages.
 */
IMG_EXPORT int img_source_store_policy(struct img_ctx *ctx, struct img_tree *tree,
                                       const char *store, const char *store_dir, const char *input);

/* Read every path of @closure from the host into @tree (metadata only). */
IMG_EXPORT int img_source_closure(struct img_ctx *ctx, const struct img_closure *closure,
                                  const struct img_source_opts *opts, struct img_tree *tree);

/*
 * Read a tar stream into @tree (tar, GNU tar, pax, ustar; any compression
 * libarchive reads). @path is a file or "-" (stdin). Where the data goes:
 *   - uncompressed regular file: the tree refers to ranges of it
 *     (IMG_DATA_FD; the fd stays open in @src until img_tar_source_free),
 *     so writers copy it in-kernel;
 *   - compressed regular file: headers only now; the data is delivered by
 *     img_tar_source_replay() once the writer knows where it goes (those
 *     nodes have IMG_DATA_NONE and img_tar_source_pending() is non-zero),
 *     or with opts->no_replay staged as for a pipe;
 *   - a pipe: the data is staged in an unlinked file in opts->stage_dir and
 *     the tree refers to ranges of that (IMG_DATA_FD).
 * Errors name the entry: bad names (".." or empty components, outside the
 * store, over 255 bytes a component or 4095 in all), hard links to missing
 * entries, truncated or corrupt streams, sizes the stream does not hold.
 */
struct img_tar_source;
IMG_EXPORT int img_source_tar(struct img_ctx *ctx, const char *path,
                              const struct img_source_opts *opts, struct img_tree *tree,
                              struct img_tar_source **src);
/* How many entries wait for img_tar_source_replay(). */
IMG_EXPORT uint64_t img_tar_source_pending(const struct img_tar_source *src);
/*
 * Read the stream again and hand every pending entry's data to @fn in
 * pieces (@off = offset in the file), once for each tree node that shares
 * it (a dereferenced hard link gets the same bytes). The tree must be
 * finished. Holes of sparse entries are not delivered (they read as zeros).
 */
typedef int (*img_tar_data_fn)(void *user, struct img_node *node, uint64_t off, const void *buf,
                               size_t len);
IMG_EXPORT int img_tar_source_replay(struct img_tar_source *src, struct img_tree *tree,
                                     img_tar_data_fn fn, void *user);
/*
 * For a pipe read with opts->inplace, once the layout is known: @fn is asked
 * for each tree node whose data was written in place (at @off, @span bytes)
 * and returns 1 if that is exactly where the writer wants it (the writer
 * then must not copy it), 0 if not. Data not where it belongs is copied
 * into the staging file (the node's data then reads complete from there);
 * every in-place range not kept is zeroed. Call before writing anything else.
 */
typedef int (*img_tar_place_fn)(void *user, struct img_node *node, uint64_t off, uint64_t span);
IMG_EXPORT int img_tar_source_settle(struct img_tar_source *src, struct img_tree *tree,
                                     img_tar_place_fn fn, void *user);
/* Bytes written in place and bytes staged (for logs and tests). */
IMG_EXPORT void img_tar_source_stats(const struct img_tar_source *src, uint64_t *inplace,
                                     uint64_t *staged);
IMG_EXPORT void img_tar_source_free(struct img_tar_source *src);

#ifdef __cplusplus
}
#endif
#endif
