/*
 * repro.h -- the only source of identifiers and times in libimg.
 *
 * Every ID an image carries (GPT disk and partition GUIDs, the MBR signature,
 * ext4 UUID, hash seed and journal UUID, FAT volume ID, EROFS UUID) is derived
 * from the context's seed and a role name ("gpt-disk", "part-esp",
 * "ext4-nixos", ...), so adding a partition changes no other ID and the same
 * inputs give the same bytes. Times come from the context's epoch.
 *
 * UUIDs are name-based (RFC 4122 version 5, SHA-1): a namespace is derived
 * from the seed, the role is the name. Version and variant bits are set.
 */
#ifndef IMG_REPRO_H
#define IMG_REPRO_H

#include <stdint.h>
#include <img/context.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A version-5 UUID for @role, as 16 raw bytes in RFC 4122 (big-endian) order. */
IMG_EXPORT void img_repro_uuid(const struct img_ctx *ctx, const char *role, uint8_t out[16]);
/* The same UUID as lower-case text (37 bytes with the NUL). */
IMG_EXPORT void img_repro_uuid_str(const struct img_ctx *ctx, const char *role, char out[37]);
/* A 32-bit ID for @role (FAT volume ID, MBR signature): never 0. */
IMG_EXPORT uint32_t img_repro_u32(const struct img_ctx *ctx, const char *role);
/*
 * 32 bytes for @role that are not an ID but must come from the seed too
 * (the dm-verity salt): SHA-256 of the seed's namespace UUID and @role.
 */
IMG_EXPORT void img_repro_digest(const struct img_ctx *ctx, const char *role, uint8_t out[32]);
/* The epoch (seconds since 1970) every timestamp takes. */
IMG_EXPORT int64_t img_repro_epoch(const struct img_ctx *ctx);

/* Format 16 raw bytes as lower-case UUID text. */
IMG_EXPORT void img_uuid_unparse(const uint8_t uuid[16], char out[37]);

#ifdef __cplusplus
}
#endif
#endif
