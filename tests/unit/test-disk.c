/* test-disk.c -- layout planning, GPT/MBR through libfdisk (checked with
 * sfdisk and sgdisk), our own table reader, and the manifest writer/reader. */
#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "private.h"
#include "testutil.h"
#include <img/boot.h>
#include <img/disk.h>
#include <img/manifest.h>

#define MIB (1ull << 20)

static void plan_efi(struct img_ctx *ctx, struct img_disk_layout *l, int hybrid, uint64_t size)
{
	memset(l, 0, sizeof(*l));
	l->label = IMG_DISK_GPT;
	l->size = size;
	if (hybrid)
		ck_assert_int_eq(img_disk_layout_add(l, IMG_PART_BIOS_BOOT, MIB), 0);
	ck_assert_int_eq(img_disk_layout_add(l, IMG_PART_ESP, 40 * MIB), 0);
	ck_assert_int_eq(img_disk_layout_add(l, IMG_PART_ROOT, 10 * MIB + 1), 0);
	ck_assert_ok(img_disk_plan(ctx, l), ctx);
}

static const struct img_disk_part *find(const struct img_disk_layout *l, enum img_part_role r)
{
	for (size_t i = 0; i < l->nparts; i++)
		if (l->parts[i].role == r)
			return &l->parts[i];
	ck_abort_msg("role %d not planned", (int)r);
	return NULL;
}

START_TEST(plan_layout)
{
	struct img_ctx *ctx = t_ctx();
	struct img_disk_layout a, b, m;

	img_ctx_set_seed(ctx, "s1", 2);
	plan_efi(ctx, &a, 0, 0);
	ck_assert_uint_eq(a.nparts, 2);
	ck_assert_uint_eq(a.parts[0].offset, MIB);
	ck_assert_uint_eq(a.parts[0].size, 40 * MIB);
	ck_assert_uint_eq(a.parts[1].offset, 41 * MIB);
	ck_assert_uint_eq(a.parts[1].size, 11 * MIB); /* rounded up to the grain */
	ck_assert_uint_eq(a.size, 53 * MIB);          /* + 1 MiB for the GPT backup */
	ck_assert_str_eq(a.parts[0].type, IMG_GPT_TYPE_ESP);
	ck_assert_str_eq(a.parts[1].type, IMG_GPT_TYPE_ROOT_X86_64);
	ck_assert_str_eq(a.parts[0].name, "ESP");
	ck_assert_str_eq(a.parts[1].name, "nixos");
	/* Name-based IDs carry version and variant bits. */
	ck_assert_int_eq(a.disk_guid[14], '5');
	ck_assert(strchr("89ab", a.parts[0].uuid[19]));
	ck_assert_str_ne(a.parts[0].uuid, a.parts[1].uuid);

	/* Adding the BIOS boot partition changes no other ID. */
	plan_efi(ctx, &b, 1, 0);
	ck_assert_uint_eq(b.nparts, 3);
	ck_assert_str_eq(b.disk_guid, a.disk_guid);
	ck_assert_str_eq(find(&b, IMG_PART_ESP)->uuid, find(&a, IMG_PART_ESP)->uuid);
	ck_assert_str_eq(find(&b, IMG_PART_ROOT)->uuid, find(&a, IMG_PART_ROOT)->uuid);
	ck_assert_str_eq(find(&b, IMG_PART_BIOS_BOOT)->type, IMG_GPT_TYPE_BIOS_BOOT);
	ck_assert_uint_eq(find(&b, IMG_PART_ESP)->offset, 2 * MIB);

	/* Another seed, other IDs. */
	img_ctx_set_seed(ctx, "s2", 2);
	plan_efi(ctx, &b, 0, 0);
	ck_assert_str_ne(b.disk_guid, a.disk_guid);

	/* --size: the last partition fills; too small is a clear error. */
	plan_efi(ctx, &b, 0, 100 * MIB);
	ck_assert_uint_eq(b.size, 100 * MIB);
	ck_assert_uint_eq(b.parts[1].size, 58 * MIB);
	memset(&b, 0, sizeof(b));
	b.label = IMG_DISK_GPT;
	b.size = 52 * MIB;
	img_disk_layout_add(&b, IMG_PART_ESP, 40 * MIB);
	img_disk_layout_add(&b, IMG_PART_ROOT, 11 * MIB);
	ck_assert_int_eq(img_disk_plan(ctx, &b), -ENOSPC);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "too small"));

	/* MBR: one bootable 83 partition at 1 MiB, no tail. */
	memset(&m, 0, sizeof(m));
	m.label = IMG_DISK_MBR;
	img_disk_layout_add(&m, IMG_PART_ROOT, 20 * MIB);
	ck_assert_ok(img_disk_plan(ctx, &m), ctx);
	ck_assert_uint_eq(m.size, 21 * MIB);
	ck_assert_str_eq(m.parts[0].type, "83");
	ck_assert(m.parts[0].bootable);
	ck_assert_uint_ne(m.mbr_signature, 0);
	memset(&m, 0, sizeof(m));
	m.label = IMG_DISK_MBR;
	img_disk_layout_add(&m, IMG_PART_BIOS_BOOT, MIB);
	ck_assert_int_eq(img_disk_plan(ctx, &m), -EINVAL);

	/* The root's verity partition: its own type, name and ID; MBR refuses it. */
	img_ctx_set_seed(ctx, "s1", 2);
	memset(&b, 0, sizeof(b));
	b.label = IMG_DISK_GPT;
	img_disk_layout_add(&b, IMG_PART_ESP, 40 * MIB);
	img_disk_layout_add(&b, IMG_PART_ROOT, 11 * MIB);
	img_disk_layout_add(&b, IMG_PART_ROOT_VERITY, MIB);
	ck_assert_ok(img_disk_plan(ctx, &b), ctx);
	ck_assert_str_eq(b.parts[2].type, IMG_GPT_TYPE_ROOT_VERITY_X86_64);
	ck_assert_str_eq(b.parts[2].type, "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5");
	ck_assert_str_eq(b.parts[2].name, "nixos-verity");
	ck_assert_str_eq(b.parts[2].rolename, "root-verity");
	ck_assert_uint_eq(b.parts[2].offset, 52 * MIB);
	ck_assert_str_eq(b.parts[1].uuid, a.parts[1].uuid);
	ck_assert_str_ne(b.parts[2].uuid, b.parts[1].uuid);
	ck_assert_str_ne(b.parts[2].uuid, b.parts[0].uuid);
	memset(&m, 0, sizeof(m));
	m.label = IMG_DISK_MBR;
	img_disk_layout_add(&m, IMG_PART_ROOT_VERITY, MIB);
	ck_assert_int_eq(img_disk_plan(ctx, &m), -EINVAL);
	img_ctx_free(ctx);
}
END_TEST

