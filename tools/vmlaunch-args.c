/*
 * vmlaunch-args.c -- vmlaunch's options into struct cli through one table:
 * each option's row says where its value goes and how it is read (string,
 * flag, number in a range, a word of a set, a repeatable list, a size where
 * a bare number is MiB as the reference's). The options themselves (names,
 * help) are vmlaunch-opts.h.
 */
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool-util.h"
#include "vmlaunch-args.h"
#include "vmlaunch-opts.h"

struct word {
	const char *w;
	int v;
};
static const struct word boot_words[] = { { "efi", IMG_VM_BOOT_EFI },
	                                  { "bios", IMG_VM_BOOT_BIOS },
	                                  { "direct", IMG_VM_BOOT_DIRECT },
	                                  { NULL, 0 } };
static const struct word diskif_words[] = { { "virtio", IMG_VM_DISK_VIRTIO },
	                                    { "scsi", IMG_VM_DISK_SCSI },
	                                    { "ide", IMG_VM_DISK_IDE },
	                                    { NULL, 0 } };
static const struct word accel_words[] = { { "auto", IMG_VM_ACCEL_AUTO },
	                                   { "kvm", IMG_VM_ACCEL_KVM },
	                                   { "tcg", IMG_VM_ACCEL_TCG },
	                                   { NULL, 0 } };
static const struct word tpm_words[] = { { "tpm-tis", IMG_VM_TPM_TIS },
	                                 { "tpm-crb", IMG_VM_TPM_CRB },
	                                 { NULL, 0 } };

/* How an option's value is stored at .off in struct cli. */
enum kind {
	K_STR,   /* const char * */
	K_SET,   /* int = .max */
	K_UINT,  /* unsigned, .min..max */
	K_ENUM,  /* an enum, from .words */
	K_LIST,  /* struct list (repeatable) */
	K_SIZES, /* uint64_t[MAXN] + count at .off2; a bare number is MiB, not 0 */
	K_UINTS, /* unsigned[MAXN] + count at .off2, .min..max */
	K_MIB,   /* uint64_t; a bare number is MiB, not 0 */
};

struct row {
	int val;
	enum kind kind;
	size_t off, off2;
	unsigned min, max;
	const struct word *words;
};

