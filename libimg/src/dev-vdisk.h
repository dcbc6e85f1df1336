/*
 * dev-vdisk.h -- what the VHD, VDI and VMDK files share (dev-vdisk.c is
 * the block engine; dev-vpc.c, dev-vdi.c, dev-vmdk.c the on-disk formats).
 * Internal to libimg.
 *
 * All five layouts are "virtual block -> host offset": fixed VHD maps every
 * block to itself; the others allocate a host slot on a block's first
 * write, in write order, after metadata whose size the virtual size alone
 * decides. Writes go to the slot at once (file data through dio.c); the
 * format's tables are encoded from the map at finish.
 */
#ifndef IMG_DEV_VDISK_H
#define IMG_DEV_VDISK_H

#include <img/vdisk.h>

#include <img/repro.h>

#include "private.h"

struct img_dio;

struct vdisk {
	struct img_ctx *ctx;
	int fd;
	char *path;
	struct img_dio *dio; /* direct writes of file data, or NULL */
	enum img_vdisk_format fmt;
	uint64_t vsize;
	uint64_t bs;           /* bytes per block; 0: identity mapping (fixed VHD) */
	uint64_t nblocks;      /* blocks covering vsize */
	uint64_t *map;         /* block -> host offset of its data; 0: none */
	uint64_t data_start;   /* host offset of the first slot */
	uint64_t stride;       /* host bytes per slot */
	uint64_t data_in_slot; /* where a slot's data starts in it */
	uint64_t nalloc;       /* slots handed out */
	uint64_t end;          /* host bytes the file has now */
	char *extent_name;     /* VMDK descriptor */
	/* Read side: VMDK streamOptimized grains are deflated behind markers. */
	int compressed;
	uint8_t *grain;       /* the last grain inflated */
	uint64_t grain_block; /* which one; UINT64_MAX: none */
	uint64_t file_size;
};

/* Per format: lay out the metadata (set bs, data_start, stride, ...). */
int vpc_layout(struct vdisk *v);
int vdi_layout(struct vdisk *v);
int vmdk_layout(struct vdisk *v);
/* Per format: write the final metadata from v->map; set v->end to the file size. */
int vpc_finish(struct vdisk *v);
int vdi_finish(struct vdisk *v);
int vmdk_finish(struct vdisk *v);
/* Per format: parse a header read-only, fill v (vsize, bs, map, ...). */
int vpc_open(struct vdisk *v);
int vdi_open(struct vdisk *v);
int vmdk_open(struct vdisk *v);
/* VMDK stream: inflate grain @b (at host offset @host) into v->grain. */
int vmdk_read_grain(struct vdisk *v, uint64_t b, uint64_t host);

/* Writing metadata: past direct writes, message set on failure. */
int vdisk_pwrite(struct vdisk *v, const void *buf, size_t len, uint64_t off);
int vdisk_pread(struct vdisk *v, void *buf, size_t len, uint64_t off);

#endif
