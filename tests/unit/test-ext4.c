/* test-ext4.c -- the ext4 writer on trees built in memory: every file type
 * (device nodes, FIFOs, sockets come only from tar sources), kept hard links,
 * sizing, determinism; validated with e2fsck -fn and debugfs. The io_manager's
 * block cache (ext2-io.c): spilling changes no byte and no write, checked
 * against an unbounded cache and against a model. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "private.h"
#include "fs-ext4.h"
#include "testutil.h"
#include <img/fs.h>
#include <img/repro.h>
#include <img/tree.h>

static void add(struct img_tree *t, const char *path, enum img_node_type type, uint32_t mode)
{
	struct img_node_attr a = { .type = type, .mode = mode, .mtime = 1 };

	ck_assert_ok(img_tree_add(t, path, &a, NULL), t->ctx);
}

static void add_mem(struct img_tree *t, const char *path, const char *text)
{
	struct img_node_attr a = { .type = IMG_NODE_REG, .mode = 0644, .size = strlen(text) };

	a.data.kind = IMG_DATA_MEM;
	a.data.mem = (void *)text;
	ck_assert_ok(img_tree_add(t, path, &a, NULL), t->ctx);
}

static void add_dev(struct img_tree *t, const char *path, enum img_node_type type, uint32_t ma,
                    uint32_t mi)
{
	struct img_node_attr a = { .type = type, .mode = 0600, .rdev_major = ma, .rdev_minor = mi };

	ck_assert_ok(img_tree_add(t, path, &a, NULL), t->ctx);
}

static void add_link(struct img_tree *t, const char *path, const char *target)
{
	struct img_node_attr a = {
		.type = IMG_NODE_SYMLINK, .mode = 0777, .target = target, .size = strlen(target)
	};

	ck_assert_ok(img_tree_add(t, path, &a, NULL), t->ctx);
}

static struct img_tree *sample_tree(struct img_ctx *ctx)
{
	struct img_tree_opts o = { .flags = IMG_TREE_KEEP_HARDLINKS | IMG_TREE_KEEP_OWNER };
	struct img_tree *t;
	static char long_target[300];
	struct img_node_attr owned = {
		.type = IMG_NODE_REG, .mode = 0640, .uid = 1000, .gid = 70000
	};

	memset(long_target, 'y', sizeof(long_target) - 1);
	ck_assert_ok(img_tree_new(ctx, &o, &t), ctx);
	add(t, "dev", IMG_NODE_DIR, 0755);
	add_dev(t, "dev/null", IMG_NODE_CHR, 1, 3);
	add_dev(t, "dev/nvme0n1p9", IMG_NODE_BLK, 259, 70000);
	add(t, "dev/fifo", IMG_NODE_FIFO, 0644);
	add(t, "dev/sock", IMG_NODE_SOCK, 0755);
	add_mem(t, "etc/hello", "hello, world\n");
	ck_assert_ok(img_tree_add_hardlink(t, "etc/hello2", "etc/hello"), ctx);
	add_link(t, "etc/fast", "hello");
	add_link(t, "etc/slow", long_target);
	add(t, "empty", IMG_NODE_DIR, 0700);
	add(t, "setuid", IMG_NODE_REG, 04755);
	ck_assert_ok(img_tree_add(t, "owned", &owned, NULL), ctx);
	ck_assert_ok(img_tree_finish(t), ctx);
	return t;
}

static int run(const char *cmd, char **out)
{
	char *argv[] = { "/bin/sh", "-c", (char *)cmd, NULL };

	return t_run(argv, out);
}

START_TEST(all_types)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = sample_tree(ctx);
	const struct img_fs_ops *fs = img_fs_find("ext4");
	struct img_fs_opts fo = { .label = "test", .id_role = "root" };
	char *dir = t_tmpdir("ext4-types"), path[4096], cmd[8192], *out = NULL;
	struct img_dev *dev;
	uint64_t size;

	if (!t_have("e2fsck") || !t_have("debugfs"))
		ck_abort_msg("e2fsprogs missing");
	ck_assert_ptr_nonnull(fs);
	ck_assert_str_eq(fs->name, "ext4");
	ck_assert_ok(fs->estimate(ctx, t, &fo, &size), ctx);
	ck_assert_uint_eq(size % 4096, 0);
	snprintf(path, sizeof(path), "%s/fs.img", dir);
	ck_assert_ok(img_dev_raw_create(ctx, path, size, &dev), ctx);
	ck_assert_ok(fs->write(ctx, t, &fo, dev), ctx);
	ck_assert_ok(img_dev_finish(dev), ctx);
	img_dev_unref(dev);

	snprintf(cmd, sizeof(cmd), "e2fsck -fn '%s' 2>&1", path);
	ck_assert_msg(run(cmd, &out) == 0, "e2fsck: %s", out);
	free(out);
	snprintf(
	    cmd, sizeof(cmd),
	    "debugfs -R 'stat /dev/null' '%s' 2>/dev/null | grep -i 'device major/minor'; "
	    "debugfs -R 'stat /dev/nvme0n1p9' '%s' 2>/dev/null | grep -i 'device major/minor'; "
	    "debugfs -R 'ls -p /dev' '%s' 2>/dev/null; debugfs -R 'ls -p /' '%s' 2>/dev/null; "
	    "debugfs -R 'stat /etc/hello' '%s' 2>/dev/null | grep Links; "
	    "debugfs -R 'cat /etc/hello2' '%s' 2>/dev/null; "
	    "debugfs -R 'stat /etc/slow' '%s' 2>/dev/null | grep -c EXTENTS; "
	    "debugfs -R 'stat /etc/fast' '%s' 2>/dev/null | grep 'Fast link dest'",
	    path, path, path, path, path, path, path, path);
	ck_assert_int_eq(run(cmd, &out), 0);
	/* old device encoding for 1:3, new one for 259:70000 */
	ck_assert_msg(strstr(out, "1:3") || strstr(out, "01:03"), "%s", out);
	ck_assert_msg(strstr(out, "259:70000"), "%s", out);
	ck_assert_msg(strstr(out, "/020600/0/0/null/"), "%s", out);
	ck_assert_msg(strstr(out, "/060600/0/0/nvme0n1p9/"), "%s", out);
	ck_assert_msg(strstr(out, "/010644/0/0/fifo/"), "%s", out);
	ck_assert_msg(strstr(out, "/140755/0/0/sock/"), "%s", out);
	ck_assert_msg(strstr(out, "/104755/0/0/setuid/0/"), "%s", out);
	ck_assert_msg(strstr(out, "/100640/1000/70000/owned/0/"), "%s", out);
	ck_assert_msg(strstr(out, "/040700/0/0/empty//"), "%s", out);
	ck_assert_msg(strstr(out, "Links: 2"), "%s", out);
	ck_assert_msg(strstr(out, "hello, world"), "%s", out);
	ck_assert_msg(strstr(out, "Fast link dest: \"hello\""), "%s", out);
	free(out);

	img_tree_free(t);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* A directory within one htree level and one that needs two. */
