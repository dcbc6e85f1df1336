/* test-erofs.c -- the EROFS writer: fsck.erofs (a program we did not write)
 * checks every image and extracts it; the extracted tree must equal the
 * input. Plus structural checks on the bytes and reproducibility. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fs-erofs-layout.h"
#include "testutil.h"
#include <img/qcow2.h>
#include <img/repro.h>
#include <img/tree.h>

static struct img_tree *new_tree(struct img_ctx *ctx, unsigned flags)
{
	struct img_tree_opts o = { .flags = flags };
	struct img_tree *t;

	ck_assert_ok(img_tree_new(ctx, &o, &t), ctx);
	return t;
}

static void add_mem(struct img_tree *t, const char *path, const void *buf, size_t len,
                    uint32_t mode)
{
	struct img_node_attr a = { .type = IMG_NODE_REG, .mode = mode, .size = len };

	a.data.kind = IMG_DATA_MEM;
	a.data.mem = (void *)buf;
	ck_assert_ok(img_tree_add(t, path, &a, NULL), t->ctx);
}

static void add_sized(struct img_tree *t, const char *path, size_t len, uint64_t seed)
{
	uint8_t *buf = malloc(len ? len : 1);

	t_fill(buf, len, seed);
	add_mem(t, path, buf, len, 0644);
	free(buf);
}

static void add_type(struct img_tree *t, const char *path, enum img_node_type type,
                     const char *target, uint32_t mode)
{
	struct img_node_attr a = { .type = type, .mode = mode, .target = target };

	if (type == IMG_NODE_CHR || type == IMG_NODE_BLK) {
		a.rdev_major = 1;
		a.rdev_minor = 259;
	}
	ck_assert_ok(img_tree_add(t, path, &a, NULL), t->ctx);
}

/* Build @t into @dir/img.erofs; returns the malloc'ed image path. */
static char *build(struct img_ctx *ctx, struct img_tree *t, const char *dir, const char *name)
{
	struct img_fs_opts o = { .label = "nix-store", .id_role = "erofs-uuid" };
	struct img_erofs_plan *p;
	struct img_dev *dev;
	char *path;

	ck_assert_int_ge(asprintf(&path, "%s/%s", dir, name), 0);
	ck_assert_ok(img_erofs_plan(ctx, t, &o, &p), ctx);
	ck_assert_ok(img_dev_raw_create(ctx, path, img_erofs_plan_bytes(p), &dev), ctx);
	ck_assert_ok(img_erofs_emit(ctx, p, dev, 0), ctx);
	ck_assert_ok(img_dev_finish(dev), ctx);
	img_dev_unref(dev);
	img_erofs_plan_free(p);
	return path;
}

static void fsck(const char *img, const char *extract)
{
	char *opt = NULL, *out = NULL;
	int st;

	ck_assert_msg(t_have("fsck.erofs"), "fsck.erofs is not installed (scripts/setup.sh)");
	if (extract)
		ck_assert_int_ge(asprintf(&opt, "--extract=%s", extract), 0);
	{
		char *argv[] = { "fsck.erofs", opt ? opt : "-d0", (char *)img, NULL };

		st = t_run(argv, &out);
	}
	ck_assert_msg(st == 0, "fsck.erofs %s %s: exit %d: %s", opt ? opt : "", img, st,
	              out ? out : "");
	free(out);
	free(opt);
}

/* Compare the extracted directory with the tree, node by node. */
struct cmp {
	struct img_ctx *ctx;
	const char *root;
	uint64_t checked;
};

