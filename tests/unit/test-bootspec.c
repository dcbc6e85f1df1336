/* test-bootspec.c -- boot.json (bootspec v1) parsing: fields, specialisations, refusals. */
#include <stdio.h>
#include <stdlib.h>

#include "private.h"
#include "testutil.h"
#include <img/bootspec.h>

#define S "/nix/store/"
#define Y S "3yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy-nixos-system-x"
#define V1(extra)                                                                                  \
	"{\"kernel\":\"" S "1kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk-linux/bzImage\",\"initrd\":\"" S      \
	"2iiiiiiiiiiiiiiiiiiiiiiiiiiiiiii-initrd/initrd\",\"init\":\"" Y                           \
	"/init\",\"kernelParams\":[\"a=1\",\"b\"],\"label\":\"NixOS x\",\"system\":"               \
	"\"x86_64-linux\",\"toplevel\":\"" Y "\"" extra "}"

static int parse(struct img_ctx *ctx, const char *doc, struct img_bootspec **bs)
{
	return img_bootspec_parse(ctx, doc, strlen(doc), "t/boot.json", NULL, bs);
}

START_TEST(fields)
{
	struct img_ctx *ctx = t_ctx();
	struct img_bootspec *bs;
	const char *doc = "{\"org.nixos.bootspec.v1\":" V1(
	    "") ",\"org.nixos.specialisation.v1\":"
	        "{\"zeta\":{\"org.nixos.bootspec.v1\":" V1(
	            ",\"initrdSecrets\":\"" Y
	            "/append-secrets\"") "},"
	                                 "\"alpha\":{\"org.nixos.bootspec.v1\":" V1(
	                                     "") ",\"org.nixos.systemd-boot\":"
	                                         "{\"sortKey\":\"a-key\"}}},\"other.ext\":[1,{"
	                                         "\"x\":null}]}\n";

	ck_assert_ok(parse(ctx, doc, &bs), ctx);
	ck_assert_str_eq(bs->sys.kernel, S "1kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk-linux/bzImage");
	ck_assert_str_eq(bs->sys.init, Y "/init");
	ck_assert_str_eq(bs->sys.label, "NixOS x");
	ck_assert_str_eq(bs->sys.sort_key, "nixos");
	ck_assert_ptr_null(bs->sys.name);
	ck_assert_uint_eq(bs->sys.nkernel_params, 2);
	ck_assert_str_eq(bs->sys.kernel_params[1], "b");
	ck_assert_uint_eq(bs->nspecs, 2);
	ck_assert_str_eq(bs->specs[0].name, "alpha"); /* sorted by name */
	ck_assert_str_eq(bs->specs[0].sort_key, "a-key");
	ck_assert_str_eq(bs->specs[1].name, "zeta");
	ck_assert_str_eq(bs->specs[1].initrd_secrets, Y "/append-secrets");
	img_bootspec_free(bs);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(refusals)
{
	static const struct {
		const char *doc, *msg;
	} bad[] = {
		{ "", "not valid JSON" },
		{ "[]", "t/boot.json: not a JSON object" },
		{ "{}", "org.nixos.bootspec.v1: missing" },
		{ "{\"org.nixos.bootspec.v1\":" V1("") "} x", "not valid JSON" },
		{ "{\"org.nixos.bootspec.v1\":" V1(",\"kernel\":5") "}",
		  "v1.kernel: not a string" },
		{ "{\"org.nixos.bootspec.v1\":" V1(",\"kernel\":\"/boot/x\"") "}",
		  "not a path in the store" },
		{ "{\"org.nixos.bootspec.v1\":" V1(",\"kernel\":\"" S "\"") "}",
		  "not a path in the store" },
		{ "{\"org.nixos.bootspec.v1\":" V1(",\"init\":\"" Y "/../x\"") "}",
		  "'..' component" },
		{ "{\"org.nixos.bootspec.v1\":" V1(",\"label\":\"a\\tb\"") "}",
		  "label: holds a control" },
		{ "{\"org.nixos.bootspec.v1\":" V1(",\"label\":\"a\\u0000b\"") "}",
		  "label: holds a control" },
		{ "{\"org.nixos.bootspec.v1\":" V1(",\"kernelParams\":[1]") "}",
		  "kernelParams[0]: not a string" },
		{ "{\"org.nixos.bootspec.v1\":" V1(",\"kernelParams\":[\"a b\"]") "}",
		  "holds a space" },
		{ "{\"org.nixos.bootspec.v1\":" V1("") ",\"org.nixos.specialisation.v1\":[]}",
		  "org.nixos.specialisation.v1: not an object" },
		{ "{\"org.nixos.bootspec.v1\":" V1(
		      "") ",\"org.nixos.specialisation.v1\":{\"a/b\":{}}}",
		  "not usable in a file name" },
		{ "{\"org.nixos.bootspec.v1\":" V1(
		      "") ",\"org.nixos.specialisation.v1\":{\"a\":{}}}",
		  "org.nixos.specialisation.v1.a.org.nixos.bootspec.v1: missing" },
		{ "{\"org.nixos.bootspec.v1\":" V1(
		      "") ",\"org.nixos.systemd-boot\":{\"sortKey\":1}}",
		  "org.nixos.systemd-boot.sortKey: not a string" },
	};

	for (size_t i = 0; i < IMG_ARRAY_SIZE(bad); i++) {
		struct img_ctx *ctx = t_ctx();
		struct img_bootspec *bs = (void *)1;
		int r = parse(ctx, bad[i].doc, &bs);

		ck_assert_msg(r == -EINVAL, "case %zu: %d (%s)", i, r, img_ctx_error(ctx));
		ck_assert_ptr_null(bs);
		ck_assert_msg(strstr(img_ctx_error(ctx), bad[i].msg), "case %zu: '%s' lacks '%s'",
		              i, img_ctx_error(ctx), bad[i].msg);
		ck_assert_msg(strstr(img_ctx_error(ctx), "t/boot.json"), "case %zu: no file name",
		              i);
		img_ctx_free(ctx);
	}
}
END_TEST

START_TEST(text_ok)
{
	ck_assert(img_bootspec_text_ok("console=ttyS0 quiet caf\xc3\xa9"));
	ck_assert(!img_bootspec_text_ok("quiet\nlinux /EFI/evil"));
	ck_assert(!img_bootspec_text_ok("a\rb"));
	ck_assert(!img_bootspec_text_ok("a\x7f"));
}
END_TEST

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("bootspec");
	TCase *tc;

	tc = tcase_create("fields");
	tcase_add_test(tc, fields);
	suite_add_tcase(s, tc);
	tc = tcase_create("refusals");
	tcase_add_test(tc, refusals);
	suite_add_tcase(s, tc);
	tc = tcase_create("text_ok");
	tcase_add_test(tc, text_ok);
	suite_add_tcase(s, tc);
	return s;
}
