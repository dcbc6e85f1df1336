/*
 * mkvmimage-args.h -- what mkvmimage's command line sets (struct mk_cli),
 * the parser that fills it, and the check that no output is an input.
 */
#ifndef MKVMIMAGE_ARGS_H
#define MKVMIMAGE_ARGS_H

#include <img/image.h>

struct mk_cli {
	struct img_build_opts o;
	const char *manifest; /* --manifest, or the default name */
	char *default_manifest;
	int quiet, verbose, no_manifest, direct_io;
	int format_given; /* --format was given (else: from the name) */
	enum img_vdisk_format vpc_sub, vmdk_sub;
};

/* Options and operands into @c (o.mode ROOT and direct_io 1 set by the
 * caller): 0 to go on, -1 after --help/--version (exit 0), else the exit
 * status (2: usage, message printed). */
int mkvmimage_parse_args(struct mk_cli *c, int argc, char **argv);
/* After the options: the checks between them, the format from the output's
 * name, the default manifest name; 0 or 2 (message printed). */
int mkvmimage_check_args(struct mk_cli *c);
/* Refuse an output or manifest that is an input, or the manifest the
 * output: 0, or 2 (message printed). @manifest NULL: none. */
int mkvmimage_check_outputs(const struct img_build_opts *o, const char *manifest);
/* "mkvmimage: ..." and the --help hint on stderr; returns 2. */
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
