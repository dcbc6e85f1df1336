/*
 * dev-vmdk.c -- VMDK images: monolithicSparse and streamOptimized
 * (dev-vdisk.h for the engine).
 *
 * Spec: VMware "Virtual Disk Format 5.0" (hosted sparse extents, stream-
 * optimized compressed extents). A sparse extent starts with a 512-byte
 * little-endian header ("KDMV"), then an embedded text descriptor, a grain
 * directory (GD: one u32 sector offset per grain table) and the grain
 * tables (GT: 512 u32 sector offsets of 64 KiB grains, 0 for none).
 *
 * monolithicSparse, our layout: header, descriptor (sectors 1-20), the
 * redundant GD and its GTs, the GD and its GTs (every GT preallocated),
 * grains from the next 64 KiB boundary in first-write order (planned: in
 * virtual order, the tables written at plan_done, dev-vdisk.h).
 *
 * streamOptimized must be readable front to back: the header says "GD at
 * end", then each grain deflated (zlib stream) behind a 12-byte marker
 * (its LBA and length), padded to a sector; after a GT's grains its GT
 * behind a GT marker; then the GD behind its marker, a footer (the header
 * again with the GD's offset) behind its marker, and an end-of-stream
 * marker. The head never changes, so while the writes come in order the
 * engine hands each grain over once the writes pass it (dev-vdisk.h,
 * streamed): it is deflated on worker threads (dev-zring.h) and laid out in
 * order, and the file goes out front to back, hashed on the way. Out of
 * order, grains are staged in 64 KiB slots in the output file itself past
 * the largest stream they can make, and finish lays the stream out from
 * the start of the file with the same code (never reaching the staging
 * area) and cuts the staging off: the same bytes, read back for the
 * sha256. A stream ignores a plan.
 */
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

#include "dev-vdisk.h"
#include "dev-zring.h"

#define VMDK_MAGIC       0x564d444bu /* "KDMV" */
#define VMDK_GRAIN       (64u << 10)
#define VMDK_GRAIN_SECT  (VMDK_GRAIN / 512)
#define VMDK_GTES        512u
#define VMDK_DESC_SECT   20u
#define VMDK_GD_AT_END   UINT64_MAX
#define VMDK_MAX_SIZE    (2ull << 40) /* u32 sector offsets */
#define VMDK_F_NL        (1u << 0)
#define VMDK_F_RGD       (1u << 1)
#define VMDK_F_ZERO_GTE  (1u << 2)
#define VMDK_F_COMPRESS  (1u << 16)
#define VMDK_F_MARKERS   (1u << 17)
#define VMDK_MARKER_EOS  0
#define VMDK_MARKER_GT   1
#define VMDK_MARKER_GD   2
#define VMDK_MARKER_FOOT 3

#define SECT(x) IMG_DIV_ROUND_UP(x, 512)

static uint64_t ngts(const struct vdisk *v)
{
	return IMG_DIV_ROUND_UP(IMG_DIV_ROUND_UP(v->vsize, VMDK_GRAIN), VMDK_GTES);
}

/* The stream's worst case for one grain: marker, zlib's bound, padding. */
static uint64_t stream_grain_max(void)
{
	return IMG_ALIGN_UP(12 + compressBound(VMDK_GRAIN), 512);
}

static int vmdk_layout(struct vdisk *v)
{
	uint64_t gd_sect, n;

	if (v->vsize > VMDK_MAX_SIZE)
		return img_set_error(v->ctx, -EFBIG, "%s: VMDK holds at most 2 TiB", v->path);
	for (const char *p = v->extent_name; *p; p++)
		if (*p == '"' || (unsigned char)*p < 0x20)
			return img_set_error(v->ctx, -EINVAL,
			                     "%s: the VMDK descriptor cannot name a file with '\"' "
			                     "or control characters",
			                     v->path);
	v->bs = VMDK_GRAIN;
	v->stride = VMDK_GRAIN;
	v->can_plan = v->fmt == IMG_VDISK_VMDK_SPARSE;
	v->data_in_slot = 0;
	n = ngts(v);
	gd_sect = SECT(n * 4);
	if (v->fmt == IMG_VDISK_VMDK_SPARSE) {
		/* header, descriptor, then (GD + GTs) twice */
		uint64_t end = 1 + VMDK_DESC_SECT + 2 * (gd_sect + n * VMDK_GTES * 4 / 512);

		v->data_start = IMG_ALIGN_UP(end, VMDK_GRAIN_SECT) * 512;
	} else {
		v->data_start = IMG_ALIGN_UP(
		    VMDK_GRAIN + IMG_DIV_ROUND_UP(v->vsize, VMDK_GRAIN) * stream_grain_max() +
		        n * (512 + VMDK_GTES * 4) + 512 + gd_sect * 512 + 3 * 512,
		    1u << 20);
	}
	v->end = v->data_start;
	return 0;
}

