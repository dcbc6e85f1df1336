/* test-repro.c -- IDs from (seed, role): stable, distinct, RFC 4122 v5 bits;
 * the CRC32C and SHA-256 helpers. */
#include <pthread.h>

#include "private.h"
#include "testutil.h"
#include <img/repro.h>

START_TEST(uuid_bits_and_stability)
{
	struct img_ctx *a = t_ctx(), *b = t_ctx();
	uint8_t u1[16], u2[16], u3[16];
	char s[37];

	img_ctx_set_seed(a, "seed-1", 6);
	img_ctx_set_seed(b, "seed-1", 6);
	img_repro_uuid(a, "gpt-disk", u1);
	img_repro_uuid(b, "gpt-disk", u2);
	ck_assert_mem_eq(u1, u2, 16);
	/* version 5 in the high nibble of byte 6, variant 10xx in byte 8 */
	ck_assert_uint_eq(u1[6] >> 4, 5);
	ck_assert_uint_eq(u1[8] & 0xc0, 0x80);
	img_repro_uuid(a, "part-esp", u3);
	ck_assert(memcmp(u1, u3, 16) != 0);
	img_repro_uuid_str(a, "gpt-disk", s);
	ck_assert_uint_eq(strlen(s), 36);
	ck_assert_int_eq(s[14], '5');
	img_ctx_free(a);
	img_ctx_free(b);
}
END_TEST

START_TEST(uuid_known_value)
{
	/* Pinned: a change here changes every image libimg has ever written.
	 * Computed independently: uuid5(uuid5(uuid5(NAMESPACE_URL,
	 * "https://libimg/seed"), "x"), "role") with Python's uuid module. */
	struct img_ctx *ctx = t_ctx();
	char s[37];

	img_ctx_set_seed(ctx, "x", 1);
	img_repro_uuid_str(ctx, "role", s);
	ck_assert_str_eq(s, "95eb1ef8-6a71-5612-99a5-94d7a36085cf");
	img_ctx_free(ctx);
}
END_TEST

START_TEST(seed_changes_everything)
{
	struct img_ctx *a = t_ctx(), *b = t_ctx();
	uint8_t u1[16], u2[16];

	img_ctx_set_seed(a, "seed-1", 6);
	img_ctx_set_seed(b, "seed-2", 6);
	img_repro_uuid(a, "ext4-root", u1);
	img_repro_uuid(b, "ext4-root", u2);
	ck_assert(memcmp(u1, u2, 16) != 0);
	ck_assert_uint_ne(img_repro_u32(a, "fat-volid"), img_repro_u32(b, "fat-volid"));
	ck_assert_uint_ne(img_repro_u32(a, "fat-volid"), 0);
	ck_assert_uint_eq(img_repro_u32(a, "fat-volid"), img_repro_u32(a, "fat-volid"));
	img_ctx_free(a);
	img_ctx_free(b);
}
END_TEST

START_TEST(epoch_default_and_set)
{
	struct img_ctx *ctx = t_ctx();

	ck_assert_int_eq(img_repro_epoch(ctx), 1);
	img_ctx_set_epoch(ctx, 1700000000);
	ck_assert_int_eq(img_repro_epoch(ctx), 1700000000);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(crc32c_vectors)
{
	/* RFC 3720 B.4 test vectors (standard CRC-32C = ~crc32c(~0, ...)). */
	uint8_t zeros[32] = { 0 }, ones[32], inc[32];

	memset(ones, 0xff, sizeof(ones));
	for (int i = 0; i < 32; i++)
		inc[i] = (uint8_t)i;
	ck_assert_uint_eq(~img_crc32c(~0u, zeros, 32), 0x8A9136AAu);
	ck_assert_uint_eq(~img_crc32c(~0u, ones, 32), 0x62A8AB43u);
	ck_assert_uint_eq(~img_crc32c(~0u, inc, 32), 0x46DD794Eu);
	ck_assert_uint_eq(~img_crc32c(~0u, "123456789", 9), 0xE3069283u);
}
END_TEST

struct crc_race {
	pthread_barrier_t *go;
	uint32_t got;
};

static void *crc_race_thread(void *arg)
{
	struct crc_race *r = arg;

	pthread_barrier_wait(r->go);
	r->got = ~img_crc32c(~0u, "123456789", 9);
	return NULL;
}

START_TEST(crc32c_first_use_from_threads)
{
	/* The first CRCs of the process computed by several threads at once
	 * (as the dio writer thread and its caller may): every one is right,
	 * and under -fsanitize=thread the table's construction is race-free. */
	enum { N = 4 };
	pthread_barrier_t go;
	pthread_t tid[N];
	struct crc_race r[N];

	ck_assert_int_eq(pthread_barrier_init(&go, NULL, N), 0);
	for (int i = 0; i < N; i++) {
		r[i].go = &go;
		ck_assert_int_eq(pthread_create(&tid[i], NULL, crc_race_thread, &r[i]), 0);
	}
	for (int i = 0; i < N; i++) {
		pthread_join(tid[i], NULL);
		ck_assert_uint_eq(r[i].got, 0xE3069283u);
	}
	pthread_barrier_destroy(&go);
}
END_TEST

START_TEST(digest_from_seed)
{
	struct img_ctx *a = t_ctx(), *b = t_ctx();
	uint8_t x[32], y[32], z[32];

	ck_assert_ok(img_ctx_set_seed(a, "one", 3), a);
	ck_assert_ok(img_ctx_set_seed(b, "two", 3), b);
	img_repro_digest(a, "verity-salt", x);
	img_repro_digest(a, "verity-salt", y);
	ck_assert(!memcmp(x, y, 32));
	img_repro_digest(b, "verity-salt", z);
	ck_assert(memcmp(x, z, 32)); /* the seed changes it */
	img_repro_digest(a, "other-role", z);
	ck_assert(memcmp(x, z, 32)); /* and the role */
	img_ctx_free(a);
	img_ctx_free(b);
}
END_TEST

START_TEST(sha256_vector)
{
	uint8_t d[32];
	char hex[65];

	img_sha256("abc", 3, d);
	img_hex(d, 32, hex);
	ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
END_TEST

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("repro");
	TCase *tc;

	tc = tcase_create("uuid");
	tcase_add_test(tc, uuid_bits_and_stability);
	tcase_add_test(tc, uuid_known_value);
	tcase_add_test(tc, seed_changes_everything);
	tcase_add_test(tc, digest_from_seed);
	suite_add_tcase(s, tc);
	tc = tcase_create("epoch");
	tcase_add_test(tc, epoch_default_and_set);
	suite_add_tcase(s, tc);
	tc = tcase_create("hashes");
	tcase_add_test(tc, crc32c_vectors);
	tcase_add_test(tc, sha256_vector);
	suite_add_tcase(s, tc);
	tc = tcase_create("crc32c_threads");
	tcase_add_test(tc, crc32c_first_use_from_threads);
	suite_add_tcase(s, tc);
	return s;
}
