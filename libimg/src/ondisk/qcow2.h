/*
 * ondisk/qcow2.h -- qcow2 on-disk layout (qemu docs/interop/qcow2.txt,
 * versions 2 and 3). Every integer in the header and in the L1, L2 and
 * refcount tables is big endian. Offsets are byte offsets into the header.
 */
#ifndef IMG_ONDISK_QCOW2_H
#define IMG_ONDISK_QCOW2_H

#define QCOW2_MAGIC 0x514649FBu /* "QFI\xfb" */

/* Header fields (qcow2.txt "Header"). */
#define QCOW2_H_MAGIC             0   /* u32 magic */
#define QCOW2_H_VERSION           4   /* u32 2 or 3 */
#define QCOW2_H_BACKING_OFFSET    8   /* u64 byte offset of the backing name in cluster 0 */
#define QCOW2_H_BACKING_SIZE      16  /* u32 length of the name, no NUL, <= 1023 */
#define QCOW2_H_CLUSTER_BITS      20  /* u32 9..21 */
#define QCOW2_H_SIZE              24  /* u64 virtual disk size in bytes */
#define QCOW2_H_CRYPT_METHOD      32  /* u32 0 = none */
#define QCOW2_H_L1_SIZE           36  /* u32 number of L1 entries */
#define QCOW2_H_L1_OFFSET         40  /* u64 cluster aligned */
#define QCOW2_H_REFTABLE_OFFSET   48  /* u64 cluster aligned */
#define QCOW2_H_REFTABLE_CLUSTERS 56  /* u32 */
#define QCOW2_H_NB_SNAPSHOTS      60  /* u32 */
#define QCOW2_H_SNAPSHOTS_OFFSET  64  /* u64 */
#define QCOW2_H_V2_LENGTH         72  /* a version 2 header ends here */
#define QCOW2_H_INCOMPAT          72  /* u64 incompatible features (v3) */
#define QCOW2_H_COMPAT            80  /* u64 compatible features (v3) */
#define QCOW2_H_AUTOCLEAR         88  /* u64 autoclear features (v3) */
#define QCOW2_H_REFCOUNT_ORDER    96  /* u32 refcount width = 1 << order bits (v3) */
#define QCOW2_H_HEADER_LENGTH     100 /* u32 >= 104, multiple of 8 (v3) */
#define QCOW2_H_COMPRESSION_TYPE  104 /* u8 0 zlib, 1 zstd (header_length > 104) */
#define QCOW2_H_V3_MIN_LENGTH     104
#define QCOW2_H_V3_LENGTH         112 /* what qemu >= 5.1 and we write */

/* Incompatible feature bits (v3). */
#define QCOW2_INCOMPAT_DIRTY       (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT     (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE   (1ull << 2) /* external data file: unsupported */
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3) /* compression_type is not zlib */
#define QCOW2_INCOMPAT_EXTL2       (1ull << 4) /* extended L2 entries: unsupported */
#define QCOW2_INCOMPAT_KNOWN       0x1full

#define QCOW2_COMPRESSION_ZLIB 0 /* raw deflate, window 4 KiB (windowBits -12) */
#define QCOW2_COMPRESSION_ZSTD 1 /* one zstd frame per cluster */

/* Header extensions: u32 type, u32 length, data padded to 8 bytes. */
#define QCOW2_EXT_END            0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xE2792ACAu
#define QCOW2_EXT_FEATURE_TABLE  0x6803F857u
#define QCOW2_EXT_DATA_FILE      0x44415441u

#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_BACKING_NAME 1023

/* L1 entry: bits 9..55 L2 table offset, bit 63 COPIED. */
#define QCOW2_OFFSET_MASK  0x00fffffffffffe00ull
#define QCOW2_OFLAG_COPIED (1ull << 63)
#define QCOW2_L1_RESERVED  0x7f000000000001ffull
/* Standard L2 entry: bit 0 zero flag, bits 9..55 host offset, bit 63 COPIED. */
#define QCOW2_OFLAG_ZERO       (1ull << 0)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_L2_RESERVED      0x3f000000000001feull
/* Bits 1..8: below the cluster offset, so an unaligned offset when set. */
#define QCOW2_OFFSET_MASK_LOW 0x00000000000001feull
/*
 * Compressed L2 entry (bit 62 set): with x = 62 - (cluster_bits - 8), bits
 * 0..x-1 hold the host byte offset and bits x..61 the number of 512-byte
 * sectors after the first one the compressed data touches.
 */
#define QCOW2_COMPRESSED_SECTOR 512u

/* Refcount table entry: bits 9..63 refcount block offset. */
#define QCOW2_REFT_OFFSET_MASK 0xfffffffffffffe00ull

#endif
