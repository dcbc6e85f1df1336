/*
 * dev-vdisk.h -- what the VHD, VDI and VMDK files share (dev-vdisk.c is
 * the block engine; dev-vpc.c, dev-vdi.c, dev-vmdk.c the on-disk formats).
 * Internal to libimg.
 *
 * dev-vdisk.c is the front door (create, open, probe); it picks the format
 * and hands the engine its table of functions, so the engine never names
 * a format and the formats call only the engine.
 *
 * All five layouts are "virtual block -> host offset": fixed VHD maps every
 * block to itself; the others give a block a host slot after metadata
 * whose size the virtual size alone decides. Writes go to the slot at once
 * (file data through dio.c).
 *
 * Unplanned, a block gets its slot on its first write, in write order, and
 * the format's tables are encoded from the map at finish, behind the data:
 * the output is read back for its sha256. Planned (img_dev_plan; dynamic
 * VHD, VDI, monolithicSparse VMDK), every block a planned range touches
 * gets its slot at plan time, in virtual order, and plan_done writes the
 * format's head (tables, maps) in front of the first slot: written in plan
 * order, the file goes out front to back, the slot heads (VHD's bitmaps)
 * each just before its slot's first write, the tail (VHD's footer) at
 * finish, and dio's hash is the file's. Non-zero data for a block outside
 * the plan is refused (its slot would be missing from the tables already
 * written). Fixed VHD needs no plan (it is in virtual order anyway).
 *
 * Streamed (a format with stream_* ops: streamOptimized VMDK, whose
 * grains lie in virtual order behind a head that never changes): while
 * the writes come in order, the block being written is kept in memory and
 * handed to the format once the writes move past it, so the file goes out
 * front to back with no staging and dio's hash is the file's. The first
 * write behind it to a block with data (or behind a block passed by)
 * stages what was streamed back in slots and the image goes on unplanned:
 * the format lays the stream out from the slots at finish, the same bytes.
 */
#ifndef IMG_DEV_VDISK_H
#define IMG_DEV_VDISK_H

#include <img/vdisk.h>

#include <img/repro.h>

#include "dev-stream.h"
#include "private.h"

struct img_dio;

struct vdisk {
	struct img_ctx *ctx;
	int fd;
	char *path;
	struct img_dio *dio; /* direct writes of file data, or NULL */
	enum img_vdisk_format fmt;
	const struct vdisk_format *format;
	uint64_t vsize;
	uint64_t bs;           /* bytes per block; 0: identity mapping (fixed VHD) */
	uint64_t nblocks;      /* blocks covering vsize */
	uint64_t *map;         /* block -> host offset of its data; 0: none */
	uint64_t data_start;   /* host offset of the first slot */
	uint64_t stride;       /* host bytes per slot */
	uint64_t data_in_slot; /* where a slot's data starts in it */
	uint64_t nalloc;       /* slots handed out */
	uint64_t end;          /* host bytes the file has now */
	/* Bytes right before a slot's data (VHD's sector bitmap), or none. */
	uint8_t slot_head[512];
	size_t slot_head_len;
	bool can_plan;     /* layout: the tables can go in front (not a stream) */
	bool planned;      /* plan_done: every slot assigned, the head written */
	uint64_t heads;    /* planned: slots 0..heads-1 have their head written */
	char *extent_name; /* VMDK descriptor */
	/* Streamed (bst.on): map[b] is where the format put block b (0: not
	 * there); @bst keeps the block being written in @sbuf (dev-stream.h). */
	struct block_stream bst;
	uint8_t *sbuf, *tmp;
	void *stream; /* the format's stream state */
	/* Read side: VMDK streamOptimized grains are deflated behind markers. */
	int compressed;
	uint8_t *grain;       /* the last grain inflated */
	uint64_t grain_block; /* which one; UINT64_MAX: none */
	uint64_t file_size;
};

/* A format's half (dev-vpc.c, dev-vdi.c, dev-vmdk.c). */
struct vdisk_format {
	/* Lay out the metadata for writing (set bs, data_start, stride, end,
	 * slot_head, can_plan). */
	int (*layout)(struct vdisk *v);
	/* Write the metadata in front of the first slot from v->map, in file
	 * order (at plan_done when planned, else at finish). */
	int (*head)(struct vdisk *v);
	/* Write what follows the last slot; set v->end to the file size. */
	int (*tail)(struct vdisk *v);
	/* Unplanned finish, or NULL for vdisk_write_tables(). */
	int (*finish)(struct vdisk *v);
	/* Parse a header read-only and fill v (vsize, bs, map, ...). */
	int (*open)(struct vdisk *v);
	/* Compressed images: inflate block @b (at host offset @host) into v->grain. */
	int (*read_grain)(struct vdisk *v, uint64_t b, uint64_t host);
	/* Streaming, or all NULL: set up; write the head; add block @b (not
	 * all zeros, after every block before it; sets v->map[b]); write out
	 * what is buffered; finish (v->end set); free (also after errors). */
	int (*stream_start)(struct vdisk *v);
	int (*stream_head)(struct vdisk *v);
	int (*stream_grain)(struct vdisk *v, uint64_t b, const uint8_t *block);
	int (*stream_flush)(struct vdisk *v);
	int (*stream_end)(struct vdisk *v);
	void (*stream_free)(struct vdisk *v);
};
extern const struct vdisk_format vdisk_vpc, vdisk_vdi, vdisk_vmdk;

/* The engine (dev-vdisk-engine.c). */
/* Wrap @v (taken over, also on failure) in a device. */
int vdisk_dev_new(struct vdisk *v, unsigned flags, struct img_dev **out);
/* Free what @v holds (not @v). */
void vdisk_release(struct vdisk *v);
/* "<what> <path>: <strerror>", set on the context; returns @err. */
int vdisk_io_err(struct vdisk *v, int err, const char *what);
/* Writing metadata: past direct writes, message set on failure. */
int vdisk_pwrite(struct vdisk *v, const void *buf, size_t len, uint64_t off);
int vdisk_pread(struct vdisk *v, void *buf, size_t len, uint64_t off);
/* Unplanned finish: head, every slot's head, tail. */
int vdisk_write_tables(struct vdisk *v);
/* Start streaming if the format streams (creation, before any write). */
int vdisk_stream_start(struct vdisk *v);

#endif