static void encode_header(const struct vdisk *v, uint8_t *h, uint64_t rgd, uint64_t gd,
                          uint64_t overhead)
{
	int stream = v->fmt == IMG_VDISK_VMDK_STREAM;

	memset(h, 0, 512);
	img_put_le32(h, VMDK_MAGIC);
	img_put_le32(h + 4, stream ? 3 : 1);
	img_put_le32(h + 8, stream ? VMDK_F_NL | VMDK_F_COMPRESS | VMDK_F_MARKERS
	                           : VMDK_F_NL | VMDK_F_RGD);
	img_put_le64(h + 12, v->vsize / 512);
	img_put_le64(h + 20, VMDK_GRAIN_SECT);
	img_put_le64(h + 28, 1);
	img_put_le64(h + 36, VMDK_DESC_SECT);
	img_put_le32(h + 44, VMDK_GTES);
	img_put_le64(h + 48, rgd);
	img_put_le64(h + 56, gd);
	img_put_le64(h + 64, overhead);
	h[73] = '\n';
	h[74] = ' ';
	h[75] = '\r';
	h[76] = '\n';
	img_put_le16(h + 77, stream ? 1 : 0); /* deflate */
}

static int write_descriptor(struct vdisk *v)
{
	uint8_t d[VMDK_DESC_SECT * 512];
	uint64_t cyl = v->vsize / 512 / (16 * 63);
	int n;

	memset(d, 0, sizeof(d));
	n = snprintf((char *)d, sizeof(d),
	             "# Disk DescriptorFile\n"
	             "version=1\n"
	             "CID=%08x\n"
	             "parentCID=ffffffff\n"
	             "createType=\"%s\"\n"
	             "\n"
	             "# Extent description\n"
	             "RW %llu SPARSE \"%s\"\n"
	             "\n"
	             "# The Disk Data Base\n"
	             "#DDB\n"
	             "\n"
	             "ddb.virtualHWVersion = \"4\"\n"
	             "ddb.geometry.cylinders = \"%llu\"\n"
	             "ddb.geometry.heads = \"16\"\n"
	             "ddb.geometry.sectors = \"63\"\n"
	             "ddb.adapterType = \"ide\"\n",
	             img_repro_u32(v->ctx, "vmdk-cid"),
	             v->fmt == IMG_VDISK_VMDK_STREAM ? "streamOptimized" : "monolithicSparse",
	             (unsigned long long)(v->vsize / 512), v->extent_name,
	             (unsigned long long)(cyl > 16383 ? 16383
	                                  : cyl       ? cyl
	                                              : 1));
	if (n < 0 || (size_t)n >= sizeof(d))
		return img_set_error(v->ctx, -ENAMETOOLONG, "%s: the VMDK descriptor is too long",
		                     v->path);
	return vdisk_pwrite(v, d, sizeof(d), 512);
}

/* Header, descriptor, then both copies of GD + GTs: in file order. */
static int sparse_head(struct vdisk *v)
{
	uint64_t n = ngts(v), gd_sect = SECT(n * 4), gt_sect = VMDK_GTES * 4 / 512;
	uint64_t rgd = 1 + VMDK_DESC_SECT, gd = rgd + gd_sect + n * gt_sect;
	uint64_t tables = gd_sect + n * gt_sect;
	uint8_t h[512], *t;
	int e;

	encode_header(v, h, rgd, gd, v->data_start / 512);
	e = vdisk_pwrite(v, h, sizeof(h), 0);
	if (e == 0)
		e = write_descriptor(v);
	if (e < 0)
		return e;
	t = calloc(tables, 512);
	if (!t)
		return img_set_error(v->ctx, -ENOMEM, "out of memory");
	/* One copy of GD + GTs; the redundant one differs only in where its GTs are. */
	for (int copy = 0; copy < 2 && e == 0; copy++) {
		uint64_t base = copy ? gd : rgd;

		for (uint64_t g = 0; g < n; g++)
			img_put_le32(t + 4 * g, (uint32_t)(base + gd_sect + g * gt_sect));
		for (uint64_t b = 0; b < v->nblocks; b++)
			img_put_le32(t + gd_sect * 512 + 4 * b,
			             v->map[b] ? (uint32_t)(v->map[b] / 512) : 0);
		e = vdisk_pwrite(v, t, (size_t)(tables * 512), base * 512);
	}
	free(t);
	return e;
}

