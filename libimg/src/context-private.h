/* context-private.h -- the layout of struct img_ctx, for context.c and repro.c only. */
#ifndef IMG_CONTEXT_PRIVATE_H
#define IMG_CONTEXT_PRIVATE_H

#include <signal.h>
#include "private.h"

struct img_ctx {
	int err;
	char msg[2048];

	enum img_log_level log_level;
	img_log_fn log_fn;
	void *log_user;

	img_progress_fn progress_fn;
	void *progress_user;
	struct img_progress progress;
	uint64_t last_report_bytes, last_report_files;
	uint64_t progress_step_bytes;

	void *seed;
	size_t seed_len;
	int64_t epoch;
	int no_direct_io;
	/* img_build without a manifest: nobody asks for the output's sha256,
	 * so the writer does not take it (dio.c) */
	int no_output_hash;

	volatile sig_atomic_t cancelled;
};

#endif
