/*
 * dev-qcow2-header.c -- the qcow2 header codec: reading and validating a
 * header (extensions and backing name included), encoding one, the L1
 * size a virtual size needs and the refcount table and blocks an image needs. Used by the reader,
 * the writer and the front door (dev-qcow2.c); it uses none of them.
 *
 * Spec: qemu docs/interop/qcow2.txt ("Header", "Header extensions").
 */
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dev-qcow2-header.h"

uint64_t qcow2_l1_entries(uint64_t size, unsigned cluster_bits)
{
	uint64_t clusters, per_l2 = 1ull << (cluster_bits - 3);

	if (size > QCOW2_MAX_VIRTUAL_SIZE)
		return 0;
	clusters = IMG_DIV_ROUND_UP(size, 1ull << cluster_bits);
	return IMG_DIV_ROUND_UP(clusters, per_l2);
}

/* The blocks count themselves and the table: iterate to a fixed point. */
void qcow2_refcount_fit(uint64_t others, unsigned cluster_bits, uint64_t *rt, uint64_t *rb)
{
	uint64_t cs = 1ull << cluster_bits, rb_entries = cs / 2;

	*rt = *rb = 0;
	for (;;) {
		uint64_t t = others + *rt + *rb, nrb = IMG_DIV_ROUND_UP(t, rb_entries);
		uint64_t nrt = IMG_DIV_ROUND_UP(nrb * 8, cs);

		if (nrb == *rb && nrt == *rt)
			return;
		*rb = nrb;
		*rt = nrt;
	}
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

/* Header extensions in cluster 0 between header_length and @end. */
static int read_extensions(struct img_ctx *ctx, const char *path, const uint8_t *c0, uint64_t end,
                           struct qcow2_hdr *h)
{
	uint64_t off = h->header_length;

	while (off + 8 <= end) {
		uint32_t type = img_get_be32(c0 + off), len = img_get_be32(c0 + off + 4);

		if (type == QCOW2_EXT_END)
			return 0;
		if (len > end - off - 8)
			return img_set_error(
			    ctx, -EINVAL,
			    "%s: corrupt qcow2: header extension 0x%08x at byte %llu "
			    "(%u bytes) runs past its end at byte %llu",
			    path, type, (unsigned long long)off, len, (unsigned long long)end);
		if (type == QCOW2_EXT_BACKING_FORMAT) {
			if (len >= sizeof(h->backing_format))
				return img_set_error(ctx, -EINVAL,
				                     "%s: corrupt qcow2: backing format name of %u "
				                     "bytes",
				                     path, len);
			memcpy(h->backing_format, c0 + off + 8, len);
			h->backing_format[len] = 0;
			if (strlen(h->backing_format) != len)
				return img_set_error(ctx, -EINVAL,
				                     "%s: corrupt qcow2: NUL in the backing format "
				                     "name",
				                     path);
		}
		off += 8 + IMG_ALIGN_UP((uint64_t)len, 8);
	}
	return 0;
}

int qcow2_read_header(struct img_ctx *ctx, const char *path, int fd, struct qcow2_hdr *h)
{
	uint8_t b[QCOW2_H_V3_LENGTH] = { 0 }, *c0 = NULL;
	uint64_t cs, l1_bytes, l1_need, rt_bytes, ext_end, backing_off = 0;
	uint32_t backing_len = 0;
	struct stat st;
	int r;

	memset(h, 0, sizeof(*h));
	if (fstat(fd, &st) < 0)
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	h->file_size = (uint64_t)st.st_size;
	if (h->file_size < QCOW2_H_V2_LENGTH)
		goto truncated;
	r = img_pread_full(fd, b, (size_t)IMG_MIN(h->file_size, sizeof(b)), 0);
	if (r < 0)
		return img_set_error(ctx, r, "%s: reading the qcow2 header: %s", path,
		                     strerror(-r));
	if (img_get_be32(b + QCOW2_H_MAGIC) != QCOW2_MAGIC)
		return img_set_error(ctx, -EINVAL, "%s: not a qcow2 image (bad magic)", path);
	h->version = img_get_be32(b + QCOW2_H_VERSION);
	if (h->version != 2 && h->version != 3)
		return img_set_error(ctx, -ENOTSUP,
		                     "%s: qcow2 version %u is not supported (only 2 and 3)", path,
		                     h->version);
	backing_off = img_get_be64(b + QCOW2_H_BACKING_OFFSET);
	backing_len = img_get_be32(b + QCOW2_H_BACKING_SIZE);
	h->cluster_bits = img_get_be32(b + QCOW2_H_CLUSTER_BITS);
	h->size = img_get_be64(b + QCOW2_H_SIZE);
	h->l1_size = img_get_be32(b + QCOW2_H_L1_SIZE);
	h->l1_offset = img_get_be64(b + QCOW2_H_L1_OFFSET);
	h->reftable_offset = img_get_be64(b + QCOW2_H_REFTABLE_OFFSET);
	h->reftable_clusters = img_get_be32(b + QCOW2_H_REFTABLE_CLUSTERS);
	h->nb_snapshots = img_get_be32(b + QCOW2_H_NB_SNAPSHOTS);
	h->snapshots_offset = img_get_be64(b + QCOW2_H_SNAPSHOTS_OFFSET);
	if (h->version == 2) {
		h->refcount_order = 4;
		h->header_length = QCOW2_H_V2_LENGTH;
	} else {
		if (h->file_size < QCOW2_H_V3_MIN_LENGTH)
			goto truncated;
		h->incompat = img_get_be64(b + QCOW2_H_INCOMPAT);
		h->compat = img_get_be64(b + QCOW2_H_COMPAT);
		h->autoclear = img_get_be64(b + QCOW2_H_AUTOCLEAR);
		h->refcount_order = img_get_be32(b + QCOW2_H_REFCOUNT_ORDER);
		h->header_length = img_get_be32(b + QCOW2_H_HEADER_LENGTH);
		if (h->header_length < QCOW2_H_V3_MIN_LENGTH || h->header_length % 8)
			return img_set_error(ctx, -EINVAL,
			                     "%s: corrupt qcow2: header_length %u (must be >= 104 "
			                     "and a multiple of 8)",
			                     path, h->header_length);
		if (h->header_length > QCOW2_H_V3_MIN_LENGTH) {
			if (h->file_size < QCOW2_H_V3_LENGTH)
				goto truncated;
			h->compression_type = b[QCOW2_H_COMPRESSION_TYPE];
		}
	}
	if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS || h->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		return img_set_error(ctx, -EINVAL,
		                     "%s: corrupt qcow2: cluster_bits %u outside 9..21", path,
		                     h->cluster_bits);
	cs = 1ull << h->cluster_bits;
	if (h->header_length > cs)
		return img_set_error(ctx, -EINVAL,
		                     "%s: corrupt qcow2: header_length %u exceeds the cluster",
		                     path, h->header_length);
	if (h->incompat & ~QCOW2_INCOMPAT_KNOWN)
		return img_set_error(ctx, -ENOTSUP,
		                     "%s: qcow2 has unknown incompatible features 0x%llx", path,
		                     (unsigned long long)(h->incompat & ~QCOW2_INCOMPAT_KNOWN));
	if (h->incompat & QCOW2_INCOMPAT_DATA_FILE)
		return img_set_error(ctx, -ENOTSUP,
		                     "%s: qcow2 with an external data file is not supported", path);
	if (h->incompat & QCOW2_INCOMPAT_EXTL2)
		return img_set_error(ctx, -ENOTSUP,
		                     "%s: qcow2 with extended L2 entries is not supported", path);
	if (h->compression_type != QCOW2_COMPRESSION_ZLIB &&
	    h->compression_type != QCOW2_COMPRESSION_ZSTD)
		return img_set_error(ctx, -ENOTSUP, "%s: unknown qcow2 compression type %d", path,
		                     h->compression_type);
	if ((h->compression_type != 0) != ((h->incompat & QCOW2_INCOMPAT_COMPRESSION) != 0))
		return img_set_error(ctx, -EINVAL,
		                     "%s: corrupt qcow2: compression type %d disagrees with the "
		                     "compression feature bit",
		                     path, h->compression_type);
	if (h->refcount_order > 6)
		return img_set_error(ctx, -EINVAL, "%s: corrupt qcow2: refcount_order %u > 6", path,
		                     h->refcount_order);
	if (img_get_be32(b + QCOW2_H_CRYPT_METHOD))
		return img_set_error(ctx, -ENOTSUP, "%s: encrypted qcow2 is not supported", path);
	if (h->size % 512)
		return img_set_error(
		    ctx, -EINVAL, "%s: corrupt qcow2: virtual size %llu is not a multiple of 512",
		    path, (unsigned long long)h->size);
	l1_need = qcow2_l1_entries(h->size, h->cluster_bits);
	if (h->size > QCOW2_MAX_VIRTUAL_SIZE || l1_need * 8 > QCOW2_MAX_L1_BYTES)
		return img_set_error(ctx, -EFBIG,
		                     "%s: qcow2 virtual size %llu is absurd (limit: %u L1 entries "
		                     "at %llu-byte clusters)",
		                     path, (unsigned long long)h->size, QCOW2_MAX_L1_BYTES / 8,
		                     (unsigned long long)cs);
	if (h->l1_size < l1_need)
		return img_set_error(ctx, -EINVAL,
		                     "%s: corrupt qcow2: L1 table of %u entries is too small for a "
		                     "%llu-byte disk (needs %llu)",
		                     path, h->l1_size, (unsigned long long)h->size,
		                     (unsigned long long)l1_need);
	l1_bytes = (uint64_t)h->l1_size * 8;
	if (l1_bytes > QCOW2_MAX_L1_BYTES)
		return img_set_error(ctx, -EFBIG,
		                     "%s: corrupt qcow2: L1 table of %u entries is absurdly large",
		                     path, h->l1_size);
	if (h->l1_size && (h->l1_offset % cs || h->l1_offset == 0))
		return img_set_error(
		    ctx, -EINVAL, "%s: corrupt qcow2: L1 table offset %llu is not cluster aligned",
		    path, (unsigned long long)h->l1_offset);
	if (h->l1_size && (h->l1_offset > h->file_size || l1_bytes > h->file_size - h->l1_offset))
		return img_set_error(
		    ctx, -EINVAL,
		    "%s: corrupt qcow2: L1 table [%llu, +%llu) lies past the end of "
		    "the %llu-byte file",
		    path, (unsigned long long)h->l1_offset, (unsigned long long)l1_bytes,
		    (unsigned long long)h->file_size);
	rt_bytes = (uint64_t)h->reftable_clusters << h->cluster_bits;
	if (h->reftable_clusters == 0 || rt_bytes > QCOW2_MAX_REFTABLE_BYTES)
		return img_set_error(ctx, -EINVAL,
		                     "%s: corrupt qcow2: refcount table of %u clusters", path,
		                     h->reftable_clusters);
	if (h->reftable_offset % cs || h->reftable_offset == 0)
		return img_set_error(ctx, -EINVAL,
		                     "%s: corrupt qcow2: refcount table offset %llu is not cluster "
		                     "aligned",
		                     path, (unsigned long long)h->reftable_offset);
	if (h->reftable_offset > h->file_size || rt_bytes > h->file_size - h->reftable_offset)
		return img_set_error(
		    ctx, -EINVAL,
		    "%s: corrupt qcow2: refcount table [%llu, +%llu) lies past the "
		    "end of the %llu-byte file",
		    path, (unsigned long long)h->reftable_offset, (unsigned long long)rt_bytes,
		    (unsigned long long)h->file_size);
	if (ranges_overlap(h->l1_offset, IMG_ALIGN_UP(l1_bytes, cs), h->reftable_offset, rt_bytes))
		return img_set_error(
		    ctx, -EINVAL,
		    "%s: corrupt qcow2: refcount table at %llu overlaps the L1 table "
		    "at %llu",
		    path, (unsigned long long)h->reftable_offset, (unsigned long long)h->l1_offset);
	if (h->nb_snapshots && (h->snapshots_offset % cs || h->snapshots_offset == 0 ||
	                        h->snapshots_offset >= h->file_size))
		return img_set_error(ctx, -EINVAL,
		                     "%s: corrupt qcow2: snapshot table offset %llu is invalid",
		                     path, (unsigned long long)h->snapshots_offset);

	/* Cluster 0: extensions and the backing file name. */
	ext_end = IMG_MIN(cs, h->file_size);
	if (backing_len) {
		if (backing_len > QCOW2_MAX_BACKING_NAME)
			return img_set_error(ctx, -EINVAL,
			                     "%s: corrupt qcow2: backing file name of %u bytes",
			                     path, backing_len);
		if (backing_off < h->header_length || backing_off > ext_end ||
		    backing_len > ext_end - backing_off)
			return img_set_error(ctx, -EINVAL,
			                     "%s: corrupt qcow2: backing file name at byte %llu is "
			                     "outside the header cluster",
			                     path, (unsigned long long)backing_off);
		ext_end = backing_off;
	}
	c0 = malloc((size_t)IMG_MIN(cs, h->file_size));
	if (!c0)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	r = img_pread_full(fd, c0, (size_t)IMG_MIN(cs, h->file_size), 0);
	if (r < 0) {
		free(c0);
		return img_set_error(ctx, r, "%s: reading the qcow2 header: %s", path,
		                     strerror(-r));
	}
	r = read_extensions(ctx, path, c0, ext_end, h);
	if (r == 0 && backing_len) {
		memcpy(h->backing_file, c0 + backing_off, backing_len);
		h->backing_file[backing_len] = 0;
		if (strlen(h->backing_file) != backing_len)
			r = img_set_error(ctx, -EINVAL,
			                  "%s: corrupt qcow2: NUL in the backing file name", path);
	}
	free(c0);
	return r;

truncated:
	return img_set_error(ctx, -EINVAL, "%s: truncated qcow2 header (file is only %llu bytes)",
	                     path, (unsigned long long)h->file_size);
}

void qcow2_encode_header(const struct qcow2_hdr *h, uint8_t *c0)
{
	size_t cs = (size_t)1 << h->cluster_bits, off = QCOW2_H_V3_LENGTH;
	size_t blen = strlen(h->backing_file), flen = strlen(h->backing_format);

	memset(c0, 0, cs);
	img_put_be32(c0 + QCOW2_H_MAGIC, QCOW2_MAGIC);
	img_put_be32(c0 + QCOW2_H_VERSION, 3);
	img_put_be32(c0 + QCOW2_H_CLUSTER_BITS, h->cluster_bits);
	img_put_be64(c0 + QCOW2_H_SIZE, h->size);
	img_put_be32(c0 + QCOW2_H_L1_SIZE, h->l1_size);
	img_put_be64(c0 + QCOW2_H_L1_OFFSET, h->l1_offset);
	img_put_be64(c0 + QCOW2_H_REFTABLE_OFFSET, h->reftable_offset);
	img_put_be32(c0 + QCOW2_H_REFTABLE_CLUSTERS, h->reftable_clusters);
	img_put_be64(c0 + QCOW2_H_INCOMPAT, h->incompat);
	img_put_be32(c0 + QCOW2_H_REFCOUNT_ORDER, 4);
	img_put_be32(c0 + QCOW2_H_HEADER_LENGTH, QCOW2_H_V3_LENGTH);
	c0[QCOW2_H_COMPRESSION_TYPE] = (uint8_t)h->compression_type;
	/*
	 * Extensions: the backing format (qemu 7.2 refuses a backing file
	 * without one), then the end marker; the backing name right after.
	 * No feature name table: it is optional and only helps error messages.
	 */
	if (flen) {
		img_put_be32(c0 + off, QCOW2_EXT_BACKING_FORMAT);
		img_put_be32(c0 + off + 4, (uint32_t)flen);
		memcpy(c0 + off + 8, h->backing_format, flen);
		off += 8 + IMG_ALIGN_UP(flen, 8);
	}
	off += 8; /* QCOW2_EXT_END, length 0: already zero */
	if (blen) {
		img_put_be64(c0 + QCOW2_H_BACKING_OFFSET, off);
		img_put_be32(c0 + QCOW2_H_BACKING_SIZE, (uint32_t)blen);
		memcpy(c0 + off, h->backing_file, blen);
	}
}
