/*
 * vmlaunch.c -- start QEMU on an image, or on a NixOS system (docs/cli.md,
 * vmlaunch; docs/qemu-vm.md for the reference's options).
 *
 * Options (vmlaunch-opts.h) go into struct img_vm_opts through one table
 * (what each option sets and how its value is read); the environment (the
 * NixOS runner's variables) is read in one function; then img_vm_new /
 * img_vm_prepare / img_vm_run. Exit status: 0 success (or QEMU's status),
 * 1 failure, 2 usage error; with --expect: 0 when the text appeared, 1
 * otherwise.
 */
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <img/context.h>
#include <img/vm.h>

#include "tool-util.h"
#include "vmlaunch-opts.h"
#include "vmlaunch-relay.h"

#define MAXN 64

struct list {
	const char *v[MAXN];
	size_t n;
};

/* Everything the command line and the environment set. */
struct cli {
	struct img_vm_opts o;
	struct list shares, fwds, gfwds, fwdirs, qopts, consoles, drives;
	uint64_t empty[MAXN];
	size_t nempty;
	unsigned vlans[MAXN];
	size_t nvlans;
	int print, dry, quiet, verbose, graphics, certs, help, version;
	const char *store;
	uint64_t disk_size;
	char *state_home, *config_home, *qemu_opts_env, *relay_str, *xchg;
};

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

static int add(struct list *l, const char *opt, const char *s)
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
			return add((struct list *)at, name, arg);
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

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

/* The environment, in one place: the NixOS runner's variables and ours. */
static int read_env(struct cli *c)
{
	struct img_vm_opts *o = &c->o;

	if (!o->net_opts)
		o->net_opts = env("QEMU_NET_OPTS");
	o->kernel_params = env("QEMU_KERNEL_PARAMS");
	o->disk_image = env("NIX_DISK_IMAGE");
	o->efi_vars = env("NIX_EFI_VARS");
	o->swtpm_dir = env("NIX_SWTPM_DIR");
	o->shared_dir = env("SHARED_DIR");
	o->tmpdir = env("TMPDIR");
	/* The reference uses TMPDIR itself (not a new one) when USE_TMPDIR is
	 * set too; what lives there for us is the xchg share. */
	if (env("USE_TMPDIR") && o->tmpdir && asprintf(&c->xchg, "%s/xchg", o->tmpdir) > 0)
		o->xchg_dir = c->xchg;
	if (env("QEMU_OPTS")) {
		c->qemu_opts_env = strdup(env("QEMU_OPTS"));
		if (!c->qemu_opts_env)
			return -1;
		/* split on spaces, as the reference's unquoted $QEMU_OPTS */
		for (char *t = strtok(c->qemu_opts_env, " \t\n"); t; t = strtok(NULL, " \t\n"))
			if (add(&c->qopts, "QEMU_OPTS", t) < 0)
				return -1;
	}
	if (env("XDG_STATE_HOME"))
		c->state_home = strdup(env("XDG_STATE_HOME"));
	else if (env("HOME") && asprintf(&c->state_home, "%s/.local/state", env("HOME")) < 0)
		c->state_home = NULL;
	if (env("XDG_CONFIG_HOME"))
		c->config_home = strdup(env("XDG_CONFIG_HOME"));
	else if (env("HOME") && asprintf(&c->config_home, "%s/.config", env("HOME")) < 0)
		c->config_home = NULL;
	o->state_home = c->state_home;
	o->config_home = c->config_home;
	o->graphics = c->graphics >= 0 ? c->graphics : (env("DISPLAY") || env("WAYLAND_DISPLAY"));
	if (c->certs) {
		o->host_certs = env("NIX_SSL_CERT_FILE");
		if (!o->host_certs)
			o->host_certs = access("/etc/ssl/certs/ca-certificates.crt", R_OK) == 0
			                    ? "/etc/ssl/certs/ca-certificates.crt"
			                    : "/etc/pki/tls/certs/ca-bundle.crt";
	}
	return 0;
}

/* Lists and arrays into the options; the console mode. */
static void finish_opts(struct cli *c)
{
	struct img_vm_opts *o = &c->o;

	if (c->store && !strcmp(c->store, "auto"))
		o->store_image_auto = 1;
	else
		o->store_image = c->store;
	o->disk_size = c->disk_size;
	o->dry_run = c->dry; /* checks what a start would refuse, changing nothing */
	if (c->gfwds.n)
		o->relay_cmd = c->relay_str = vmlaunch_relay_cmd();
	/* A terminal gets an interactive console; otherwise (and for --expect)
	 * the console only goes to the log, which we watch. */
	o->console =
	    !o->expect && isatty(0) && isatty(1) ? IMG_VM_CONSOLE_STDIO : IMG_VM_CONSOLE_FILE;
	o->shares = c->shares.v;
	o->nshares = c->shares.n;
	o->forwards = c->fwds.v;
	o->nforwards = c->fwds.n;
	o->guest_forwards = c->gfwds.v;
	o->nguest_forwards = c->gfwds.n;
	o->qemu_opts = c->qopts.v;
	o->nqemu_opts = c->qopts.n;
	o->consoles = c->consoles.v;
	o->nconsoles = c->consoles.n;
	o->drives = c->drives.v;
	o->ndrives = c->drives.n;
	o->empty_disks = c->empty;
	o->nempty_disks = c->nempty;
	o->vlans = c->vlans;
	o->nvlans = c->nvlans;
	if (c->fwdirs.n) {
		o->firmware_dirs = c->fwdirs.v;
		o->nfirmware_dirs = c->fwdirs.n;
		o->no_firmware_fallback = 1;
	}
}

