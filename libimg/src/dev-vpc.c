/*
 * dev-vpc.c -- VHD (Virtual PC / Hyper-V / Azure) images: fixed and
 * dynamic (dev-vdisk.h for the engine).
 *
 * Spec: Microsoft "Virtual Hard Disk Image Format Specification" 1.0: a
 * 512-byte big-endian footer ("conectix") ends every image; a dynamic one
 * also starts with a copy of it, then a 1024-byte dynamic header
 * ("cxsparse") and the Block Allocation Table: one big-endian sector number
 * per block, 0xFFFFFFFF for none. A block in the file is a sector bitmap
 * (one bit per 512-byte sector, set: the sector is in this block) and then
 * the block's data.
 *
 * Our layout: footer copy at 0, dynamic header at 512, BAT at 1536, 2 MiB
 * blocks from the next 4 KiB boundary; each block's host slot is 4 KiB of
 * which the last 512 bytes are its bitmap (all ones, as qemu writes them),
 * then the data, so data stays page-aligned for direct writes. Planned
 * (dev-vdisk.h), the blocks are in virtual order and the file goes out
 * front to back: head, each bitmap before its block, the footer.
 *
 * Geometry: the footer's CHS is the spec's maximum (65535/16/255) and the
 * current-size field holds the exact size. Readers that size a disk by CHS
 * (Virtual PC, qemu for unknown creators) take that maximum as "use the
 * current size" (qemu does so since 2.6); Hyper-V and Azure read the
 * current size anyway. Azure wants that size to be a multiple of 1 MiB:
 * the caller chooses the size.
 */
#include <stdlib.h>

#include "dev-vdisk.h"

#define VHD_FOOTER       512
#define VHD_DYN_HDR      1024
#define VHD_BAT_OFF      1536
#define VHD_BLOCK        (2u << 20)
#define VHD_SLOT_HDR     4096u                 /* padding + the 512-byte bitmap before the data */
#define VHD_BITMAP       512u                  /* 2 MiB / 512 bits */
#define VHD_MAX_SIZE     (0xff000000ull * 512) /* 2040 GiB, as qemu */
#define VHD_EPOCH_2000   946684800
#define VHD_TYPE_FIXED   2
#define VHD_TYPE_DYNAMIC 3

static uint32_t vhd_checksum(const uint8_t *p, size_t n)
{
	uint32_t s = 0;

	while (n--)
		s += *p++;
	return ~s;
}

static int vpc_layout(struct vdisk *v)
{
	if (v->vsize > VHD_MAX_SIZE)
		return img_set_error(v->ctx, -EFBIG, "%s: VHD holds at most 2040 GiB", v->path);
	if (v->fmt == IMG_VDISK_VPC_FIXED) {
		v->bs = 0;
		v->end = v->vsize;
		return 0;
	}
	v->bs = VHD_BLOCK;
	v->data_start = IMG_ALIGN_UP(
	    VHD_BAT_OFF + IMG_ALIGN_UP(IMG_DIV_ROUND_UP(v->vsize, v->bs) * 4, 512), 4096);
	v->stride = VHD_SLOT_HDR + v->bs;
	v->data_in_slot = VHD_SLOT_HDR;
	/* the bitmap: every sector is in the block */
	memset(v->slot_head, 0xff, VHD_BITMAP);
	v->slot_head_len = VHD_BITMAP;
	v->can_plan = true;
	v->end = v->data_start;
	return 0;
}

static void encode_footer(const struct vdisk *v, uint8_t *f)
{
	int64_t t = img_repro_epoch(v->ctx) - VHD_EPOCH_2000;

	memset(f, 0, VHD_FOOTER);
	memcpy(f, "conectix", 8);
	img_put_be32(f + 8, 2); /* features: "reserved", always set */
	img_put_be32(f + 12, 0x00010000);
	img_put_be64(f + 16, v->fmt == IMG_VDISK_VPC_FIXED ? UINT64_MAX : VHD_FOOTER);
	img_put_be32(f + 24, t < 0 ? 0 : t > UINT32_MAX ? UINT32_MAX : (uint32_t)t);
	memcpy(f + 28, "limg", 4);
	img_put_be32(f + 32, 0x00000001);
	memcpy(f + 36, "Wi2k", 4); /* the spec knows Windows and Macintosh only */
	img_put_be64(f + 40, v->vsize);
	img_put_be64(f + 48, v->vsize);
	img_put_be16(f + 56, 65535);
	f[58] = 16;
	f[59] = 255;
	img_put_be32(f + 60, v->fmt == IMG_VDISK_VPC_FIXED ? VHD_TYPE_FIXED : VHD_TYPE_DYNAMIC);
	img_repro_uuid(v->ctx, "vhd-disk", f + 68);
	img_put_be32(f + 64, vhd_checksum(f, VHD_FOOTER));
}

