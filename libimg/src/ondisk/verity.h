/*
 * ondisk/verity.h -- the dm-verity hash device as veritysetup (cryptsetup)
 * formats it: superblock version 1, hash type 1 ("normal").
 *
 * Spec: the Linux kernel's Documentation/admin-guide/device-mapper/verity.rst
 * (the tree and the table line) and cryptsetup's docs/on-disk-format of
 * VERITY (lib/verity/verity.c, struct verity_sb): a 512-byte superblock at
 * the hash offset, the tree in the next hash block. Little endian.
 *
 * The tree: level 0 holds the digests of the data blocks, level N+1 the
 * digests of level N's blocks, up to a level of one block whose digest is the
 * root hash. Each digest is SHA-256(salt || block) (type 1 puts the salt
 * first), stored in a slot of the next power of two (32 bytes for SHA-256),
 * so a 4096-byte hash block holds 128; the rest of a block is zero. Levels
 * lie top first: the single top block right after the superblock, level 0
 * last. One data block (no levels): the root hash is that block's digest.
 */
#ifndef IMG_ONDISK_VERITY_H
#define IMG_ONDISK_VERITY_H

#define VERITY_SB_SIZE   512u
#define VERITY_SIGNATURE "verity\0\0" /* 8 bytes */
#define VERITY_VERSION   1u
#define VERITY_HASH_TYPE 1u /* 0 = Chrome OS (salt after the data) */

/* Superblock fields (struct verity_sb). */
#define VERITY_SB_SIGNATURE       0x000 /* 8 bytes */
#define VERITY_SB_VERSION         0x008 /* u32, 1 */
#define VERITY_SB_HASH_TYPE       0x00C /* u32 */
#define VERITY_SB_UUID            0x010 /* 16 bytes, RFC 4122 byte order */
#define VERITY_SB_ALGORITHM       0x020 /* 32 bytes, NUL padded ("sha256") */
#define VERITY_SB_DATA_BLOCK_SIZE 0x040 /* u32 */
#define VERITY_SB_HASH_BLOCK_SIZE 0x044 /* u32 */
#define VERITY_SB_DATA_BLOCKS     0x048 /* u64 */
#define VERITY_SB_SALT_SIZE       0x050 /* u16 */
#define VERITY_SB_SALT            0x058 /* 256 bytes; 6 bytes of padding before */
#define VERITY_SALT_MAX           256u

#endif