static int sparse_tail(struct vdisk *v)
{
	v->end = v->data_start + v->nalloc * v->stride;
	return 0;
}

/* The stream, written front to back through a buffer. */
struct out {
	struct vdisk *v;
	uint8_t *buf;
	size_t len, cap;
	uint64_t pos; /* host offset of buf[0] */
};

static int out_flush(struct out *o)
{
	int e = o->len ? vdisk_pwrite(o->v, o->buf, o->len, o->pos) : 0;

	o->pos += o->len;
	o->len = 0;
	return e;
}

/* Room for @n more bytes (n <= cap). */
static int out_room(struct out *o, size_t n)
{
	return o->len + n > o->cap ? out_flush(o) : 0;
}

static uint64_t out_at(const struct out *o)
{
	return o->pos + o->len;
}

static int out_marker(struct out *o, uint64_t val, uint32_t type)
{
	int e = out_room(o, 512);

	if (e < 0)
		return e;
	memset(o->buf + o->len, 0, 512);
	img_put_le64(o->buf + o->len, val);
	img_put_le32(o->buf + o->len + 12, type);
	o->len += 512;
	return 0;
}

static int out_bytes(struct out *o, const void *p, size_t n)
{
	int e = out_room(o, IMG_ALIGN_UP(n, 512));

	if (e < 0)
		return e;
	memcpy(o->buf + o->len, p, n);
	memset(o->buf + o->len + n, 0, IMG_ALIGN_UP(n, 512) - n);
	o->len += IMG_ALIGN_UP(n, 512);
	return 0;
}

/*
 * The stream from the first grain on, built grain by grain in virtual order:
 * each grain behind its marker, a grain table's GT after its last grain,
 * and at the end GD, footer and end-of-stream marker (stream_end). The
 * same code lays out a staged image at finish and streams one whose
 * writes come in order (dev-vdisk-engine.c), so both give the same bytes.
 */
struct vmdk_stream {
	struct out o;
	uint8_t *gd;
	uint64_t g; /* the grain table being filled */
	int any;    /* ... has a grain */
	uint8_t gt[VMDK_GTES * 4];
	/* grains deflate on worker threads (dev-zring.h): ring slot k holds
	 * grain blk[k % size], laid out in order */
	struct zring *z;
	uint64_t *blk;
	uint64_t next; /* grains handed to the ring */
};

static void *deflate_new(void *user)
{
	return user; /* compress2 keeps no state between grains */
}

static void deflate_free(void *codec)
{
	(void)codec;
}

static int deflate_work(void *user, void *codec, uint64_t k, uint8_t *in, uint8_t *out,
                        size_t *olen)
{
	uLongf zlen = compressBound(VMDK_GRAIN);

	(void)user;
	(void)codec;
	(void)k;
	if (compress2(out, &zlen, in, VMDK_GRAIN, Z_DEFAULT_COMPRESSION) != Z_OK)
		return -EIO;
	*olen = zlen;
	return 0;
}

static const struct zring_ops deflate_ops = { deflate_new, deflate_free, deflate_work };

static void stream_free(struct vdisk *v)
{
	struct vmdk_stream *st = v->stream;

	if (!st)
		return;
	zring_free(st->z);
	free(st->blk);
	free(st->gd);
	free(st->o.buf);
	free(st);
	v->stream = NULL;
}

