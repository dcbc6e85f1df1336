/* test-tree.c -- the normalised tree: order independence, normalisation,
 * replacement, hard-link policies, data copies, extreme shapes, the size of
 * a node. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "private.h"
#include "testutil.h"
#include "tree-private.h"
#include <img/tree.h>

static struct img_tree *new_tree(struct img_ctx *ctx, unsigned flags)
{
	struct img_tree_opts o = { .flags = flags };
	struct img_tree *t;

	ck_assert_ok(img_tree_new(ctx, &o, &t), ctx);
	return t;
}

static void add_file(struct img_tree *t, const char *path, const char *content, uint32_t mode)
{
	struct img_node_attr a = { .type = IMG_NODE_REG,
		                   .mode = mode,
		                   .uid = 1000,
		                   .gid = 100,
		                   .mtime = 1700000000,
		                   .size = strlen(content) };

	a.data.kind = IMG_DATA_MEM;
	a.data.mem = (void *)content;
	ck_assert_ok(img_tree_add(t, path, &a, NULL), t->ctx);
}

struct collect {
	char buf[8192];
	size_t len;
};

static int collect_visit(void *user, struct img_node *n, unsigned depth)
{
	struct collect *c = user;
	char path[1024];

	img_node_path(n, path, sizeof(path));
	c->len += (size_t)snprintf(c->buf + c->len, sizeof(c->buf) - c->len, "%u:%s:%d:%o:%u|",
	                           depth, path, (int)n->type, n->mode, n->nlink);
	return 0;
}

static char *listing(struct img_tree *t)
{
	static struct collect c;

	c.len = 0;
	c.buf[0] = 0;
	ck_assert_int_eq(img_tree_walk(t, collect_visit, &c), 0);
	return c.buf;
}

START_TEST(order_independent)
{
	static const char *paths[] = { "b/z", "a", "b/a", "b/ab", "c/d/e", "B", "b/+", "b/-x" };
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t1 = new_tree(ctx, 0), *t2 = new_tree(ctx, 0);
	char *l1;

	for (size_t i = 0; i < IMG_ARRAY_SIZE(paths); i++)
		add_file(t1, paths[i], paths[i], 0644);
	for (size_t i = IMG_ARRAY_SIZE(paths); i-- > 0;)
		add_file(t2, paths[i], paths[i], 0644);
	ck_assert_ok(img_tree_finish(t1), ctx);
	ck_assert_ok(img_tree_finish(t2), ctx);
	l1 = strdup(listing(t1));
	ck_assert_str_eq(l1, listing(t2));
	/* Bytewise: "B" < "a" < "b"; "+" < "-x" < "a" < "ab" < "z"; parents first. */
	ck_assert_str_eq(l1, "0::2:755:4|1:B:1:644:1|1:a:1:644:1|1:b:2:755:2|2:b/+:1:644:1|"
	                     "2:b/-x:1:644:1|2:b/a:1:644:1|2:b/ab:1:644:1|2:b/z:1:644:1|"
	                     "1:c:2:755:3|2:c/d:2:755:2|3:c/d/e:1:644:1|");
	ck_assert_uint_eq(t1->nodes, 12);
	ck_assert_uint_eq(t1->inodes, 12);
	ck_assert_uint_eq(t1->root->children[2]->seq, 3);
	free(l1);
	img_tree_free(t1);
	img_tree_free(t2);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(normalised_attrs)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t, *k;
	struct img_node *n;

	img_ctx_set_epoch(ctx, 1000);
	t = new_tree(ctx, 0);
	add_file(t, "x", "abc", 0104755);
	n = img_tree_lookup(t, "x");
	ck_assert_ptr_nonnull(n);
	ck_assert_uint_eq(n->mode, 04755);
	ck_assert_uint_eq(n->uid, 0);
	ck_assert_uint_eq(n->gid, 0);
	ck_assert_int_eq(n->mtime, 1000);
	ck_assert_int_eq(t->root->mtime, 1000);
	k = new_tree(ctx, IMG_TREE_KEEP_OWNER | IMG_TREE_KEEP_TIMES);
	add_file(k, "x", "abc", 0644);
	n = img_tree_lookup(k, "./x/");
	ck_assert_uint_eq(n->uid, 1000);
	ck_assert_int_eq(n->mtime, 1000); /* clamped: 1700000000 > epoch */
	img_tree_free(t);
	img_tree_free(k);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(last_wins)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = new_tree(ctx, 0);
	struct img_node_attr dir = { .type = IMG_NODE_DIR, .mode = 0700 };
	struct img_node_attr lnk = { .type = IMG_NODE_SYMLINK, .mode = 0777, .target = "b" };
	struct img_node *n;

	add_file(t, "d/f", "one", 0644);
	ck_assert_ok(img_tree_add(t, "d", &dir, NULL), ctx); /* a dir again: children stay */
	n = img_tree_lookup(t, "d");
	ck_assert_uint_eq(n->mode, 0700);
	ck_assert_uint_eq(n->nchildren, 1);
	add_file(t, "d/f", "two!", 0600); /* replaced */
	n = img_tree_lookup(t, "d/f");
	ck_assert_uint_eq(n->size, 4);
	ck_assert_mem_eq(n->data.mem, "two!", 4);
	ck_assert_uint_eq(img_tree_lookup(t, "d")->nchildren, 1);
	ck_assert_ok(img_tree_add(t, "d", &lnk, NULL), ctx); /* a dir replaced by a symlink */
	ck_assert_ptr_null(img_tree_lookup(t, "d/f"));
	ck_assert_str_eq(img_tree_lookup(t, "d")->target, "b");
	/* under a non-directory: refused, naming the path */
	ck_assert_int_eq(img_tree_add(t, "d/g", &dir, NULL), -ENOTDIR);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "d/g"));
	ck_assert_ok(img_tree_remove(t, "d"), ctx);
	ck_assert_ptr_null(img_tree_lookup(t, "d"));
	ck_assert_int_eq(img_tree_remove(t, "d"), -ENOENT);
	img_tree_free(t);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(bad_names)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = new_tree(ctx, 0);
	struct img_node_attr f = { .type = IMG_NODE_REG, .mode = 0644 };
	struct img_node_attr s = { .type = IMG_NODE_SYMLINK, .mode = 0777, .target = "" };
	char longname[300];

	ck_assert_int_eq(img_tree_add(t, "a/../b", &f, NULL), -EINVAL);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "a/../b"));
	ck_assert_int_eq(img_tree_add(t, "..", &f, NULL), -EINVAL);
	ck_assert_int_eq(img_tree_add(t, "", &f, NULL), -EINVAL);
	ck_assert_int_eq(img_tree_add(t, "s", &s, NULL), -EINVAL);
	memset(longname, 'n', 256);
	longname[256] = 0;
	ck_assert_int_eq(img_tree_add(t, longname, &f, NULL), -ENAMETOOLONG);
	longname[255] = 0;
	ck_assert_ok(img_tree_add(t, longname, &f, NULL), ctx);
	/* every byte but '/' and NUL is a valid name byte */
	for (int c = 1; c < 256; c++) {
		char name[3] = { 'x', (char)c, 0 };

		if (c == '/')
			continue;
		ck_assert_ok(img_tree_add(t, name, &f, NULL), ctx);
	}
	ck_assert_ok(img_tree_finish(t), ctx);
	ck_assert_uint_eq(t->root->nchildren, 255);
	img_tree_free(t);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(hardlinks_dereferenced)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = new_tree(ctx, 0);
	struct img_node *a, *b;

	add_file(t, "z/orig", "data", 0755);
	ck_assert_ok(img_tree_add_hardlink(t, "a/link", "z/orig"), ctx);
	ck_assert_ok(img_tree_finish(t), ctx);
	a = img_tree_lookup(t, "a/link");
	b = img_tree_lookup(t, "z/orig");
	ck_assert_ptr_null(a->link);
	ck_assert_uint_eq(a->nlink, 1);
	ck_assert_uint_eq(a->mode, 0755);
	ck_assert_mem_eq(a->data.mem, "data", 4);
	ck_assert_uint_eq(t->inodes, t->nodes);
	ck_assert_uint_eq(t->data_bytes, 8);
	(void)b;
	img_tree_free(t);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(hardlinks_kept)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = new_tree(ctx, IMG_TREE_KEEP_HARDLINKS);
	struct img_node *a, *m, *z;

	add_file(t, "z/orig", "data", 0755);
	ck_assert_ok(img_tree_add_hardlink(t, "m", "z/orig"), ctx);
	ck_assert_ok(img_tree_add_hardlink(t, "a/link", "m"), ctx); /* link to a link */
	ck_assert_ok(img_tree_finish(t), ctx);
	a = img_tree_lookup(t, "a/link");
	m = img_tree_lookup(t, "m");
	z = img_tree_lookup(t, "z/orig");
	/* The first in canonical order ("a/link") holds the inode. */
	ck_assert_ptr_null(a->link);
	ck_assert_ptr_eq(m->link, a);
	ck_assert_ptr_eq(z->link, a);
	ck_assert_uint_eq(a->nlink, 3);
	ck_assert_mem_eq(img_node_inode(z)->data.mem, "data", 4);
	ck_assert_uint_eq(t->inodes, t->nodes - 2);
	ck_assert_uint_eq(t->data_bytes, 4);
	img_tree_free(t);

	t = new_tree(ctx, IMG_TREE_KEEP_HARDLINKS);
	ck_assert_ok(img_tree_add_hardlink(t, "x", "missing"), ctx);
	ck_assert_int_eq(img_tree_finish(t), -ENOENT);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "missing"));
	img_tree_free(t);
	t = new_tree(ctx, 0);
	ck_assert_ok(img_tree_add_hardlink(t, "x", "y"), ctx);
	ck_assert_ok(img_tree_add_hardlink(t, "y", "x"), ctx); /* a loop */
	ck_assert_int_eq(img_tree_finish(t), -ENOENT);
	img_tree_free(t);
	img_ctx_free(ctx);
}
END_TEST

