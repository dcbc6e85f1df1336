/*
 * dev-stream.h -- a device written in order with one block in memory: the
 * walk over an operation's pieces that the compressed qcow2 writer and the
 * streamOptimized VMDK share (dev-qcow2-write.c, dev-vdisk-engine.c).
 * Internal to libimg.
 *
 * The block in memory (@cur) takes every piece that lands in it. A piece
 * of data past it makes it final (put()) and gives the memory to the new
 * block; zeros past it, or in a block behind it that never got data, are
 * nothing (such blocks read as zeros); a read behind it of a block with
 * data is served by read(). Anything else behind it (data, or zeros over
 * data) is out of order: block_stream_op() has the caller stage
 * what it streamed and does the operation its other way.
 */
#ifndef IMG_DEV_STREAM_H
#define IMG_DEV_STREAM_H

#include "private.h"

enum stream_kind { STREAM_WRITE, STREAM_COPY, STREAM_ZERO, STREAM_READ };

/* One device operation over [off, off+len). */
struct stream_op {
	enum stream_kind kind;
	const uint8_t *src; /* STREAM_WRITE */
	uint8_t *dst;       /* STREAM_READ */
	int fd;             /* STREAM_COPY: from @fd at @from on */
	uint64_t from;
};

struct block_stream {
	struct img_ctx *ctx;
	const char *name; /* the output, for the log */
	bool on;          /* streaming (else every op says 1) */
	uint64_t bs;      /* block size */
	uint8_t *buf;     /* block @cur, or NULL before the first */
	uint64_t cur;
	uint8_t *tmp; /* one block: a copy's source bytes, a block read back */
	void *user;
	/* Did block @b (behind @cur) get data? */
	bool (*has)(void *user, uint64_t b);
	/* Block @b (has()) as it stands, into @out. */
	int (*read)(void *user, uint64_t b, uint8_t *out);
	/* Block @cur, in buf, is final. */
	int (*put)(void *user);
	/* Block @b gets the memory: set buf (zeroed). */
	int (*open)(void *user, uint64_t b);
	/* Out of order (after put): stage what was streamed, go on the other way. */
	int (*stage)(void *user);
	/* Callbacks set the context's message on failure. */
};

/*
 * One device operation while streaming: 0 done, or < 0. 1: not streaming
 * (never, or no more: the first operation out of order staged everything
 * and is to be done the other way, whole).
 */
int block_stream_op(struct block_stream *s, uint64_t off, uint64_t len, const struct stream_op *op);
/* The end of a streamed image (s->on): the block in memory is final. */
int block_stream_end(struct block_stream *s);

#endif