/* The stream's state, from the first grain's place on; the head is the caller's. */
static int stream_start(struct vdisk *v)
{
	struct vmdk_stream *st;
	int e;

	if (v->fmt != IMG_VDISK_VMDK_STREAM)
		return 1; /* monolithicSparse: tables in front */
	st = calloc(1, sizeof(*st));
	v->stream = st;
	if (st) {
		st->o = (struct out){ .v = v, .cap = 4u << 20, .pos = VMDK_GRAIN };
		st->o.buf = malloc(st->o.cap);
		st->gd = calloc(SECT(ngts(v) * 4), 512);
	}
	if (!st || !st->o.buf || !st->gd) {
		stream_free(v);
		return img_set_error(v->ctx, -ENOMEM, "out of memory");
	}
	e = zring_new(v->ctx, &deflate_ops, v, VMDK_GRAIN, compressBound(VMDK_GRAIN), 0, false, 0,
	              &st->z);
	if (e == 0 && !(st->blk = calloc((size_t)zring_size(st->z), sizeof(*st->blk))))
		e = img_set_error(v->ctx, -ENOMEM, "out of memory");
	if (e < 0)
		stream_free(v);
	return e;
}

/* The GT of the table being filled, behind its marker, if it has a grain. */
static int stream_close_gt(struct vmdk_stream *st)
{
	int e;

	if (!st->any)
		return 0;
	if ((e = out_marker(&st->o, sizeof(st->gt) / 512, VMDK_MARKER_GT)) < 0)
		return e;
	img_put_le32(st->gd + 4 * st->g, (uint32_t)(out_at(&st->o) / 512));
	st->any = 0;
	return out_bytes(&st->o, st->gt, sizeof(st->gt));
}

/* The next grain out of the ring, behind its marker: v->map[b] its offset. */
static int stream_lay(struct vdisk *v)
{
	struct vmdk_stream *st = v->stream;
	uint64_t k = zring_consumed(st->z), b = st->blk[k % zring_size(st->z)];
	size_t zlen;
	bool worker;
	uint8_t *z;
	int e = zring_wait(st->z, &worker);

	if (e < 0)
		return worker ? img_set_error(v->ctx, e, "%s: deflate failed", v->path) : e;
	zlen = zring_olen(st->z, k);
	if (b / VMDK_GTES != st->g) {
		e = stream_close_gt(st);
		memset(st->gt, 0, sizeof(st->gt));
		st->g = b / VMDK_GTES;
	}
	if (e == 0)
		e = out_room(&st->o, (size_t)stream_grain_max());
	if (e == 0) {
		z = st->o.buf + st->o.len;
		v->map[b] = out_at(&st->o);
		img_put_le32(st->gt + 4 * (b % VMDK_GTES), (uint32_t)(v->map[b] / 512));
		img_put_le64(z, b * VMDK_GRAIN_SECT);
		img_put_le32(z + 8, (uint32_t)zlen);
		memcpy(z + 12, zring_out(st->z, k), zlen);
		memset(z + 12 + zlen, 0, IMG_ALIGN_UP(12 + zlen, 512) - (12 + zlen));
		st->o.len += IMG_ALIGN_UP(12 + zlen, 512);
		st->any = 1;
	}
	zring_done(st->z, e);
	return e;
}

/* Every grain handed over laid out. */
static int stream_drain(struct vdisk *v)
{
	struct vmdk_stream *st = v->stream;
	int e = 0;

	while (e == 0 && zring_consumed(st->z) < st->next)
		e = stream_lay(v);
	return e;
}

/* Grain @b (not all zeros; after every grain before it) to the ring;
 * v->map[b] is 1 until it is laid out. */
static int stream_grain(struct vdisk *v, uint64_t b, const uint8_t *grain)
{
	struct vmdk_stream *st = v->stream;
	uint64_t k = st->next;
	int e = 0;

	while (e == 0 && zring_full(st->z, k))
		e = stream_lay(v);
	if (e < 0)
		return e;
	memcpy(zring_in(st->z, k), grain, VMDK_GRAIN);
	st->blk[k % zring_size(st->z)] = b;
	v->map[b] = 1;
	st->next = k + 1;
	zring_publish(st->z, st->next);
	while (e == 0 && zring_ready(st->z))
		e = stream_lay(v);
	return e;
}

/* What is built goes out (a read of a grain may follow). */
static int stream_flush(struct vdisk *v)
{
	struct vmdk_stream *st = v->stream;
	int e = stream_drain(v);

	if (e == 0)
		e = out_flush(&st->o);
	v->file_size = out_at(&st->o); /* what vmdk_read_grain may read */
	return e;
}