START_TEST(big_dirs)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree_opts o = { 0 };
	const struct img_fs_ops *fs = img_fs_find("ext4");
	struct img_fs_opts fo = { .label = "big" };
	char *dir = t_tmpdir("ext4-bigdirs"), path[4096], cmd[8192], name[300], *out = NULL;
	struct img_tree *t;
	struct img_dev *dev;
	uint64_t size;

	ck_assert_ok(img_tree_new(ctx, &o, &t), ctx);
	for (int i = 0; i < 20000; i++) {
		snprintf(name, sizeof(name), "short/f%d", i);
		add(t, name, IMG_NODE_REG, 0644);
	}
	/* 200-byte names: 19 a block, 12,000 entries need over 507 leaves */
	for (int i = 0; i < 12000; i++) {
		snprintf(name, sizeof(name), "long/%0200d", i);
		add(t, name, IMG_NODE_REG, 0644);
	}
	ck_assert_ok(img_tree_finish(t), ctx);
	ck_assert_ok(fs->estimate(ctx, t, &fo, &size), ctx);
	snprintf(path, sizeof(path), "%s/fs.img", dir);
	ck_assert_ok(img_dev_raw_create(ctx, path, size, &dev), ctx);
	ck_assert_ok(fs->write(ctx, t, &fo, dev), ctx);
	ck_assert_ok(img_dev_finish(dev), ctx);
	img_dev_unref(dev);
	snprintf(cmd, sizeof(cmd), "e2fsck -fn '%s' 2>&1", path);
	ck_assert_msg(run(cmd, &out) == 0, "e2fsck: %s", out);
	free(out);
	snprintf(cmd, sizeof(cmd),
	         "debugfs -R 'stat /short' '%s' 2>/dev/null | grep Flags; "
	         "debugfs -R 'htree /long' '%s' 2>/dev/null | grep 'Indirect levels'; "
	         "debugfs -R 'ls -p /long' '%s' 2>/dev/null | grep -c /100644/",
	         path, path, path);
	ck_assert_int_eq(run(cmd, &out), 0);
	/* /short is indexed (0x1000 | extents 0x80000); /long needs an index level */
	ck_assert_msg(strstr(out, "Flags: 0x81000"), "%s", out);
	ck_assert_msg(strstr(out, "Indirect levels: 1"), "%s", out);
	ck_assert_msg(strstr(out, "\n12000\n"), "%s", out);
	free(out);
	img_tree_free(t);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* 10,000 levels of directories: the writer does not recurse on the C stack. */
