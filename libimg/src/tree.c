/*
 * tree.c -- the normalised metadata tree (docs/architecture.md, "Rules every
 * output keeps").
 *
 * Entries arrive in any order (readdir order, tar order); the tree makes the
 * result independent of it: children are sorted bytewise at finish, owners
 * and times normalised on entry, hard links resolved by a policy that does
 * not depend on the host (dereference by default; when kept, the first link
 * in canonical order holds the inode). While the tree is filled, lookups go
 * through one hash table keyed by (parent, name) so directories of any size
 * are cheap to fill; finish frees it (its 11-23 bytes an entry are not
 * needed while writers run) and later lookups search the sorted children.
 * Every traversal is iterative: trees may be 10,000 levels deep.
 *
 * Memory per entry is what bounds the closures we can take (docs/memory.md):
 * nodes, names and symlink targets live in one arena the tree owns (no
 * malloc per name), and a file read from the host keeps no path of its own
 * when its host path is a shared prefix followed by its tree path, which is
 * what the sources give: the path is rebuilt from the parent chain when the
 * data is opened. A node keeps no writer scratch: writers keep theirs in
 * arrays indexed by node->seq, sized once.
 *
 * Before finish, a pending hard link (img_tree_add_hardlink) carries its
 * 1-based index in the list of pending links in nlink, which is not
 * counted until finish; no other node has a non-zero nlink then.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tree-private.h"
#include <img/repro.h>

#define TOMBSTONE ((struct img_node *)1)

/* Arena chunks: nodes, names and symlink targets, freed with the tree. */
#define ARENA_CHUNK (256u * 1024u)
struct arena_chunk {
	struct arena_chunk *next;
	size_t used, cap;
	_Alignas(16) unsigned char data[];
};

/* Distinct host prefixes kept per tree; more fall back to a path per node. */
#define MAX_PREFIXES 64

struct pending_link {
	struct img_node *node; /* the link's own node */
	char *target;          /* tree path of the entry it links to */
};

/* Every tree is allocated as one of these (img_tree_new); tree_priv() gets
 * back from the public part. */
struct tree_priv {
	struct img_tree pub;     /* first */
	struct img_node **slots; /* open addressing on (parent, name) */
	size_t nslots, used;     /* used counts tombstones too */
	struct pending_link *links;
	size_t nlinks, caplinks;
	struct arena_chunk *arena;
	struct img_node *free_nodes; /* replaced nodes for reuse, chained by parent */
	struct host_prefix {
		char *s;
		size_t len;
	} prefixes[MAX_PREFIXES]; /* node->host_prefix is 1 + the index */
	size_t nprefixes, last_prefix;
};

static struct tree_priv *tree_priv(const struct img_tree *t)
{
	return (struct tree_priv *)t;
}

/*
 * The tree of a node, for the data readers that get only a node: the root's
 * data (a directory has none) holds it, set by img_tree_new().
 */
static const struct tree_priv *node_tree(const struct img_node *n)
{
	while (n->parent)
		n = n->parent;
	return (const struct tree_priv *)(uintptr_t)n->data.offset;
}

static void *arena_alloc(struct tree_priv *p, size_t len, size_t align)
{
	struct arena_chunk *c = p->arena;
	size_t cap;

	if (c) {
		size_t off = (c->used + align - 1) & ~(align - 1);

		if (off <= c->cap && len <= c->cap - off) {
			c->used = off + len;
			return c->data + off;
		}
	}
	cap = len > ARENA_CHUNK ? len : ARENA_CHUNK;
	c = malloc(sizeof(*c) + cap);
	if (!c)
		return NULL;
	c->next = p->arena;
	c->used = len;
	c->cap = cap;
	p->arena = c;
	return c->data;
}

static char *arena_strndup(struct tree_priv *p, const char *s, size_t len)
{
	char *d = arena_alloc(p, len + 1, 1);

	if (d) {
		memcpy(d, s, len);
		d[len] = '\0';
	}
	return d;
}

static struct img_node *node_alloc(struct tree_priv *p)
{
	struct img_node *n = p->free_nodes;

	if (n)
		p->free_nodes = n->parent;
	else
		n = arena_alloc(p, sizeof(struct img_node), _Alignof(struct img_node));
	if (n)
		memset(n, 0, sizeof(struct img_node));
	return n;
}

static uint64_t key_hash(const struct img_node *parent, const char *name, size_t len)
{
	uint64_t h = 1469598103934665603ull ^ (uint64_t)(uintptr_t)parent;

	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)name[i];
		h *= 1099511628211ull;
	}
	return h ^ (h >> 29);
}

static struct img_node **slot_find(struct tree_priv *p, const struct img_node *parent,
                                   const char *name, size_t len)
{
	size_t mask = p->nslots - 1, i = key_hash(parent, name, len) & mask;

	for (;;) {
		struct img_node *n = p->slots[i];

		if (!n)
			return &p->slots[i];
		if (n != TOMBSTONE && n->parent == parent && n->name_len == len &&
		    !memcmp(n->name, name, len))
			return &p->slots[i];
		i = (i + 1) & mask;
	}
}

