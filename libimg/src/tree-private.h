/*
 * tree-private.h -- the parts of a tree node only libimg sees.
 *
 * img_tree_add() allocates every node as a struct img_node_private whose
 * first member is the public struct img_node, so the library reaches the
 * rest from a node pointer with img_node_priv(). A node made anywhere else
 * (a struct img_node on the stack) has no private part: pass such nodes only
 * to calls that read the public fields (the data readers).
 */
#ifndef IMG_TREE_PRIVATE_H
#define IMG_TREE_PRIVATE_H

#include "private.h"
#include <img/tree.h>

struct img_node_private {
	struct img_node pub; /* first: a node pointer is a pointer to this */
	void *priv;          /* writer scratch; writers own it during a write */
	uint64_t scratch;    /* writer scratch; also the tree's while links are pending */
	/* IMG_DATA_PATH with pub.data.path NULL: the host path is this prefix
	 * (owned by the tree) followed by the node's tree path, rebuilt when
	 * the data is opened instead of kept per node. */
	const char *host_prefix;
};

static inline struct img_node_private *img_node_priv(const struct img_node *n)
{
	return (struct img_node_private *)n;
}

/*
 * Before img_tree_finish() a hard link added with img_tree_add_hardlink()
 * is an empty placeholder: its attributes and data are copied from its
 * target at finish. The node whose contents @n will have: its target for
 * such a pending link (followed through links to links), else @n itself;
 * NULL when the target is missing or the links loop. For readers of an
 * unfinished tree (the boot entries read the system's files from it).
 */
struct img_node *img_tree_pending_target(struct img_tree *t, struct img_node *n);

#endif