static int cmp_visit(void *user, struct img_node *n, unsigned depth)
{
	struct cmp *c = user;
	char rel[8192], path[9000];
	struct stat st;

	(void)depth;
	img_node_path(n, rel, sizeof(rel));
	snprintf(path, sizeof(path), "%s/%s", c->root, rel);
	ck_assert_msg(lstat(path, &st) == 0, "%s missing after extraction", rel);
	n = img_node_inode(n);
	/* fsck.erofs 1.5 chowns after chmod, which drops set-id bits; those
	 * are checked in the image itself (dump.erofs) by set_id_bits. */
	if (n->parent)
		ck_assert_msg((st.st_mode & 0777) == (n->mode & 0777), "%s: mode %o != %o", rel,
		              st.st_mode & 07777, n->mode);
	ck_assert_uint_eq(st.st_uid, 0);
	ck_assert_uint_eq(st.st_gid, 0);
	if (n->type != IMG_NODE_SYMLINK && n->type != IMG_NODE_DIR)
		ck_assert_msg(st.st_mtime == n->mtime, "%s: mtime %lld != %lld", rel,
		              (long long)st.st_mtime, (long long)n->mtime);
	switch (n->type) {
	case IMG_NODE_REG: {
		struct img_node *h = img_node_inode(n);
		uint8_t *want = malloc(h->size + 1), *got = malloc(h->size + 1);
		int fd = open(path, O_RDONLY);

		ck_assert(S_ISREG(st.st_mode));
		ck_assert_uint_eq((uint64_t)st.st_size, h->size);
		ck_assert_int_ge(fd, 0);
		ck_assert_ok(img_node_read_data(c->ctx, h, 0, want, h->size), c->ctx);
		ck_assert_int_eq(img_pread_full(fd, got, h->size, 0), 0);
		ck_assert_msg(!memcmp(want, got, h->size), "%s: content differs", rel);
		close(fd);
		free(want);
		free(got);
		break;
	}
	case IMG_NODE_SYMLINK: {
		char buf[4200];
		ssize_t l = readlink(path, buf, sizeof(buf));

		ck_assert(S_ISLNK(st.st_mode));
		ck_assert_int_eq(l, (ssize_t)n->size);
		ck_assert(!memcmp(buf, n->target, n->size));
		break;
	}
	case IMG_NODE_DIR:
		ck_assert(S_ISDIR(st.st_mode));
		break;
	case IMG_NODE_CHR:
		ck_assert(S_ISCHR(st.st_mode));
		ck_assert_uint_eq(major(st.st_rdev), n->rdev_major);
		ck_assert_uint_eq(minor(st.st_rdev), n->rdev_minor);
		break;
	case IMG_NODE_BLK:
		ck_assert(S_ISBLK(st.st_mode));
		break;
	case IMG_NODE_FIFO:
		ck_assert(S_ISFIFO(st.st_mode));
		break;
	case IMG_NODE_SOCK:
		ck_assert(S_ISSOCK(st.st_mode));
		break;
	}
	c->checked++;
	return 0;
}

static void check_extract(struct img_ctx *ctx, struct img_tree *t, const char *img, const char *dir)
{
	char *x;
	struct cmp c = { .ctx = ctx };
	/* Extract to tmpfs when there is one: creating thousands of files is
	 * the slow part on a busy disk, and it tests fsck.erofs, not us. */
	if (access("/dev/shm", W_OK) == 0)
		ck_assert_int_ge(asprintf(&x, "/dev/shm/img-erofs-x.%d", (int)getpid()), 0);
	else
		ck_assert_int_ge(asprintf(&x, "%s/x", dir), 0);
	t_rmrf(x);
	fsck(img, x);
	c.root = x;
	ck_assert_int_eq(img_tree_walk(t, cmp_visit, &c), 0);
	ck_assert_uint_eq(c.checked, t->nodes);
	t_rmrf(x);
	free(x);
}

static uint8_t *slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	uint8_t *b;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	b = malloc((size_t)st.st_size + 1);
	ck_assert_int_eq(img_pread_full(fd, b, (size_t)st.st_size, 0), 0);
	close(fd);
	*len = (size_t)st.st_size;
	return b;
}

