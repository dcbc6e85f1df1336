/*
 * repro.c -- seed + role -> identifiers; the epoch. The only file in libimg
 * that produces IDs or times (docs/architecture.md, "Rules every output keeps").
 *
 * UUIDs are RFC 4122 version 5 (SHA-1, name-based): the seed is hashed into
 * a namespace under libimg's own namespace UUID, and the role is the name in
 * that namespace. libuuid sets the version and variant bits.
 */
#include <stdio.h>
#include <uuid/uuid.h>

#include "private.h"
#include "context-private.h"
#include <img/repro.h>

/* libimg's namespace: itself a v5 UUID of "libimg" in the URL namespace. */
static void seed_namespace(const struct img_ctx *ctx, uuid_t ns)
{
	static const uuid_t url_ns = { 0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1,
		                       0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8 };
	uuid_t libimg_ns;

	uuid_generate_sha1(libimg_ns, url_ns, "https://libimg/seed", 19);
	uuid_generate_sha1(ns, libimg_ns, ctx->seed ? ctx->seed : "", ctx->seed_len);
}

void img_repro_uuid(const struct img_ctx *ctx, const char *role, uint8_t out[16])
{
	uuid_t ns, id;

	seed_namespace(ctx, ns);
	uuid_generate_sha1(id, ns, role, strlen(role));
	memcpy(out, id, 16);
}

void img_uuid_unparse(const uint8_t uuid[16], char out[37])
{
	uuid_unparse_lower(uuid, out);
}

void img_repro_uuid_str(const struct img_ctx *ctx, const char *role, char out[37])
{
	uint8_t id[16];

	img_repro_uuid(ctx, role, id);
	img_uuid_unparse(id, out);
}

uint32_t img_repro_u32(const struct img_ctx *ctx, const char *role)
{
	uint8_t id[16];
	uint32_t v;

	/* Bytes 0..3 carry no version or variant bits. */
	img_repro_uuid(ctx, role, id);
	v = img_get_be32(id);
	return v ? v : 1;
}

void img_repro_digest(const struct img_ctx *ctx, const char *role, uint8_t out[32])
{
	uint8_t buf[16 + 256];
	size_t rl = strlen(role);
	uuid_t ns;

	/* Roles are short literals; a longer one is cut, never overrun. */
	seed_namespace(ctx, ns);
	memcpy(buf, ns, 16);
	rl = IMG_MIN(rl, sizeof(buf) - 16);
	memcpy(buf + 16, role, rl);
	img_sha256(buf, 16 + rl, out);
}

int64_t img_repro_epoch(const struct img_ctx *ctx)
{
	return ctx->epoch;
}
