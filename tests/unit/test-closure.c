/* test-closure.c -- store path rules, closure parsing and loading. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "private.h"
#include "testutil.h"
#include <img/closure.h>

#define H "0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
/* NAR hashes in the forms Nix writes and reads */
#define HA "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
#define HB "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define HS "sha256-n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="

START_TEST(store_names)
{
	static const char *const good[] = { H "-foo", H "-foo-1.2.3", H "-a+b_c.d?e=f",
		                            "0123456789abcdfghijklmnpqrsvwxyz-x", H "-Z" };
	static const char *const bad[] = {
		H "-",       H "foo",     H "-.dot",   "eaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x",
		H "-sp ace", H "-sl/ash", "short-foo", "0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaA-x",
		H "-ümlaut", "",          H "-a\tb",   "uaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x",
	};

	for (size_t i = 0; i < IMG_ARRAY_SIZE(good); i++)
		ck_assert_msg(img_store_name_valid(good[i], strlen(good[i])), "%s", good[i]);
	for (size_t i = 0; i < IMG_ARRAY_SIZE(bad); i++)
		ck_assert_msg(!img_store_name_valid(bad[i], strlen(bad[i])), "%s", bad[i]);
	/* 211 name characters are fine, 212 are not */
	{
		char n[32 + 1 + 213];

		memcpy(n, H "-", 33);
		memset(n + 33, 'x', 212);
		ck_assert(img_store_name_valid(n, 33 + 211));
		ck_assert(!img_store_name_valid(n, 33 + 212));
	}
}
END_TEST

static const struct img_closure_opts nocheck = { .no_check_exists = 1 };

/* Parse @text; expect failure whose message contains @msg. */
static void parse_fails(const char *text, size_t len, const char *msg)
{
	struct img_ctx *ctx = t_ctx();
	struct img_closure *c = NULL;
	int r = img_closure_parse(ctx, "cl.txt", text, len, &nocheck, &c);

	ck_assert_msg(r < 0, "parsed: %s", text);
	ck_assert_ptr_null(c);
	ck_assert_msg(strstr(img_ctx_error(ctx), msg), "'%s' lacks '%s'", img_ctx_error(ctx), msg);
	img_ctx_free(ctx);
}

