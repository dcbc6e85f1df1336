/*
 * mkvmimage.c -- build VM disk images for Nix closures (docs/cli.md).
 *
 * Parse options into struct img_build_opts, make one img_build() call, map
 * the result to an exit status: 0 success, 1 failure, 2 usage error. The
 * environment (SOURCE_DATE_EPOCH) is read here and nowhere in the library.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <img/bootspec.h>
#include <img/context.h>
#include <img/image.h>
#include <img/tree.h>

#include "mkvmimage-opts.h"
#include "tool-util.h"

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && !strcmp(s + a - b, suffix);
}

static int format_of(const char *s, enum img_format *f)
{
	static const char *const names[] = { "raw", "qcow2", "vpc", "vdi", "vmdk" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!strcmp(s, names[i])) {
			*f = (enum img_format)i;
			return 0;
		}
	}
	return -1;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tool_verr("", fmt, ap);
	va_end(ap);
	fprintf(stderr, "Try 'mkvmimage --help'.\n");
	return 2;
}

/*
 * Is @out (the output or the manifest, looked at without following a final
 * symlink: the rename replaces that name, not what it points to) the same
 * file as the input @in (followed: it is read through its links)?
 */
static int is_input(const char *out, const char *in)
{
	struct stat so, si;

	return lstat(out, &so) == 0 && stat(in, &si) == 0 && so.st_dev == si.st_dev &&
	       so.st_ino == si.st_ino;
}

/* Do two output names name one file, whether or not it exists yet? */
static int same_name(const char *x, const char *y)
{
	struct stat sx, sy;
	char *a, *b, *da, *db;
	int ex = lstat(x, &sx) == 0, ey = lstat(y, &sy) == 0, same;

	if (ex || ey)
		return ex && ey && sx.st_dev == sy.st_dev && sx.st_ino == sy.st_ino;
	a = strdup(x);
	b = strdup(y);
	da = strdup(x);
	db = strdup(y);
	if (!a || !b || !da || !db)
		abort();
	same = !strcmp(basename(a), basename(b)) && stat(dirname(da), &sx) == 0 &&
	       stat(dirname(db), &sy) == 0 && sx.st_dev == sy.st_dev && sx.st_ino == sy.st_ino;
	free(a);
	free(b);
	free(da);
	free(db);
	return same;
}

/*
 * The output and the manifest are written to temporaries and renamed over
 * their names: a name that is one of the inputs would lose that input (and
 * a manifest named like the image would replace the image). Refuse before
 * anything is created. Returns 0, or 2 (message printed).
 */
static int check_outputs(const struct img_build_opts *o, const char *manifest)
{
	struct {
		const char *what, *path;
	} in[8];
	size_t n = 0;
	char *sp = NULL, *reg = NULL, *bimg = NULL, *cimg = NULL;
	struct stat st;
	int r = 0;

	if (o->closure && strcmp(o->closure, "-")) {
		in[n++] = (typeof(in[0])){ "the closure", o->closure };
		if (stat(o->closure, &st) == 0 && S_ISDIR(st.st_mode)) {
			if (asprintf(&sp, "%s/store-paths", o->closure) < 0 ||
			    asprintf(&reg, "%s/registration", o->closure) < 0)
				abort();
			in[n++] = (typeof(in[0])){ "the closure's store-paths", sp };
			in[n++] = (typeof(in[0])){ "the closure's registration", reg };
		}
	}
	if (o->tar && strcmp(o->tar, "-"))
		in[n++] = (typeof(in[0])){ "the --tar input", o->tar };
	if (o->bootloader)
		in[n++] = (typeof(in[0])){ "the --bootloader file", o->bootloader };
	if (o->uki_stub)
		in[n++] = (typeof(in[0])){ "the --uki-stub file", o->uki_stub };
	if (o->grub_dir) {
		if (asprintf(&bimg, "%s/boot.img", o->grub_dir) < 0 ||
		    asprintf(&cimg, "%s/core.img", o->grub_dir) < 0)
			abort();
		in[n++] = (typeof(in[0])){ "--grub's boot.img", bimg };
		in[n++] = (typeof(in[0])){ "--grub's core.img", cimg };
	}
	for (size_t i = 0; i < n && !r; i++) {
		if (is_input(o->output, in[i].path))
			r = usage_error("-o %s is %s (%s): it would be replaced; choose another "
			                "output name",
			                o->output, in[i].what, in[i].path);
		else if (manifest && is_input(manifest, in[i].path))
			r = usage_error("--manifest %s is %s (%s): it would be replaced; choose "
			                "another manifest name",
			                manifest, in[i].what, in[i].path);
	}
	if (!r && manifest && same_name(manifest, o->output))
		r = usage_error("--manifest %s is the output image %s: the manifest would replace "
		                "it; choose another name",
		                manifest, o->output);
	free(sp);
	free(reg);
	free(bimg);
	free(cimg);
	return r;
}