#define C(f) offsetof(struct cli, f)
#define O(f) offsetof(struct cli, o.f)
static const struct row rows[] = {
	{ .val = OPT_NAME, .kind = K_STR, .off = O(name) },
	{ .val = OPT_STATE_DIR, .kind = K_STR, .off = O(state_dir) },
	{ .val = OPT_EPHEMERAL, .kind = K_SET, .off = O(ephemeral), .max = 1 },
	{ .val = OPT_FRESH, .kind = K_SET, .off = O(fresh), .max = 1 },
	{ .val = 'm', .kind = K_UINT, .off = O(memory_mib), .min = 16, .max = 1 << 24 },
	{ .val = 'c', .kind = K_UINT, .off = O(cores), .min = 1, .max = 1024 },
	{ .val = OPT_STORE, .kind = K_STR, .off = C(store) },
	{ .val = OPT_EMPTY, .kind = K_SIZES, .off = C(empty), .off2 = C(nempty) },
	{ .val = OPT_KEEP_EMPTY, .kind = K_SET, .off = O(keep_empty_disks), .max = 1 },
	{ .val = OPT_DRIVE, .kind = K_LIST, .off = C(drives) },
	{ .val = OPT_SHARE, .kind = K_LIST, .off = C(shares) },
	{ .val = OPT_FORWARD, .kind = K_LIST, .off = C(fwds) },
	{ .val = OPT_GFORWARD, .kind = K_LIST, .off = C(gfwds) },
	{ .val = OPT_RESTRICT, .kind = K_SET, .off = O(restrict_network), .max = 1 },
	{ .val = OPT_NET_OPTS, .kind = K_STR, .off = O(net_opts) },
	{ .val = OPT_NO_NET, .kind = K_SET, .off = O(no_net), .max = 1 },
	{ .val = OPT_VLAN,
	  .kind = K_UINTS,
	  .off = C(vlans),
	  .off2 = C(nvlans),
	  .min = 1,
	  .max = 255 },
	{ .val = OPT_VLAN_INDEX, .kind = K_UINT, .off = O(vlan_index), .min = 1, .max = 254 },
	{ .val = OPT_GRAPHICS, .kind = K_SET, .off = C(graphics), .max = 1 },
	{ .val = OPT_NOGRAPHIC, .kind = K_SET, .off = C(graphics) },
	{ .val = OPT_NO_KEYBOARD, .kind = K_SET, .off = O(no_virtio_keyboard), .max = 1 },
	{ .val = OPT_BOOT, .kind = K_ENUM, .off = O(boot), .words = boot_words },
	{ .val = OPT_KERNEL, .kind = K_STR, .off = O(kernel) },
	{ .val = OPT_INITRD, .kind = K_STR, .off = O(initrd) },
	{ .val = OPT_APPEND, .kind = K_STR, .off = O(append) },
	{ .val = OPT_SECURE, .kind = K_SET, .off = O(secure_boot), .max = 1 },
	{ .val = OPT_ENROLLED, .kind = K_SET, .off = O(enrolled_keys), .max = 1 },
	{ .val = OPT_FIRMWARE, .kind = K_STR, .off = O(firmware) },
	{ .val = OPT_VARS_TEMPLATE, .kind = K_STR, .off = O(efi_vars_template) },
	{ .val = OPT_TPM, .kind = K_SET, .off = O(tpm), .max = 1 },
	{ .val = OPT_TPM_MODEL, .kind = K_ENUM, .off = O(tpm_model), .words = tpm_words },
	{ .val = OPT_DISKIF, .kind = K_ENUM, .off = O(disk_if), .words = diskif_words },
	{ .val = OPT_CERTS, .kind = K_SET, .off = C(certs), .max = 1 },
	{ .val = OPT_BIOS, .kind = K_STR, .off = O(bios_file) },
	{ .val = OPT_QGA, .kind = K_SET, .off = O(guest_agent), .max = 1 },
	{ .val = OPT_QEMU, .kind = K_STR, .off = O(qemu) },
	{ .val = OPT_SWTPM, .kind = K_STR, .off = O(swtpm) },
	{ .val = OPT_ACCEL, .kind = K_ENUM, .off = O(accel), .words = accel_words },
	{ .val = OPT_KVMDEV, .kind = K_STR, .off = O(kvm_device) },
	{ .val = OPT_FWDIR, .kind = K_LIST, .off = C(fwdirs) },
	{ .val = OPT_SERIAL, .kind = K_STR, .off = O(serial_log) },
	{ .val = OPT_EXPECT, .kind = K_STR, .off = O(expect) },
	{ .val = OPT_TIMEOUT, .kind = K_UINT, .off = O(timeout_s), .min = 1, .max = 1000000 },
	{ .val = OPT_STOP, .kind = K_UINT, .off = O(stop_timeout_s), .min = 1, .max = 3600 },
	{ .val = OPT_PRINT, .kind = K_SET, .off = C(print), .max = 1 },
	{ .val = OPT_DRY, .kind = K_SET, .off = C(dry), .max = 1 },
	{ .val = 'q', .kind = K_SET, .off = C(quiet), .max = 1 },
	{ .val = 'v', .kind = K_SET, .off = C(verbose), .max = 1 },
	{ .val = OPT_HELP, .kind = K_SET, .off = C(help), .max = 1 },
	{ .val = OPT_VERSION, .kind = K_SET, .off = C(version), .max = 1 },
	{ .val = OPT_SYSTEM, .kind = K_STR, .off = O(system) },
	{ .val = OPT_ROOT, .kind = K_STR, .off = O(root) },
	{ .val = OPT_STORE_DIR, .kind = K_STR, .off = O(store_dir) },
	{ .val = OPT_CLOSURE_INFO, .kind = K_STR, .off = O(closure_info) },
	{ .val = OPT_NIX_DB, .kind = K_STR, .off = O(nix_db) },
	{ .val = OPT_DISK_SIZE, .kind = K_MIB, .off = C(disk_size) },
	{ .val = OPT_NO_ROOT_DISK, .kind = K_SET, .off = O(no_root_disk), .max = 1 },
	{ .val = OPT_CONSOLE, .kind = K_LIST, .off = C(consoles) },
};
#undef C
#undef O

/* "--name" for messages, from the option table. */
static const char *opt_name(int val)
{
	static char buf[64];

	for (const struct tool_opt *t = vmlaunch_opts; t->name || t->section; t++)
		if (t->name && t->val == val) {
			snprintf(buf, sizeof(buf), "--%s", t->name);
			return buf;
		}
	return "?";
}

