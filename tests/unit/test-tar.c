/* test-tar.c -- the tar source: entry names, where the data goes (file
 * ranges, a second read, staging for pipes), tar semantics, hostile input. */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "private.h"
#include "testutil.h"
#include <img/source.h>
#include <img/tree.h>

#define HASH "0123456789abcdfghijklmnpqrsvwxyz"
#define SP   HASH "-pkg"

struct ent {
	const char *name;
	int type; /* 'f' file, 'd' dir, 'l' symlink, 'h' hard link */
	const char *data;
};

/* Write a tar (optionally gzip) of @ents to @path with libarchive. */
static void make_tar(const char *path, const struct ent *ents, size_t n, int gz)
{
	struct archive *a = archive_write_new();
	struct archive_entry *e = archive_entry_new();

	archive_write_set_format_gnutar(a);
	if (gz)
		archive_write_add_filter_gzip(a);
	ck_assert_int_eq(archive_write_open_filename(a, path), ARCHIVE_OK);
	for (size_t i = 0; i < n; i++) {
		archive_entry_clear(e);
		archive_entry_copy_pathname(e, ents[i].name);
		archive_entry_set_mtime(e, 1000 + (time_t)i, 0);
		archive_entry_set_uid(e, 1000);
		switch (ents[i].type) {
		case 'f':
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_perm(e, 0644);
			archive_entry_set_size(e, (la_int64_t)strlen(ents[i].data));
			break;
		case 'd':
			archive_entry_set_filetype(e, AE_IFDIR);
			archive_entry_set_perm(e, 0755);
			break;
		case 'l':
			archive_entry_set_filetype(e, AE_IFLNK);
			archive_entry_set_perm(e, 0777);
			archive_entry_copy_symlink(e, ents[i].data);
			break;
		case 'h':
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_perm(e, 0644);
			archive_entry_copy_hardlink(e, ents[i].data);
			break;
		}
		ck_assert_int_eq(archive_write_header(a, e), ARCHIVE_OK);
		if (ents[i].type == 'f')
			archive_write_data(a, ents[i].data, strlen(ents[i].data));
	}
	archive_entry_free(e);
	ck_assert_int_eq(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
}

static const struct ent sample[] = {
	{ "/nix/store/" SP "/bin/abs", 'f', "absolute" },
	{ "nix/store/" SP "/bin/rel", 'f', "relative with prefix" },
	{ SP "/bin/store-rel", 'f', "relative to the store" },
	{ "./nix/store/" SP "/dot", 'f', "dot slash" },
	{ "nix/", 'd', NULL },
	{ "nix/store/", 'd', NULL },
	{ SP "/Case~nix~case~hack~1", 'f', "case hack" },
	{ SP "/link", 'l', "bin/abs" },
	{ SP "/dup", 'f', "first" },
	{ SP "/dup", 'f', "second wins" },
	{ SP "/hard", 'h', "nix/store/" SP "/bin/rel" },
	{ SP "/non-utf8-\xff\xfe", 'f', "bytes" },
};

static struct img_tree *read_tar(struct img_ctx *ctx, const char *path, const char *stage,
                                 struct img_tar_source **src, int expect_ok)
{
	struct img_tree_opts to = { 0 };
	struct img_source_opts so = { .prefix = "", .stage_dir = stage };
	struct img_tree *t;
	int r;

	ck_assert_ok(img_tree_new(ctx, &to, &t), ctx);
	r = img_source_tar(ctx, path, &so, t, src);
	if (expect_ok) {
		ck_assert_ok(r, ctx);
		ck_assert_ok(img_tree_finish(t), ctx);
	} else {
		ck_assert_int_lt(r, 0);
		ck_assert_ptr_null(*src);
	}
	return t;
}

static void expect_content(struct img_ctx *ctx, struct img_tree *t, const char *path,
                           const char *want)
{
	struct img_node *n = img_tree_lookup(t, path);
	char buf[256] = { 0 };

	ck_assert_msg(n != NULL, "%s missing", path);
	ck_assert_uint_eq(img_node_inode(n)->size, strlen(want));
	ck_assert_ok(img_node_read_data(ctx, n, 0, buf, strlen(want)), ctx);
	ck_assert_str_eq(buf, want);
}

static void check_sample(struct img_ctx *ctx, struct img_tree *t)
{
	expect_content(ctx, t, SP "/bin/abs", "absolute");
	expect_content(ctx, t, SP "/bin/rel", "relative with prefix");
	expect_content(ctx, t, SP "/bin/store-rel", "relative to the store");
	expect_content(ctx, t, SP "/dot", "dot slash");
	expect_content(ctx, t, SP "/Case", "case hack");
	expect_content(ctx, t, SP "/dup", "second wins");
	expect_content(ctx, t, SP "/hard", "relative with prefix");
	expect_content(ctx, t, SP "/non-utf8-\xff\xfe", "bytes");
	ck_assert_str_eq(img_tree_lookup(t, SP "/link")->target, "bin/abs");
	ck_assert_ptr_null(img_tree_lookup(t, "nix"));
	ck_assert_uint_eq(t->root->nchildren, 1);
	ck_assert_uint_eq(img_tree_lookup(t, SP "/dup")->uid, 0);
}

/* An uncompressed file: the tree points into the tar file itself. */
START_TEST(names_and_ranges)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("tar-ranges"), *path;
	struct img_tar_source *src;
	struct img_tree *t;

	ck_assert_int_ge(asprintf(&path, "%s/s.tar", dir), 0);
	make_tar(path, sample, IMG_ARRAY_SIZE(sample), 0);
	t = read_tar(ctx, path, NULL, &src, 1);
	ck_assert_int_eq(img_tree_lookup(t, SP "/bin/abs")->data.kind, IMG_DATA_FD);
	ck_assert_uint_eq(img_tar_source_pending(src), 0);
	check_sample(ctx, t);
	img_tree_free(t);
	img_tar_source_free(src);
	free(path);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

static int collect_data(void *user, struct img_node *node, uint64_t off, const void *buf,
                        size_t len)
{
	(void)user;
	ck_assert_uint_le(off + len, node->size);
	/* Park the bytes in memory so the checks can read them (the kind
	 * says which member of node->data is set: until now the source's
	 * ordinal). */
	if (node->data.kind != IMG_DATA_MEM) {
		node->data.mem = calloc(1, node->size + 1);
		node->data.kind = IMG_DATA_MEM;
	}
	memcpy((uint8_t *)node->data.mem + off, buf, len);
	return 0;
}

/* A compressed file: headers first, data on the second read. */
START_TEST(compressed_replay)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("tar-gz"), *path;
	struct img_tar_source *src;
	struct img_tree *t;

	ck_assert_int_ge(asprintf(&path, "%s/s.tar.gz", dir), 0);
	make_tar(path, sample, IMG_ARRAY_SIZE(sample), 1);
	t = read_tar(ctx, path, NULL, &src, 1);
	ck_assert_int_eq(img_tree_lookup(t, SP "/bin/abs")->data.kind, IMG_DATA_NONE);
	ck_assert_uint_gt(img_tar_source_pending(src), 0);
	ck_assert_ok(img_tar_source_replay(src, t, collect_data, NULL), ctx);
	check_sample(ctx, t);
	img_tree_free(t);
	img_tar_source_free(src);
	free(path);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/*
 * no_replay: a compressed file's data is staged beside (the partitioned
 * disks need every byte before the root is written); an uncompressed
 * file's stays ranges of the tar, with no staging at all.
 */
START_TEST(no_replay_staged)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("tar-noreplay"), *gz, *plain;
	struct img_source_opts so = { .prefix = "", .stage_dir = dir, .no_replay = 1 };
	struct img_tree_opts to = { 0 };
	struct img_tar_source *src;
	struct img_tree *t;
	struct img_node *n;
	uint64_t inplace, staged;

	ck_assert_int_ge(asprintf(&gz, "%s/s.tar.gz", dir), 0);
	ck_assert_int_ge(asprintf(&plain, "%s/s.tar", dir), 0);
	make_tar(gz, sample, IMG_ARRAY_SIZE(sample), 1);
	make_tar(plain, sample, IMG_ARRAY_SIZE(sample), 0);

	ck_assert_ok(img_tree_new(ctx, &to, &t), ctx);
	ck_assert_ok(img_source_tar(ctx, gz, &so, t, &src), ctx);
	ck_assert_ok(img_tree_finish(t), ctx);
	ck_assert_uint_eq(img_tar_source_pending(src), 0);
	n = img_tree_lookup(t, SP "/bin/abs");
	ck_assert_int_eq(n->data.kind, IMG_DATA_FD);
	img_tar_source_stats(src, &inplace, &staged);
	ck_assert_uint_gt(staged, 0);
	check_sample(ctx, t);
	img_tree_free(t);
	img_tar_source_free(src);

	ck_assert_ok(img_tree_new(ctx, &to, &t), ctx);
	ck_assert_ok(img_source_tar(ctx, plain, &so, t, &src), ctx);
	ck_assert_ok(img_tree_finish(t), ctx);
	ck_assert_uint_eq(img_tar_source_pending(src), 0);
	img_tar_source_stats(src, &inplace, &staged);
	ck_assert_uint_eq(staged, 0);
	check_sample(ctx, t);
	img_tree_free(t);
	img_tar_source_free(src);
	free(gz);
	free(plain);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* Feed @file into a pipe from a child; returns the "/dev/fd/N" path. */
static pid_t pipe_from(const char *file, char *path, size_t len)
{
	int p[2];
	pid_t pid;

	ck_assert_int_eq(pipe(p), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fd = open(file, O_RDONLY);
		char buf[4096];
		ssize_t n;

		close(p[0]);
		while (fd >= 0 && (n = read(fd, buf, sizeof(buf))) > 0)
			if (write(p[1], buf, (size_t)n) != n)
				break;
		_exit(0);
	}
	close(p[1]);
	snprintf(path, len, "/dev/fd/%d", p[0]);
	return pid;
}

/* A pipe: the data is staged in the given directory, nowhere else. */
START_TEST(pipe_staged)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("tar-pipe"), *path, fdpath[64];
	struct img_tar_source *src = NULL;
	struct img_tree *t;
	pid_t pid;
	int fd;

	ck_assert_int_ge(asprintf(&path, "%s/s.tar.gz", dir), 0);
	make_tar(path, sample, IMG_ARRAY_SIZE(sample), 1);
	/* Without a staging directory a pipe is refused. */
	pid = pipe_from(path, fdpath, sizeof(fdpath));
	t = read_tar(ctx, fdpath, NULL, &src, 0);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "staging"));
	img_tree_free(t);
	close(atoi(fdpath + 8));
	waitpid(pid, NULL, 0);

	pid = pipe_from(path, fdpath, sizeof(fdpath));
	fd = atoi(fdpath + 8);
	t = read_tar(ctx, fdpath, dir, &src, 1);
	close(fd);
	waitpid(pid, NULL, 0);
	ck_assert_int_eq(img_tree_lookup(t, SP "/bin/abs")->data.kind, IMG_DATA_FD);
	ck_assert_uint_eq(img_tar_source_pending(src), 0);
	check_sample(ctx, t);
	img_tree_free(t);
	img_tar_source_free(src);
	free(path);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* Every hostile fixture fails with a message, from a file and from a pipe. */