int main(int argc, char **argv)
{
	struct img_build_opts o = { .mode = IMG_MODE_ROOT };
	const char *format = NULL, *manifest = NULL, *epoch_env;
	int mode_set = 0, quiet = 0, verbose = 0, no_manifest = 0, direct_io = 1, c, r;
	uint64_t cluster = 0;
	enum img_vdisk_format vpc_sub = 0, vmdk_sub = 0;
	struct tool_output out = { 0 }, mout = { 0 };
	struct tool_progress prog;
	struct img_ctx *ctx;
	char *default_manifest = NULL;
	int64_t epoch = 1;
	struct option *long_opts;
	char *short_opts;
	static char colon_opts[256];

	tool_name = "mkvmimage";
	tool_getopt(&tool_doc, &long_opts, &short_opts);
	/* ':' first: a missing argument is told apart from an unknown option,
	 * and getopt prints nothing itself (it would print the option raw). */
	if ((size_t)snprintf(colon_opts, sizeof(colon_opts), ":%s", short_opts) >=
	    sizeof(colon_opts))
		abort();
	opterr = 0;
	while ((c = getopt_long(argc, argv, colon_opts, long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_EFI:
		case OPT_BIOS:
		case OPT_HYBRID:
		case OPT_STORE:
		case OPT_EMPTY: {
			static const enum img_mode modes[] = { IMG_MODE_EFI, IMG_MODE_BIOS,
				                               IMG_MODE_HYBRID, IMG_MODE_STORE,
				                               IMG_MODE_EMPTY };
			enum img_mode m = modes[c - OPT_EFI];

			if (mode_set && o.mode != m)
				return usage_error("%s", "only one mode may be given");
			o.mode = m;
			mode_set = 1;
			break;
		}
		case 'o':
			o.output = optarg;
			break;
		case OPT_FORMAT:
			if (format_of(optarg, &o.format) < 0)
				return usage_error(
				    "--format: '%s' is not raw, qcow2, vpc, vdi or vmdk", optarg);
			format = optarg;
			break;
		case OPT_VPC_SUB:
			if (!strcmp(optarg, "fixed"))
				vpc_sub = IMG_VDISK_VPC_FIXED;
			else if (!strcmp(optarg, "dynamic"))
				vpc_sub = IMG_VDISK_VPC_DYNAMIC;
			else
				return usage_error("--vpc-subformat: '%s' is not fixed or dynamic",
				                   optarg);
			break;
		case OPT_VMDK_SUB:
			if (!strcmp(optarg, "monolithicSparse"))
				vmdk_sub = IMG_VDISK_VMDK_SPARSE;
			else if (!strcmp(optarg, "streamOptimized"))
				vmdk_sub = IMG_VDISK_VMDK_STREAM;
			else
				return usage_error("--vmdk-subformat: '%s' is not monolithicSparse "
				                   "or streamOptimized",
				                   optarg);
			break;
		case OPT_COMPRESS:
			if (!strcmp(optarg, "zstd"))
				o.compression = IMG_QCOW2_COMPRESS_ZSTD;
			else if (!strcmp(optarg, "zlib"))
				o.compression = IMG_QCOW2_COMPRESS_ZLIB;
			else
				return usage_error("--compress: '%s' is not zstd or zlib", optarg);
			break;
		case OPT_CLUSTER:
			if (tool_parse_size("--cluster-size", optarg, &cluster) < 0)
				return 2;
			if (cluster < 512 || cluster > (2u << 20) || (cluster & (cluster - 1)))
				return usage_error("--cluster-size: '%s' is not a power of two "
				                   "from 512 to 2M",
				                   optarg);
			o.cluster_bits = (unsigned)__builtin_ctzll(cluster);
			break;
		case OPT_TAR:
			o.tar = optarg;
			break;
		case OPT_ROOT:
			o.root = optarg;
			break;
		case OPT_STORE_DIR:
			o.store_dir = optarg;
			break;
		case OPT_SIZE:
			if (tool_parse_size("--size", optarg, &o.size) < 0)
				return 2;
			if (!o.size)
				return usage_error("--size: '%s': the size must not be 0", optarg);
			break;
		case OPT_ADDITIONAL:
			if (tool_parse_size("--additional-space", optarg, &o.additional_space) < 0)
				return 2;
			o.additional_space_set = 1;
			break;
		case OPT_BOOT_SIZE:
			if (tool_parse_size("--boot-size", optarg, &o.boot_size) < 0)
				return 2;
			if (!o.boot_size)
				return usage_error("--boot-size: '%s': the size must not be 0",
				                   optarg);
			break;
		case OPT_LABEL:
			if (!img_bootspec_text_ok(optarg))
				return usage_error("%s", "--label: holds a control character (a "
				                         "newline, a tab, ...)");
			o.label = optarg;
			break;
		case OPT_SYSTEM:
			o.system = optarg;
			break;
		case OPT_BOOTLOADER:
			o.bootloader = optarg;
			break;
		case OPT_UKI:
			o.uki = 1;
			break;
		case OPT_UKI_STUB:
			o.uki_stub = optarg;
			break;
		case OPT_GRUB:
			o.grub_dir = optarg;
			break;
		case OPT_KPARAMS:
			/* one line of a boot entry: a newline would start another */
			if (!img_bootspec_text_ok(optarg))
				return usage_error("%s",
				                   "--kernel-params: holds a control character "
				                   "(a newline, a tab, ...): boot entries take "
				                   "one line");
			o.kernel_params = optarg;
			break;
		case OPT_SPECIALISATION:
			if (!*optarg || !img_bootspec_text_ok(optarg) || strchr(optarg, '/'))
				return usage_error("%s",
				                   "--specialisation: not a specialisation name");
			o.specialisation = optarg;
			break;
		case OPT_VERITY:
			o.verity = 1;
			break;
		case OPT_COMPRESS_FS: {
			char *end = NULL;

			if (!strcmp(optarg, "lz4")) {
				o.fs_compression = IMG_FS_COMPRESS_LZ4;
			} else if (!strcmp(optarg, "lz4hc")) {
				o.fs_compression = IMG_FS_COMPRESS_LZ4HC;
			} else if (!strncmp(optarg, "lz4hc:", 6)) {
				long lv;

				errno = 0;
				lv = strtol(optarg + 6, &end, 10);
				if (errno || end == optarg + 6 || *end || lv < 1 || lv > 12)
					return usage_error(
					    "--compress-fs: '%s': the lz4hc level is "
					    "1 to 12",
					    optarg);
				o.fs_compression = IMG_FS_COMPRESS_LZ4HC;
				o.fs_compression_level = (int)lv;
			} else {
				return usage_error("--compress-fs: '%s' is not lz4, lz4hc or "
				                   "lz4hc:LEVEL",
				                   optarg);
			}
			break;
		}
		case OPT_KEEP_HARDLINKS:
			o.tree_flags |= IMG_TREE_KEEP_HARDLINKS;
			break;
		case OPT_SEED:
			o.seed = optarg;
			o.seed_len = strlen(optarg);
			break;
		case OPT_MANIFEST:
			manifest = optarg;
			break;
		case OPT_NO_MANIFEST:
			no_manifest = 1;
			break;
		case OPT_NO_DIRECT_IO:
			direct_io = 0;
			break;
		case 'q':
			quiet = 1;
			break;
		case 'v':
			verbose = 1;
			break;
		case 'h':
			tool_help(&tool_doc, stdout);
			return 0;
		case OPT_VERSION:
			printf("mkvmimage (libimg) %s\n", IMG_VERSION);
			return 0;
		case ':':
			return usage_error("option '%s' needs an argument", argv[optind - 1]);
		default:
			/* getopt's own message would print the option raw */
			if (optopt > 0 && optopt < 256)
				return usage_error("unknown option '-%c'", optopt);
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}

	if (optind < argc)
		o.closure = argv[optind++];
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (!o.output)
		return usage_error("%s", "no output file: give -o FILE");
	if (o.specialisation && o.mode != IMG_MODE_EFI && o.mode != IMG_MODE_BIOS &&
	    o.mode != IMG_MODE_HYBRID)
		return usage_error("%s", "--specialisation needs --efi, --bios or --hybrid");
	if (o.mode == IMG_MODE_EMPTY) {
		if (o.closure || o.tar)
			return usage_error("%s", "--empty takes no closure");
		if (!o.size)
			return usage_error("%s", "--empty needs --size");
	} else if (!o.closure && !o.tar) {
		return usage_error("%s", "no closure given (a store-paths file, a closureInfo "
		                         "directory, - for stdin, or --tar)");
	}
	if (o.closure && o.tar && !strcmp(o.closure, "-") && !strcmp(o.tar, "-"))
		return usage_error("%s", "the closure and --tar cannot both be stdin");
	if (!format)
		o.format = ends_with(o.output, ".qcow2") ? IMG_FORMAT_QCOW2
		           : ends_with(o.output, ".vhd") || ends_with(o.output, ".vpc")
		               ? IMG_FORMAT_VPC
		           : ends_with(o.output, ".vdi")  ? IMG_FORMAT_VDI
		           : ends_with(o.output, ".vmdk") ? IMG_FORMAT_VMDK
		                                          : IMG_FORMAT_RAW;
	if (vpc_sub && o.format != IMG_FORMAT_VPC)
		return usage_error("%s", "--vpc-subformat needs VHD output (--format vpc or a .vhd "
		                         "name)");
	if (vmdk_sub && o.format != IMG_FORMAT_VMDK)
		return usage_error("%s", "--vmdk-subformat needs VMDK output (--format vmdk or a "
		                         ".vmdk name)");
	o.vdisk = o.format == IMG_FORMAT_VPC ? vpc_sub : vmdk_sub;
	if (o.compression && o.format != IMG_FORMAT_QCOW2)
		return usage_error("%s", "--compress needs qcow2 output (--format qcow2 or a "
		                         ".qcow2 name)");
	if (o.uki_stub)
		o.uki = 1;
	if (o.verity && o.mode != IMG_MODE_STORE && o.mode != IMG_MODE_EFI)
		return usage_error("%s", "--verity needs --store-image or --efi");
	if (o.fs_compression && o.mode != IMG_MODE_STORE)
		return usage_error("%s", "--compress-fs needs --store-image");
	if (o.fs_compression && o.format != IMG_FORMAT_RAW)
		return usage_error("%s", "--compress-fs writes raw output, not qcow2");
	if (!no_manifest && !manifest) {
		if (asprintf(&default_manifest, "%s.json", o.output) < 0)
			abort();
		manifest = default_manifest;
	}
	r = check_outputs(&o, no_manifest ? NULL : manifest);
	if (r) {
		free(default_manifest);
		return r;
	}

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
	img_ctx_set_direct_io(ctx, direct_io);
	tool_quiet = quiet;
	tool_progress_init(&prog, quiet);
	img_ctx_set_progress(ctx, tool_progress_cb, &prog);
	img_ctx_set_log(ctx,
	                quiet     ? IMG_LOG_ERROR
	                : verbose ? IMG_LOG_INFO
	                          : IMG_LOG_WARN,
	                tool_log_cb, &prog);
	tool_install_signals(ctx, 2);

	if (tool_output_begin(&out, o.output) < 0) {
		img_ctx_free(ctx);
		return 1;
	}
	o.output_name = out.final;
	o.output = out.tmp;
	if (!no_manifest) {
		if (tool_output_begin(&mout, manifest) < 0) {
			tool_output_abort(&out);
			img_ctx_free(ctx);
			return 1;
		}
		o.manifest = mout.tmp;
	}

	r = img_build(ctx, &o);
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
