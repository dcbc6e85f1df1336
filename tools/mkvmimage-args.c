/*
 * mkvmimage-args.c -- mkvmimage's command line into struct mk_cli: the
 * option table (mkvmimage-opts.h, which --help, the man page and the
 * completions are made from), the checks between options, the output
 * format from the name.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <img/bootspec.h>
#include <img/context.h>
#include <img/image.h>
#include <img/tree.h>

#include "mkvmimage-args.h"
#include "mkvmimage-opts.h"
#include "tool-util.h"

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

int usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tool_verr("", fmt, ap);
	va_end(ap);
	fprintf(stderr, "Try 'mkvmimage --help'.\n");
	return 2;
}

/* A word of an option's argument and the value it stands for. */
struct choice {
	const char *word;
	int value;
};
#define CHOICES_END                                                                                \
	{                                                                                          \
		NULL, 0                                                                            \
	}

static const struct choice vpc_subs[] = { { "fixed", IMG_VDISK_VPC_FIXED },
	                                  { "dynamic", IMG_VDISK_VPC_DYNAMIC },
	                                  CHOICES_END };
static const struct choice vmdk_subs[] = { { "monolithicSparse", IMG_VDISK_VMDK_SPARSE },
	                                   { "streamOptimized", IMG_VDISK_VMDK_STREAM },
	                                   CHOICES_END };
static const struct choice compressions[] = { { "zstd", IMG_QCOW2_COMPRESS_ZSTD },
	                                      { "zlib", IMG_QCOW2_COMPRESS_ZLIB },
	                                      CHOICES_END };

/* @arg's value in @tbl, or a usage error ("'x' is not a or b"): -1. */
static int pick(const char *opt, const char *arg, const struct choice *tbl, int *out)
{
	char alts[128] = "";
	size_t n = 0;

	for (const struct choice *t = tbl; t->word; t++, n++)
		if (!strcmp(arg, t->word)) {
			*out = t->value;
			return 0;
		}
	for (size_t i = 0; i < n; i++)
		snprintf(alts + strlen(alts), sizeof(alts) - strlen(alts), "%s%s",
		         i == 0       ? ""
		         : i + 1 == n ? " or "
		                      : ", ",
		         tbl[i].word);
	usage_error("%s: '%s' is not %s", opt, arg, alts);
	return -1;
}