/* Sizes around the block and inline-tail boundaries, every file type. */
START_TEST(edge_sizes)
{
	static const size_t sizes[] = { 0,    1,    31,   4063, 4064, 4065,         4095,
		                        4096, 4097, 8191, 8192, 8193, 12288 + 4064, 65536 + 7 };
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = new_tree(ctx, 0);
	char *dir = t_tmpdir("erofs-edge"), *img, name[64], longlink[4096];
	uint8_t *b;
	size_t len;

	for (size_t i = 0; i < IMG_ARRAY_SIZE(sizes); i++) {
		snprintf(name, sizeof(name), "p/f%zu", sizes[i]);
		add_sized(t, name, sizes[i], i + 1);
	}
	add_mem(t, "p/exec", "#!/bin/sh\n", 10, 0755);
	add_mem(t, "p/suid", "x", 1, 04711);
	add_type(t, "p/link", IMG_NODE_SYMLINK, "f4096", 0777);
	memset(longlink, 'L', sizeof(longlink) - 1);
	longlink[sizeof(longlink) - 1] = 0;
	add_type(t, "p/longlink", IMG_NODE_SYMLINK, longlink, 0777);
	longlink[4064] = 0;
	add_type(t, "p/link4064", IMG_NODE_SYMLINK, longlink, 0777);
	add_type(t, "p/chr", IMG_NODE_CHR, NULL, 0600);
	add_type(t, "p/blk", IMG_NODE_BLK, NULL, 0600);
	add_type(t, "p/fifo", IMG_NODE_FIFO, NULL, 0644);
	add_type(t, "p/sock", IMG_NODE_SOCK, NULL, 0755);
	add_type(t, "p/emptydir", IMG_NODE_DIR, NULL, 0700);
	add_mem(t, "+plus", "+", 1, 0644); /* sorts before "." */
	add_mem(t, ".-dot", "-", 1, 0644); /* between "." and ".." */
	ck_assert_ok(img_tree_finish(t), ctx);
	img = build(ctx, t, dir, "img.erofs");
	check_extract(ctx, t, img, dir);

	/* Structure: magic, label, UUID version 5, build time, size multiple. */
	b = slurp(img, &len);
	ck_assert_uint_eq(len % 4096, 0);
	ck_assert_uint_eq(img_get_le32(b + 1024), EROFS_MAGIC);
	ck_assert_uint_eq(img_get_le32(b + 1024 + EROFS_SB_BLOCKS), len / 4096);
	ck_assert_str_eq((char *)b + 1024 + EROFS_SB_VOLUME_NAME, "nix-store");
	ck_assert_uint_eq(b[1024 + EROFS_SB_UUID + 6] >> 4, 5);
	ck_assert_uint_eq(img_get_le64(b + 1024 + EROFS_SB_BUILD_TIME),
	                  (uint64_t)img_repro_epoch(ctx));
	ck_assert_uint_eq(img_get_le16(b + 1024 + EROFS_SB_ROOT_NID), 36);
	ck_assert_uint_eq(img_get_le64(b + 1024 + EROFS_SB_INOS), t->inodes);
	/* Set-id bits are in the inode (the extraction drops them). */
	{
		struct img_erofs_plan *p;
		struct img_fs_opts o = { 0 };

		ck_assert_ok(img_erofs_plan(ctx, t, &o, &p), ctx);
		ck_assert_uint_eq(
		    img_get_le16(b + img_erofs_inode_of(p, img_tree_lookup(t, "p/suid"))->nid * 32 +
		                 EROFS_IC_MODE),
		    S_IFREG | 04711);
		img_erofs_plan_free(p);
	}
	/* The checksum: recompute it with the field zeroed. */
	{
		uint32_t want = img_get_le32(b + 1024 + EROFS_SB_CHECKSUM);

		img_put_le32(b + 1024 + EROFS_SB_CHECKSUM, 0);
		ck_assert_uint_eq(img_crc32c(~0u, b + 1024, 3072), want);
	}
	free(b);
	free(img);
	img_tree_free(t);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* Thousands of entries spanning many directory blocks, 255-byte names,
 * deep nesting. */
START_TEST(big_dirs_long_names)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = new_tree(ctx, 0);
	char *dir = t_tmpdir("erofs-bigdir"), *img, name[4096];
	size_t pos;

	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "big/entry-%05d-%.*s", i, i % 60,
		         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
		add_mem(t, name, name, strlen(name) % 50, 0644);
	}
	memcpy(name, "long/", 5);
	memset(name + 5, 'n', 255);
	name[260] = 0;
	add_mem(t, name, "x", 1, 0644);
	name[5] = 'm';
	add_type(t, name, IMG_NODE_DIR, NULL, 0755);
	pos = 0;
	for (int i = 0; i < 300; i++) {
		memcpy(name + pos, "d/", 2);
		pos += 2;
	}
	memcpy(name + pos, "leaf", 5);
	add_mem(t, name, "deep", 4, 0644);
	ck_assert_ok(img_tree_finish(t), ctx);
	img = build(ctx, t, dir, "img.erofs");
	check_extract(ctx, t, img, dir);
	free(img);
	img_tree_free(t);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* Hard links: dereferenced by default, one inode with nlink 2 when kept. */