/* Before finish, a pending hard link reads as its target (boot entries
 * read the system's files from the unfinished root tree). */
START_TEST(hardlinks_pending)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = new_tree(ctx, 0);
	struct img_node *a, *m, *z, *x;

	add_file(t, "z/orig", "data", 0644);
	ck_assert_ok(img_tree_add_hardlink(t, "m", "z/orig"), ctx);
	ck_assert_ok(img_tree_add_hardlink(t, "a/link", "m"), ctx);
	ck_assert_ok(img_tree_add_hardlink(t, "x", "gone"), ctx);
	a = img_tree_lookup(t, "a/link");
	m = img_tree_lookup(t, "m");
	z = img_tree_lookup(t, "z/orig");
	x = img_tree_lookup(t, "x");
	ck_assert_uint_eq(a->size, 0); /* a placeholder until finish */
	ck_assert_ptr_eq(img_tree_pending_target(t, a), z);
	ck_assert_ptr_eq(img_tree_pending_target(t, m), z);
	ck_assert_ptr_eq(img_tree_pending_target(t, z), z);
	ck_assert_ptr_null(img_tree_pending_target(t, x));
	ck_assert_ok(img_tree_remove(t, "x"), ctx);
	ck_assert_ok(img_tree_finish(t), ctx);
	ck_assert_ptr_eq(img_tree_pending_target(t, a), a);
	ck_assert_mem_eq(a->data.mem, "data", 4);
	img_tree_free(t);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(copy_data_paths)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("tree-data"), src[4096];
	struct img_tree *t = new_tree(ctx, 0);
	struct img_node_attr a = { .type = IMG_NODE_REG, .mode = 0644, .size = 100000 };
	struct img_dev *dev;
	uint8_t *buf = malloc(100000), back[1000];
	struct img_node *n;

	t_fill(buf, 100000, 9);
	snprintf(src, sizeof(src), "%s/f", dir);
	t_write_file(src, buf, 100000);
	a.data.kind = IMG_DATA_PATH;
	a.data.path = src;
	ck_assert_ok(img_tree_add(t, "f", &a, &n), ctx);
	ck_assert_ok(img_tree_finish(t), ctx);
	ck_assert_ok(img_dev_mem_new(ctx, 1 << 20, &dev), ctx);
	ck_assert_ok(img_node_copy_data(ctx, n, 1000, 99000, dev, 4096), ctx);
	ck_assert_mem_eq(img_dev_mem_data(dev) + 4096, buf + 1000, 99000);
	ck_assert_ok(img_node_read_data(ctx, n, 500, back, sizeof(back)), ctx);
	ck_assert_mem_eq(back, buf + 500, sizeof(back));
	ck_assert_int_eq(img_node_copy_data(ctx, n, 1, 100000, dev, 0), -EINVAL);
	/* The file shrinks after the tree was made: an error naming it. */
	t_write_file(src, buf, 5000);
	ck_assert_int_lt(img_node_copy_data(ctx, n, 0, 100000, dev, 0), 0);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), src));
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "changed"));
	unlink(src);
	ck_assert_int_lt(img_node_read_data(ctx, n, 0, back, 10), 0);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), src));
	img_dev_unref(dev);
	img_tree_free(t);
	t_rmrf(dir);
	free(dir);
	free(buf);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(deep_and_wide)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = new_tree(ctx, 0);
	size_t depth = 10000, len = depth * 2;
	char *path = malloc(len + 2), name[32];
	struct img_node *n;
	unsigned count = 0;

	for (size_t i = 0; i < depth; i++) {
		path[2 * i] = 'd';
		path[2 * i + 1] = '/';
	}
	path[len] = 'f';
	path[len + 1] = 0;
	add_file(t, path, "deep", 0644);
	for (unsigned i = 0; i < 10000; i++) {
		snprintf(name, sizeof(name), "wide/%08u", (i * 7919u) % 10000u);
		add_file(t, name, "w", 0644);
	}
	ck_assert_ok(img_tree_finish(t), ctx);
	n = img_tree_lookup(t, "wide");
	ck_assert_uint_eq(n->nchildren, 10000);
	for (unsigned i = 1; i < 10000; i++)
		ck_assert_int_lt(strcmp(n->children[i - 1]->name, n->children[i]->name), 0);
	n = img_tree_lookup(t, path);
	ck_assert_ptr_nonnull(n);
	while (n->parent) {
		n = n->parent;
		count++;
	}
	ck_assert_uint_eq(count, depth + 1);
	ck_assert_uint_eq(t->nodes, 1 + depth + 1 + 1 + 10000);
	free(path);
	img_tree_free(t);
	img_ctx_free(ctx);
}
END_TEST