/* The last GT, the GD, the footer, end of stream; v->end set. */
static int stream_end(struct vdisk *v)
{
	struct vmdk_stream *st = v->stream;
	uint64_t gd_sect = SECT(ngts(v) * 4);
	uint8_t h[512];
	int e = stream_drain(v);

	if (e == 0)
		e = stream_close_gt(st);
	if (e == 0)
		e = out_marker(&st->o, gd_sect, VMDK_MARKER_GD);
	if (e == 0) {
		uint64_t gd_at = out_at(&st->o) / 512;

		e = out_bytes(&st->o, st->gd, gd_sect * 512);
		encode_header(v, h, 0, gd_at, VMDK_GRAIN_SECT);
	}
	if (e == 0)
		e = out_marker(&st->o, 1, VMDK_MARKER_FOOT);
	if (e == 0)
		e = out_bytes(&st->o, h, sizeof(h));
	if (e == 0)
		e = out_marker(&st->o, 0, VMDK_MARKER_EOS);
	if (e == 0)
		e = out_flush(&st->o);
	v->end = out_at(&st->o);
	return e;
}

/* Header ("GD at end") and descriptor; the sectors up to the first grain stay zero. */
static int stream_head(struct vdisk *v)
{
	uint8_t h[512];
	int e;

	encode_header(v, h, 0, VMDK_GD_AT_END, VMDK_GRAIN_SECT);
	e = vdisk_pwrite(v, h, sizeof(h), 0);
	return e < 0 ? e : write_descriptor(v);
}

/* Staged: lay the stream out from the staged grains, from the start of the
 * file (never reaching the staging area), then its head. */
static int stream_finish(struct vdisk *v)
{
	uint8_t *grain = malloc(VMDK_GRAIN);
	int e = grain ? stream_start(v) : img_set_error(v->ctx, -ENOMEM, "out of memory");

	for (uint64_t b = 0; b < v->nblocks && e == 0; b++) {
		if (!v->map[b])
			continue;
		if ((e = vdisk_pread(v, grain, VMDK_GRAIN, v->map[b])) < 0)
			break;
		if (!img_all_zero(grain, VMDK_GRAIN))
			e = stream_grain(v, b, grain);
	}
	if (e == 0)
		e = stream_end(v);
	if (e == 0 && v->end > v->data_start)
		e = img_set_error(v->ctx, -EIO, "%s: stream overran its staging area", v->path);
	if (e == 0)
		e = stream_head(v);
	stream_free(v);
	free(grain);
	return e;
}

static int vmdk_finish(struct vdisk *v)
{
	return v->fmt == IMG_VDISK_VMDK_STREAM ? stream_finish(v) : vdisk_write_tables(v);
}

static int bad(struct vdisk *v, const char *why)
{
	return img_set_error(v->ctx, -EINVAL, "%s: not a valid VMDK image: %s", v->path, why);
}

static int vmdk_read_grain(struct vdisk *v, uint64_t b, uint64_t host)
{
	uint8_t m[12], *z;
	uLongf len = (uLongf)v->bs;
	uint32_t zlen;
	int e;

	if (!v->grain && !(v->grain = malloc(v->bs)))
		return img_set_error(v->ctx, -ENOMEM, "out of memory");
	if ((e = vdisk_pread(v, m, sizeof(m), host)) < 0)
		return e;
	zlen = img_get_le32(m + 8);
	if (zlen > compressBound((uLong)v->bs) || host + 12 + zlen > v->file_size)
		return bad(v, "a compressed grain runs past the end of the file");
	z = malloc(zlen ? zlen : 1);
	if (!z)
		return img_set_error(v->ctx, -ENOMEM, "out of memory");
	e = vdisk_pread(v, z, zlen, host + 12);
	if (e == 0 && (uncompress(v->grain, &len, z, zlen) != Z_OK || len != v->bs))
		e = bad(v, "a compressed grain does not inflate to a grain");
	free(z);
	v->grain_block = e == 0 ? b : UINT64_MAX;
	return e;
}