START_TEST(hardlinks)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("erofs-links");

	for (int keep = 0; keep < 2; keep++) {
		struct img_tree *t = new_tree(ctx, keep ? IMG_TREE_KEEP_HARDLINKS : 0);
		struct img_erofs_plan *p;
		struct img_fs_opts o = { 0 };
		char *img;

		add_sized(t, "a/file", 5000, 7);
		ck_assert_ok(img_tree_add_hardlink(t, "b/link", "a/file"), ctx);
		ck_assert_ok(img_tree_finish(t), ctx);
		ck_assert_ok(img_erofs_plan(ctx, t, &o, &p), ctx);
		{
			struct img_node *a = img_tree_lookup(t, "a/file");
			struct img_node *l = img_tree_lookup(t, "b/link");

			if (keep) {
				ck_assert_uint_eq(img_erofs_inode_of(p, a)->nid,
				                  img_erofs_inode_of(p, l)->nid);
				ck_assert_uint_eq(img_node_inode(a)->nlink, 2);
			} else {
				ck_assert_uint_ne(img_erofs_inode_of(p, a)->nid,
				                  img_erofs_inode_of(p, l)->nid);
			}
		}
		img_erofs_plan_free(p);
		img = build(ctx, t, dir, keep ? "keep.erofs" : "deref.erofs");
		check_extract(ctx, t, img, dir);
		free(img);
		img_tree_free(t);
	}
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* The same content added in two orders gives the same bytes; another epoch
 * or seed changes the superblock only where it should. */
START_TEST(reproducible)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("erofs-repro"), *img[2];
	uint8_t *b0, *b1;
	size_t l0, l1;

	for (int run = 0; run < 2; run++) {
		struct img_tree *t = new_tree(ctx, 0);
		char name[64];

		for (int k = 0; k < 200; k++) {
			int i = run ? 199 - k : k;

			snprintf(name, sizeof(name), "s%d/f%d", i % 7, i);
			add_sized(t, name, (size_t)i * 97, (uint64_t)i);
		}
		ck_assert_ok(img_tree_finish(t), ctx);
		img[run] = build(ctx, t, dir, run ? "b.erofs" : "a.erofs");
		img_tree_free(t);
	}
	b0 = slurp(img[0], &l0);
	b1 = slurp(img[1], &l1);
	ck_assert_uint_eq(l0, l1);
	ck_assert(!memcmp(b0, b1, l0));
	fsck(img[0], NULL);
	free(b0);
	free(b1);
	free(img[0]);
	free(img[1]);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* A file over 4 GiB: extended inode with a 64-bit size. The data is placed
 * only at both ends (the rest stays a hole) so the test stays fast. */
START_TEST(over_4g)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = new_tree(ctx, 0);
	char *dir = t_tmpdir("erofs-4g"), *path;
	struct img_node_attr a = { .type = IMG_NODE_REG, .mode = 0644, .size = (5ull << 30) + 123 };
	struct img_erofs_plan *p;
	struct img_dev *dev;
	struct img_node *n;
	struct img_fs_opts o = { 0 };
	uint8_t head[100], tailb[123], back[123];

	ck_assert_ok(img_tree_add(t, "big/file", &a, &n), ctx);
	add_mem(t, "big/small", "s", 1, 0644);
	ck_assert_ok(img_tree_finish(t), ctx);
	ck_assert_ok(img_erofs_plan(ctx, t, &o, &p), ctx);
	ck_assert_uint_eq(img_erofs_inode_of(p, n)->isize, EROFS_EXTENDED_SIZE);
	ck_assert_uint_eq(img_erofs_inode_of(p, n)->tail, 123);
	ck_assert_int_ge(asprintf(&path, "%s/big.erofs", dir), 0);
	ck_assert_ok(img_dev_raw_create(ctx, path, img_erofs_plan_bytes(p), &dev), ctx);
	ck_assert_ok(img_erofs_emit(ctx, p, dev, 0), ctx);
	t_fill(head, sizeof(head), 1);
	t_fill(tailb, sizeof(tailb), 2);
	ck_assert_ok(img_erofs_write_data(p, dev, n, 0, head, sizeof(head)), ctx);
	ck_assert_ok(img_erofs_write_data(p, dev, n, a.size - 123, tailb, 123), ctx);
	{
		struct img_erofs_extent ext[2];

		ck_assert_int_eq(img_erofs_map(p, n, a.size - 123, 123, ext), 1);
		ck_assert_ok(img_dev_pread(dev, back, 123, ext[0].dev_off), ctx);
		ck_assert(!memcmp(back, tailb, 123));
		/* Inline tail right after the 64-byte inode. */
		ck_assert_uint_eq(ext[0].dev_off, img_erofs_inode_of(p, n)->nid * 32 + 64);
		ck_assert_ok(img_dev_pread(dev, back, 64, img_erofs_inode_of(p, n)->nid * 32), ctx);
		ck_assert_uint_eq(img_get_le64(back + EROFS_IE_SIZE), a.size);
		ck_assert_uint_eq(img_get_le16(back), EROFS_I_FORMAT(1, EROFS_INODE_FLAT_INLINE));
	}
	ck_assert_ok(img_dev_finish(dev), ctx);
	img_dev_unref(dev);
	fsck(path, NULL);
	img_erofs_plan_free(p);
	img_tree_free(t);
	free(path);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* Times kept (not forced): inodes whose mtime differs become extended and
 * carry their own time. */