/* Host paths kept as a shared prefix plus the tree path, or whole when they
 * are not: either way the data is read from the path given. */
START_TEST(host_paths_derived)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("tree-host"), p1[4096], p2[4096], p3[4096];
	struct img_tree *t = new_tree(ctx, 0);
	struct img_node_attr a = { .type = IMG_NODE_REG, .mode = 0644, .size = 3 };
	struct img_node *n1, *n2, *n3, *l;
	char back[4];

	snprintf(p1, sizeof(p1), "%s/s/a-x/bin/f", dir);
	snprintf(p2, sizeof(p2), "%s/other", dir);
	snprintf(p3, sizeof(p3), "%s/s", dir);
	ck_assert_int_eq(mkdir(p3, 0755), 0);
	snprintf(p3, sizeof(p3), "%s/s/a-x", dir);
	ck_assert_int_eq(mkdir(p3, 0755), 0);
	snprintf(p3, sizeof(p3), "%s/s/a-x/bin", dir);
	ck_assert_int_eq(mkdir(p3, 0755), 0);
	t_write_file(p1, "one", 3);
	t_write_file(p2, "two", 3);
	a.data.kind = IMG_DATA_PATH;
	a.data.path = p1;
	/* "." and empty components: the tree path is canonical, still a suffix. */
	ck_assert_ok(img_tree_add(t, "a-x/./bin//f", &a, &n1), ctx);
	ck_assert_ptr_null(n1->data.path);
	ck_assert_uint_ne(n1->host_prefix, 0);
	a.data.path = p2; /* not a prefix plus "a-x/bin/g": kept whole */
	ck_assert_ok(img_tree_add(t, "a-x/bin/g", &a, &n2), ctx);
	ck_assert_str_eq(n2->data.path, p2);
	a.data.path = p1; /* ends in "f" but not in "/a-x/bin/f" of this node */
	ck_assert_ok(img_tree_add(t, "b/f", &a, &n3), ctx);
	ck_assert_str_eq(n3->data.path, p1);
	ck_assert_ok(img_tree_add_hardlink(t, "a-x/bin/h", "a-x/bin/f"), ctx);
	ck_assert_ok(img_tree_finish(t), ctx);
	memset(back, 0, sizeof(back));
	ck_assert_ok(img_node_read_data(ctx, n1, 0, back, 3), ctx);
	ck_assert_str_eq(back, "one");
	ck_assert_ok(img_node_read_data(ctx, n2, 0, back, 3), ctx);
	ck_assert_str_eq(back, "two");
	ck_assert_ok(img_node_read_data(ctx, n3, 0, back, 3), ctx);
	ck_assert_str_eq(back, "one");
	/* A dereferenced link reads its target's file, not its own path. */
	l = img_tree_lookup(t, "a-x/bin/h");
	ck_assert_ok(img_node_read_data(ctx, l, 0, back, 3), ctx);
	ck_assert_str_eq(back, "one");
	/* Errors name the whole host path, rebuilt. */
	unlink(p1);
	ck_assert_int_lt(img_node_read_data(ctx, n1, 0, back, 3), 0);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), p1));
	img_tree_free(t);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* Memory per entry is the node (docs/memory.md): a field added or widened
 * shows here. Names, targets and host paths are not in it, nor is any
 * writer's state (arrays by seq). */