START_TEST(deep_tree)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree_opts o = { 0 };
	const struct img_fs_ops *fs = img_fs_find("ext4");
	struct img_fs_opts fo = { .label = "deep" };
	char *dir = t_tmpdir("ext4-deep"), path[4096], cmd[8192], *out = NULL;
	char *deep = malloc(10000 * 2 + 16);
	struct img_tree *t;
	struct img_dev *dev;
	uint64_t size;
	size_t n = 0;

	for (int i = 0; i < 10000; i++) {
		deep[n++] = 'd';
		deep[n++] = '/';
	}
	memcpy(deep + n, "file", 5);
	ck_assert_ok(img_tree_new(ctx, &o, &t), ctx);
	add_mem(t, deep, "at the bottom\n");
	ck_assert_ok(img_tree_finish(t), ctx);
	ck_assert_ok(fs->estimate(ctx, t, &fo, &size), ctx);
	snprintf(path, sizeof(path), "%s/fs.img", dir);
	ck_assert_ok(img_dev_raw_create(ctx, path, size, &dev), ctx);
	ck_assert_ok(fs->write(ctx, t, &fo, dev), ctx);
	ck_assert_ok(img_dev_finish(dev), ctx);
	img_dev_unref(dev);
	snprintf(cmd, sizeof(cmd), "e2fsck -fn '%s' 2>&1", path);
	ck_assert_msg(run(cmd, &out) == 0, "e2fsck: %s", out);
	ck_assert_msg(strstr(out, "10012/"), "%s", out); /* + root, file, lost+found, 1, 3..10 */
	free(out);
	free(deep);
	img_tree_free(t);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* The io_manager: block reads see cached writes, flush writes them in place. */
START_TEST(io_forwarding)
{
	struct img_ctx *ctx = t_ctx();
	struct img_dev *dev;
	struct img_ext2_io_target target = { 0 };
	io_channel io;
	char name[64];
	uint8_t a[4096], b[8192], back[8192];
	const uint8_t *mem;

	ck_assert_ok(img_dev_mem_new(ctx, 1 << 20, &dev), ctx);
	target.dev = dev;
	ck_assert_ok(img_ext2_io_name(&target, name, sizeof(name)), ctx);
	ck_assert_int_eq(img_ext2_io_manager->open("not-ours", 0, &io), EXT2_ET_BAD_DEVICE_NAME);
	ck_assert_int_eq(img_ext2_io_manager->open(name, IO_FLAG_RW, &io), 0);
	ck_assert_int_eq(io_channel_set_blksize(io, 4096), 0);
	t_fill(a, sizeof(a), 1);
	t_fill(b, sizeof(b), 2);
	/* one block: cached, not yet on the device */
	ck_assert_int_eq(io_channel_write_blk64(io, 3, 1, a), 0);
	mem = img_dev_mem_data(dev);
	ck_assert_uint_eq(mem[3 * 4096], 0);
	ck_assert_int_eq(io_channel_read_blk64(io, 2, 2, back), 0);
	ck_assert_mem_eq(back + 4096, a, 4096);
	/* a two-block write over it supersedes the cached copy */
	ck_assert_int_eq(io_channel_write_blk64(io, 3, 2, b), 0);
	ck_assert_int_eq(io_channel_read_blk64(io, 3, 1, back), 0);
	ck_assert_mem_eq(back, b, 4096);
	/* byte writes update a cached block */
	ck_assert_int_eq(io_channel_write_blk64(io, 10, 1, a), 0);
	ck_assert_int_eq(io_channel_write_byte(io, 10 * 4096 + 100, 4, "WXYZ"), 0);
	ck_assert_int_eq(io_channel_flush(io), 0);
	ck_assert_mem_eq(mem + 3 * 4096, b, 8192);
	ck_assert_mem_eq(mem + 10 * 4096 + 100, "WXYZ", 4);
	ck_assert_mem_eq(mem + 10 * 4096, a, 100);
	/* past the end: an error, not a crash */
	ck_assert_int_ne(io_channel_read_blk64(io, 1000, 1, back), 0);
	ck_assert_int_eq(io_channel_close(io), 0);
	img_dev_unref(dev);
	img_ctx_free(ctx);
}
END_TEST