static int vmdk_open(struct vdisk *v)
{
	uint8_t h[512], *gd = NULL, *gt = NULL;
	uint64_t gd_off, n, grain_sect;
	uint32_t flags;
	int e;

	if ((e = vdisk_pread(v, h, sizeof(h), 0)) < 0)
		return e;
	if (img_get_le32(h) != VMDK_MAGIC || img_get_le32(h + 4) < 1 || img_get_le32(h + 4) > 3)
		return bad(v, "header");
	gd_off = img_get_le64(h + 56);
	if (gd_off == VMDK_GD_AT_END) {
		uint8_t f[1536];

		if (v->file_size < 2048 ||
		    (e = vdisk_pread(v, f, sizeof(f), v->file_size - 1536)) < 0)
			return e < 0 ? e : bad(v, "too short for a footer");
		if (img_get_le32(f + 12) != VMDK_MARKER_FOOT ||
		    img_get_le32(f + 512) != VMDK_MAGIC ||
		    img_get_le32(f + 1024 + 12) != VMDK_MARKER_EOS)
			return bad(v, "no footer before the end-of-stream marker");
		memcpy(h, f + 512, sizeof(h));
		gd_off = img_get_le64(h + 56);
	}
	flags = img_get_le32(h + 8);
	grain_sect = img_get_le64(h + 20);
	if (!img_get_le64(h + 12) || img_get_le64(h + 12) > VMDK_MAX_SIZE / 512)
		return bad(v, "capacity");
	v->vsize = img_get_le64(h + 12) * 512;
	if (grain_sect < 8 || grain_sect > 2048 || (grain_sect & (grain_sect - 1)))
		return bad(v, "grain size");
	if (img_get_le32(h + 44) != VMDK_GTES)
		return bad(v, "grain tables other than 512 entries are not read");
	v->compressed = (flags & VMDK_F_COMPRESS) != 0;
	if (v->compressed && img_get_le16(h + 77) != 1)
		return bad(v, "compression other than deflate");
	v->fmt = v->compressed ? IMG_VDISK_VMDK_STREAM : IMG_VDISK_VMDK_SPARSE;
	v->bs = grain_sect * 512;
	v->nblocks = IMG_DIV_ROUND_UP(v->vsize, v->bs);
	if (v->nblocks > (1u << 26))
		return bad(v, "more than 64 Mi grains");
	n = IMG_DIV_ROUND_UP(v->nblocks, VMDK_GTES);
	if (gd_off > v->file_size / 512 || n * 4 > v->file_size - gd_off * 512)
		return bad(v, "grain directory outside the file");
	gd = malloc(n * 4);
	gt = malloc(VMDK_GTES * 4);
	v->map = calloc(v->nblocks, sizeof(*v->map));
	if (!gd || !gt || !v->map) {
		e = img_set_error(v->ctx, -ENOMEM, "out of memory");
		goto out;
	}
	if ((e = vdisk_pread(v, gd, n * 4, gd_off * 512)) < 0)
		goto out;
	for (uint64_t g = 0; g < n && e == 0; g++) {
		uint64_t s = img_get_le32(gd + 4 * g);

		if (!s)
			continue;
		if (s > v->file_size / 512 || VMDK_GTES * 4 > v->file_size - s * 512) {
			e = bad(v, "a grain table outside the file");
			break;
		}
		if ((e = vdisk_pread(v, gt, VMDK_GTES * 4, s * 512)) < 0)
			break;
		for (uint64_t i = 0; i < VMDK_GTES && g * VMDK_GTES + i < v->nblocks; i++) {
			uint64_t host = (uint64_t)img_get_le32(gt + 4 * i) * 512;

			if (host <= 512) /* 0: none; 1: a zeroed grain */
				continue;
			if (host + (v->compressed ? 12 : v->bs) > v->file_size) {
				e = bad(v, "a grain outside the file");
				break;
			}
			v->map[g * VMDK_GTES + i] = host;
		}
	}
out:
	free(gd);
	free(gt);
	return e;
}

const struct vdisk_format vdisk_vmdk = {
	.layout = vmdk_layout,
	.head = sparse_head,
	.tail = sparse_tail,
	.finish = vmdk_finish,
	.open = vmdk_open,
	.read_grain = vmdk_read_grain,
	.stream_start = stream_start,
	.stream_head = stream_head,
	.stream_grain = stream_grain,
	.stream_flush = stream_flush,
	.stream_end = stream_end,
	.stream_free = stream_free,
};
