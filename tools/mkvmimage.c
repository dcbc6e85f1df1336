/*
 * mkvmimage.c -- build VM disk images for Nix closures (docs/cli.md).
 *
 * The command line is read by mkvmimage-args.c (one table,
 * mkvmimage-opts.h) into struct img_build_opts; here the environment
 * (SOURCE_DATE_EPOCH, read here and nowhere in the library), the outputs'
 * temporaries, one img_build() call and the exit status: 0 success, 1
 * failure, 2 usage error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <img/context.h>
#include <img/image.h>

#include "mkvmimage-args.h"
#include "tool-util.h"

int main(int argc, char **argv)
{
	struct mk_cli c = { .o = { .mode = IMG_MODE_ROOT }, .direct_io = 1 };
	struct img_build_opts *o = &c.o;
	const char *epoch_env, *manifest;
	struct tool_output out = { 0 }, mout = { 0 };
	struct tool_progress prog;
	struct img_ctx *ctx;
	int64_t epoch = 1;
	int r, quiet, no_manifest;
	char *default_manifest;

	r = mkvmimage_parse_args(&c, argc, argv);
	if (r)
		return r < 0 ? 0 : r;
	manifest = c.manifest;
	default_manifest = c.default_manifest;
	quiet = c.quiet;
	no_manifest = c.no_manifest;

	epoch_env = getenv("SOURCE_DATE_EPOCH");
	if (epoch_env && *epoch_env) {
		char *end;

		errno = 0;
		epoch = strtoll(epoch_env, &end, 10);
		if (errno || *end || epoch < 0) {
			tool_err("SOURCE_DATE_EPOCH: not a time in seconds: '%s'", epoch_env);
			return 2;
		}
	}

	if (img_ctx_new(&ctx) < 0) {
		tool_err("out of memory");
		return 1;
	}
	img_ctx_set_epoch(ctx, epoch);
	img_ctx_set_direct_io(ctx, c.direct_io);
	tool_quiet = quiet;
	tool_progress_init(&prog, quiet);
	img_ctx_set_progress(ctx, tool_progress_cb, &prog);
	img_ctx_set_log(ctx,
	                quiet       ? IMG_LOG_ERROR
	                : c.verbose ? IMG_LOG_INFO
	                            : IMG_LOG_WARN,
	                tool_log_cb, &prog);
	tool_install_signals(ctx, 2);

	if (tool_output_begin(&out, o->output) < 0) {
		img_ctx_free(ctx);
		return 1;
	}
	o->output_name = out.final;
	o->output = out.tmp;
	if (!no_manifest) {
		if (tool_output_begin(&mout, manifest) < 0) {
			tool_output_abort(&out);
			img_ctx_free(ctx);
			return 1;
		}
		o->manifest = mout.tmp;
	}

	r = img_build(ctx, o);
	/* From here the ending is ours alone: a signal now neither runs the
	 * handler nor the deadline, so the commit below is all or nothing and
	 * an interrupted build always ends with its cleanup and its message. */
	tool_signals_hold();
	tool_progress_done(&prog);
	if (r >= 0 && tool_signalled())
		r = -ECANCELED;
	if (r < 0) {
		tool_output_abort(&out);
		tool_output_abort(&mout);
		if (tool_signalled())
			tool_err("interrupted; nothing written");
		else
			tool_err("%s", img_ctx_error(ctx)[0] ? img_ctx_error(ctx) : strerror(-r));
		img_ctx_free(ctx);
		free(default_manifest);
		return 1;
	}
	r = tool_output_commit(&out);
	if (r == 0 && mout.tmp) {
		/* A recipe without a manifest leaves the temporary empty. */
		struct stat st;

		if (stat(mout.tmp, &st) == 0 && st.st_size == 0)
			tool_output_abort(&mout);
		else
			r = tool_output_commit(&mout);
	} else {
		tool_output_abort(&mout);
	}
	img_ctx_free(ctx);
	free(default_manifest);
	return r < 0 ? 1 : 0;
}