static void build_mem(struct img_ctx *ctx, struct img_tree *t, uint64_t size, uint8_t **out)
{
	struct img_fs_opts fo = { .label = "nixos", .id_role = "root" };
	struct img_dev *dev;

	ck_assert_ok(img_dev_mem_new(ctx, size, &dev), ctx);
	ck_assert_ok(img_fs_find("ext4")->write(ctx, t, &fo, dev), ctx);
	*out = malloc(size);
	memcpy(*out, img_dev_mem_data(dev), size);
	img_dev_unref(dev);
}

START_TEST(deterministic)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = sample_tree(ctx);
	uint8_t *a, *b, *c;
	const uint64_t size = 32ull << 20;
	uint8_t uuid[16];

	build_mem(ctx, t, size, &a);
	build_mem(ctx, t, size, &b);
	ck_assert(memcmp(a, b, size) == 0);
	/* the superblock carries the repro UUID (version 5) and the epoch */
	img_repro_uuid(ctx, "ext4-uuid:root", uuid);
	ck_assert(memcmp(a + 1024 + 0x68, uuid, 16) == 0);
	ck_assert_uint_eq(a[1024 + 0x68 + 6] >> 4, 5);
	ck_assert_uint_eq(img_get_le32(a + 1024 + 0x108), 1); /* s_mkfs_time */
	ck_assert_uint_eq(img_get_le64(a + 1024 + 0x178), 0); /* s_kbytes_written */
	/* another seed, other bytes */
	img_ctx_set_seed(ctx, "other", 5);
	build_mem(ctx, t, size, &c);
	ck_assert(memcmp(a, c, size) != 0);
	free(a);
	free(b);
	free(c);
	img_tree_free(t);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(sizing)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = sample_tree(ctx);
	const struct img_fs_ops *fs = img_fs_find("ext4");
	struct img_fs_opts fo = { .label = "nixos" };
	uint64_t a, b;
	struct img_dev *dev;
	const uint8_t *mem;

	ck_assert_ok(fs->estimate(ctx, t, &fo, &a), ctx);
	fo.extra = 100ull << 20;
	ck_assert_ok(fs->estimate(ctx, t, &fo, &b), ctx);
	ck_assert_uint_gt(b, a);
	ck_assert_uint_ge(b, 100ull << 20); /* at least the extra space is free */
	/* too small: an error before anything is written */
	ck_assert_ok(img_dev_mem_new(ctx, 8ull << 20, &dev), ctx);
	ck_assert_int_eq(fs->write(ctx, t, &fo, dev), -ENOSPC);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "too small"));
	mem = img_dev_mem_data(dev);
	for (size_t i = 0; i < (8u << 20); i++)
		if (mem[i])
			ck_abort_msg("byte %zu written", i);
	img_dev_unref(dev);
	/* a label over 16 bytes */
	fo.label = "a-label-of-17-bytes";
	ck_assert_ok(img_dev_mem_new(ctx, 32ull << 20, &dev), ctx);
	ck_assert_int_eq(fs->write(ctx, t, &fo, dev), -EINVAL);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "label"));
	img_dev_unref(dev);
	ck_assert_ptr_null(img_fs_find("ntfs"));
	img_tree_free(t);
	img_ctx_free(ctx);
}
END_TEST

/*
 * A memory device that also hashes every write it gets, in order (offset,
 * length, bytes): two builds with equal hashes wrote the same runs in the
 * same order, which is what a qcow2 output's cluster order depends on. It
 * counts the writes that began behind the end of an earlier one (the
 * output's writer can hash only what goes out front to back).
 */