START_TEST(parse_sorted_unique)
{
	struct img_ctx *ctx = t_ctx();
	struct img_closure *c;
	const char text[] = "/nix/store/1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b\n"
	                    "/nix/store/" H "-a/\n"
	                    "\n"
	                    "/nix/store/1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b\n"
	                    "/nix/store/" H "-a"; /* no final newline */

	ck_assert_ok(img_closure_parse(ctx, "cl.txt", text, sizeof(text) - 1, &nocheck, &c), ctx);
	ck_assert_uint_eq(c->npaths, 2);
	ck_assert_str_eq(c->paths[0], "/nix/store/" H "-a");
	ck_assert_str_eq(c->paths[1], "/nix/store/1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b");
	ck_assert_str_eq(c->store_dir, "/nix/store");
	ck_assert_str_eq(c->root, "");
	ck_assert_ptr_null(c->registration);
	img_closure_free(c);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(parse_errors)
{
	char *big;

	parse_fails("/nix/store/" H "-a\nnix/store/" H "-b\n", 60, "cl.txt:2: not a store path");
	parse_fails("/usr/bin\n", 9, "cl.txt:1: not a store path (not under /nix/store)");
	parse_fails("/nix/store/" H "-a/bin\n", 50, "cl.txt:1: not a store path (a path inside");
	parse_fails("/nix/store/" H "-a\r\n", 46, "cl.txt:1: line ends in a carriage return");
	parse_fails("/nix/store/" H "-a\n/nix/\0x\n", 54, "cl.txt:2: NUL byte");
	parse_fails("\n\n", 2, "cl.txt: empty closure");
	parse_fails("", 0, "cl.txt: empty closure");
	parse_fails("/nix/store/" H "-.a\n", 46, "cl.txt:1: not a store path (bad hash");
	parse_fails("/nix/storex/" H "-a\n", 46, "cl.txt:1: not a store path (not under");
	big = malloc(1 << 20);
	memset(big, 'a', 1 << 20);
	big[0] = '/';
	parse_fails(big, 1 << 20, "cl.txt:1: line of 1048576 bytes is too long");
	free(big);
}
END_TEST

START_TEST(store_dir_and_root)
{
	struct img_ctx *ctx = t_ctx();
	struct img_closure_opts o = { .store_dir = "/gnu/store//",
		                      .root = "/srv/r/",
		                      .no_check_exists = 1 };
	struct img_closure *c;
	char buf[64];
	const char text[] = "/gnu/store/" H "-x\n";

	ck_assert_ok(img_closure_parse(ctx, "cl", text, sizeof(text) - 1, &o, &c), ctx);
	ck_assert_str_eq(c->store_dir, "/gnu/store");
	ck_assert_str_eq(c->root, "/srv/r");
	ck_assert_ok(img_closure_host_path(c, c->paths[0], buf, sizeof(buf)), ctx);
	ck_assert_str_eq(buf, "/srv/r/gnu/store/" H "-x");
	ck_assert_int_eq(img_closure_host_path(c, c->paths[0], buf, 10), -ERANGE);
	img_closure_free(c);
	/* /nix/store paths are not under /gnu/store */
	ck_assert_int_lt(img_closure_parse(ctx, "cl", "/nix/store/" H "-x\n", 45, &o, &c), 0);
	o.store_dir = "relative";
	ck_assert_int_lt(img_closure_parse(ctx, "cl", text, sizeof(text) - 1, &o, &c), 0);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(load_files_and_dirs)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("closure-load"), p[4096], root[4096];
	struct img_closure_opts o = { 0 };
	struct img_closure *c;
	const char text[] = "/nix/store/" H "-a\n";

	snprintf(root, sizeof(root), "%s/root", dir);
	ck_assert_int_eq(mkdir(root, 0755), 0);
	snprintf(p, sizeof(p), "%s/root/nix", dir);
	ck_assert_int_eq(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/root/nix/store", dir);
	ck_assert_int_eq(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/root/nix/store/" H "-a", dir);
	t_write_file(p, "x", 1); /* a store path may be a file */
	o.root = root;

	/* a plain file */
	snprintf(p, sizeof(p), "%s/list", dir);
	t_write_file(p, text, sizeof(text) - 1);
	ck_assert_ok(img_closure_load(ctx, p, &o, &c), ctx);
	ck_assert_uint_eq(c->npaths, 1);
	ck_assert_ptr_null(c->registration);
	img_closure_free(c);

	/* a closureInfo directory, with registration */
	snprintf(p, sizeof(p), "%s/ci", dir);
	ck_assert_int_eq(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/ci/store-paths", dir);
	t_write_file(p, text, sizeof(text) - 1);
	snprintf(p, sizeof(p), "%s/ci/registration", dir);
	t_write_file(p, "reg\n", 4);
	snprintf(p, sizeof(p), "%s/ci", dir);
	ck_assert_ok(img_closure_load(ctx, p, &o, &c), ctx);
	ck_assert_ptr_nonnull(c->registration);
	ck_assert_ptr_nonnull(strstr(c->registration, "/ci/registration"));
	img_closure_free(c);

	/* missing path under root: error names file:line */
	o.root = dir;
	snprintf(p, sizeof(p), "%s/list", dir);
	ck_assert_int_eq(img_closure_load(ctx, p, &o, &c), -ENOENT);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "/list:1:"));
	/* store-paths that is a directory */
	snprintf(p, sizeof(p), "%s/ci2", dir);
	ck_assert_int_eq(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/ci2/store-paths", dir);
	ck_assert_int_eq(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/ci2", dir);
	ck_assert_int_eq(img_closure_load(ctx, p, &o, &c), -EISDIR);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "is a directory"));
	img_ctx_free(ctx);
	t_rmrf(dir);
	free(dir);
}
END_TEST

static char *canonical(struct img_ctx *ctx, const char *dir, const char *text, int *r)
{
	static char pa[] = "/nix/store/" H "-a", pb[] = "/nix/store/" H "-b", sd[] = "/nix/store";
	static char *paths[] = { pa, pb };
	struct img_closure c = { .store_dir = sd, .paths = paths, .npaths = 2, .source = sd };
	char path[4096], *out = NULL;
	size_t len = 0;

	snprintf(path, sizeof(path), "%s/registration", dir);
	t_write_file(path, text, strlen(text));
	c.registration = path;
	*r = img_closure_registration(ctx, &c, &out, &len);
	if (*r >= 0)
		ck_assert_uint_eq(strlen(out), len);
	return out;
}

START_TEST(registration_canonical)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("closure-reg"), *a, *b;
	int r;
	/* Two records, references unsorted, then the same in the other order. */
	static const char one[] = "/nix/store/" H "-b\n" HB "\n20\n\n2\n/nix/store/" H "-b\n"
	                          "/nix/store/" H "-a\n"
	                          "/nix/store/" H "-a\n" HA "\n10\n/nix/store/" H "-x.drv\n0\n";
	static const char two[] = "/nix/store/" H "-a\n" HA "\n10\n/nix/store/" H "-x.drv\n0\n"
	                          "/nix/store/" H "-b\n" HB "\n20\n\n2\n/nix/store/" H "-a\n"
	                          "/nix/store/" H "-b";

	a = canonical(ctx, dir, one, &r);
	ck_assert_ok(r, ctx);
	b = canonical(ctx, dir, two, &r);
	ck_assert_ok(r, ctx);
	ck_assert_str_eq(a, b);
	ck_assert_str_eq(a, "/nix/store/" H "-a\n" HA "\n10\n/nix/store/" H "-x.drv\n0\n"
	                    "/nix/store/" H "-b\n" HB "\n20\n\n2\n/nix/store/" H "-a\n"
	                    "/nix/store/" H "-b\n");
	free(a);
	free(b);
	/* Broken records: each an error naming file:line. */
	ck_assert_ptr_null(canonical(ctx, dir, "/nix/store/" H "-a\n" HA "\n1\n\n", &r));
	ck_assert_int_eq(r, -EINVAL);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "registration:5: record cut short"));
	ck_assert_ptr_null(canonical(ctx, dir, "/nix/store/" H "-a\n" HA "\n1\n\nmany\n", &r));
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "registration:5: not a reference count"));
	ck_assert_ptr_null(canonical(ctx, dir, "/nix/store/" H "-a\n" HA "\n1\n\n3\n/x\n", &r));
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "registration:6: reference /x"));
	ck_assert_ptr_null(canonical(ctx, dir, "junk\n" HA "\n1\n\n0\n", &r));
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "registration:1: not a store path"));
	ck_assert_ptr_null(canonical(
	    ctx, dir, "/nix/store/" H "-a\n" HA "\n1\n\n0\n/nix/store/" H "-a\n" HA "\n1\n\n0\n",
	    &r));
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "two records"));
	ck_assert_ptr_null(
	    canonical(ctx, dir, "/nix/store/" H "-a\n" HA "\n1\n\n99999999999999\n", &r));
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "more than the file holds"));
	/* Checked against the closure: registered paths and references. */
	ck_assert_ptr_null(canonical(ctx, dir, "/nix/store/" H "-c\n" HA "\n1\n\n0\n", &r));
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "registration:1: registers /nix/store/" H
	                                                 "-c, which is not in the closure"));
	ck_assert_ptr_null(canonical(
	    ctx, dir, "/nix/store/" H "-a\n" HA "\n1\n\n2\n/nix/store/" H "-b\n/etc/passwd\n", &r));
	ck_assert_ptr_nonnull(
	    strstr(img_ctx_error(ctx), "registration:7: reference /etc/passwd of"));
	ck_assert_ptr_null(
	    canonical(ctx, dir, "/nix/store/" H "-a\n" HA "\n1\n\n1\n/nix/store/" H "-zzz\n", &r));
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "registration:6: reference"));
	/* Well-formed fields: hash, size, deriver. */
	ck_assert_ptr_null(canonical(ctx, dir, "/nix/store/" H "-a\nsha256:aa\n1\n\n0\n", &r));
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "registration:2: not a NAR hash"));
	ck_assert_ptr_null(canonical(ctx, dir, "/nix/store/" H "-a\nmd5:" H "\n1\n\n0\n", &r));
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "registration:2: not a NAR hash"));
	ck_assert_ptr_null(canonical(ctx, dir, "/nix/store/" H "-a\n" HA "\n-1\n\n0\n", &r));
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "registration:3: not a NAR size"));
	ck_assert_ptr_null(
	    canonical(ctx, dir, "/nix/store/" H "-a\n" HA "\n99999999999999999999\n\n0\n", &r));
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "registration:3: not a NAR size"));
	ck_assert_ptr_null(
	    canonical(ctx, dir, "/nix/store/" H "-a\n" HA "\n1\n/etc/x.drv\n0\n", &r));
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "registration:4: the deriver"));
	/* A registration that is a symlink (to a secret): its lines are not quoted. */
	{
#define SHADOW                                                                                     \
	"root:$y$SECRETHASH:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"                     \
	"bin:*:19000:0:99999:7:::\nsys:*:19000:0:99999:7:::\nsync:*:19000:0:99999:7:::\n"
		char secret[4096], link[4096];

		snprintf(secret, sizeof(secret), "%s/shadow", dir);
		t_write_file(secret, SHADOW, strlen(SHADOW));
		snprintf(link, sizeof(link), "%s/registration", dir);
		free(canonical(ctx, dir, "", &r)); /* an empty registration is no error */
		ck_assert_ok(r, ctx);
		unlink(link);
		ck_assert_int_eq(symlink(secret, link), 0);
		{
			static char pa[] = "/nix/store/" H "-a", sd[] = "/nix/store";
			static char *paths[] = { pa };
			struct img_closure c = {
				.store_dir = sd, .paths = paths, .npaths = 1, .source = sd
			};
			char *o = NULL;
			size_t l;

			c.registration = link;
			ck_assert_int_eq(img_closure_registration(ctx, &c, &o, &l), -EINVAL);
			ck_assert_ptr_nonnull(
			    strstr(img_ctx_error(ctx), "registration:1: not a store path"));
			ck_assert_ptr_null(strstr(img_ctx_error(ctx), "SECRET"));
			ck_assert_ptr_null(strstr(img_ctx_error(ctx), "root:"));
		}
		unlink(link);
	}
	/* every hash form Nix reads */
	a = canonical(ctx, dir,
	              "/nix/store/" H "-a\n" HS "\n1\n\n0\n/nix/store/" H "-b\n" HB "\n1\n\n0\n",
	              &r);
	ck_assert_ok(r, ctx);
	free(a);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("closure");
	TCase *tc;

	tc = tcase_create("names");
	tcase_add_test(tc, store_names);
	suite_add_tcase(s, tc);
	tc = tcase_create("parse");
	tcase_add_test(tc, parse_sorted_unique);
	tcase_add_test(tc, parse_errors);
	tcase_add_test(tc, store_dir_and_root);
	suite_add_tcase(s, tc);
	tc = tcase_create("load");
	tcase_add_test(tc, load_files_and_dirs);
	suite_add_tcase(s, tc);
	tc = tcase_create("registration");
	tcase_add_test(tc, registration_canonical);
	suite_add_tcase(s, tc);
	return s;
}
