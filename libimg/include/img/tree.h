/*
 * tree.h -- the normalised metadata tree every file system writer consumes.
 *
 * A tree holds one node per entry: name, type, mode, owner, time, size,
 * symlink target, device number, and where the file data is (a path on the
 * host, a range of an open file such as an uncompressed tar, or bytes in
 * memory). File data is never held in memory except for small generated
 * files (loader entries, the registration).
 *
 * Normalisation (docs/architecture.md, "Rules every output keeps") happens
 * here, not in the writers: children are sorted bytewise, owners forced to
 * 0:0 and times to the epoch unless the options say otherwise, names checked
 * (no '/', no NUL, 1..255 bytes, never "." or ".."), hard links resolved by
 * a host-independent policy. Writers walk the finished tree depth first,
 * children in order.
 *
 * Calling sequence:
 *   img_tree_new(ctx, &opts, &tree);
 *   img_tree_add(tree, "nix/store/x-foo/bin/a", &attr, &node); ...  any order
 *   img_tree_add_hardlink(tree, "path", "existing path"); ...
 *   img_tree_finish(tree);        sort, resolve links, count
 *   ... writers read tree->root ...
 *   img_tree_free(tree);
 */
#ifndef IMG_TREE_H
#define IMG_TREE_H

#include <stddef.h>
#include <stdint.h>
#include <img/context.h>
#include <img/dev.h>