struct rec_dev {
	uint8_t *mem;
	uint64_t hash, writes;
	uint64_t front, behind;
};

static void rec_mix(struct rec_dev *r, const void *buf, size_t len)
{
	const uint8_t *b = buf;

	for (size_t i = 0; i < len; i++)
		r->hash = (r->hash ^ b[i]) * 0x100000001b3ull;
}

static int rec_pread(struct img_dev *dev, void *buf, size_t len, uint64_t off)
{
	struct rec_dev *r = img_dev_priv(dev);

	memcpy(buf, r->mem + off, len);
	return 0;
}

static int rec_pwrite(struct img_dev *dev, const void *buf, size_t len, uint64_t off)
{
	struct rec_dev *r = img_dev_priv(dev);
	uint64_t hdr[2] = { off, len };

	rec_mix(r, hdr, sizeof(hdr));
	rec_mix(r, buf, len);
	r->writes++;
	if (off < r->front)
		r->behind++;
	r->front = IMG_MAX(r->front, off + len);
	memcpy(r->mem + off, buf, len);
	return 0;
}

static int rec_flush(struct img_dev *dev)
{
	(void)dev;
	return 0;
}

static void rec_destroy(struct img_dev *dev)
{
	free(((struct rec_dev *)img_dev_priv(dev))->mem);
}

static const struct img_dev_ops rec_ops = {
	.name = "recording",
	.pread = rec_pread,
	.pwrite = rec_pwrite,
	.flush = rec_flush,
	.destroy = rec_destroy,
};

static struct img_dev *rec_new(struct img_ctx *ctx, uint64_t size)
{
	struct img_dev *dev;
	struct rec_dev *r;

	ck_assert_ok(img_dev_new(ctx, &rec_ops, size, 0, sizeof(*r), &dev), ctx);
	r = img_dev_priv(dev);
	r->mem = calloc(1, size);
	r->hash = 0xcbf29ce484222325ull;
	ck_assert_ptr_nonnull(r->mem);
	return dev;
}

/* Many inodes and directory blocks: thousands of inode table block writes. */
static struct img_tree *many_tree(struct img_ctx *ctx)
{
	struct img_tree_opts o = { .flags = IMG_TREE_KEEP_HARDLINKS };
	struct img_tree *t;
	char name[1024];

	ck_assert_ok(img_tree_new(ctx, &o, &t), ctx);
	for (int d = 0; d < 40; d++)
		for (int i = 0; i < 1000; i++) {
			snprintf(name, sizeof(name), "d%02d/sub%d/f%04d", d, i % 7, i);
			add(t, name, i % 5 ? IMG_NODE_REG : IMG_NODE_DIR, i % 5 ? 0644 : 0755);
		}
	add_mem(t, "etc/hello", "hello, world\n");
	ck_assert_ok(img_tree_add_hardlink(t, "etc/hello2", "etc/hello"), ctx);
	/* parents written long after their first block was evicted */
	for (int i = 0, n = 0; i < 200; i++)
		n += snprintf(name + n, sizeof(name) - (size_t)n, "%s", i ? "/x" : "x");
	add_mem(t, name, "deep\n");
	ck_assert_ok(img_tree_finish(t), ctx);
	return t;
}

/*
 * A cache of a few blocks that spills all the time writes the same bytes,
 * with the same writes in the same order, as one that keeps everything in
 * memory; e2fsck accepts it.
 */