START_TEST(kept_times)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t;
	char *dir = t_tmpdir("erofs-times"), *img;
	struct img_node_attr a = { .type = IMG_NODE_REG, .mode = 0644, .size = 3, .mtime = 12345 };

	img_ctx_set_epoch(ctx, 1700000000);
	t = new_tree(ctx, IMG_TREE_KEEP_TIMES | IMG_TREE_KEEP_OWNER);
	a.data.kind = IMG_DATA_MEM;
	a.data.mem = "abc";
	a.uid = 70000;
	a.gid = 5;
	ck_assert_ok(img_tree_add(t, "t/old", &a, NULL), ctx);
	ck_assert_ok(img_tree_finish(t), ctx);
	img = build(ctx, t, dir, "img.erofs");
	fsck(img, NULL);
	{
		char *x, p2[4096];
		struct stat st;

		ck_assert_int_ge(asprintf(&x, "%s/x", dir), 0);
		fsck(img, x);
		snprintf(p2, sizeof(p2), "%s/t/old", x);
		ck_assert_int_eq(lstat(p2, &st), 0);
		ck_assert_int_eq(st.st_mtime, 12345);
		ck_assert_uint_eq(st.st_uid, 70000);
		free(x);
	}
	free(img);
	img_tree_free(t);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* Through the file system table, as other recipes reach it; bad labels. */
START_TEST(fs_table)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = new_tree(ctx, 0);
	const struct img_fs_ops *fs = img_fs_find("erofs");
	struct img_fs_opts o = { .label = "nix-store" };
	struct img_dev *dev;
	uint64_t size;
	const uint8_t *m;

	/* (Naming the row also links it from the static library: fs.c's
	 * reference is weak.) */
	ck_assert_ptr_eq(fs, &img_fs_erofs);
	add_sized(t, "a/b", 10000, 3);
	ck_assert_ok(img_tree_finish(t), ctx);
	ck_assert_ok(fs->estimate(ctx, t, &o, &size), ctx);
	/* block 0, 2 data blocks, metadata (inodes + tails + root dir tail) */
	ck_assert_uint_eq(size % 4096, 0);
	ck_assert_uint_le(size, 5 * 4096);
	ck_assert_ok(img_dev_mem_new(ctx, size, &dev), ctx);
	ck_assert_ok(fs->write(ctx, t, &o, dev), ctx);
	m = img_dev_mem_data(dev);
	ck_assert_uint_eq(img_get_le32(m + 1024), EROFS_MAGIC);
	img_dev_unref(dev);
	o.label = "seventeen-bytes!!";
	ck_assert_int_eq(fs->estimate(ctx, t, &o, &size), -EINVAL);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "label"));
	img_tree_free(t);
	img_ctx_free(ctx);
}
END_TEST

/*
 * The device's plan (img_erofs_plan_writes) holds everything emit writes:
 * on a qcow2 device that refuses data outside it, emit succeeds, the image
 * goes out in file order (its hash is the file's) and reads back as the
 * same plan emitted on a raw device; a sparse source's holes are left out
 * of the plan, so they cost no clusters.
 */