/* Write @l to a raw file; return its path (static buffer). */
static const char *write_table(struct img_ctx *ctx, const char *dir, const char *name,
                               const struct img_disk_layout *l)
{
	static char path[4096];
	struct img_dev *dev;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	ck_assert_ok(img_dev_raw_create(ctx, path, l->size, &dev), ctx);
	ck_assert_ok(img_disk_write(ctx, l, dev), ctx);
	ck_assert_ok(img_dev_finish(dev), ctx);
	img_dev_unref(dev);
	return path;
}

static int contains(const char *hay, const char *needle)
{
	return strstr(hay, needle) != NULL;
}

/* sfdisk --json output with all white space outside strings removed. */
static void squeeze(char *s)
{
	char *w = s;
	int in_str = 0;

	for (; *s; s++) {
		if (*s == '"')
			in_str = !in_str;
		if (!in_str && (*s == ' ' || *s == '\n' || *s == '\t'))
			continue;
		*w++ = *s;
	}
	*w = 0;
}

START_TEST(gpt_write_and_validate)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("disk-gpt"), *out = NULL, upper[40];
	struct img_disk_layout l;
	struct img_disk_info info;
	struct img_dev *dev;
	const char *path;
	int st;

	ck_assert_msg(t_have("sfdisk") && t_have("sgdisk"), "sfdisk/sgdisk not installed");
	img_ctx_set_seed(ctx, "gpt", 3);
	plan_efi(ctx, &l, 1, 0);
	path = write_table(ctx, dir, "gpt.img", &l);

	{
		char *argv[] = { "sgdisk", "-v", (char *)path, NULL };
		st = t_run(argv, &out);
		ck_assert_int_eq(st, 0);
		ck_assert_msg(contains(out, "No problems found"), "sgdisk -v: %s", out);
		free(out);
	}
	{
		char *argv[] = { "sfdisk", "--json", (char *)path, NULL };
		st = t_run(argv, &out);
		ck_assert_int_eq(st, 0);
		squeeze(out);
		/* sfdisk prints GUIDs in upper case. */
		for (size_t i = 0; i <= strlen(l.disk_guid); i++)
			upper[i] = (char)toupper((unsigned char)l.disk_guid[i]);
		ck_assert_msg(contains(out, upper), "disk GUID %s missing: %s", upper, out);
		for (size_t k = 0; k < l.nparts; k++) {
			for (size_t i = 0; i <= strlen(l.parts[k].uuid); i++)
				upper[i] = (char)toupper((unsigned char)l.parts[k].uuid[i]);
			ck_assert_msg(contains(out, upper), "GUID %s missing: %s", upper, out);
		}
		ck_assert_msg(contains(out, "\"start\":2048,\"size\":2048,\"type\":"
		                            "\"21686148-6449-6E6F-744E-656564454649\""),
		              "bios boot: %s", out);
		ck_assert_msg(contains(out, "\"start\":4096,\"size\":81920,\"type\":"
		                            "\"C12A7328-F81F-11D2-BA4B-00A0C93EC93B\""),
		              "esp: %s", out);
		ck_assert_msg(contains(out, "\"start\":86016,\"size\":22528,\"type\":"
		                            "\"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\""),
		              "root: %s", out);
		ck_assert_msg(contains(out, "\"name\":\"ESP\""), "%s", out);
		ck_assert_msg(contains(out, "\"name\":\"nixos\""), "%s", out);
		ck_assert_msg(contains(out, "\"firstlba\":2048"), "%s", out);
		free(out);
	}

	/* Our reader agrees. */
	ck_assert_ok(img_dev_raw_open(ctx, path, &dev), ctx);
	ck_assert_ok(img_disk_probe(ctx, dev, &info), ctx);
	ck_assert_int_eq(info.label, IMG_DISK_GPT);
	ck_assert_str_eq(info.disk_guid, l.disk_guid);
	ck_assert(info.has_esp && info.has_bios_boot);
	ck_assert_uint_eq(info.nparts, 3);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_uint_eq(info.parts[i].offset, l.parts[i].offset);
		ck_assert_uint_eq(info.parts[i].size, l.parts[i].size);
		ck_assert_str_eq(info.parts[i].type, l.parts[i].type);
		ck_assert_str_eq(info.parts[i].uuid, l.parts[i].uuid);
		ck_assert_str_eq(info.parts[i].name, l.parts[i].name);
	}
	img_dev_unref(dev);

	/* A damaged primary header: the backup still reads. */
	{
		int fd = open(path, O_RDWR);
		uint8_t junk = 0x42;

		ck_assert_int_eq(pwrite(fd, &junk, 1, 512 + 100), 1);
		close(fd);
	}
	ck_assert_ok(img_dev_raw_open(ctx, path, &dev), ctx);
	ck_assert_ok(img_disk_probe(ctx, dev, &info), ctx);
	ck_assert_int_eq(info.label, IMG_DISK_GPT);
	ck_assert_uint_eq(info.nparts, 3);
	img_dev_unref(dev);

	/* Same seed, same bytes. */
	{
		char a[4096], *b1 = malloc(l.size), *b2 = malloc(l.size);
		int fd;

		snprintf(a, sizeof(a), "%s/gpt.img", dir);
		path = write_table(ctx, dir, "gpt.img", &l);
		fd = open(path, O_RDONLY);
		ck_assert_int_eq(img_pread_full(fd, b1, l.size, 0), 0);
		close(fd);
		path = write_table(ctx, dir, "gpt2.img", &l);
		fd = open(path, O_RDONLY);
		ck_assert_int_eq(img_pread_full(fd, b2, l.size, 0), 0);
		close(fd);
		ck_assert(memcmp(b1, b2, l.size) == 0);
		/* In two steps (the head, then the GPT's backup last): the same
		 * bytes, and nothing at the end until the tail is written. */
		{
			struct img_dev *m;
			uint8_t *tail;

			ck_assert_ok(img_dev_mem_new(ctx, l.size, &m), ctx);
			ck_assert_ok(img_disk_write_head(ctx, &l, m, NULL, &tail), ctx);
			ck_assert_ptr_nonnull(tail);
			ck_assert(img_all_zero(img_dev_mem_data(m) + l.size - 33 * 512, 33 * 512));
			ck_assert_ok(img_disk_write_tail(&l, m, tail), ctx);
			ck_assert(memcmp(img_dev_mem_data(m), b1, l.size) == 0);
			free(tail);
			img_dev_unref(m);
		}
		free(b1);
		free(b2);
	}
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(mbr_write_and_validate)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("disk-mbr"), *out = NULL, sig[16];
	struct img_disk_layout l = { .label = IMG_DISK_MBR };
	struct img_disk_info info;
	struct img_dev *dev;
	const char *path;

	ck_assert_msg(t_have("sfdisk"), "sfdisk not installed");
	img_disk_layout_add(&l, IMG_PART_ROOT, 30 * MIB);
	ck_assert_ok(img_disk_plan(ctx, &l), ctx);
	path = write_table(ctx, dir, "mbr.img", &l);
	{
		char *argv[] = { "sfdisk", "--json", (char *)path, NULL };
		ck_assert_int_eq(t_run(argv, &out), 0);
		squeeze(out);
		snprintf(sig, sizeof(sig), "0x%08x", l.mbr_signature);
		ck_assert_msg(contains(out, "\"label\":\"dos\""), "%s", out);
		ck_assert_msg(contains(out, sig), "signature %s: %s", sig, out);
		ck_assert_msg(contains(out, "\"start\":2048,\"size\":61440,\"type\":\"83\","
		                            "\"bootable\":true"),
		              "%s", out);
		free(out);
	}
	ck_assert_ok(img_dev_raw_open(ctx, path, &dev), ctx);
	ck_assert_ok(img_disk_probe(ctx, dev, &info), ctx);
	ck_assert_int_eq(info.label, IMG_DISK_MBR);
	ck_assert_uint_eq(info.mbr_signature, l.mbr_signature);
	ck_assert(info.has_active && !info.has_esp);
	ck_assert_uint_eq(info.nparts, 1);
	ck_assert_uint_eq(info.parts[0].offset, MIB);
	ck_assert_uint_eq(info.parts[0].size, 30 * MIB);
	ck_assert_str_eq(info.parts[0].type, "83");
	img_dev_unref(dev);
	/* With boot code: LBA 0 starts with it, the table after it is the same
	 * (byte for byte), and the head is LBA 0 alone, so a boot loader's next
	 * stage can follow in order. */
	{
		uint8_t code[IMG_DISK_BOOT_CODE], *tail;
		const uint8_t *plain;
		struct img_dev *m, *p;

		for (size_t i = 0; i < sizeof(code); i++)
			code[i] = (uint8_t)(i * 7 + 1);
		ck_assert_ok(img_dev_mem_new(ctx, l.size, &m), ctx);
		ck_assert_ok(img_dev_mem_new(ctx, l.size, &p), ctx);
		ck_assert_ok(img_disk_write_head(ctx, &l, m, code, &tail), ctx);
		ck_assert_ptr_null(tail);
		ck_assert_ok(img_disk_write_head(ctx, &l, p, NULL, &tail), ctx);
		plain = img_dev_mem_data(p);
		ck_assert(memcmp(img_dev_mem_data(m), code, sizeof(code)) == 0);
		ck_assert(img_all_zero(plain, sizeof(code)));
		ck_assert(memcmp(img_dev_mem_data(m) + sizeof(code), plain + sizeof(code),
		                 512 - sizeof(code)) == 0);
		ck_assert(plain[510] == 0x55 && plain[511] == 0xAA);
		ck_assert(img_all_zero(img_dev_mem_data(m) + 512, l.size - 512));
		img_dev_unref(m);
		img_dev_unref(p);
	}
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(probe_untrusted)
{
	struct img_ctx *ctx = t_ctx();
	struct img_dev *dev;
	struct img_disk_info info;
	uint8_t s[512] = { 0 };

	ck_assert_ok(img_dev_mem_new(ctx, 4 * MIB, &dev), ctx);
	ck_assert_ok(img_disk_probe(ctx, dev, &info), ctx);
	ck_assert_int_eq(info.label, IMG_DISK_NONE);
	/* An MBR entry pointing past the end is not a table. */
	s[510] = 0x55;
	s[511] = 0xAA;
	s[446 + 4] = 0x83;
	img_put_le32(s + 446 + 8, 2048);
	img_put_le32(s + 446 + 12, 0xFFFFFF00u);
	ck_assert_ok(img_dev_pwrite(dev, s, 512, 0), ctx);
	ck_assert_ok(img_disk_probe(ctx, dev, &info), ctx);
	ck_assert_int_eq(info.label, IMG_DISK_NONE);
	/* A protective MBR with a garbage GPT header: none. */
	s[446 + 4] = 0xEE;
	img_put_le32(s + 446 + 8, 1);
	img_put_le32(s + 446 + 12, 100);
	ck_assert_ok(img_dev_pwrite(dev, s, 512, 0), ctx);
	memset(s, 0, sizeof(s));
	memcpy(s, "EFI PART", 8);
	img_put_le32(s + 12, 0xFFFFFFFF);
	ck_assert_ok(img_dev_pwrite(dev, s, 512, 512), ctx);
	ck_assert_ok(img_disk_probe(ctx, dev, &info), ctx);
	ck_assert_int_eq(info.label, IMG_DISK_NONE);
	img_dev_unref(dev);

	/* Mutations of a real GPT (headers, entries, both copies): never a crash,
	 * never a partition outside the disk. Meaningful under ASan/UBSan. */
	{
		struct img_disk_layout l;
		uint8_t *orig, rnd[64];
		uint64_t total;

		plan_efi(ctx, &l, 1, 0);
		total = l.size;
		ck_assert_ok(img_dev_mem_new(ctx, total, &dev), ctx);
		ck_assert_ok(img_disk_write(ctx, &l, dev), ctx);
		orig = malloc(34 * 512);
		ck_assert_ok(img_dev_pread(dev, orig, 34 * 512, 0), ctx);
		for (int it = 0; it < 3000; it++) {
			t_fill(rnd, sizeof(rnd), (uint64_t)it + 1);
			for (int k = 0; k < 1 + rnd[0] % 8; k++) {
				/* mostly the header and first entries; sometimes anywhere */
				uint32_t span = rnd[1] & 1 ? 34 * 512 : 3 * 512;
				uint32_t at = img_get_le32(rnd + 4 + 4 * k) % span;
				uint8_t v = rnd[40 + k];

				ck_assert_ok(img_dev_pwrite(dev, &v, 1, at), ctx);
			}
			ck_assert_ok(img_disk_probe(ctx, dev, &info), ctx);
			for (size_t i = 0; i < IMG_MIN(info.nparts, IMG_DISK_MAX_PARTS); i++)
				ck_assert(info.parts[i].offset + info.parts[i].size <= total);
			ck_assert_ok(img_dev_pwrite(dev, orig, 34 * 512, 0), ctx);
		}
		free(orig);
		img_dev_unref(dev);
	}
	img_ctx_free(ctx);
}
END_TEST