START_TEST(spill_same_bytes)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = many_tree(ctx);
	char *dir = t_tmpdir("ext4-spill"), path[4096], cmd[8192], *out = NULL;
	struct img_fs_opts fo = { .label = "nixos", .id_role = "root" };
	const size_t budgets[] = { 1, 3, 64 };
	struct img_dev *ref, *dev;
	struct rec_dev *rr, *rd;
	uint64_t size;
	FILE *f;

	ck_assert_ok(img_fs_find("ext4")->estimate(ctx, t, &fo, &size), ctx);
	ref = rec_new(ctx, size);
	ck_assert_ok(img_fs_find("ext4")->write(ctx, t, &fo, ref), ctx);
	rr = img_dev_priv(ref);
	/* front to back, every write past the one before */
	ck_assert_uint_eq(rr->behind, 0);
	fo.spill_dir = dir;
	for (size_t i = 0; i < IMG_ARRAY_SIZE(budgets); i++) {
		dev = rec_new(ctx, size);
		ck_assert_ok(img_ext4_write_cached(ctx, t, &fo, dev, budgets[i]), ctx);
		rd = img_dev_priv(dev);
		ck_assert_msg(memcmp(rr->mem, rd->mem, size) == 0, "budget %zu: other bytes",
		              budgets[i]);
		ck_assert_uint_eq(rd->writes, rr->writes);
		ck_assert_uint_eq(rd->hash, rr->hash);
		ck_assert_uint_eq(rd->behind, 0);
		img_dev_unref(dev);
	}
	/* a small tree fits the default budget: no spill file is made */
	{
		struct img_tree *small = sample_tree(ctx);

		fo.spill_dir = "/nonexistent/spill";
		ck_assert_ok(img_dev_mem_new(ctx, 32ull << 20, &dev), ctx);
		ck_assert_ok(img_fs_find("ext4")->write(ctx, small, &fo, dev), ctx);
		img_dev_unref(dev);
		img_tree_free(small);
	}
	/* nothing left beside the output: the spill file was never linked */
	snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", dir);
	ck_assert_int_eq(run(cmd, &out), 0);
	ck_assert_str_eq(out, "0\n");
	free(out);
	/* the oracle is not optional (scripts/setup.sh installs e2fsprogs) */
	if (!t_have("e2fsck"))
		ck_abort_msg("e2fsprogs missing");
	snprintf(path, sizeof(path), "%s/fs.img", dir);
	f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(rr->mem, 1, size, f), size);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "e2fsck -fn '%s' 2>&1", path);
	ck_assert_msg(run(cmd, &out) == 0, "e2fsck: %s", out);
	free(out);
	img_dev_unref(ref);
	img_tree_free(t);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* A spill file that cannot be made: an error naming the directory. */
START_TEST(spill_no_dir)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = many_tree(ctx);
	struct img_fs_opts fo = { .label = "nixos", .spill_dir = "/nonexistent/spill" };
	struct img_dev *dev;
	uint64_t size;
	int r;

	ck_assert_ok(img_fs_find("ext4")->estimate(ctx, t, &fo, &size), ctx);
	ck_assert_ok(img_dev_mem_new(ctx, size, &dev), ctx);
	r = img_ext4_write_cached(ctx, t, &fo, dev, 2);
	ck_assert_int_eq(r, -ENOENT);
	ck_assert_msg(strstr(img_ctx_error(ctx), "/nonexistent/spill: cannot create a spill file"),
	              "%s", img_ctx_error(ctx));
	img_dev_unref(dev);
	img_tree_free(t);
	img_ctx_free(ctx);
}
END_TEST

/*
 * A spill file that cannot grow (RLIMIT_FSIZE, as a full disk would stop
 * it: short writes, then an error): the build fails with the directory
 * named, and the file system is never flushed onto the device.
 */
