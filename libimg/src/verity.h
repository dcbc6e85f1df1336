/*
 * verity.h -- a dm-verity hash tree for a range of a device, in
 * veritysetup's on-disk format (ondisk/verity.h): SHA-256, 4096-byte data
 * and hash blocks, a 32-byte salt and a UUID from the seed (repro).
 *
 * Calling sequence:
 *   struct img_verity v;
 *   img_verity_init(ctx, &v, data_off, data_size, hash_off);  sizes, salt, UUID
 *   ... size the device to at least v.hash_offset + v.hash_size ...
 *   ... write the data ...
 *   img_verity_write(ctx, dev, &v);        hashes the data, writes superblock
 *                                          and tree, fills v.root
 * The data are read back from the device once (4 MiB at a time); the tree is
 * built level by level as the data go by, holding one hash block per level.
 */
#ifndef IMG_VERITY_H
#define IMG_VERITY_H

#include "private.h"

#define IMG_VERITY_BLOCK     4096u
#define IMG_VERITY_ALGORITHM "sha256"

struct img_verity {
	uint64_t data_offset; /* bytes: the first data block on the device */
	uint64_t data_blocks; /* IMG_VERITY_BLOCK-byte blocks hashed */
	uint64_t hash_offset; /* bytes: the superblock; the tree starts one block on */
	uint64_t hash_size;   /* bytes from hash_offset: superblock block + tree */
	uint8_t salt[32];
	uint8_t uuid[16];
	uint8_t root[32]; /* set by img_verity_write() */
};

/* Hash blocks (tree only, without the superblock) for @data_blocks. */
uint64_t img_verity_tree_blocks(uint64_t data_blocks);

/*
 * Plan a tree over [@data_off, @data_off + @data_size) with the superblock at
 * @hash_off. Offsets and @data_size must be multiples of IMG_VERITY_BLOCK,
 * @data_size > 0, and the hash area must not overlap the data. Salt and UUID
 * come from the seed (roles "verity-salt", "verity-uuid").
 */
int img_verity_init(struct img_ctx *ctx, struct img_verity *v, uint64_t data_off,
                    uint64_t data_size, uint64_t hash_off);

/* Read the data from @dev, write superblock and tree to @dev, set v->root. */
int img_verity_write(struct img_ctx *ctx, struct img_dev *dev, struct img_verity *v);

/* The kernel's table arguments after "verity " for data and hash on one
 * device @devname: "1 DEV DEV 4096 4096 BLOCKS HASHSTART sha256 ROOT SALT".
 * Returns a malloc'ed string or NULL (out of memory). */
char *img_verity_table(const struct img_verity *v, const char *devname);

#endif
