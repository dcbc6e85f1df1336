/*
 * dev-qcow2.h -- what the qcow2 files (dev-qcow2*.c) share: the parsed
 * header, the writer's state, the cluster codecs. Internal to libimg.
 */
#ifndef IMG_DEV_QCOW2_H
#define IMG_DEV_QCOW2_H

#include <img/qcow2.h>

#include "private.h"
#include "ondisk/qcow2.h"

/* Limits we refuse to go beyond, reading or writing. */
#define QCOW2_MAX_L1_BYTES       (32u << 20) /* as qemu's QCOW_MAX_L1_SIZE */
#define QCOW2_MAX_REFTABLE_BYTES (32u << 20)
#define QCOW2_MAX_VIRTUAL_SIZE   (1ull << 56)
#define QCOW2_MAX_CHAIN_DEPTH    16

/* A header as read or as to be written (host byte order). */
struct qcow2_hdr {
	uint32_t version;
	uint32_t cluster_bits;
	uint64_t size;
	uint32_t l1_size;
	uint64_t l1_offset;
	uint64_t reftable_offset;
	uint32_t reftable_clusters;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	uint64_t incompat, compat, autoclear;
	uint32_t refcount_order;
	uint32_t header_length;
	int compression_type; /* QCOW2_COMPRESSION_* */
	uint64_t file_size;   /* of the file read (0 when writing) */
	char backing_file[QCOW2_MAX_BACKING_NAME + 1];
	char backing_format[32];
};

/* L1 entries needed for @size bytes at 1 << @cluster_bits; 0 on absurd sizes. */
uint64_t qcow2_l1_entries(uint64_t size, unsigned cluster_bits);

/*
 * Read and validate the header, extensions and backing name of @fd
 * (@path names it in messages). Checks everything that does not need the
 * L1 table: magic, version, lengths, cluster_bits, features, table offsets
 * (aligned, inside the file, not overlapping), sizes.
 */
int qcow2_read_header(struct img_ctx *ctx, const char *path, int fd, struct qcow2_hdr *h);

/* Encode @h into @cluster0 (1 << h->cluster_bits bytes, zeroed here). */
void qcow2_encode_header(const struct qcow2_hdr *h, uint8_t *cluster0);

/* ---- writer -------------------------------------------------------- */

struct qcow2_w {
	int fd;
	char *path;
	struct qcow2_hdr hdr;
	unsigned cb;         /* cluster_bits */
	uint64_t cs;         /* cluster size */
	uint64_t l2_entries; /* entries per L2 table */
	/*
	 * Per L1 index: the L2 table in memory (NULL = none). Before finish an
	 * entry is the host byte offset of the data cluster (0 = unallocated);
	 * finish turns them into on-disk entries (flags included).
	 */
	uint64_t **l2;
	uint64_t data_start; /* first data cluster: after header and L1 */
	uint64_t next_free;  /* bump allocator for data clusters */
	uint64_t *rev;       /* data cluster k (from data_start) -> guest cluster */
	uint64_t rev_n, rev_cap;
	/* Set by the compression pass: refcount per data-area host cluster. */
	uint16_t *dref;
	uint64_t data_end; /* end of the data area after finish's data pass */
	enum img_qcow2_compression compression;
	uint8_t *zbuf;       /* one cluster, for telling zero clusters of a source */
	struct img_dio *dio; /* direct writes of copied data (dio.h), or NULL */
	int level;
	unsigned threads;
};

/* img_dev_qcow2_create() with a backing file name and format (overlays). */
int qcow2_create_with_backing(struct img_ctx *ctx, const char *path,
                              const struct img_qcow2_opts *opts, const char *backing,
                              const char *backing_fmt, struct img_dev **out);

/*
 * Compression pass (dev-qcow2-compress.c): compress the staged data
 * clusters in place, rewrite w->l2 as on-disk entries, fill w->dref and
 * w->data_end.
 */
int qcow2_pack(struct img_dev *dev, struct qcow2_w *w);

/* ---- cluster codecs ------------------------------------------------- */

struct qcow2_codec;
/* A (de)compressor for one thread; NULL on out-of-memory. */
struct qcow2_codec *qcow2_codec_new(int compression_type, int level, int decompress);
void qcow2_codec_free(struct qcow2_codec *c);
/*
 * Compress one cluster of @cs bytes into @out (room for @cap bytes).
 * Returns the compressed length, or 0 when it does not fit in @cap.
 */
size_t qcow2_compress(struct qcow2_codec *c, const uint8_t *in, size_t cs, uint8_t *out,
                      size_t cap);
/*
 * Decompress exactly @cs bytes into @out from @in (@len bytes, possibly
 * followed by slop). 0, or -EIO when the stream is corrupt or short.
 */
int qcow2_decompress(struct qcow2_codec *c, const uint8_t *in, size_t len, uint8_t *out, size_t cs);

#endif