START_TEST(plan_writes)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = new_tree(ctx, 0);
	char *dir = t_tmpdir("erofs-planw"), raw[4096], q[4096], src[4096];
	struct img_node_attr a = { .type = IMG_NODE_REG, .mode = 0644, .size = 40u << 20 };
	struct img_qcow2_opts qo = { .cluster_bits = 12 };
	struct img_fs_opts o = { 0 };
	uint8_t *buf = malloc(300000), got[32], want[32];
	struct img_erofs_plan *p;
	struct img_dev *dr, *dq, *rq;
	struct stat st;
	int fd;

	/* 40 MiB, data at 0, at 20 MiB + 5 and in the last bytes: holes between. */
	snprintf(src, sizeof(src), "%s/sparse", dir);
	fd = open(src, O_RDWR | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	t_fill(buf, 300000, 7);
	ck_assert_int_eq(img_pwrite_full(fd, buf, 100000, 0), 0);
	ck_assert_int_eq(img_pwrite_full(fd, buf, 300000, (20u << 20) + 5), 0);
	ck_assert_int_eq(img_pwrite_full(fd, buf, 777, a.size - 777), 0);
	a.data.kind = IMG_DATA_FD;
	a.data.fd = fd;
	a.data.offset = 0;
	ck_assert_ok(img_tree_add(t, "p/sparse", &a, NULL), ctx);
	add_sized(t, "p/dense", 300000, 3);
	add_sized(t, "p/small", 10, 4);
	add_sized(t, "q/other", 5000, 5);
	ck_assert_ok(img_tree_finish(t), ctx);
	ck_assert_ok(img_erofs_plan(ctx, t, &o, &p), ctx);
	snprintf(raw, sizeof(raw), "%s/a.erofs", dir);
	snprintf(q, sizeof(q), "%s/a.qcow2", dir);
	ck_assert_ok(img_dev_raw_create(ctx, raw, img_erofs_plan_bytes(p), &dr), ctx);
	ck_assert_ok(img_erofs_emit(ctx, p, dr, 0), ctx);
	ck_assert_ok(img_dev_finish(dr), ctx);
	qo.size = img_erofs_plan_bytes(p);
	ck_assert_ok(img_dev_qcow2_create(ctx, q, &qo, &dq), ctx);
	ck_assert_ok(img_erofs_plan_writes(ctx, p, dq), ctx);
	ck_assert_ok(img_dev_plan_done(dq), ctx);
	ck_assert_ok(img_erofs_emit(ctx, p, dq, 0), ctx);
	ck_assert_ok(img_dev_finish(dq), ctx);
	ck_assert_int_eq(img_dev_sha256(dq, got), 0);
	ck_assert_ok(img_sha256_file(ctx, q, want), ctx);
	ck_assert_mem_eq(got, want, 32);
	img_dev_unref(dq);
	ck_assert_int_eq(stat(q, &st), 0);
	ck_assert_msg(st.st_size < (4 << 20), "the holes were planned: %lld bytes",
	              (long long)st.st_size);
	ck_assert_ok(img_dev_qcow2_open(ctx, q, 0, &rq), ctx);
	{
		size_t n = img_dev_size(dr);
		uint8_t *x = malloc(n), *y = malloc(n);

		ck_assert_ok(img_dev_pread(dr, x, n, 0), ctx);
		ck_assert_ok(img_dev_pread(rq, y, n, 0), ctx);
		ck_assert_msg(!memcmp(x, y, n), "qcow2 and raw images differ");
		free(x);
		free(y);
	}
	img_dev_unref(rq);
	img_dev_unref(dr);
	fsck(raw, NULL);
	close(fd);
	free(buf);
	img_erofs_plan_free(p);
	img_tree_free(t);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("erofs");
	TCase *tc;

	tc = tcase_create("edge_sizes");
	tcase_add_test(tc, edge_sizes);
	suite_add_tcase(s, tc);
	tc = tcase_create("big_dirs_long_names");
	tcase_add_test(tc, big_dirs_long_names);
	suite_add_tcase(s, tc);
	tc = tcase_create("hardlinks");
	tcase_add_test(tc, hardlinks);
	suite_add_tcase(s, tc);
	tc = tcase_create("reproducible");
	tcase_add_test(tc, reproducible);
	suite_add_tcase(s, tc);
	tc = tcase_create("over_4g");
	tcase_add_test(tc, over_4g);
	suite_add_tcase(s, tc);
	tc = tcase_create("fs_table");
	tcase_add_test(tc, fs_table);
	suite_add_tcase(s, tc);
	tc = tcase_create("kept_times");
	tcase_add_test(tc, kept_times);
	suite_add_tcase(s, tc);
	tc = tcase_create("plan_writes");
	tcase_add_test(tc, plan_writes);
	suite_add_tcase(s, tc);
	return s;
}
