/*
 * dev-qcow2-header.h -- the qcow2 header as the qcow2 files (dev-qcow2*.c)
 * share it: limits, the parsed header, its codec (dev-qcow2-header.c).
 * Internal to libimg.
 */
#ifndef IMG_DEV_QCOW2_HEADER_H
#define IMG_DEV_QCOW2_HEADER_H

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
 * The refcount table (*rt clusters) and blocks (*rb) that count @others
 * clusters and themselves, 16-bit refcounts (refcount_order 4).
 */
void qcow2_refcount_fit(uint64_t others, unsigned cluster_bits, uint64_t *rt, uint64_t *rb);

/*
 * Read and validate the header, extensions and backing name of @fd
 * (@path names it in messages). Checks everything that does not need the
 * L1 table: magic, version, lengths, cluster_bits, features, table offsets
 * (aligned, inside the file, not overlapping), sizes.
 */
int qcow2_read_header(struct img_ctx *ctx, const char *path, int fd, struct qcow2_hdr *h);

/* Encode @h into @cluster0 (1 << h->cluster_bits bytes, zeroed here). */
void qcow2_encode_header(const struct qcow2_hdr *h, uint8_t *cluster0);

#endif
