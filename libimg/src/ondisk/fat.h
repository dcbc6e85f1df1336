/*
 * ondisk/fat.h -- FAT32 on-disk structures (offsets in bytes, little endian).
 *
 * Sources: Microsoft FAT specification (fatgen103) for BPB, FSInfo and
 * directory entries; formats.md section 3 for what mkfs.fat, fsck.fat and
 * EDK2 expect. Accessed with img_put_le16/32 on byte buffers, never through
 * packed structs.
 */
#ifndef IMG_ONDISK_FAT_H
#define IMG_ONDISK_FAT_H

#define FAT_SECTOR 512u

/* Boot sector / BPB (sector 0; backup at FAT_BACKUP_BOOT). fatgen103 "Boot Sector and BPB". */
#define FAT_BS_JMP         0x00  /* 3: EB 58 90 */
#define FAT_BS_OEM         0x03  /* 8: OEM name, informational */
#define FAT_BPB_BYTSPERSEC 0x0B  /* 2: 512 */
#define FAT_BPB_SECPERCLUS 0x0D  /* 1: power of two, 1..128 */
#define FAT_BPB_RSVDSECCNT 0x0E  /* 2: reserved sectors before the first FAT */
#define FAT_BPB_NUMFATS    0x10  /* 1: 2 */
#define FAT_BPB_ROOTENTCNT 0x11  /* 2: 0 on FAT32 */
#define FAT_BPB_TOTSEC16   0x13  /* 2: 0 on FAT32 */
#define FAT_BPB_MEDIA      0x15  /* 1: 0xF8 */
#define FAT_BPB_FATSZ16    0x16  /* 2: 0 = FAT32 (what EDK2 and Linux test) */
#define FAT_BPB_SECPERTRK  0x18  /* 2: geometry, informational */
#define FAT_BPB_NUMHEADS   0x1A  /* 2: geometry, informational */
#define FAT_BPB_HIDDSEC    0x1C  /* 4: sectors before the volume */
#define FAT_BPB_TOTSEC32   0x20  /* 4: total sectors */
#define FAT_BPB_FATSZ32    0x24  /* 4: sectors per FAT */
#define FAT_BPB_EXTFLAGS   0x28  /* 2: 0 = FATs mirrored (bit 7 clear: EDK2 needs it) */
#define FAT_BPB_FSVER      0x2A  /* 2: 0 (EDK2 refuses others) */
#define FAT_BPB_ROOTCLUS   0x2C  /* 4: first cluster of the root directory */
#define FAT_BPB_FSINFO     0x30  /* 2: FSInfo sector (1) */
#define FAT_BPB_BKBOOTSEC  0x32  /* 2: backup boot sector (6) */
#define FAT_BS_DRVNUM      0x40  /* 1: 0x80 */
#define FAT_BS_BOOTSIG     0x42  /* 1: 0x29 = the next three fields are valid */
#define FAT_BS_VOLID       0x43  /* 4: volume serial number */
#define FAT_BS_VOLLAB      0x47  /* 11: label, space padded */
#define FAT_BS_FILSYSTYPE  0x52  /* 8: "FAT32   ", informational */
#define FAT_BS_BOOTCODE    0x5A  /* 420: boot code */
#define FAT_BS_SIGNATURE   0x1FE /* 2: 55 AA */

#define FAT_FSINFO_SECTOR 1u
#define FAT_BACKUP_BOOT   6u /* FSInfo backup follows at 7 */
#define FAT_RESERVED_MIN  32u

/* FSInfo (sector 1; backup at 7). fatgen103 "FAT32 FSInfo Sector Structure". */
#define FAT_FSI_LEADSIG    0x000 /* 4: 0x41615252 */
#define FAT_FSI_STRUCSIG   0x1E4 /* 4: 0x61417272 */
#define FAT_FSI_FREE_COUNT 0x1E8 /* 4: free clusters */
#define FAT_FSI_NXT_FREE   0x1EC /* 4: hint: first free cluster */
#define FAT_FSI_TRAILSIG   0x1FC /* 4: 0xAA550000 */
#define FAT_FSI_LEADSIG_V  0x41615252u
#define FAT_FSI_STRUCSIG_V 0x61417272u
#define FAT_FSI_TRAILSIG_V 0xAA550000u

/* FAT entries (28 bits used). fatgen103 "FAT Data Structure". */
#define FAT_ENTRY_MASK    0x0FFFFFFFu
#define FAT_EOC           0x0FFFFFF8u
#define FAT_ENTRY0        0x0FFFFFF8u /* 0x0FFFFF00 | media */
#define FAT_ENTRY1        0x0FFFFFFFu /* clean shutdown, no I/O error */
#define FAT_MIN_CLUSTERS  65525u      /* fewer is FAT16 to EDK2, which then refuses FATSz16 = 0 */
#define FAT_MAX_CLUSTERS  0x0FFFFFF5u /* 268435445: the highest valid cluster is 0x0FFFFFF6 */
#define FAT_FIRST_CLUSTER 2u

/* Directory entries (32 bytes). fatgen103 "FAT Directory Structure". */
#define FAT_DIRENT          32u
#define FAT_DE_NAME         0x00 /* 11: 8.3 name, space padded */
#define FAT_DE_ATTR         0x0B /* 1 */
#define FAT_DE_NTRES        0x0C /* 1: case flags (unused here) */
#define FAT_DE_CRTTIMETENTH 0x0D /* 1 */
#define FAT_DE_CRTTIME      0x0E /* 2 */
#define FAT_DE_CRTDATE      0x10 /* 2 */
#define FAT_DE_LSTACCDATE   0x12 /* 2 */
#define FAT_DE_FSTCLUSHI    0x14 /* 2 */
#define FAT_DE_WRTTIME      0x16 /* 2 */
#define FAT_DE_WRTDATE      0x18 /* 2 */
#define FAT_DE_FSTCLUSLO    0x1A /* 2 */
#define FAT_DE_FILESIZE     0x1C /* 4 */

#define FAT_ATTR_READ_ONLY 0x01
#define FAT_ATTR_HIDDEN    0x02
#define FAT_ATTR_SYSTEM    0x04
#define FAT_ATTR_VOLUME_ID 0x08
#define FAT_ATTR_DIRECTORY 0x10
#define FAT_ATTR_ARCHIVE   0x20
#define FAT_ATTR_LFN       0x0F

/* Long-name slots (32 bytes), stored last part first before the short entry. */
#define FAT_LFN_ORD         0x00 /* 1: 1..20, 0x40 on the last part */
#define FAT_LFN_NAME1       0x01 /* 10: chars 1-5 (UCS-2 LE) */
#define FAT_LFN_ATTR        0x0B /* 1: 0x0F */
#define FAT_LFN_TYPE        0x0C /* 1: 0 */
#define FAT_LFN_CHKSUM      0x0D /* 1: checksum of the short name */
#define FAT_LFN_NAME2       0x0E /* 12: chars 6-11 */
#define FAT_LFN_CLUSTER     0x1A /* 2: 0 */
#define FAT_LFN_NAME3       0x1C /* 4: chars 12-13 */
#define FAT_LFN_LAST        0x40
#define FAT_LFN_CHARS       13u
#define FAT_LFN_MAX         255u   /* UTF-16 units in a long name */
#define FAT_DIR_MAX_ENTRIES 65536u /* 2 MiB: the most a directory may hold */

#endif