/* Dynamic: footer copy, dynamic header, BAT, in file order. */
static int vpc_head(struct vdisk *v)
{
	uint8_t foot[VHD_FOOTER], dyn[VHD_DYN_HDR];
	uint64_t batlen;
	uint8_t *bat;
	int e;

	if (v->fmt == IMG_VDISK_VPC_FIXED)
		return 0;
	encode_footer(v, foot);
	memset(dyn, 0, sizeof(dyn));
	memcpy(dyn, "cxsparse", 8);
	img_put_be64(dyn + 8, UINT64_MAX);
	img_put_be64(dyn + 16, VHD_BAT_OFF);
	img_put_be32(dyn + 24, 0x00010000);
	img_put_be32(dyn + 28, (uint32_t)v->nblocks);
	img_put_be32(dyn + 32, (uint32_t)v->bs);
	img_put_be32(dyn + 36, vhd_checksum(dyn, sizeof(dyn)));

	batlen = v->data_start - VHD_BAT_OFF;
	bat = malloc(batlen);
	if (!bat)
		return img_set_error(v->ctx, -ENOMEM, "out of memory");
	/* The BAT's padding up to the first slot stays 0xFF: no entries there. */
	memset(bat, 0xff, batlen);
	for (uint64_t b = 0; b < v->nblocks; b++)
		if (v->map[b])
			img_put_be32(bat + 4 * b, (uint32_t)((v->map[b] - v->slot_head_len) / 512));
	e = vdisk_pwrite(v, foot, sizeof(foot), 0);
	if (e == 0)
		e = vdisk_pwrite(v, dyn, sizeof(dyn), VHD_FOOTER);
	if (e == 0)
		e = vdisk_pwrite(v, bat, (size_t)batlen, VHD_BAT_OFF);
	free(bat);
	return e;
}

/* The footer after the data (fixed: after the disk itself). */
static int vpc_tail(struct vdisk *v)
{
	uint8_t foot[VHD_FOOTER];
	uint64_t tail =
	    v->fmt == IMG_VDISK_VPC_FIXED ? v->vsize : v->data_start + v->nalloc * v->stride;

	encode_footer(v, foot);
	v->end = tail + VHD_FOOTER;
	return vdisk_pwrite(v, foot, sizeof(foot), tail);
}

static int bad(struct vdisk *v, const char *why)
{
	return img_set_error(v->ctx, -EINVAL, "%s: not a valid VHD image: %s", v->path, why);
}

static int vpc_open(struct vdisk *v)
{
	uint8_t f[VHD_FOOTER], dyn[VHD_DYN_HDR];
	uint32_t sum, type, entries;
	uint64_t bat_off, bmp;
	uint8_t *bat;
	int e;

	if (v->file_size < VHD_FOOTER)
		return bad(v, "too short");
	if ((e = vdisk_pread(v, f, sizeof(f), v->file_size - VHD_FOOTER)) < 0)
		return e;
	if (memcmp(f, "conectix", 8) && v->fmt == IMG_VDISK_VPC_DYNAMIC &&
	    (e = vdisk_pread(v, f, sizeof(f), 0)) < 0)
		return e;
	if (memcmp(f, "conectix", 8))
		return bad(v, "no footer");
	sum = img_get_be32(f + 64);
	img_put_be32(f + 64, 0);
	if (vhd_checksum(f, sizeof(f)) != sum)
		return bad(v, "footer checksum mismatch");
	type = img_get_be32(f + 60);
	v->vsize = img_get_be64(f + 48);
	if (!v->vsize || v->vsize % 512 || v->vsize > VHD_MAX_SIZE)
		return bad(v, "current size not a multiple of 512 up to 2040 GiB");
	if (type == VHD_TYPE_FIXED) {
		v->fmt = IMG_VDISK_VPC_FIXED;
		if (v->file_size < v->vsize + VHD_FOOTER)
			return bad(v, "shorter than its size");
		return 0;
	}
	if (type != VHD_TYPE_DYNAMIC)
		return bad(v, "neither fixed nor dynamic (differencing disks are not read)");
	v->fmt = IMG_VDISK_VPC_DYNAMIC;
	if (v->file_size < VHD_FOOTER + VHD_DYN_HDR ||
	    img_get_be64(f + 16) > v->file_size - VHD_DYN_HDR)
		return bad(v, "dynamic header outside the file");
	if ((e = vdisk_pread(v, dyn, sizeof(dyn), img_get_be64(f + 16))) < 0)
		return e;
	if (memcmp(dyn, "cxsparse", 8))
		return bad(v, "no dynamic header");
	v->bs = img_get_be32(dyn + 32);
	entries = img_get_be32(dyn + 28);
	bat_off = img_get_be64(dyn + 16);
	if (v->bs < 512 || v->bs > (256u << 20) || (v->bs & (v->bs - 1)))
		return bad(v, "block size not a power of two from 512 to 256 MiB");
	v->nblocks = IMG_DIV_ROUND_UP(v->vsize, v->bs);
	if (entries < v->nblocks)
		return bad(v, "BAT smaller than the disk");
	if (bat_off > v->file_size || v->nblocks * 4 > v->file_size - bat_off)
		return bad(v, "BAT outside the file");
	bmp = IMG_ALIGN_UP(v->bs / 512 / 8, 512);
	bat = malloc(v->nblocks * 4);
	v->map = calloc(v->nblocks, sizeof(*v->map));
	if (!bat || !v->map) {
		free(bat);
		return img_set_error(v->ctx, -ENOMEM, "out of memory");
	}
	e = vdisk_pread(v, bat, v->nblocks * 4, bat_off);
	for (uint64_t b = 0; b < v->nblocks && e == 0; b++) {
		uint32_t s = img_get_be32(bat + 4 * b);
		uint64_t host = (uint64_t)s * 512 + bmp;

		if (s == UINT32_MAX)
			continue;
		if (host + v->bs > v->file_size)
			e = bad(v, "a BAT entry points past the end of the file");
		v->map[b] = host;
	}
	free(bat);
	return e;
}

const struct vdisk_format vdisk_vpc = {
	.layout = vpc_layout,
	.head = vpc_head,
	.tail = vpc_tail,
	.open = vpc_open,
};