static int table_grow(struct tree_priv *p)
{
	struct img_node **old = p->slots;
	size_t oldn = p->nslots;

	p->nslots = oldn ? oldn * 2 : 1024;
	p->slots = calloc(p->nslots, sizeof(*p->slots));
	if (!p->slots) {
		p->slots = old;
		p->nslots = oldn;
		return -ENOMEM;
	}
	p->used = 0;
	for (size_t i = 0; i < oldn; i++) {
		struct img_node *n = old[i];

		if (n && n != TOMBSTONE) {
			*slot_find(p, n->parent, n->name, n->name_len) = n;
			p->used++;
		}
	}
	free(old);
	return 0;
}

static int table_insert(struct tree_priv *p, struct img_node *n)
{
	struct img_node **s;

	if ((p->used + 1) * 10 >= p->nslots * 7) {
		int r = table_grow(p);

		if (r < 0)
			return r;
	}
	s = slot_find(p, n->parent, n->name, n->name_len);
	if (!*s)
		p->used++;
	*s = n;
	return 0;
}

static void table_remove(struct tree_priv *p, struct img_node *n)
{
	struct img_node **s = slot_find(p, n->parent, n->name, n->name_len);

	if (*s == n)
		*s = TOMBSTONE;
}

static void data_release(struct img_data *d)
{
	if (d->kind == IMG_DATA_PATH)
		free(d->path);
	else if (d->kind == IMG_DATA_MEM)
		free(d->mem);
	memset(d, 0, sizeof(*d));
	d->fd = -1;
}

/* Release what @n owns outside the arena; with @p, keep it for reuse. */
static void node_free_one(struct tree_priv *p, struct img_node *n)
{
	if (n->type == IMG_NODE_REG)
		data_release(&n->data);
	if (n->type == IMG_NODE_DIR)
		free(n->children);
	if (p) {
		n->parent = p->free_nodes;
		p->free_nodes = n;
	}
}

/* Free @n and its subtree, removing them from the table. Iterative. */
static void subtree_free(struct tree_priv *p, struct img_node *n)
{
	struct img_node **stack = NULL;
	size_t sp = 0, cap = 0;

	for (;;) {
		if (n) {
			if (p && !p->pub.finished) {
				table_remove(p, n);
				/* A pending hard link that is replaced is forgotten. */
				if (n->nlink && n->nlink <= p->nlinks &&
				    p->links[n->nlink - 1].node == n)
					p->links[n->nlink - 1].node = NULL;
			}
			for (size_t i = 0; i < n->nchildren; i++) {
				if (sp == cap) {
					cap = cap ? cap * 2 : 64;
					stack = realloc(stack, cap * sizeof(*stack));
					if (!stack)
						abort(); /* freeing must not fail half way */
				}
				stack[sp++] = n->children[i];
			}
			node_free_one(p, n);
		}
		if (!sp)
			break;
		n = stack[--sp];
	}
	free(stack);
}