static int parse_uint(const char *what, const char *s, unsigned min, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || !*s || *end || *s == '-' || v < min || v > max) {
		tool_err("%s: '%s' is not a number from %u to %u", what, s, min, max);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

/* A size as the reference's (MiB for a bare number), or with a suffix. */
static int parse_mib(const char *what, const char *s, uint64_t *out)
{
	if (*s && !s[strspn(s, "0123456789")]) {
		unsigned mib;

		if (parse_uint(what, s, 1, 1u << 30, &mib) < 0)
			return -1;
		*out = (uint64_t)mib << 20;
		return 0;
	}
	if (tool_parse_size(what, s, out) < 0)
		return -1;
	if (!*out) {
		tool_err("%s: the size must not be 0", what);
		return -1;
	}
	return 0;
}

int vmlaunch_list_add(struct list *l, const char *opt, const char *s)
{
	if (l->n == MAXN) {
		tool_err("%s: at most %d times", opt, MAXN);
		return -1;
	}
	l->v[l->n++] = s;
	return 0;
}

/* Store one option's value as its row says; -1 (message printed) if bad. */
static int apply(struct cli *c, int val, const char *arg)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *w = &rows[i];
		char *at = (char *)c + w->off;
		size_t *n = (size_t *)((char *)c + w->off2);
		const char *name = opt_name(val);

		if (w->val != val)
			continue;
		switch (w->kind) {
		case K_STR:
			*(const char **)at = arg;
			return 0;
		case K_SET:
			*(int *)at = (int)w->max;
			return 0;
		case K_UINT:
			return parse_uint(name, arg, w->min, w->max, (unsigned *)at);
		case K_ENUM: {
			char all[128] = "";

			for (const struct word *x = w->words; x->w; x++) {
				if (!strcmp(arg, x->w)) {
					*(int *)at = x->v;
					return 0;
				}
				snprintf(all + strlen(all), sizeof(all) - strlen(all), "%s%s",
				         x == w->words ? "" : ", ", x->w);
			}
			tool_err("%s: '%s' is not one of %s", name, arg, all);
			return -1;
		}
		case K_LIST:
			return vmlaunch_list_add((struct list *)at, name, arg);
		case K_SIZES:
		case K_UINTS:
			if (*n == MAXN) {
				tool_err("%s: at most %d times", name, MAXN);
				return -1;
			}
			if (w->kind == K_SIZES)
				return parse_mib(name, arg, &((uint64_t *)at)[(*n)++]);
			return parse_uint(name, arg, w->min, w->max, &((unsigned *)at)[(*n)++]);
		case K_MIB:
			return parse_mib(name, arg, (uint64_t *)at);
		}
	}
	return -1;
}

/* Options and operands; 0 to go on, else the exit status. */
int vmlaunch_parse_args(struct cli *c, int argc, char **argv)
{
	struct option *longopts;
	char *shortopts;
	int ch;

	tool_getopt(&tool_doc, &longopts, &shortopts);
	while ((ch = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		if (ch == '?' || apply(c, ch, optarg) < 0) {
			fprintf(stderr, "Try 'vmlaunch --help'.\n");
			return 2;
		}
		if (c->help) {
			tool_help(&tool_doc, stdout);
			return -1;
		}
		if (c->version) {
			printf("vmlaunch (libimg) %s\n", IMG_VERSION);
			return -1;
		}
	}
	if (!c->o.system) {
		if (optind >= argc || !strcmp(argv[optind], "--")) {
			tool_err("no IMAGE given, nor --system TOPLEVEL (see --help)");
			return 2;
		}
		c->o.image = argv[optind++];
	}
	if (optind < argc && !strcmp(argv[optind], "--")) {
		optind++;
	} else if (optind < argc) {
		tool_err("unexpected argument '%s' (QEMU arguments go after --)", argv[optind]);
		return 2;
	}
	c->o.extra_args = (const char *const *)argv + optind;
	c->o.nextra_args = (size_t)(argc - optind);
	if (c->o.timeout_s && !c->o.expect) {
		tool_err("--timeout needs --expect");
		return 2;
	}
	/* with --system the library says what --initrd/--append are for */
	if (!c->o.system && (c->o.initrd || c->o.append) && !c->o.kernel &&
	    c->o.boot != IMG_VM_BOOT_DIRECT) {
		tool_err("--initrd/--append need --kernel (or --boot direct)");
		return 2;
	}
	return 0;
}
