/*
 * vmlaunch.c -- start QEMU on an image, or on a NixOS system (docs/cli.md,
 * vmlaunch; docs/qemu-vm.md for the reference's options).
 *
 * The options are parsed by vmlaunch-args.c (one table, vmlaunch-opts.h);
 * here the environment (the NixOS runner's variables) is read in one
 * function, then img_vm_new / img_vm_prepare / img_vm_run. Exit status: 0
 * success (or QEMU's status), 1 failure, 2 usage error; with --expect: 0
 * when the text appeared, 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <img/context.h>
#include <img/vm.h>

#include "tool-util.h"
#include "vmlaunch-args.h"
#include "vmlaunch-relay.h"

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

/* The environment, in one place: the NixOS runner's variables and ours. */
/* What --system asks for by name (NIXPKGS_QEMU_KERNEL_<system.name>). */
static const char *env_lookup(void *user, const char *name)
{
	(void)user;
	return env(name);
}

static int read_env(struct cli *c)
{
	struct img_vm_opts *o = &c->o;

	o->env = env_lookup;

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
			if (vmlaunch_list_add(&c->qopts, "QEMU_OPTS", t) < 0)
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
	rc = vmlaunch_parse_args(&c, argc, argv);
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
