/*
 * ondisk/erofs.h -- EROFS on-disk constants and field offsets (uncompressed subset).
 *
 * Spec: Linux Documentation/filesystems/erofs.rst and fs/erofs/erofs_fs.h.
 * Everything is little endian. Structures are written field by field with
 * the LE accessors of private.h, so only offsets live here.
 */
#ifndef IMG_ONDISK_EROFS_H
#define IMG_ONDISK_EROFS_H

#define EROFS_MAGIC     0xE0F5E1E2u
#define EROFS_SB_OFFSET 1024u /* bytes 0..1023 are not EROFS's (formats.md 1.1) */
#define EROFS_SB_SIZE   128u
#define EROFS_BLKSZBITS 12u
#define EROFS_BLKSZ     (1u << EROFS_BLKSZBITS)
#define EROFS_SLOT      32u /* nid = byte offset / 32 from meta_blkaddr (1.4) */
#define EROFS_NULL_ADDR 0xFFFFFFFFu

/* Superblock fields, offsets from EROFS_SB_OFFSET (formats.md 1.2). */
#define EROFS_SB_MAGIC            0x00 /* u32 */
#define EROFS_SB_CHECKSUM         0x04 /* u32 CRC32C of sb..end of block 0 (1.3) */
#define EROFS_SB_FEATURE_COMPAT   0x08 /* u32 */
#define EROFS_SB_BLKSZBITS        0x0C /* u8 */
#define EROFS_SB_EXTSLOTS         0x0D /* u8, 0 */
#define EROFS_SB_ROOT_NID         0x0E /* u16 */
#define EROFS_SB_INOS             0x10 /* u64 distinct inodes */
#define EROFS_SB_BUILD_TIME       0x18 /* u64 time of compact inodes */
#define EROFS_SB_BUILD_TIME_NSEC  0x20 /* u32 */
#define EROFS_SB_BLOCKS           0x24 /* u32 image blocks */
#define EROFS_SB_META_BLKADDR     0x28 /* u32 */
#define EROFS_SB_XATTR_BLKADDR    0x2C /* u32, 0: no shared xattrs */
#define EROFS_SB_UUID             0x30 /* 16 bytes, RFC 4122 byte order */
#define EROFS_SB_VOLUME_NAME      0x40 /* 16 bytes, NUL padded */
#define EROFS_SB_FEATURE_INCOMPAT 0x50 /* u32, 0 for uncompressed images */
#define EROFS_SB_U1               0x54 /* u16 lz4_max_distance (no COMPR_CFGS); 0 = 64 KiB */
#define EROFS_LABEL_MAX           16u

#define EROFS_FEATURE_COMPAT_SB_CHKSUM 0x1u
#define EROFS_FEATURE_COMPAT_MTIME     0x2u
/* Compressed pclusters right-aligned in their block, zeros first (1.13). */
#define EROFS_FEATURE_INCOMPAT_ZERO_PADDING 0x1u

/* i_format (1.5): bit 0 version, bits 1..3 data layout. */
#define EROFS_INODE_COMPACT             0u
#define EROFS_INODE_EXTENDED            1u
#define EROFS_INODE_FLAT_PLAIN          0u
#define EROFS_INODE_FLAT_INLINE         2u
#define EROFS_INODE_COMPRESSED_FULL     1u /* 8-byte lcluster indexes (1.13) */
#define EROFS_INODE_COMPRESSED_COMPACT  3u /* 4-byte lcluster indexes in packs of 2 */
#define EROFS_I_FORMAT(version, layout) ((uint16_t)((version) | (layout) << 1))
#define EROFS_COMPACT_SIZE              32u
#define EROFS_EXTENDED_SIZE             64u

/* Compact inode (32 bytes). */
#define EROFS_IC_FORMAT       0  /* u16 */
#define EROFS_IC_XATTR_ICOUNT 2  /* u16 */
#define EROFS_IC_MODE         4  /* u16 */
#define EROFS_IC_NLINK        6  /* u16 */
#define EROFS_IC_SIZE         8  /* u32 */
#define EROFS_IC_U            16 /* u32 startblk / rdev */
#define EROFS_IC_INO          20 /* u32 */
#define EROFS_IC_UID          24 /* u16 */
#define EROFS_IC_GID          26 /* u16 */

/* Extended inode (64 bytes). */
#define EROFS_IE_FORMAT       0
#define EROFS_IE_XATTR_ICOUNT 2
#define EROFS_IE_MODE         4  /* u16 */
#define EROFS_IE_SIZE         8  /* u64 */
#define EROFS_IE_U            16 /* u32 */
#define EROFS_IE_INO          20 /* u32 */
#define EROFS_IE_UID          24 /* u32 */
#define EROFS_IE_GID          28 /* u32 */
#define EROFS_IE_MTIME        32 /* u64 */
#define EROFS_IE_MTIME_NSEC   40 /* u32 */
#define EROFS_IE_NLINK        44 /* u32 */

/* Directory entries (1.7): 12 bytes each, names after the array. */
#define EROFS_DIRENT_SIZE 12u
#define EROFS_DE_NID      0  /* u64 */
#define EROFS_DE_NAMEOFF  8  /* u16, from the start of the block */
#define EROFS_DE_TYPE     10 /* u8 */
#define EROFS_FT_UNKNOWN  0
#define EROFS_FT_REG      1
#define EROFS_FT_DIR      2
#define EROFS_FT_CHR      3
#define EROFS_FT_BLK      4
#define EROFS_FT_FIFO     5
#define EROFS_FT_SOCK     6
#define EROFS_FT_SYMLINK  7
#define EROFS_NAME_MAX    255u

/*
 * Compressed files (formats.md 1.13; kernel fs/erofs/zmap.c): after the
 * inode, at an 8-byte boundary, the map header, then the indexes.
 */
#define EROFS_Z_MAP_HEADER_SIZE 8u
#define EROFS_Z_MH_ADVISE       4 /* u16, 0: 1-block pclusters, 4-byte compact indexes */
#define EROFS_Z_MH_ALGORITHMS   6 /* u8: bits 0..3 HEAD1, 4..7 HEAD2; 0 = LZ4 */
#define EROFS_Z_MH_CLUSTERBITS  7 /* u8: bits 0..2 lclusterbits - 12 */

/*
 * Compact indexes (layout 3, no COMPACTED_2B advise: 4 bytes each), right
 * after the map header: packs of 8 bytes, each two 16-bit entries (bits
 * 0..11 lo, 12..13 type) and a u32 base; a HEAD's block is base + 1 + the
 * heads before it in the pack. lo is clusterofs for a HEAD/PLAIN, delta[0]
 * for a NONHEAD, except the last of a pack, which keeps delta[1] (zmap.c).
 */
#define EROFS_Z_COMPACT_START 8u
#define EROFS_Z_PACK_SIZE     8u
#define EROFS_Z_PACK_BASE     4  /* u32 */
#define EROFS_Z_PLAIN         0u /* the pcluster holds the bytes as they are */
#define EROFS_Z_HEAD1         1u /* the pcluster holds LZ4 */
#define EROFS_Z_NONHEAD       2u

#endif
