/*
 * verity.h -- a dm-verity hash tree for a range of a device, in
 * veritysetup's on-disk format (ondisk/verity.h): SHA-256, 4096-byte data
 * and hash blocks, a 32-byte salt and a UUID from the seed (repro).
 *
 * Calling sequence:
 *   struct img_verity v;
 *   struct img_verity_tap *tap;
 *   img_verity_init(ctx, &v, data_off, data_size, hash_off);  sizes, salt, UUID
 *   ... size the device to at least v.hash_offset + v.hash_size ...
 *   img_verity_tap_new(ctx, dev, &v, &tap);  before the first write into the
 *                                          data: hash them as they are written
 *   ... write the data ...
 *   img_verity_write(ctx, dev, &v, tap);   superblock and tree, front to back
 *                                          from v.hash_offset; fills v.root
 *   img_verity_tap_free(tap);
 * The data blocks are hashed as they are written to the device, from the
 * tap, while their writes come in order (a planned or in-order device); a
 * write behind the tap's frontier, or no tap (NULL: a device that held data
 * before it was made, or one that packs at finish), and the data are read
 * back from the device once instead. Level 0 of the tree is kept in memory
 * (1/128 of the data: a 4 KiB hash block per 512 KiB of data that is not
 * all zeros), so the tree is written in file order after the data, where it
 * lies: the output can be hashed as it is written.
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
	uint8_t root[32];       /* set by img_verity_write() */
	bool hashed_as_written; /* ... and whether the data came from the tap */
};

/* The digests of the data blocks, taken from the device's writes (verity.c). */
struct img_verity_tap;

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

/*
 * Tap @dev (img_dev_set_tap) for the data range of @v, a device that reads
 * as zeros where nothing was written yet (a new output) and has no tap yet.
 * Call it before any write into the range. *out is the caller's: free it
 * with img_verity_tap_free() (before or after @dev's last unref; it holds a
 * reference). -ENOMEM (message set).
 */
int img_verity_tap_new(struct img_ctx *ctx, struct img_dev *dev, const struct img_verity *v,
                       struct img_verity_tap **out);
/* Remove the tap from its device (if img_verity_write did not) and free it. NULL is fine. */
void img_verity_tap_free(struct img_verity_tap *tap);

/*
 * Once the data are complete: the digests from @tap (removed from the
 * device here; NULL, or a tap that saw a write out of order: read the data
 * from @dev), then superblock and tree written to @dev in file order; sets
 * v->root and v->hashed_as_written. Logs which way the data were hashed.
 */
int img_verity_write(struct img_ctx *ctx, struct img_dev *dev, struct img_verity *v,
                     struct img_verity_tap *tap);

/* The kernel's table arguments after "verity " for data and hash on one
 * device @devname: "1 DEV DEV 4096 4096 BLOCKS HASHSTART sha256 ROOT SALT".
 * Returns a malloc'ed string or NULL (out of memory). */
char *img_verity_table(const struct img_verity *v, const char *devname);

#endif