START_TEST(hostile_fixtures)
{
	struct img_ctx *ctx = t_ctx();
	char *fx, *stage = t_tmpdir("tar-hostile");
	DIR *d;
	struct dirent *de;
	int seen = 0;

	ck_assert_int_ge(asprintf(&fx, "%s/fixtures/tar", IMG_SOURCE_DIR), 0);
	d = opendir(fx);
	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d))) {
		char file[4096], fdpath[64];
		struct img_tar_source *src = NULL;
		struct img_tree *t;
		int ok = !strcmp(de->d_name, "symlink-loop.tar");
		pid_t pid;

		if (!strstr(de->d_name, ".tar"))
			continue;
		snprintf(file, sizeof(file), "%s/%s", fx, de->d_name);
		for (int viapipe = 0; viapipe < 2; viapipe++) {
			struct img_tree_opts to = { 0 };
			struct img_source_opts so = { .prefix = "", .stage_dir = stage };
			int r, fd = -1;

			pid = 0;
			if (viapipe) {
				pid = pipe_from(file, fdpath, sizeof(fdpath));
				fd = atoi(fdpath + 8);
			}
			ck_assert_ok(img_tree_new(ctx, &to, &t), ctx);
			r = img_source_tar(ctx, viapipe ? fdpath : file, &so, t, &src);
			if (r >= 0)
				r = img_tree_finish(t);
			if (ok) {
				ck_assert_ok(r, ctx);
			} else {
				ck_assert_msg(r < 0, "%s (pipe %d) was accepted", de->d_name,
				              viapipe);
				ck_assert_msg(strlen(img_ctx_error(ctx)) > 10, "%s: no message",
				              de->d_name);
			}
			img_tar_source_free(src);
			src = NULL;
			img_tree_free(t);
			if (viapipe) {
				close(fd);
				waitpid(pid, NULL, 0);
			}
		}
		seen++;
	}
	closedir(d);
	ck_assert_int_ge(seen, 10);
	free(fx);
	t_rmrf(stage);
	free(stage);
	img_ctx_free(ctx);
}
END_TEST

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("tar");
	TCase *tc;

	signal(SIGPIPE, SIG_IGN);
	tc = tcase_create("names_and_ranges");
	tcase_add_test(tc, names_and_ranges);
	suite_add_tcase(s, tc);
	tc = tcase_create("compressed_replay");
	tcase_add_test(tc, compressed_replay);
	suite_add_tcase(s, tc);
	tc = tcase_create("no_replay_staged");
	tcase_add_test(tc, no_replay_staged);
	suite_add_tcase(s, tc);
	tc = tcase_create("pipe_staged");
	tcase_add_test(tc, pipe_staged);
	suite_add_tcase(s, tc);
	tc = tcase_create("hostile_fixtures");
	tcase_add_test(tc, hostile_fixtures);
	suite_add_tcase(s, tc);
	return s;
}