START_TEST(spill_full)
{
	struct img_ctx *ctx = t_ctx();
	struct img_tree *t = many_tree(ctx);
	char *dir = t_tmpdir("ext4-spill-full");
	struct img_fs_opts fo = { .label = "nixos", .spill_dir = dir };
	struct rlimit old, lim;
	struct img_dev *dev;
	const uint8_t *mem;
	uint64_t size;
	int r;

	ck_assert_ok(img_fs_find("ext4")->estimate(ctx, t, &fo, &size), ctx);
	ck_assert_ok(img_dev_mem_new(ctx, size, &dev), ctx);
	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 64 * 1024 + 100; /* the last block fits only in part */
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	r = img_ext4_write_cached(ctx, t, &fo, dev, 2);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	ck_assert_int_eq(r, -EFBIG);
	ck_assert_msg(strstr(img_ctx_error(ctx), "cannot write the ext4 block cache's spill file"),
	              "%s", img_ctx_error(ctx));
	ck_assert_msg(strstr(img_ctx_error(ctx), dir), "%s", img_ctx_error(ctx));
	mem = img_dev_mem_data(dev);
	ck_assert_uint_ne(img_get_le16(mem + 1024 + 0x38), 0xef53); /* no superblock */
	img_dev_unref(dev);
	img_tree_free(t);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/*
 * The cache against a model: random single-block writes (cached), larger
 * writes and byte writes (through to the device, over cached and spilled
 * copies), reads, flushes; a four-block cache spills most of it. Reads see
 * the model's bytes, and after each flush the device holds all of them.
 */
START_TEST(cache_model)
{
	enum { BS = 4096, NBLK = 64 };
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("ext4-model"), name[64];
	struct img_ext2_io_target target = { .spill_dir = dir, .cache_blocks = 4 };
	uint8_t *model = calloc(NBLK, BS), *buf = malloc(4 * BS);
	const uint8_t *mem;
	struct img_dev *dev;
	uint64_t seed = 12345;
	io_channel io;

	ck_assert_ok(img_dev_mem_new(ctx, NBLK * BS, &dev), ctx);
	mem = img_dev_mem_data(dev);
	target.dev = dev;
	ck_assert_ok(img_ext2_io_name(&target, name, sizeof(name)), ctx);
	ck_assert_int_eq(img_ext2_io_manager->open(name, IO_FLAG_RW, &io), 0);
	ck_assert_int_eq(io_channel_set_blksize(io, BS), 0);
	for (int step = 0; step < 20000; step++) {
		uint64_t op = t_rnd(&seed) % 100, blk = t_rnd(&seed) % NBLK;

		if (op < 50) {
			t_fill(buf, BS, t_rnd(&seed));
			ck_assert_int_eq(io_channel_write_blk64(io, blk, 1, buf), 0);
			memcpy(model + blk * BS, buf, BS);
		} else if (op < 60) {
			int n = 2 + (int)(t_rnd(&seed) % 3);

			blk %= NBLK - (uint64_t)n;
			t_fill(buf, (size_t)n * BS, t_rnd(&seed));
			ck_assert_int_eq(io_channel_write_blk64(io, blk, n, buf), 0);
			memcpy(model + blk * BS, buf, (size_t)n * BS);
		} else if (op < 70) {
			/* a byte write that may cross a block boundary */
			uint64_t off = blk * BS + t_rnd(&seed) % BS;
			int n = 1 + (int)(t_rnd(&seed) % 300);

			if (off + (uint64_t)n > NBLK * BS)
				off = NBLK * BS - (uint64_t)n;
			t_fill(buf, (size_t)n, t_rnd(&seed));
			ck_assert_int_eq(io_channel_write_byte(io, (unsigned long)off, n, buf), 0);
			memcpy(model + off, buf, (size_t)n);
		} else if (op < 98) {
			int n = 1 + (int)(t_rnd(&seed) % 4);

			blk %= NBLK - (uint64_t)n;
			ck_assert_int_eq(io_channel_read_blk64(io, blk, n, buf), 0);
			ck_assert_msg(memcmp(buf, model + blk * BS, (size_t)n * BS) == 0,
			              "step %d: read of %d blocks at %llu differs", step, n,
			              (unsigned long long)blk);
		} else {
			ck_assert_int_eq(io_channel_flush(io), 0);
			ck_assert_msg(memcmp(mem, model, NBLK * BS) == 0,
			              "step %d: flushed bytes differ", step);
		}
	}
	ck_assert_int_eq(io_channel_flush(io), 0);
	ck_assert(memcmp(mem, model, NBLK * BS) == 0);
	ck_assert_int_eq(io_channel_close(io), 0);
	img_dev_unref(dev);
	free(model);
	free(buf);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/*
 * Emission against a model: random metadata writes of every kind (whole
 * blocks, several blocks, byte ranges across blocks, zeroed ranges) into a
 * cache of four blocks that spills, then file data into the blocks no
 * metadata took, in random ascending extents, each after
 * img_ext2_io_emit_until() at its start, then the flush: the device ends
 * with the model's bytes and got every write past the one before.
 */
START_TEST(emit_model)
{
	enum { BS = 4096, NBLK = 256 };
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("ext4-emit"), name[64];
	struct img_ext2_io_target target = { .spill_dir = dir, .cache_blocks = 4 };
	uint8_t *model = calloc(NBLK, BS), *buf = malloc(8 * BS), meta[NBLK] = { 0 };
	uint64_t seed = 777;
	struct img_dev *dev;
	struct rec_dev *rd;
	io_channel io;

	for (int round = 0; round < 20; round++) {
		dev = rec_new(ctx, NBLK * BS);
		rd = img_dev_priv(dev);
		memset(model, 0, NBLK * BS);
		memset(meta, 0, sizeof(meta));
		target.dev = dev;
		ck_assert_ok(img_ext2_io_name(&target, name, sizeof(name)), ctx);
		ck_assert_int_eq(img_ext2_io_manager->open(name, IO_FLAG_RW, &io), 0);
		ck_assert_int_eq(io_channel_set_blksize(io, BS), 0);
		for (int step = 0; step < 300; step++) {
			uint64_t op = t_rnd(&seed) % 100, blk = t_rnd(&seed) % (NBLK - 4);
			int n = 1 + (int)(t_rnd(&seed) % 3);

			if (op < 60) {
				t_fill(buf, (size_t)n * BS, t_rnd(&seed));
				ck_assert_int_eq(io_channel_write_blk64(io, blk, n, buf), 0);
				memcpy(model + blk * BS, buf, (size_t)n * BS);
			} else if (op < 90) {
				uint64_t off = blk * BS + t_rnd(&seed) % BS;
				int len = 1 + (int)(t_rnd(&seed) % 5000);

				t_fill(buf, (size_t)len, t_rnd(&seed));
				ck_assert_int_eq(
				    io_channel_write_byte(io, (unsigned long)off, len, buf), 0);
				memcpy(model + off, buf, (size_t)len);
				n = (int)((off + (uint64_t)len + BS - 1) / BS - blk);
			} else {
				ck_assert_int_eq(io_channel_zeroout(io, blk, (unsigned long long)n),
				                 0);
				memset(model + blk * BS, 0, (size_t)n * BS);
			}
			for (int i = 0; i < n; i++)
				meta[blk + (uint64_t)i] = 1;
		}
		/* data: ascending extents over the blocks no metadata touched */
		for (uint64_t b = 0; b < NBLK;) {
			uint64_t len = 0;

			if (meta[b] || t_rnd(&seed) % 3 == 0) {
				b++;
				continue;
			}
			while (b + len < NBLK && !meta[b + len] && len < 8 && t_rnd(&seed) % 4)
				len++;
			if (!len)
				len = 1;
			ck_assert_int_eq(img_ext2_io_emit_until(io, b * BS), 0);
			t_fill(buf, len * BS, t_rnd(&seed));
			ck_assert_ok(img_dev_pwrite(dev, buf, len * BS, b * BS), ctx);
			memcpy(model + b * BS, buf, len * BS);
			b += len;
		}
		/* the cache takes no writes once it began to go out */
		ck_assert_int_ne(io_channel_write_blk64(io, 0, 1, buf), 0);
		ck_assert_int_eq(io_channel_flush(io), 0);
		ck_assert_msg(memcmp(rd->mem, model, NBLK * BS) == 0, "round %d: other bytes",
		              round);
		ck_assert_msg(rd->behind == 0, "round %d: %llu writes behind", round,
		              (unsigned long long)rd->behind);
		ck_assert_int_eq(io_channel_close(io), 0);
		img_dev_unref(dev);
	}
	free(model);
	free(buf);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("ext4");
	TCase *tc;

	tc = tcase_create("types");
	tcase_add_test(tc, all_types);
	suite_add_tcase(s, tc);
	tc = tcase_create("bigdirs");
	tcase_add_test(tc, big_dirs);
	suite_add_tcase(s, tc);
	tc = tcase_create("deep");
	tcase_add_test(tc, deep_tree);
	suite_add_tcase(s, tc);
	tc = tcase_create("io");
	tcase_add_test(tc, io_forwarding);
	suite_add_tcase(s, tc);
	tc = tcase_create("spill");
	tcase_add_test(tc, spill_same_bytes);
	tcase_add_test(tc, spill_no_dir);
	tcase_add_test(tc, spill_full);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	tc = tcase_create("cachemodel");
	tcase_add_test(tc, cache_model);
	tcase_add_test(tc, emit_model);
	suite_add_tcase(s, tc);
	tc = tcase_create("deterministic");
	tcase_add_test(tc, deterministic);
	suite_add_tcase(s, tc);
	tc = tcase_create("sizing");
	tcase_add_test(tc, sizing);
	suite_add_tcase(s, tc);
	return s;
}