START_TEST(manifest_roundtrip)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("disk-manifest"), path[4096], *text;
	struct img_manifest_verity verity = {
		.root_hash = "abcd",
		.hash_algorithm = "sha256",
		.data_block_size = 4096,
		.hash_block_size = 4096,
		.data_offset = 257 * MIB,
		.data_blocks = 262144,
		.hash_offset = 1281 * MIB,
		.hash_size = 8458240,
		.salt = "0102",
		.uuid = "5f0e6d3c-0000-5000-8000-000000000002",
	};
	struct img_manifest_partition parts[2] = {
		{ .number = 1,
		  .role = "esp",
		  .name = "ESP",
		  .type = IMG_GPT_TYPE_ESP,
		  .uuid = "0b0c3c5e-4a44-5b8e-9f1e-1c0c3b9e2f10",
		  .offset = MIB,
		  .size = 256 * MIB,
		  .filesystem = "vfat",
		  .label = "ESP",
		  .fs_uuid = "1234-ABCD" },
		{ .number = 2,
		  .role = "root",
		  .name = "nixos",
		  .type = IMG_GPT_TYPE_ROOT_X86_64,
		  .offset = 257 * MIB,
		  .size = 1024 * MIB,
		  .filesystem = "ext4",
		  .label = "nixos",
		  .verity = &verity },
	};
	struct img_manifest m = {
		.generator = "mkvmimage 0.1.0",
		.image = "disk.qcow2",
		.format = "qcow2",
		.virtual_size = 1282 * MIB,
		.mode = "efi",
		.boot = "efi",
		.partition_table = "gpt",
		.disk_guid = "5f0e6d3c-0000-5000-8000-000000000001",
		.partitions = parts,
		.npartitions = 2,
		.system = "/nix/store/aaaa-nixos-system",
		.kernel_params = "console=ttyS0",
		.bootloader = "systemd-boot",
		.sha256 = "00ff",
		.seed = "abc",
		.epoch = 1,
	};
	struct img_manifest *r;
	FILE *f;
	long n;

	snprintf(path, sizeof(path), "%s/m.json", dir);
	ck_assert_ok(img_manifest_write(ctx, path, &m), ctx);
	f = fopen(path, "r");
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	text = calloc(1, (size_t)n + 1);
	ck_assert_int_eq(fread(text, 1, (size_t)n, f), n);
	fclose(f);
	/* Documented shape: key order, two spaces, unescaped '/', final newline. */
	ck_assert_msg(!strncmp(text, "{\n  \"manifest_version\": 1,\n  \"generator\": ", 42), "%s",
	              text);
	ck_assert(contains(text, "\"system\": \"/nix/store/aaaa-nixos-system\""));
	ck_assert(strstr(text, "\"mode\"") < strstr(text, "\"partitions\""));
	ck_assert(strstr(text, "\"partitions\"") < strstr(text, "\"system\""));
	ck_assert(!contains(text, "\"uuid\": null"));
	ck_assert_int_eq(text[n - 1], '\n');
	ck_assert_ok(img_manifest_read(ctx, path, &r), ctx);
	ck_assert_int_eq(r->manifest_version, 1);
	ck_assert_str_eq(r->boot, "efi");
	ck_assert_str_eq(r->compression, "none");
	ck_assert_uint_eq(r->virtual_size, 1282 * MIB);
	ck_assert_uint_eq(r->npartitions, 2);
	ck_assert_str_eq(r->partitions[0].fs_uuid, "1234-ABCD");
	ck_assert_ptr_null(r->partitions[1].uuid);
	ck_assert_uint_eq(r->partitions[1].offset, 257 * MIB);
	ck_assert_str_eq(r->kernel_params, "console=ttyS0");
	ck_assert_ptr_null(r->partitions[0].verity);
	ck_assert_ptr_nonnull(r->partitions[1].verity);
	ck_assert_str_eq(r->partitions[1].verity->root_hash, "abcd");
	ck_assert_str_eq(r->partitions[1].verity->salt, "0102");
	ck_assert_uint_eq(r->partitions[1].verity->data_blocks, 262144);
	ck_assert_uint_eq(r->partitions[1].verity->hash_offset, 1281 * MIB);
	ck_assert_uint_eq(r->partitions[1].verity->hash_size, 8458240);
	ck_assert_uint_eq(r->partitions[1].verity->hash_block_size, 4096);
	img_manifest_free(r);
	t_write_file(path, "{\"manifest_version\":1,\"partitions\":[{\"verity\":3}]}", 50);
	ck_assert_int_eq(img_manifest_read(ctx, path, &r), -EINVAL);
	ck_assert(contains(img_ctx_error(ctx), "\"verity\""));

	/* Unknown keys are ignored; unknown versions and bad types refused. */
	t_write_file(path, "{\"manifest_version\":1,\"future\":[1,2],\"boot\":\"bios\"}\n", 52);
	ck_assert_ok(img_manifest_read(ctx, path, &r), ctx);
	ck_assert_str_eq(r->boot, "bios");
	img_manifest_free(r);
	t_write_file(path, "{\"manifest_version\":2}", 22);
	ck_assert_int_eq(img_manifest_read(ctx, path, &r), -EINVAL);
	ck_assert(contains(img_ctx_error(ctx), "manifest_version 2"));
	t_write_file(path, "{\"manifest_version\":1,\"boot\":3}", 31);
	ck_assert_int_eq(img_manifest_read(ctx, path, &r), -EINVAL);
	ck_assert(contains(img_ctx_error(ctx), "\"boot\""));
	t_write_file(path, "{\"manifest_version\":1", 21);
	ck_assert_int_eq(img_manifest_read(ctx, path, &r), -EINVAL);
	ck_assert(contains(img_ctx_error(ctx), "not valid JSON"));
	t_write_file(path, "{\"manifest_version\":1} x", 24);
	ck_assert_int_eq(img_manifest_read(ctx, path, &r), -EINVAL);
	t_write_file(path, "{\"manifest_version\":1,\"partitions\":[{\"size\":-1}]}", 49);
	ck_assert_int_eq(img_manifest_read(ctx, path, &r), -EINVAL);
	snprintf(path, sizeof(path), "%s/none.json", dir);
	ck_assert_int_eq(img_manifest_read(ctx, path, &r), -ENOENT);
	ck_assert(contains(img_ctx_error(ctx), "none.json"));
	free(text);
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