#ifdef __cplusplus
extern "C" {
#endif

enum img_node_type {
	IMG_NODE_REG = 1,
	IMG_NODE_DIR,
	IMG_NODE_SYMLINK,
	IMG_NODE_CHR,
	IMG_NODE_BLK,
	IMG_NODE_FIFO,
	IMG_NODE_SOCK,
};

enum img_data_kind {
	IMG_DATA_NONE = 0, /* empty, or data not available yet (streamed tar) */
	IMG_DATA_PATH,     /* read from a host path at write time */
	IMG_DATA_FD,       /* a range of an fd the tree's owner keeps open */
	IMG_DATA_MEM,      /* bytes owned by the node */
};

/*
 * Fields are ordered so that none is padding, and what only one kind of
 * entry has shares its bytes with what only another kind has: a tree holds
 * one node per entry, and a desktop closure has a million entries
 * (docs/memory.md; the unit test tree/size keeps struct img_node at 96
 * bytes).
 */
struct img_data {
	enum img_data_kind kind;
	int fd; /* FD: borrowed */
	/* One of these, by kind (so never free or read one the kind does not
	 * name): */
	union {
		/* PATH: host path (owned). In a node of a tree it may be NULL:
		 * the tree then keeps the path as a shared prefix plus the
		 * node's tree path, and the data readers below rebuild it.
		 * Never read it directly; open the data with
		 * img_node_reader_open(). */
		char *path;
		void *mem;       /* MEM: owned, node->size bytes */
		uint64_t offset; /* FD: where the data starts in fd; NONE: the source's */
	};
};

struct img_node {
	struct img_node *parent; /* NULL for the root */
	char *name;              /* component (the tree's); "" for the root */
	/* Hard links kept (IMG_TREE_KEEP_HARDLINKS): every link but the first
	 * in traversal order points at the first; nlink counts them all. */
	struct img_node *link;
	union {
		/* DIR: children sorted bytewise after img_tree_finish(). */
		struct img_node **children;
		char *target; /* SYMLINK: target (the tree's, NUL-terminated) */
	};
	uint64_t size;        /* REG: data bytes; SYMLINK: target length; else 0 */
	int64_t mtime;        /* after normalisation */
	struct img_data data; /* REG */
	uint32_t uid, gid;
	uint32_t nlink;     /* after finish: REG etc. = links; DIR = 2 + subdirs */
	uint32_t nchildren; /* DIR; 0 for every other type */
	uint32_t seq;       /* depth-first index after finish (root = 0) */
	/* CHR/BLK: the 12-bit major and 20-bit minor every format stores
	 * (img_tree_add refuses larger ones). */
	uint32_t rdev_major : 12, rdev_minor : 20;
	uint16_t mode;       /* permission bits only (07777) */
	uint8_t type;        /* enum img_node_type */
	uint8_t name_len;    /* bytes (1..255; 0 for the root); any byte but '/' and NUL */
	uint8_t host_prefix; /* the library's (0: none; see data.path) */
};

#define IMG_TREE_KEEP_OWNER     0x1u /* keep uid/gid as given (default: 0:0) */
#define IMG_TREE_KEEP_TIMES     0x2u /* clamp times to the epoch instead of forcing */
#define IMG_TREE_KEEP_HARDLINKS 0x4u /* keep hard links (default: dereference) */

struct img_tree_opts {
	unsigned flags;
};

/* Attributes of a new entry. */
struct img_node_attr {
	enum img_node_type type;
	uint32_t mode;
	uint32_t uid, gid;
	int64_t mtime;
	uint64_t size;
	const char *target; /* SYMLINK: copied */
	uint32_t rdev_major, rdev_minor;
	struct img_data data; /* REG: copied (path strdup'ed, mem copied) */
};

struct img_tree {
	struct img_ctx *ctx;
	struct img_tree_opts opts;
	struct img_node *root;
	uint64_t nodes;      /* after finish: all nodes incl. root */
	uint64_t inodes;     /* after finish: distinct inodes (links counted once) */
	uint64_t data_bytes; /* after finish: sum of REG sizes over distinct inodes */
	int finished;        /* img_tree_finish() done */
	/* Only img_tree_new() makes trees: the library keeps more behind this. */
};

IMG_EXPORT int img_tree_new(struct img_ctx *ctx, const struct img_tree_opts *opts,
                            struct img_tree **out);
IMG_EXPORT void img_tree_free(struct img_tree *tree);

/*
 * Add or replace the entry at @path (relative, components separated by '/',
 * "" or "." components and a trailing '/' ignored, ".." refused). Missing
 * parent directories are created (mode 0755). An existing entry is replaced,
 * as tar extraction does (last wins); a directory replacing a directory keeps
 * its children. @out (may be NULL) gets the node, valid until img_tree_free.
 * Errors: -EINVAL for bad names (message names @path), -ENOTDIR when a
 * parent is not a directory, -ENAMETOOLONG for components over 255 bytes.
 */
IMG_EXPORT int img_tree_add(struct img_tree *tree, const char *path,
                            const struct img_node_attr *attr, struct img_node **out);
/* A hard link at @path to the existing entry @existing (both tree paths). */
IMG_EXPORT int img_tree_add_hardlink(struct img_tree *tree, const char *path, const char *existing);
/* Remove @path (and its subtree). -ENOENT if absent. */
IMG_EXPORT int img_tree_remove(struct img_tree *tree, const char *path);
/* Find the node at @path, or NULL. */
IMG_EXPORT struct img_node *img_tree_lookup(struct img_tree *tree, const char *path);

/* Sort, resolve hard links, number nodes depth first, count. Once. */
IMG_EXPORT int img_tree_finish(struct img_tree *tree);

/*
 * Depth-first walk in canonical order (parent before children, children
 * sorted). @fn returns 0 to go on, >0 to skip a directory's children, <0 to
 * stop with that error.
 */
typedef int (*img_tree_visit_fn)(void *user, struct img_node *node, unsigned depth);
IMG_EXPORT int img_tree_walk(struct img_tree *tree, img_tree_visit_fn fn, void *user);

/* The node's path from the root into @buf ("" for the root); -ERANGE if small. */
IMG_EXPORT int img_node_path(const struct img_node *node, char *buf, size_t len);
/* The node whose data and inode this one shares (itself unless a kept link). */
static inline struct img_node *img_node_inode(struct img_node *n)
{
	return n->link ? n->link : n;
}

/*
 * Copy @len bytes of the node's data starting at @src_off into @dev at
 * @dst_off, in-kernel where possible. Fails with a message naming the input
 * if the source is shorter than the tree says ("changed while reading").
 */
IMG_EXPORT int img_node_copy_data(struct img_ctx *ctx, const struct img_node *node,
                                  uint64_t src_off, uint64_t len, struct img_dev *dev,
                                  uint64_t dst_off);
/* Read @len bytes of the node's data at @off into @buf (small reads). */
IMG_EXPORT int img_node_read_data(struct img_ctx *ctx, const struct img_node *node, uint64_t off,
                                  void *buf, size_t len);

/*
 * The node's data opened once for many reads and copies (one open and one
 * check of its size, not one per call): img_node_reader_open(), then
 * img_node_reader_pread() / img_node_reader_copy() as often as needed, then
 * img_node_reader_close(). fd is -1 for data held in memory. The reader
 * borrows @node, which must outlive it.
 */
struct img_node_reader {
	const struct img_node *node;
	int fd;
	uint64_t base; /* where the node's data starts in fd */
	int owned;     /* fd was opened here */
};
IMG_EXPORT int img_node_reader_open(struct img_ctx *ctx, const struct img_node *node,
                                    struct img_node_reader *rd);
/* Exactly @len bytes at @off; a shorter source is an error naming it. */
IMG_EXPORT int img_node_reader_pread(struct img_ctx *ctx, const struct img_node_reader *rd,
                                     void *buf, size_t len, uint64_t off);
/* As img_node_copy_data(), through the open reader. */
IMG_EXPORT int img_node_reader_copy(struct img_ctx *ctx, const struct img_node_reader *rd,
                                    uint64_t src_off, uint64_t len, struct img_dev *dev,
                                    uint64_t dst_off);
IMG_EXPORT void img_node_reader_close(struct img_node_reader *rd);

#ifdef __cplusplus
}
#endif
#endif
