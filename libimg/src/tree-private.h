/*
 * tree-private.h -- what only libimg sees of a tree.
 *
 * A node has no private part: writers keep their per-node state in arrays
 * indexed by node->seq (sized once, from tree->nodes), so a node stays at
 * the size the unit test tree/size asserts (docs/memory.md).
 */
#ifndef IMG_TREE_PRIVATE_H
#define IMG_TREE_PRIVATE_H

#include "private.h"
#include <img/tree.h>

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