/* ---- boot: the ESP tree for a system ---------------------------------- */

#define SYS  "/nix/store/3yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy-nixos-system-t"
#define KPKG "/nix/store/1kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk-linux-6.1"
#define IPKG "/nix/store/2iiiiiiiiiiiiiiiiiiiiiiiiiiiiiii-initrd"
#define BPKG "/nix/store/4bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-systemd-boot"

static void mk(const char *root, const char *rel, const char *text)
{
	char path[4096], *p;

	snprintf(path, sizeof(path), "%s%s", root, rel);
	for (p = path + strlen(root) + 1; (p = strchr(p, '/')); p++) {
		*p = 0;
		mkdir(path, 0755);
		*p = '/';
	}
	t_write_file(path, text, strlen(text));
}

static void ln(const char *root, const char *rel, const char *target)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s%s", root, rel);
	ck_assert_int_eq(symlink(target, path), 0);
}

static char *node_text(struct img_ctx *ctx, struct img_tree *t, const char *path)
{
	struct img_node *n = img_tree_lookup(t, path);
	char *buf;

	ck_assert_msg(n != NULL, "%s missing", path);
	buf = calloc(1, n->size + 1);
	ck_assert_ok(img_node_read_data(ctx, n, 0, buf, n->size), ctx);
	return buf;
}