int img_tree_new(struct img_ctx *ctx, const struct img_tree_opts *opts, struct img_tree **out)
{
	struct tree_priv *p = img_malloc0(sizeof(*p));
	struct img_node *root = p ? node_alloc(p) : NULL;
	struct img_tree *t;

	if (!root || !(root->name = arena_strndup(p, "", 0))) {
		if (p)
			free(p->arena);
		free(p);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	t = &p->pub;
	t->ctx = ctx;
	if (opts)
		t->opts = *opts;
	root->type = IMG_NODE_DIR;
	root->mode = 0755;
	root->mtime = img_repro_epoch(ctx);
	root->data.fd = -1;
	root->data.offset = (uint64_t)(uintptr_t)p; /* node_tree() */
	t->root = root;
	*out = t;
	return 0;
}

void img_tree_free(struct img_tree *t)
{
	struct tree_priv *p;

	if (!t)
		return;
	p = tree_priv(t);
	subtree_free(NULL, t->root);
	for (size_t i = 0; i < p->nlinks; i++)
		free(p->links[i].target);
	free(p->links);
	free(p->slots);
	for (size_t i = 0; i < p->nprefixes; i++)
		free(p->prefixes[i].s);
	while (p->arena) {
		struct arena_chunk *c = p->arena;

		p->arena = c->next;
		free(c);
	}
	free(p);
}

/* Split the next component off *path; 0 at the end, 1 with a component, <0 on error. */
static int next_component(struct img_tree *t, const char *full, const char **path,
                          const char **name, size_t *len)
{
	const char *s = *path;

	for (;;) {
		const char *e;

		while (*s == '/')
			s++;
		if (!*s) {
			*path = s;
			return 0;
		}
		e = strchr(s, '/');
		if (!e)
			e = s + strlen(s);
		if (e - s == 1 && s[0] == '.') {
			s = e;
			continue;
		}
		if (e - s == 2 && s[0] == '.' && s[1] == '.')
			return img_set_error(t->ctx, -EINVAL, "%s: '..' in a path is not allowed",
			                     full);
		if (e - s > 255)
			return img_set_error(t->ctx, -ENAMETOOLONG,
			                     "%s: a name of %zu bytes (at most 255)", full,
			                     (size_t)(e - s));
		*name = s;
		*len = (size_t)(e - s);
		*path = e;
		return 1;
	}
}

/* Bytewise, a prefix first: the order of finished children. */
static int name_cmp_raw(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static struct img_node *child_lookup(struct img_tree *t, struct img_node *parent, const char *name,
                                     size_t len)
{
	struct tree_priv *p = tree_priv(t);
	struct img_node **s;

	if (t->finished) {
		/* The table is gone: the children are sorted. */
		size_t lo = 0, hi = parent->type == IMG_NODE_DIR ? parent->nchildren : 0;

		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			const struct img_node *c = parent->children[mid];
			int cmp = name_cmp_raw(c->name, c->name_len, name, len);

			if (!cmp)
				return parent->children[mid];
			if (cmp < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		return NULL;
	}
	if (!p->nslots)
		return NULL;
	s = slot_find(p, parent, name, len);
	return *s == TOMBSTONE ? NULL : *s;
}

/*
 * Slots in a children array while children are added: 4, then doubling, so
 * the capacity follows from the count and no node stores it. Removing
 * children leaves the array larger than this says, which is safe.
 */
static size_t children_cap(size_t n)
{
	size_t cap = 4;

	if (!n)
		return 0;
	while (cap < n)
		cap *= 2;
	return cap;
}

static int child_append(struct img_tree *t, struct img_node *parent, struct img_node *n)
{
	if (parent->nchildren == UINT32_MAX)
		return img_set_error(t->ctx, -EFBIG, "a directory of more than %u entries",
		                     UINT32_MAX);
	if (parent->nchildren == children_cap(parent->nchildren)) {
		size_t cap = parent->nchildren ? (size_t)parent->nchildren * 2 : 4;
		struct img_node **c = realloc(parent->children, cap * sizeof(*c));

		if (!c)
			return img_set_error(t->ctx, -ENOMEM, "out of memory");
		parent->children = c;
	}
	parent->children[parent->nchildren++] = n;
	n->parent = parent;
	if (table_insert(tree_priv(t), n) < 0) {
		parent->nchildren--; /* the caller frees @n */
		return img_set_error(t->ctx, -ENOMEM, "out of memory");
	}
	return 0;
}

static void child_detach(struct img_node *parent, struct img_node *n)
{
	for (size_t i = 0; i < parent->nchildren; i++)
		if (parent->children[i] == n) {
			memmove(&parent->children[i], &parent->children[i + 1],
			        (parent->nchildren - i - 1) * sizeof(*parent->children));
			parent->nchildren--;
			return;
		}
}

static struct img_node *node_new(struct img_tree *t, const char *name, size_t len)
{
	struct img_node *n = node_alloc(tree_priv(t));

	if (!n || !(n->name = arena_strndup(tree_priv(t), name, len))) {
		if (n)
			node_free_one(tree_priv(t), n);
		img_set_error(t->ctx, -ENOMEM, "out of memory");
		return NULL;
	}
	n->name_len = (uint8_t)len; /* <= 255: next_component() */
	n->data.fd = -1;
	return n;
}

static void normalise(struct img_tree *t, struct img_node *n, const struct img_node_attr *a)
{
	int64_t epoch = img_repro_epoch(t->ctx);

	n->mode = a->mode & 07777;
	if (t->opts.flags & IMG_TREE_KEEP_OWNER) {
		n->uid = a->uid;
		n->gid = a->gid;
	} else {
		n->uid = n->gid = 0;
	}
	if (t->opts.flags & IMG_TREE_KEEP_TIMES)
		n->mtime = a->mtime < epoch ? a->mtime : epoch;
	else
		n->mtime = epoch;
}

/* The prefix's number for node->host_prefix (1 + its index), or 0. */
static uint8_t prefix_intern(struct tree_priv *p, const char *s, size_t len)
{
	for (size_t k = 0; k < p->nprefixes; k++) {
		size_t i = (p->last_prefix + k) % p->nprefixes;

		if (p->prefixes[i].len == len && !memcmp(p->prefixes[i].s, s, len)) {
			p->last_prefix = i;
			return (uint8_t)(i + 1);
		}
	}
	if (p->nprefixes == MAX_PREFIXES)
		return 0;
	p->prefixes[p->nprefixes].s = img_strndup(s, len);
	if (!p->prefixes[p->nprefixes].s)
		return 0;
	p->prefixes[p->nprefixes].len = len;
	p->last_prefix = p->nprefixes;
	return (uint8_t)(++p->nprefixes);
}

/*
 * Keep @host as the data path of @n, whose parent chain is set: when @host
 * is some prefix followed by the node's tree path, only the prefix (shared
 * by the tree) is kept and the path is rebuilt at open (host_path()).
 */
static int data_path_set(struct img_tree *t, struct img_node *n, const char *host)
{
	struct tree_priv *p = tree_priv(t);
	size_t pos = strlen(host);
	const struct img_node *c;
	uint8_t pre;

	for (c = n; c->parent; c = c->parent) {
		if (pos < c->name_len || memcmp(host + pos - c->name_len, c->name, c->name_len))
			break;
		pos -= c->name_len;
		if (c->parent->parent) {
			if (!pos || host[pos - 1] != '/')
				break;
			pos--;
		}
	}
	if (!c->parent && (pre = prefix_intern(p, host, pos))) {
		n->host_prefix = pre;
		n->data.path = NULL;
		return 0;
	}
	n->data.path = img_strdup(host);
	return n->data.path ? 0 : img_set_error(t->ctx, -ENOMEM, "out of memory");
}

/*
 * The host path of a node's data: data.path, or its prefix and tree path
 * into @buf (@len bytes) or, when longer, into *@heap (the caller frees).
 * NULL when out of memory or no path is known.
 */
static const char *host_path(const struct img_node *n, char *buf, size_t len, char **heap)
{
	const struct img_node *c;
	const char *pre;
	size_t plen, need = 0;

	*heap = NULL;
	if (n->data.path)
		return n->data.path;
	if (!n->host_prefix)
		return NULL;
	pre = node_tree(n)->prefixes[n->host_prefix - 1].s;
	plen = node_tree(n)->prefixes[n->host_prefix - 1].len;
	for (c = n; c->parent; c = c->parent)
		need += c->name_len + (c->parent->parent ? 1 : 0);
	if (plen + need + 1 > len) {
		len = plen + need + 1;
		buf = *heap = malloc(len);
		if (!buf)
			return NULL;
	}
	memcpy(buf, pre, plen);
	img_node_path(n, buf + plen, len - plen);
	return buf;
}

static int set_attrs(struct img_tree *t, struct img_node *n, const struct img_node_attr *a,
                     const char *path)
{
	/* @n is new (node_new): nothing to release */
	n->type = (uint8_t)a->type;
	normalise(t, n, a);
	n->size = 0;
	switch (a->type) {
	case IMG_NODE_REG:
		n->size = a->size;
		n->data.kind = a->data.kind;
		n->data.fd = a->data.fd;
		if (a->data.kind == IMG_DATA_FD || a->data.kind == IMG_DATA_NONE)
			n->data.offset = a->data.offset;
		if (a->data.kind == IMG_DATA_PATH) {
			int r;

			if (!a->data.path)
				return img_set_error(t->ctx, -EINVAL, "%s: no host path", path);
			r = data_path_set(t, n, a->data.path);
			if (r < 0)
				return r;
		} else if (a->data.kind == IMG_DATA_MEM && a->size) {
			if (a->size > SIZE_MAX)
				return img_set_error(t->ctx, -EFBIG, "%s: too large", path);
			n->data.mem = malloc((size_t)a->size);
			if (!n->data.mem)
				return img_set_error(t->ctx, -ENOMEM, "out of memory");
			memcpy(n->data.mem, a->data.mem, (size_t)a->size);
		} else if (a->data.kind == IMG_DATA_NONE && a->size) {
			/* Data that arrives later (a streamed tar) is the caller's business. */
		}
		break;
	case IMG_NODE_SYMLINK:
		if (!a->target || !*a->target)
			return img_set_error(t->ctx, -EINVAL, "%s: symlink without a target", path);
		n->size = strlen(a->target);
		if (n->size > 4095)
			return img_set_error(t->ctx, -ENAMETOOLONG,
			                     "%s: symlink target of %llu bytes (at most 4095)",
			                     path, (unsigned long long)n->size);
		n->target = arena_strndup(tree_priv(t), a->target, (size_t)n->size);
		if (!n->target)
			return img_set_error(t->ctx, -ENOMEM, "out of memory");
		break;
	case IMG_NODE_CHR:
	case IMG_NODE_BLK:
		/* Linux's dev_t, and what ext4 and EROFS store: 12 + 20 bits */
		if (a->rdev_major > 0xFFF || a->rdev_minor > 0xFFFFF)
			return img_set_error(t->ctx, -ERANGE,
			                     "%s: device number %u:%u (at most 4095:1048575)", path,
			                     a->rdev_major, a->rdev_minor);
		n->rdev_major = a->rdev_major & 0xFFF;
		n->rdev_minor = a->rdev_minor & 0xFFFFF;
		break;
	case IMG_NODE_DIR:
	case IMG_NODE_FIFO:
	case IMG_NODE_SOCK:
		break;
	default:
		return img_set_error(t->ctx, -EINVAL, "%s: unknown entry type %d", path,
		                     (int)a->type);
	}
	return 0;
}

/* Walk to the parent of the last component, creating directories. */
static int walk_parent(struct img_tree *t, const char *path, struct img_node **parentp,
                       const char **name, size_t *len)
{
	struct img_node *dir = t->root;
	const char *rest = path, *cname = NULL;
	size_t clen = 0;
	int r;

	r = next_component(t, path, &rest, &cname, &clen);
	if (r <= 0)
		return r < 0 ? r : img_set_error(t->ctx, -EINVAL, "'%s': an empty path", path);
	for (;;) {
		const char *nname = NULL;
		size_t nlen = 0;
		const char *save = rest;
		struct img_node *c;

		r = next_component(t, path, &rest, &nname, &nlen);
		if (r < 0)
			return r;
		if (r == 0) {
			rest = save;
			break;
		}
		c = child_lookup(t, dir, cname, clen);
		if (!c) {
			struct img_node_attr a = { .type = IMG_NODE_DIR,
				                   .mode = 0755,
				                   .mtime = img_repro_epoch(t->ctx) };

			c = node_new(t, cname, clen);
			if (!c)
				return -ENOMEM;
			set_attrs(t, c, &a, path);
			r = child_append(t, dir, c);
			if (r < 0) {
				node_free_one(tree_priv(t), c);
				return r;
			}
		} else if (c->type != IMG_NODE_DIR) {
			return img_set_error(t->ctx, -ENOTDIR, "%s: '%.*s' is not a directory",
			                     path, (int)clen, cname);
		}
		dir = c;
		cname = nname;
		clen = nlen;
	}
	*parentp = dir;
	*name = cname;
	*len = clen;
	return 1;
}

int img_tree_add(struct img_tree *t, const char *path, const struct img_node_attr *attr,
                 struct img_node **out)
{
	struct img_node *parent = NULL, *n;
	const char *name = NULL;
	size_t len = 0;
	int r;

	if (t->finished)
		return img_set_error(t->ctx, -EINVAL, "tree already finished");
	r = walk_parent(t, path, &parent, &name, &len);
	if (r < 0)
		return r;
	if (r == 0) {
		/* The root itself ("", "/", "."): only directory attributes apply. */
		if (attr->type != IMG_NODE_DIR)
			return img_set_error(t->ctx, -EINVAL, "'%s': the root must be a directory",
			                     path);
		normalise(t, t->root, attr);
		if (out)
			*out = t->root;
		return 0;
	}
	n = child_lookup(t, parent, name, len);
	if (n && n->type == IMG_NODE_DIR && attr->type == IMG_NODE_DIR) {
		/* tar semantics: a directory entry again updates it, children stay. */
		normalise(t, n, attr);
		if (out)
			*out = n;
		return 0;
	}
	if (n) {
		/* Last wins: the old entry (and anything under it) goes. */
		child_detach(parent, n);
		subtree_free(tree_priv(t), n);
	}
	n = node_new(t, name, len);
	if (!n)
		return -ENOMEM;
	n->parent = parent; /* the tree path, for a host path kept as a prefix */
	r = set_attrs(t, n, attr, path);
	if (r >= 0)
		r = child_append(t, parent, n);
	if (r < 0) {
		node_free_one(tree_priv(t), n);
		return r;
	}
	if (out)
		*out = n;
	return 0;
}

int img_tree_add_hardlink(struct img_tree *t, const char *path, const char *existing)
{
	struct tree_priv *p = tree_priv(t);
	struct img_node_attr a = { .type = IMG_NODE_REG };
	struct img_node *n;
	int r;

	r = img_tree_add(t, path, &a, &n);
	if (r < 0)
		return r;
	if (n == t->root)
		return img_set_error(t->ctx, -EINVAL, "'%s': cannot hard-link the root", path);
	if (p->nlinks == UINT32_MAX)
		return img_set_error(t->ctx, -EFBIG, "more than %u hard links", UINT32_MAX);
	if (p->nlinks == p->caplinks) {
		size_t cap = p->caplinks ? p->caplinks * 2 : 16;
		struct pending_link *l = realloc(p->links, cap * sizeof(*l));

		if (!l)
			return img_set_error(t->ctx, -ENOMEM, "out of memory");
		p->links = l;
		p->caplinks = cap;
	}
	p->links[p->nlinks].node = n;
	p->links[p->nlinks].target = img_strdup(existing);
	if (!p->links[p->nlinks].target)
		return img_set_error(t->ctx, -ENOMEM, "out of memory");
	p->nlinks++;
	/* Mark it: a link's own attributes come from its target at finish. */
	n->nlink = (uint32_t)p->nlinks;
	return 0;
}

struct img_node *img_tree_lookup(struct img_tree *t, const char *path)
{
	struct img_node *n = t->root;
	const char *rest = path, *name;
	size_t len;
	int r;

	while ((r = next_component(t, path, &rest, &name, &len)) > 0) {
		if (n->type != IMG_NODE_DIR)
			return NULL;
		n = child_lookup(t, n, name, len);
		if (!n)
			return NULL;
	}
	return r < 0 ? NULL : n;
}

int img_tree_remove(struct img_tree *t, const char *path)
{
	struct img_node *n = img_tree_lookup(t, path);

	if (t->finished)
		return img_set_error(t->ctx, -EINVAL, "tree already finished");
	if (!n)
		return img_set_error(t->ctx, -ENOENT, "%s: no such entry", path);
	if (n == t->root)
		return img_set_error(t->ctx, -EINVAL, "cannot remove the root");
	child_detach(n->parent, n);
	subtree_free(tree_priv(t), n);
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	const struct img_node *x = *(struct img_node *const *)a, *y = *(struct img_node *const *)b;

	return name_cmp_raw(x->name, x->name_len, y->name, y->name_len);
}

/* A node that is still a pending link (its nlink is its 1-based index). */
static struct img_node *link_target(struct img_tree *t, struct img_node *n, int depth)
{
	struct tree_priv *p = tree_priv(t);

	while (n && n->nlink && n->nlink <= p->nlinks && depth++ < 64) {
		const struct pending_link *l = &p->links[n->nlink - 1];

		if (l->node != n)
			break;
		n = img_tree_lookup(t, l->target);
	}
	return depth >= 64 ? NULL : n;
}

struct img_node *img_tree_pending_target(struct img_tree *t, struct img_node *n)
{
	return t->finished ? n : link_target(t, n, 0);
}

static int copy_inode(struct img_tree *t, struct img_node *dst, const struct img_node *src)
{
	char buf[PATH_MAX], *heap;
	const char *host;

	/* @dst is a link: never a directory (refused), so no children */
	if (dst->type == IMG_NODE_REG)
		data_release(&dst->data);
	dst->type = src->type;
	dst->mode = src->mode;
	dst->uid = src->uid;
	dst->gid = src->gid;
	dst->mtime = src->mtime;
	dst->size = src->size;
	dst->rdev_major = src->rdev_major;
	dst->rdev_minor = src->rdev_minor;
	dst->host_prefix = 0;
	dst->target = NULL;
	dst->data = (struct img_data){ .kind = IMG_DATA_NONE, .fd = -1 };
	if (src->type == IMG_NODE_SYMLINK &&
	    !(dst->target = arena_strndup(tree_priv(t), src->target, strlen(src->target))))
		return -ENOMEM;
	if (src->type != IMG_NODE_REG)
		return 0;
	dst->data.kind = src->data.kind;
	dst->data.fd = src->data.fd;
	if (src->data.kind == IMG_DATA_FD || src->data.kind == IMG_DATA_NONE)
		dst->data.offset = src->data.offset;
	if (src->data.kind == IMG_DATA_PATH) {
		/* The path is the other node's: kept whole, links are few. */
		host = host_path(src, buf, sizeof(buf), &heap);
		if (!host || !(dst->data.path = img_strdup(host))) {
			free(heap);
			return -ENOMEM;
		}
		free(heap);
	}
	if (src->data.kind == IMG_DATA_MEM && src->data.mem) {
		dst->data.mem = malloc((size_t)src->size);
		if (!dst->data.mem)
			return -ENOMEM;
		memcpy(dst->data.mem, src->data.mem, (size_t)src->size);
	}
	return 0;
}

/* Resolve pending hard links: each link takes its target's inode. */
static int resolve_links(struct img_tree *t)
{
	struct tree_priv *p = tree_priv(t);
	int keep = (t->opts.flags & IMG_TREE_KEEP_HARDLINKS) != 0;

	for (size_t i = 0; i < p->nlinks; i++) {
		struct img_node *n = p->links[i].node, *target;
		char path[256];

		/* A link replaced by a later entry is gone. */
		if (!n)
			continue;
		target = link_target(t, n, 0);
		img_node_path(n, path, sizeof(path));
		if (!target || target == n)
			return img_set_error(t->ctx, -ENOENT,
			                     "%s: hard link to a missing entry '%s'", path,
			                     p->links[i].target);
		if (target->type == IMG_NODE_DIR)
			return img_set_error(t->ctx, -EINVAL, "%s: hard link to a directory '%s'",
			                     path, p->links[i].target);
		if (keep) {
			n->link = target;
		} else if (copy_inode(t, n, target) < 0) {
			return img_set_error(t->ctx, -ENOMEM, "out of memory");
		}
	}
	for (size_t i = 0; i < p->nlinks; i++)
		if (p->links[i].node)
			p->links[i].node->nlink = 0;
	return 0;
}

/*
 * Push @n's children on a depth-first stack, in reverse so the smallest name
 * is visited first. -ENOMEM leaves the stack as it was.
 */
static int push_children(struct img_node ***stack, size_t *sp, size_t *cap, struct img_node *n)
{
	if (*sp + n->nchildren > *cap) {
		size_t ncap = (*sp + n->nchildren) * 2;
		struct img_node **s = realloc(*stack, ncap * sizeof(*s));

		if (!s)
			return -ENOMEM;
		*stack = s;
		*cap = ncap;
	}
	for (size_t i = n->nchildren; i-- > 0;)
		(*stack)[(*sp)++] = n->children[i];
	return 0;
}

/* A kept link and the node its group's chain of links ends at. */
struct link_member {
	struct img_node *root, *node;
};

static int cmp_member(const void *a, const void *b)
{
	const struct link_member *x = a, *y = b;
	uintptr_t p = (uintptr_t)x->root, q = (uintptr_t)y->root;

	return p < q ? -1 : p > q;
}

/*
 * Kept links: the first member of a group in canonical order holds the
 * inode, so writers meet the data at the first link they emit. Members are
 * grouped by sorting on the group's root (the order of the groups does not
 * matter; within one the choice is by seq, which does not depend on memory).
 */
static int group_links(struct img_tree *t)
{
	struct tree_priv *p = tree_priv(t);
	struct link_member *m = calloc(p->nlinks ? p->nlinks : 1, sizeof(*m));
	size_t n = 0;

	if (!m)
		return img_set_error(t->ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < p->nlinks; i++) {
		struct img_node *g = p->links[i].node;

		if (!g)
			continue;
		m[n].node = g;
		while (g->link)
			g = g->link;
		m[n++].root = g;
	}
	qsort(m, n, sizeof(*m), cmp_member);
	for (size_t i = 0, j; i < n; i = j) {
		struct img_node *g = m[i].root, *h = g;

		for (j = i; j < n && m[j].root == g; j++)
			if (m[j].node->seq < h->seq)
				h = m[j].node;
		if (h != g) {
			if (copy_inode(t, h, g) < 0) {
				free(m);
				return img_set_error(t->ctx, -ENOMEM, "out of memory");
			}
			h->link = NULL;
			g->link = h;
		}
		for (size_t k = i; k < j; k++)
			m[k].node->link = m[k].node == h ? NULL : h;
	}
	free(m);
	return 0;
}

int img_tree_finish(struct img_tree *t)
{
	struct img_node **stack = NULL;
	size_t sp = 0, cap = 0;
	uint64_t seq = 0;
	int r;

	if (t->finished)
		return img_set_error(t->ctx, -EINVAL, "tree already finished");
	r = resolve_links(t);
	if (r < 0)
		return r;
	t->nodes = t->inodes = t->data_bytes = 0;

	/* Pass 1, depth first: sort children, number nodes, reset counts. */
	stack = malloc(64 * sizeof(*stack));
	if (!stack)
		return img_set_error(t->ctx, -ENOMEM, "out of memory");
	cap = 64;
	stack[sp++] = t->root;
	while (sp) {
		struct img_node *n = stack[--sp];

		if (seq > UINT32_MAX) {
			free(stack);
			return img_set_error(t->ctx, -EFBIG, "more than %u entries", UINT32_MAX);
		}
		n->seq = (uint32_t)seq++;
		n->nlink = n->type == IMG_NODE_DIR ? 2 : 1;
		if (n->type != IMG_NODE_DIR)
			continue;
		if (n->nchildren > 1)
			qsort(n->children, n->nchildren, sizeof(*n->children), name_cmp);
		if (n->nchildren && children_cap(n->nchildren) > n->nchildren) {
			/* Trimmed to size: no more children come after finish. */
			struct img_node **c =
			    realloc(n->children, n->nchildren * sizeof(*n->children));

			if (c)
				n->children = c;
		}
		if (push_children(&stack, &sp, &cap, n) < 0) {
			free(stack);
			return img_set_error(t->ctx, -ENOMEM, "out of memory");
		}
	}

	/* Kept links: the first member of a group in canonical order holds the
	 * inode, so writers meet the data at the first link they emit. */
	if (t->opts.flags & IMG_TREE_KEEP_HARDLINKS) {
		r = group_links(t);
		if (r < 0) {
			free(stack);
			return r;
		}
	}

	/* Pass 2: counts and link numbers. */
	sp = 0;
	stack[sp++] = t->root;
	while (sp) {
		struct img_node *n = stack[--sp];

		t->nodes++;
		if (n->link) {
			n->link->nlink++;
		} else {
			t->inodes++;
			if (n->type == IMG_NODE_REG)
				t->data_bytes += n->size;
		}
		if (n->type != IMG_NODE_DIR)
			continue;
		if (n->parent)
			n->parent->nlink++;
		if (push_children(&stack, &sp, &cap, n) < 0) {
			free(stack);
			return img_set_error(t->ctx, -ENOMEM, "out of memory");
		}
	}
	free(stack);
	t->finished = 1;
	/* No more adds: lookups search the sorted children from now on. */
	free(tree_priv(t)->slots);
	tree_priv(t)->slots = NULL;
	tree_priv(t)->nslots = tree_priv(t)->used = 0;
	return 0;
}

int img_tree_walk(struct img_tree *t, img_tree_visit_fn fn, void *user)
{
	struct frame {
		struct img_node *n;
		unsigned depth;
	} *stack = malloc(64 * sizeof(*stack));
	size_t sp = 0, cap = 64;
	int r = 0;

	if (!stack)
		return img_set_error(t->ctx, -ENOMEM, "out of memory");
	stack[sp++] = (struct frame){ t->root, 0 };
	while (sp) {
		struct frame f = stack[--sp];

		r = fn(user, f.n, f.depth);
		if (r < 0)
			break;
		if (r > 0 || f.n->type != IMG_NODE_DIR) {
			r = 0;
			continue;
		}
		if (sp + f.n->nchildren > cap) {
			size_t ncap = (sp + f.n->nchildren) * 2;
			struct frame *s = realloc(stack, ncap * sizeof(*s));

			if (!s) {
				r = img_set_error(t->ctx, -ENOMEM, "out of memory");
				break;
			}
			stack = s;
			cap = ncap;
		}
		for (size_t i = f.n->nchildren; i-- > 0;)
			stack[sp++] = (struct frame){ f.n->children[i], f.depth + 1 };
	}
	free(stack);
	return r;
}

int img_node_path(const struct img_node *node, char *buf, size_t len)
{
	size_t need = 0, pos;
	const struct img_node *n;

	for (n = node; n && n->parent; n = n->parent)
		need += n->name_len + (n->parent->parent ? 1 : 0);
	if (need + 1 > len) {
		/* Truncated from the front is least useful; keep the tail. */
		if (len)
			snprintf(buf, len, "...%s", node->name);
		return -ERANGE;
	}
	buf[need] = '\0';
	pos = need;
	for (n = node; n && n->parent; n = n->parent) {
		pos -= n->name_len;
		memcpy(buf + pos, n->name, n->name_len);
		if (n->parent->parent)
			buf[--pos] = '/';
	}
	return 0;
}

static int data_error(struct img_ctx *ctx, const struct img_node *node, int err, const char *what)
{
	char path[512], host[PATH_MAX], *heap = NULL;
	const char *hp = NULL;

	img_node_path(node, path, sizeof(path));
	if (node->data.kind == IMG_DATA_PATH)
		hp = host_path(node, host, sizeof(host), &heap);
	err = img_set_error(ctx, err, "%s: %s", hp ? hp : path, what);
	free(heap);
	return err;
}

/* Open the node's data for reading: an fd and the offset its data starts at. */
static int data_open(struct img_ctx *ctx, const struct img_node *node, uint64_t end, int *fd,
                     uint64_t *base, int *owned)
{
	char buf[PATH_MAX], *heap;
	const char *host;
	struct stat st;

	*owned = 0;
	switch (node->data.kind) {
	case IMG_DATA_PATH:
		host = host_path(node, buf, sizeof(buf), &heap);
		if (!host)
			return img_set_error(ctx, -ENOMEM, "out of memory");
		*fd = open(host, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
		free(heap);
		if (*fd < 0)
			return data_error(ctx, node, -errno, strerror(errno));
		*owned = 1;
		if (fstat(*fd, &st) < 0 || !S_ISREG(st.st_mode) ||
		    (uint64_t)st.st_size != node->size) {
			close(*fd);
			return data_error(ctx, node, -EIO, "changed while reading (size or type)");
		}
		*base = 0;
		return 0;
	case IMG_DATA_FD:
		*fd = node->data.fd;
		*base = node->data.offset;
		return 0;
	default:
		break;
	}
	(void)end;
	return data_error(ctx, node, -EINVAL, "file data not available");
}

int img_node_reader_open(struct img_ctx *ctx, const struct img_node *node,
                         struct img_node_reader *rd)
{
	node = img_node_inode((struct img_node *)node);
	*rd = (struct img_node_reader){ .node = node, .fd = -1 };
	if (node->data.kind == IMG_DATA_MEM || !node->size)
		return 0;
	return data_open(ctx, node, node->size, &rd->fd, &rd->base, &rd->owned);
}

void img_node_reader_close(struct img_node_reader *rd)
{
	if (rd->owned && rd->fd >= 0)
		close(rd->fd);
	rd->fd = -1;
	rd->owned = 0;
}

static int reader_range(struct img_ctx *ctx, const struct img_node_reader *rd, uint64_t off,
                        uint64_t len)
{
	uint64_t end;

	if (img_add_overflow(off, len, &end) || end > rd->node->size)
		return data_error(ctx, rd->node, -EINVAL, "read beyond the end of the data");
	return 0;
}

int img_node_reader_pread(struct img_ctx *ctx, const struct img_node_reader *rd, void *buf,
                          size_t len, uint64_t off)
{
	int r = reader_range(ctx, rd, off, len);

	if (r < 0 || !len)
		return r;
	if (rd->node->data.kind == IMG_DATA_MEM) {
		memcpy(buf, (const uint8_t *)rd->node->data.mem + off, len);
		return 0;
	}
	r = img_pread_full(rd->fd, buf, len, rd->base + off);
	if (r < 0)
		return data_error(ctx, rd->node, r,
		                  r == -EIO ? "changed while reading (shorter)" : strerror(-r));
	return 0;
}

/* 64 MiB: well under a second of copying, a multiple of every block size */
#define READER_PIECE (64ull << 20)

int img_node_reader_copy(struct img_ctx *ctx, const struct img_node_reader *rd, uint64_t src_off,
                         uint64_t len, struct img_dev *dev, uint64_t dst_off)
{
	int r = reader_range(ctx, rd, src_off, len);

	if (r < 0 || !len)
		return r;
	if (rd->node->data.kind == IMG_DATA_MEM)
		return img_dev_pwrite(dev, (const uint8_t *)rd->node->data.mem + src_off,
		                      (size_t)len, dst_off);
	/* In pieces, so a cancellation is seen within one piece of a big file. */
	for (uint64_t done = 0; r >= 0 && done < len; done += READER_PIECE) {
		uint64_t n = IMG_MIN(READER_PIECE, len - done);

		r = img_check_cancel(ctx);
		if (r >= 0)
			r = img_dev_copy_from_fd(dev, rd->fd, rd->base + src_off + done, n,
			                         dst_off + done);
	}
	if (r < 0 && r != -ECANCELED && rd->node->data.kind == IMG_DATA_PATH) {
		char buf[PATH_MAX], *heap;
		const char *host = host_path(rd->node, buf, sizeof(buf), &heap);

		img_error_prefix(ctx, r, "%s", host ? host : "(out of memory)");
		free(heap);
	}
	return r;
}

int img_node_copy_data(struct img_ctx *ctx, const struct img_node *node, uint64_t src_off,
                       uint64_t len, struct img_dev *dev, uint64_t dst_off)
{
	struct img_node_reader rd;
	int r = len ? img_node_reader_open(ctx, node, &rd) : 0;

	if (r < 0 || !len)
		return r;
	r = img_node_reader_copy(ctx, &rd, src_off, len, dev, dst_off);
	img_node_reader_close(&rd);
	return r;
}

int img_node_read_data(struct img_ctx *ctx, const struct img_node *node, uint64_t off, void *buf,
                       size_t len)
{
	struct img_node_reader rd;
	int r = len ? img_node_reader_open(ctx, node, &rd) : 0;

	if (r < 0 || !len)
		return r;
	r = img_node_reader_pread(ctx, &rd, buf, len, off);
	img_node_reader_close(&rd);
	return r;
}