/* Options and operands; 0 to go on, else the exit status. */
static int parse_args(struct cli *c, int argc, char **argv)
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
	if ((c->o.initrd || c->o.append) && !c->o.kernel && c->o.boot != IMG_VM_BOOT_DIRECT) {
		tool_err("--initrd/--append need --kernel (or --boot direct)");
		return 2;
	}
	return 0;
}

/* The ephemeral log goes with its state: show its end before it does. */
static void show_tail(const char *path)
{
	char buf[4096];
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f)
		return;
	if (fseek(f, -(long)sizeof(buf), SEEK_END) < 0)
		rewind(f);
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	fprintf(stderr, "vmlaunch: the ephemeral console log ends with (use --serial-log FILE "
	                "to keep all of it):\n");
	fwrite(buf, 1, n, stderr);
	fputc('\n', stderr);
}

/* --print-cmdline / --dry-run: one text, then exit. */
static int print_text(struct img_vm *vm, int cmdline)
{
	char *s;

	if ((cmdline ? img_vm_cmdline(vm, &s) : img_vm_describe(vm, &s)) < 0)
		return 1;
	fputs(s, stdout);
	free(s);
	return 0;
}

/* What the state held or got, said aloud (unless quiet). */
static void say_state(const struct img_vm_info *info)
{
	if (info->root_disk && info->root_disk_created)
		fprintf(stderr, "vmlaunch: root disk: created %s (empty ext4, label nixos)\n",
		        info->root_disk);
	if (info->store_image && info->closure_paths)
		fprintf(stderr, "vmlaunch: store image: %s %s (%zu store paths)\n",
		        info->store_image_cached ? "cache hit, reusing" : "built",
		        info->store_image, info->closure_paths);
}

/* After --expect: why the text did not come, and the exit status. */
static int expect_status(const struct img_vm_opts *o, const struct img_vm_info *info,
                         const struct img_vm_result *res)
{
	const char *log = o->serial_log ? o->serial_log : info->console_log;

	if (res->expect_found)
		return 0;
	if (res->timed_out)
		tool_err("'%s' did not appear within %u s; console log: %s", o->expect,
		         o->timeout_s, log);
	else if (res->cancelled)
		tool_err("stopped by a signal before '%s' appeared; console log: %s", o->expect,
		         log);
	else
		tool_err("the VM stopped (QEMU status %d) before '%s' appeared; console log: %s",
		         res->exit_status, o->expect, log);
	if (o->ephemeral && !o->serial_log)
		show_tail(info->console_log);
	return 1;
}

static int launch(struct cli *c)
{
	const struct img_vm_opts *o = &c->o;
	struct img_ctx *ctx;
	struct img_vm *vm = NULL;
	struct img_vm_result res;
	struct img_vm_info info;
	struct termios tio;
	int have_tio, rc = 1;

	if (img_ctx_new(&ctx) < 0) {
		tool_err("out of memory");
		return 1;
	}
	img_ctx_set_log(ctx,
	                c->quiet     ? IMG_LOG_ERROR
	                : c->verbose ? IMG_LOG_DEBUG
	                             : IMG_LOG_WARN,
	                tool_log_cb, NULL);
	if (img_vm_new(ctx, o, &vm) < 0) {
		tool_err("%s", img_ctx_error(ctx));
		goto out;
	}
	if (c->print || c->dry) {
		rc = print_text(vm, c->print);
		goto out;
	}
	img_vm_get_info(vm, &info);
	if (!c->quiet) {
		fprintf(stderr, "vmlaunch: accelerator: %s (%s)\n",
		        info.accel == IMG_VM_ACCEL_KVM ? "kvm" : "tcg", info.accel_reason);
		if (info.fw_code)
			fprintf(stderr, "vmlaunch: firmware: %s (%s)\n", info.fw_code,
			        info.fw_descriptor ? info.fw_descriptor : "known path");
	}
	/* No deadline: img_vm_run() stops the VM gracefully (power-down, grace
	 * period, quit, kill) and reaps every child, which takes a while. */
	tool_install_signals(ctx, 0);
	if (img_vm_prepare(ctx, vm) < 0) {
		tool_err("%s", img_ctx_error(ctx));
		goto out;
	}
	img_vm_get_info(vm, &info);
	if (!c->quiet)
		say_state(&info);
	if (!c->quiet && o->console == IMG_VM_CONSOLE_FILE)
		fprintf(stderr, "vmlaunch: console log: %s\n", info.console_log);
	/* QEMU puts an interactive terminal in raw mode; put it back whatever
	 * way QEMU ends (a SIGKILLed QEMU cannot). */
	have_tio = o->console == IMG_VM_CONSOLE_STDIO && tcgetattr(0, &tio) == 0;
	if (img_vm_run(ctx, vm, &res) < 0) {
		tool_err("%s", img_ctx_error(ctx));
	} else {
		rc = o->expect ? expect_status(o, &info, &res) : res.exit_status;
	}
	if (have_tio)
		tcsetattr(0, TCSANOW, &tio);
out:
	img_vm_free(vm);
	img_ctx_free(ctx);
	return rc;
}

int main(int argc, char **argv)
{
	struct cli c;
	int rc;

	tool_name = "vmlaunch";
	if (argc == 4 && !strcmp(argv[1], "--relay"))
		return vmlaunch_relay(argv[2], argv[3]);
	memset(&c, 0, sizeof(c));
	c.graphics = -1;
	rc = parse_args(&c, argc, argv);
	if (rc)
		return rc < 0 ? 0 : rc;
	if (read_env(&c) < 0)
		return 2;
	finish_opts(&c);
	rc = launch(&c);
	free(c.state_home);
	free(c.config_home);
	free(c.qemu_opts_env);
	free(c.relay_str);
	free(c.xchg);
	return rc;
}
