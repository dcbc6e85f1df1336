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

#endif
