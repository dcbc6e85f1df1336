/*
 * dev-stream.c -- a device written in order with one block in memory
 * (dev-stream.h).
 */
#include <stdlib.h>

#include "dev-stream.h"

/* A copy's @n source bytes at @pos into s->tmp. */
static int read_src(struct block_stream *s, const struct stream_op *op, uint64_t pos, uint64_t n)
{
	int e = img_pread_full(op->fd, s->tmp, (size_t)n, op->from + pos);

	if (e == -EIO)
		return img_set_error(s->ctx, e,
		                     "input changed while reading (shorter than expected)");
	return e < 0 ? img_set_error(s->ctx, e, "reading input: %s", strerror(-e)) : 0;
}

static int stream_do(struct block_stream *s, uint64_t off, uint64_t len, const struct stream_op *op)
{
	uint64_t pos = 0;

	while (len) {
		uint64_t b = off / s->bs, in = off % s->bs, n = IMG_MIN(len, s->bs - in);
		bool open = s->buf && b == s->cur, ahead = !s->buf || b > s->cur;
		const uint8_t *data = op->src ? op->src + pos : s->tmp;
		int e = op->kind == STREAM_COPY ? read_src(s, op, pos, n) : 0;

		if (e < 0)
			return e;
		if (open && op->kind == STREAM_READ) {
			memcpy(op->dst + pos, s->buf + in, (size_t)n);
		} else if (open) {
			if (op->kind == STREAM_ZERO)
				memset(s->buf + in, 0, (size_t)n);
			else
				memcpy(s->buf + in, data, (size_t)n);
		} else if (op->kind == STREAM_READ && !ahead && s->has(s->user, b)) {
			if ((e = s->read(s->user, b, s->tmp)) < 0)
				return e;
			memcpy(op->dst + pos, s->tmp + in, (size_t)n);
		} else if (op->kind == STREAM_READ || op->kind == STREAM_ZERO ||
		           img_all_zero(data, (size_t)n)) {
			/* zeros where no data went, or a read of them */
			if (!ahead && s->has(s->user, b))
				return 1;
			if (op->kind == STREAM_READ)
				memset(op->dst + pos, 0, (size_t)n);
		} else if (ahead) {
			e = s->buf ? s->put(s->user) : 0;
			s->buf = NULL;
			if (e == 0 && (e = s->open(s->user, b)) == 0)
				s->cur = b;
			if (e < 0)
				return e;
			memcpy(s->buf + in, data, (size_t)n);
		} else {
			return 1;
		}
		pos += n;
		off += n;
		len -= n;
	}
	return 0;
}

int block_stream_op(struct block_stream *s, uint64_t off, uint64_t len, const struct stream_op *op)
{
	int r;

	if (!s->on)
		return 1;
	r = stream_do(s, off, len, op);
	if (r != 1)
		return r;
	r = s->buf ? s->put(s->user) : 0;
	s->buf = NULL;
	s->on = false;
	if (r == 0)
		r = s->stage(s->user);
	if (r < 0)
		return r;
	img_log(s->ctx, IMG_LOG_INFO,
	        "%s: written out of order: the rest is staged and compressed at finish", s->name);
	return 1;
}

int block_stream_end(struct block_stream *s)
{
	int r = s->buf ? s->put(s->user) : 0;

	s->buf = NULL;
	s->on = false;
	if (r == 0)
		img_log(s->ctx, IMG_LOG_INFO, "%s: compressed as it was written", s->name);
	return r;
}
