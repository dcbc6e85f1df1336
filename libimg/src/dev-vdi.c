/*
 * dev-vdi.c -- VirtualBox VDI images, dynamic (dev-vdisk.h for the engine).
 *
 * Spec: VirtualBox's VDICore.h (header version 1.1), as qemu's vdi driver
 * reads it: a 64-byte text, signature 0xbeda107f, version 0x00010001, a
 * 400-byte header (type 1 = dynamic, offsets of the block map and of the
 * data, 512-byte sectors, the disk size, 1 MiB blocks, counts and four
 * UUIDs), then the block map: one little-endian u32 per virtual block, the
 * index of its host block from the data offset, 0xFFFFFFFF for none.
 *
 * Our layout: header at 0, block map at 512, data from the next 1 MiB
 * boundary (as VirtualBox aligns it), blocks in first-write order (planned:
 * in virtual order, dev-vdisk.h).
 */
#include <stdlib.h>

#include "dev-vdisk.h"

#define VDI_SIGNATURE   0xbeda107fu
#define VDI_VERSION     0x00010001u
#define VDI_HEADER_SIZE 400u
#define VDI_BMAP_OFF    512u
#define VDI_BLOCK       (1u << 20)
#define VDI_UNALLOCATED 0xffffffffu
#define VDI_ZERO        0xfffffffeu
#define VDI_MAX_SIZE    (512ull << 40)

static int vdi_layout(struct vdisk *v)
{
	if (v->vsize > VDI_MAX_SIZE)
		return img_set_error(v->ctx, -EFBIG, "%s: VDI holds at most 512 TiB", v->path);
	v->bs = VDI_BLOCK;
	v->data_start = IMG_ALIGN_UP(
	    VDI_BMAP_OFF + IMG_ALIGN_UP(IMG_DIV_ROUND_UP(v->vsize, v->bs) * 4, 512), VDI_BLOCK);
	v->stride = v->bs;
	v->data_in_slot = 0;
	v->can_plan = true;
	v->end = v->data_start;
	return 0;
}

/* VirtualBox keeps UUIDs in the little-endian GUID layout. */
static void guid(const struct vdisk *v, const char *role, uint8_t *out)
{
	uint8_t u[16];

	img_repro_uuid(v->ctx, role, u);
	out[0] = u[3], out[1] = u[2], out[2] = u[1], out[3] = u[0];
	out[4] = u[5], out[5] = u[4], out[6] = u[7], out[7] = u[6];
	memcpy(out + 8, u + 8, 8);
}

/* Header and block map, in file order. */
static int vdi_head(struct vdisk *v)
{
	static const char text[] = "<<< libimg VDI Disk Image >>>\n";
	uint64_t maplen = v->data_start - VDI_BMAP_OFF;
	uint8_t h[512], *map;
	int e;

	memset(h, 0, sizeof(h));
	memcpy(h, text, sizeof(text) - 1);
	img_put_le32(h + 0x40, VDI_SIGNATURE);
	img_put_le32(h + 0x44, VDI_VERSION);
	img_put_le32(h + 0x48, VDI_HEADER_SIZE);
	img_put_le32(h + 0x4c, 1); /* dynamic */
	img_put_le32(h + 0x154, VDI_BMAP_OFF);
	img_put_le32(h + 0x158, (uint32_t)v->data_start);
	img_put_le32(h + 0x168, 512);
	img_put_le64(h + 0x170, v->vsize);
	img_put_le32(h + 0x178, (uint32_t)v->bs);
	img_put_le32(h + 0x180, (uint32_t)v->nblocks);
	img_put_le32(h + 0x184, (uint32_t)v->nalloc);
	guid(v, "vdi-image", h + 0x188);
	guid(v, "vdi-modification", h + 0x198);

	/* Only the map's own entries; the padding to the data is zero. */
	map = calloc(1, maplen);
	if (!map)
		return img_set_error(v->ctx, -ENOMEM, "out of memory");
	for (uint64_t b = 0; b < v->nblocks; b++)
		img_put_le32(map + 4 * b, v->map[b]
		                              ? (uint32_t)((v->map[b] - v->data_start) / v->bs)
		                              : VDI_UNALLOCATED);
	e = vdisk_pwrite(v, h, sizeof(h), 0);
	if (e == 0)
		e = vdisk_pwrite(v, map, (size_t)maplen, VDI_BMAP_OFF);
	free(map);
	return e;
}

static int vdi_tail(struct vdisk *v)
{
	v->end = v->data_start + v->nalloc * v->bs;
	return 0;
}

static int bad(struct vdisk *v, const char *why)
{
	return img_set_error(v->ctx, -EINVAL, "%s: not a valid VDI image: %s", v->path, why);
}

static int vdi_open(struct vdisk *v)
{
	uint8_t h[512], *map;
	uint64_t bmap, data;
	uint32_t type, nb;
	int e;

	if ((e = vdisk_pread(v, h, sizeof(h), 0)) < 0)
		return e;
	if (img_get_le32(h + 0x40) != VDI_SIGNATURE || img_get_le32(h + 0x44) != VDI_VERSION)
		return bad(v, "not version 1.1");
	type = img_get_le32(h + 0x4c);
	if (type != 1 && type != 2)
		return bad(v, "neither dynamic nor fixed (differencing images are not read)");
	if (img_get_le32(h + 0x48) < VDI_HEADER_SIZE || img_get_le32(h + 0x168) != 512)
		return bad(v, "header size or sector size");
	if (img_get_le32(h + 0x17c) != 0)
		return bad(v, "extra block data is not supported");
	v->vsize = img_get_le64(h + 0x170);
	v->bs = img_get_le32(h + 0x178);
	nb = img_get_le32(h + 0x180);
	bmap = img_get_le32(h + 0x154);
	data = img_get_le32(h + 0x158);
	if (!v->vsize || v->vsize % 512 || v->vsize > VDI_MAX_SIZE)
		return bad(v, "disk size");
	if (v->bs < 512 || v->bs > (256u << 20) || (v->bs & (v->bs - 1)))
		return bad(v, "block size not a power of two from 512 to 256 MiB");
	v->nblocks = IMG_DIV_ROUND_UP(v->vsize, v->bs);
	if (nb < v->nblocks)
		return bad(v, "fewer blocks than the disk size needs");
	if (bmap < 512 || bmap > v->file_size || v->nblocks * 4 > v->file_size - bmap ||
	    data < bmap + v->nblocks * 4)
		return bad(v, "block map outside the file");
	map = malloc(v->nblocks * 4);
	v->map = calloc(v->nblocks, sizeof(*v->map));
	if (!map || !v->map) {
		free(map);
		return img_set_error(v->ctx, -ENOMEM, "out of memory");
	}
	e = vdisk_pread(v, map, v->nblocks * 4, bmap);
	for (uint64_t b = 0; b < v->nblocks && e == 0; b++) {
		uint32_t i = img_get_le32(map + 4 * b);
		uint64_t host = data + (uint64_t)i * v->bs;

		if (i == VDI_UNALLOCATED || i == VDI_ZERO)
			continue;
		if (i >= nb || host + v->bs > v->file_size)
			e = bad(v, "a block map entry points past the end of the file");
		v->map[b] = host;
	}
	free(map);
	return e;
}

const struct vdisk_format vdisk_vdi = {
	.layout = vdi_layout,
	.head = vdi_head,
	.tail = vdi_tail,
	.open = vdi_open,
};