START_TEST(boot_esp_tree)
{
	struct img_ctx *ctx = t_ctx();
	char *dir = t_tmpdir("disk-boot"), *txt;
	const char *paths[] = { KPKG, IPKG, SYS, BPKG };
	struct img_boot_opts o = {
		.root = dir, .paths = paths, .npaths = 4, .kernel_params = "quiet"
	};
	struct img_boot_esp *esp;

	mk(dir, KPKG "/bzImage", "KERNEL");
	mk(dir, IPKG "/initrd", "INITRD");
	mk(dir, SYS "/init", "#!/bin/sh\n");
	mk(dir, SYS "/kernel-params", "console=ttyS0\n");
	mk(dir, SYS "/nixos-version", "25.05t\n");
	/* a relative link, and an absolute one through another link */
	ln(dir, SYS "/kernel", "../1kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk-linux-6.1/./bzImage");
	ln(dir, SYS "/initrd-link", IPKG "/initrd");
	ln(dir, SYS "/initrd", SYS "/initrd-link");
	mk(dir, BPKG "/lib/systemd/boot/efi/systemd-bootx64.efi", "SDBOOT");

	o.system = SYS;
	ck_assert_ok(img_boot_esp_build(ctx, &o, &esp), ctx);
	ck_assert_str_eq(esp->bootloader, "systemd-boot");
	ck_assert_str_eq(esp->kernel_params, "console=ttyS0 quiet");
	ck_assert_str_eq(esp->cmdline, "init=" SYS "/init console=ttyS0 quiet");
	txt = node_text(ctx, esp->tree,
	                "EFI/nixos/1kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk-linux-6.1-bzImage.efi");
	ck_assert_str_eq(txt, "KERNEL");
	free(txt);
	txt = node_text(ctx, esp->tree,
	                "EFI/nixos/2iiiiiiiiiiiiiiiiiiiiiiiiiiiiiii-initrd-initrd.efi");
	ck_assert_str_eq(txt, "INITRD");
	free(txt);
	txt = node_text(ctx, esp->tree, "EFI/BOOT/BOOTX64.EFI");
	ck_assert_str_eq(txt, "SDBOOT");
	free(txt);
	txt = node_text(ctx, esp->tree, "loader/entries/nixos-generation-1.conf");
	ck_assert_str_eq(txt,
	                 "title NixOS\nsort-key nixos\n"
	                 "version Generation 1 25.05t, built on 1970-01-01\n"
	                 "linux /EFI/nixos/1kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk-linux-6.1-bzImage.efi\n"
	                 "initrd /EFI/nixos/2iiiiiiiiiiiiiiiiiiiiiiiiiiiiiii-initrd-initrd.efi\n"
	                 "options init=" SYS "/init console=ttyS0 quiet\n");
	free(txt);
	ck_assert_ptr_nonnull(img_tree_lookup(esp->tree, "EFI/systemd/systemd-bootx64.efi"));
	ck_assert_ptr_nonnull(img_tree_lookup(esp->tree, "loader/loader.conf"));
	img_boot_esp_free(esp);

	/* The date comes from the epoch. */
	img_ctx_set_epoch(ctx, 1700000000);
	ck_assert_ok(img_boot_esp_build(ctx, &o, &esp), ctx);
	txt = node_text(ctx, esp->tree, "loader/entries/nixos-generation-1.conf");
	ck_assert_ptr_nonnull(strstr(txt, "built on 2023-11-14\n"));
	free(txt);
	img_boot_esp_free(esp);

	/* A stub that is no PE image is refused by name. */
	mk(dir, "/notpe",
	   "this is not a PE file, just some text padding it out............"
	   "................................................................"
	   "................................................................"
	   "................................................................"
	   "................................................................"
	   "................................................................"
	   "................................................................"
	   "................................................................");
	o.uki = 1;
	{
		char stub[4096];

		snprintf(stub, sizeof(stub), "%s/notpe", dir);
		o.uki_stub = stub;
		ck_assert_int_eq(img_boot_esp_build(ctx, &o, &esp), -EINVAL);
		ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "not a usable UEFI stub"));
	}
	o.uki = 0;
	o.uki_stub = NULL;

	/* No systemd-boot: the message says how to give one. */
	o.npaths = 3;
	ck_assert_int_eq(img_boot_esp_build(ctx, &o, &esp), -ENOENT);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "--bootloader"));
	o.npaths = 4;
	/* A symlink loop and a missing system. */
	{
		char p[4096];

		snprintf(p, sizeof(p), "%s" SYS "/kernel", dir);
		unlink(p);
		ln(dir, SYS "/kernel", SYS "/kernel");
	}
	ck_assert_int_eq(img_boot_esp_build(ctx, &o, &esp), -ELOOP);
	o.system = NULL;
	ck_assert_int_eq(img_boot_esp_build(ctx, &o, &esp), -EINVAL);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "--system"));
	/* Two systems in one closure: the two-systems cases of fixtures/bad. */
	t_rmrf(dir);
	free(dir);
	img_ctx_free(ctx);
}
END_TEST

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("disk");
	TCase *tc;

	tc = tcase_create("plan");
	tcase_add_test(tc, plan_layout);
	suite_add_tcase(s, tc);
	tc = tcase_create("gpt");
	tcase_add_test(tc, gpt_write_and_validate);
	suite_add_tcase(s, tc);
	tc = tcase_create("mbr");
	tcase_add_test(tc, mbr_write_and_validate);
	suite_add_tcase(s, tc);
	tc = tcase_create("probe");
	tcase_add_test(tc, probe_untrusted);
	suite_add_tcase(s, tc);
	tc = tcase_create("boot");
	tcase_add_test(tc, boot_esp_tree);
	suite_add_tcase(s, tc);
	tc = tcase_create("manifest");
	tcase_add_test(tc, manifest_roundtrip);
	suite_add_tcase(s, tc);
	return s;
}
