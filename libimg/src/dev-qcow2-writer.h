/*
 * dev-qcow2-writer.h -- the qcow2 writer's state, shared by the writer
 * (dev-qcow2-write.c) and its compression pass (dev-qcow2-compress.c), and
 * the writer's entry for overlays. Internal to libimg.
 */
#ifndef IMG_DEV_QCOW2_WRITER_H
#define IMG_DEV_QCOW2_WRITER_H

#include "dev-qcow2-header.h"
#include "dev-stream.h"

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
	uint8_t *zbuf; /* one cluster, for telling zero clusters of a source */
	/*
	 * Compressed images while the writes come in order: the clusters are
	 * compressed as they are final (dev-qcow2-compress.c); @bst holds the
	 * last one (guest cluster rev[rev_n - 1]) in memory (dev-stream.h).
	 * Not bst.on: staged (from the start without compression); @stream
	 * is NULL then.
	 */
	struct qcow2_pack *stream;
	struct block_stream bst;
	struct img_dio *dio; /* direct writes of copied data (dio.h), or NULL */
	int level;
	unsigned threads;
	/*
	 * The plan (img_dev_plan; uncompressed images only): the guest
	 * clusters to be written, as ascending runs, merged. After plan_done
	 * @planned: the file is laid out (dev-qcow2-write.c), @total clusters.
	 */
	struct qcow2_run {
		uint64_t gc, n;
	} * plan;
	size_t plan_n, plan_cap;
	bool planned;
	uint64_t total;
};

/* Append guest cluster @gc to w->rev (the next data cluster); -ENOMEM. */
int qcow2_rev_push(struct qcow2_w *w, uint64_t gc);

/* img_dev_qcow2_create() with a backing file name and format (overlays). */
int qcow2_create_with_backing(struct img_ctx *ctx, const char *path,
                              const struct img_qcow2_opts *opts, const char *backing,
                              const char *backing_fmt, struct img_dev **out);

#endif
