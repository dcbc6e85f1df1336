/*
 * dev-qcow2-compress.h -- compressed clusters (dev-qcow2-compress.c): the
 * zlib and zstd codecs the reader and the writer use, and the writer's
 * compression pass. Internal to libimg.
 */
#ifndef IMG_DEV_QCOW2_COMPRESS_H
#define IMG_DEV_QCOW2_COMPRESS_H

#include "dev-qcow2-header.h"

struct qcow2_w;

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

/*
 * Compression pass (dev-qcow2-compress.c): compress the staged data
 * clusters in place, rewrite w->l2 as on-disk entries, fill w->dref and
 * w->data_end.
 */
int qcow2_pack(struct img_dev *dev, struct qcow2_w *w);

/*
 * Streaming compression: the same layout as qcow2_pack gives, from clusters
 * handed over in memory as they are final (dev-qcow2-write.c).
 *   qcow2_stream_start    workers up, nothing laid out
 *   qcow2_stream_open     a zeroed buffer for data cluster w->rev_n - 1
 *                         (the caller appended its guest cluster to w->rev)
 *   qcow2_stream_publish  that cluster is final: compress it
 *   qcow2_stream_read     data cluster k (< w->rev_n - 1) as it stands
 *   qcow2_stream_finish   lay out the rest: w->l2, w->dref, w->data_end set
 *   qcow2_stream_unpack   instead: every cluster back to its staged place
 *                         (uncompressed, w->l2 host offsets), for qcow2_pack
 *   qcow2_stream_free     always
 * Errors are set on the device's context.
 */
struct qcow2_pack;
int qcow2_stream_start(struct img_dev *dev, struct qcow2_w *w, struct qcow2_pack **out);
int qcow2_stream_open(struct qcow2_pack *p, uint8_t **buf);
int qcow2_stream_publish(struct qcow2_pack *p);
int qcow2_stream_read(struct qcow2_pack *p, uint64_t k, uint8_t *out);
int qcow2_stream_finish(struct qcow2_pack *p);
int qcow2_stream_unpack(struct qcow2_pack *p);
void qcow2_stream_free(struct qcow2_pack *p);

#endif