int mkvmimage_parse_args(struct mk_cli *c, int argc, char **argv)
{
	const char *format = NULL;
	int mode_set = 0, ch, v;
	uint64_t cluster = 0;
	enum img_vdisk_format vpc_sub = 0, vmdk_sub = 0;
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
	while ((ch = getopt_long(argc, argv, colon_opts, long_opts, NULL)) != -1) {
		switch (ch) {
		case OPT_EFI:
		case OPT_BIOS:
		case OPT_HYBRID:
		case OPT_STORE:
		case OPT_EMPTY: {
			static const enum img_mode modes[] = { IMG_MODE_EFI, IMG_MODE_BIOS,
				                               IMG_MODE_HYBRID, IMG_MODE_STORE,
				                               IMG_MODE_EMPTY };
			enum img_mode m = modes[ch - OPT_EFI];

			if (mode_set && c->o.mode != m)
				return usage_error("%s", "only one mode may be given");
			c->o.mode = m;
			mode_set = 1;
			break;
		}
		case 'o':
			c->o.output = optarg;
			break;
		case OPT_FORMAT:
			if (format_of(optarg, &c->o.format) < 0)
				return usage_error(
				    "--format: '%s' is not raw, qcow2, vpc, vdi or vmdk", optarg);
			format = optarg;
			break;
		case OPT_VPC_SUB:
			if (pick("--vpc-subformat", optarg, vpc_subs, &v) < 0)
				return 2;
			vpc_sub = (enum img_vdisk_format)v;
			break;
		case OPT_VMDK_SUB:
			if (pick("--vmdk-subformat", optarg, vmdk_subs, &v) < 0)
				return 2;
			vmdk_sub = (enum img_vdisk_format)v;
			break;
		case OPT_COMPRESS:
			if (pick("--compress", optarg, compressions, &v) < 0)
				return 2;
			c->o.compression = (enum img_qcow2_compression)v;
			break;
		case OPT_CLUSTER:
			if (tool_parse_size("--cluster-size", optarg, &cluster) < 0)
				return 2;
			if (cluster < 512 || cluster > (2u << 20) || (cluster & (cluster - 1)))
				return usage_error("--cluster-size: '%s' is not a power of two "
				                   "from 512 to 2M",
				                   optarg);
			c->o.cluster_bits = (unsigned)__builtin_ctzll(cluster);
			break;
		case OPT_TAR:
			c->o.tar = optarg;
			break;
		case OPT_ROOT:
			c->o.root = optarg;
			break;
		case OPT_STORE_DIR:
			c->o.store_dir = optarg;
			break;
		case OPT_SIZE:
			if (tool_parse_size("--size", optarg, &c->o.size) < 0)
				return 2;
			if (!c->o.size)
				return usage_error("--size: '%s': the size must not be 0", optarg);
			break;
		case OPT_ADDITIONAL:
			if (tool_parse_size("--additional-space", optarg, &c->o.additional_space) <
			    0)
				return 2;
			c->o.additional_space_set = 1;
			break;
		case OPT_BOOT_SIZE:
			if (tool_parse_size("--boot-size", optarg, &c->o.boot_size) < 0)
				return 2;
			if (!c->o.boot_size)
				return usage_error("--boot-size: '%s': the size must not be 0",
				                   optarg);
			break;
		case OPT_LABEL:
			if (!img_bootspec_text_ok(optarg))
				return usage_error("%s", "--label: holds a control character (a "
				                         "newline, a tab, ...)");
			c->o.label = optarg;
			break;
		case OPT_SYSTEM:
			c->o.system = optarg;
			break;
		case OPT_BOOTLOADER:
			c->o.bootloader = optarg;
			break;
		case OPT_UKI:
			c->o.uki = 1;
			break;
		case OPT_UKI_STUB:
			c->o.uki_stub = optarg;
			break;
		case OPT_GRUB:
			c->o.grub_dir = optarg;
			break;
		case OPT_KPARAMS:
			/* one line of a boot entry: a newline would start another */
			if (!img_bootspec_text_ok(optarg))
				return usage_error("%s",
				                   "--kernel-params: holds a control character "
				                   "(a newline, a tab, ...): boot entries take "
				                   "one line");
			c->o.kernel_params = optarg;
			break;
		case OPT_SPECIALISATION:
			if (!*optarg || !img_bootspec_text_ok(optarg) || strchr(optarg, '/'))
				return usage_error("%s",
				                   "--specialisation: not a specialisation name");
			c->o.specialisation = optarg;
			break;
		case OPT_VERITY:
			c->o.verity = 1;
			break;
		case OPT_COMPRESS_FS: {
			char *end = NULL;

			if (!strcmp(optarg, "lz4")) {
				c->o.fs_compression = IMG_FS_COMPRESS_LZ4;
			} else if (!strcmp(optarg, "lz4hc")) {
				c->o.fs_compression = IMG_FS_COMPRESS_LZ4HC;
			} else if (!strncmp(optarg, "lz4hc:", 6)) {
				long lv;

				errno = 0;
				lv = strtol(optarg + 6, &end, 10);
				if (errno || end == optarg + 6 || *end || lv < 1 || lv > 12)
					return usage_error(
					    "--compress-fs: '%s': the lz4hc level is "
					    "1 to 12",
					    optarg);
				c->o.fs_compression = IMG_FS_COMPRESS_LZ4HC;
				c->o.fs_compression_level = (int)lv;
			} else {
				return usage_error("--compress-fs: '%s' is not lz4, lz4hc or "
				                   "lz4hc:LEVEL",
				                   optarg);
			}
			break;
		}
		case OPT_KEEP_HARDLINKS:
			c->o.tree_flags |= IMG_TREE_KEEP_HARDLINKS;
			break;
		case OPT_SEED:
			c->o.seed = optarg;
			c->o.seed_len = strlen(optarg);
			break;
		case OPT_MANIFEST:
			c->manifest = optarg;
			break;
		case OPT_NO_MANIFEST:
			c->no_manifest = 1;
			break;
		case OPT_NO_DIRECT_IO:
			c->direct_io = 0;
			break;
		case 'q':
			c->quiet = 1;
			break;
		case 'v':
			c->verbose = 1;
			break;
		case 'h':
			tool_help(&tool_doc, stdout);
			return -1;
		case OPT_VERSION:
			printf("mkvmimage (libimg) %s\n", IMG_VERSION);
			return -1;
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
		c->o.closure = argv[optind++];
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	c->format_given = format != NULL;
	c->vpc_sub = vpc_sub;
	c->vmdk_sub = vmdk_sub;
	return mkvmimage_check_args(c);
}