_Static_assert(sizeof(struct img_node) <= 96, "struct img_node grew");
_Static_assert(sizeof(struct img_data) <= 16, "struct img_data grew");

START_TEST(node_size)
{
	ck_assert_uint_le(sizeof(struct img_node), 96);
	ck_assert_uint_le(sizeof(struct img_data), 16);
}
END_TEST

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("tree");
	TCase *tc;

	tc = tcase_create("order");
	tcase_add_test(tc, order_independent);
	tcase_add_test(tc, normalised_attrs);
	suite_add_tcase(s, tc);
	tc = tcase_create("replace");
	tcase_add_test(tc, last_wins);
	tcase_add_test(tc, bad_names);
	suite_add_tcase(s, tc);
	tc = tcase_create("hardlinks");
	tcase_add_test(tc, hardlinks_dereferenced);
	tcase_add_test(tc, hardlinks_kept);
	tcase_add_test(tc, hardlinks_pending);
	suite_add_tcase(s, tc);
	tc = tcase_create("data");
	tcase_add_test(tc, copy_data_paths);
	tcase_add_test(tc, host_paths_derived);
	suite_add_tcase(s, tc);
	tc = tcase_create("size");
	tcase_add_test(tc, node_size);
	suite_add_tcase(s, tc);
	tc = tcase_create("shapes");
	tcase_add_test(tc, deep_and_wide);
	suite_add_tcase(s, tc);
	return s;
}
