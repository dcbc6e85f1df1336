/*
 * vmlaunch.c -- start QEMU on an image (docs/cli.md, vmlaunch).
 *
 * Parse options and the environment (the NixOS runner's variables) into
 * struct img_vm_opts, then img_vm_new / img_vm_prepare / img_vm_run.
 * Exit status: 0 success (or QEMU's status), 1 failure, 2 usage error;
 * with --expect: 0 when the text appeared, 1 otherwise.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <img/context.h>
#include <img/vm.h>

#include "tool-util.h"
#include "vmlaunch-opts.h"

#define MAXN 64

struct list {
	const char *v[MAXN];
	size_t n;
};

static int add(struct list *l, const char *opt, const char *s)
{
	if (l->n == MAXN) {
		tool_err("%s: at most %d times", opt, MAXN);
		return -1;
	}
	l->v[l->n++] = s;
	return 0;
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

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

/*
 * vmlaunch --relay HOSTADDR HOSTPORT: what QEMU runs for each connection to
 * a --guest-forward address (in place of the reference's "nc HOST PORT"):
 * connect to the host service and copy bytes both ways between it and
 * stdin/stdout (QEMU's end of the guest connection).
 */
static int relay(const char *host, const char *port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
	struct pollfd pf[2];
	char buf[65536];
	int s, in_open = 1;

	if (getaddrinfo(host, port, &hints, &ai) != 0) {
		tool_err("--relay: cannot resolve %s:%s", host, port);
		return 1;
	}
	s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, ai->ai_addr, ai->ai_addrlen) < 0) {
		tool_err("--relay: %s:%s: %s", host, port, strerror(errno));
		freeaddrinfo(ai);
		return 1;
	}
	freeaddrinfo(ai);
	for (;;) {
		ssize_t n;

		pf[0] = (struct pollfd){ .fd = in_open ? 0 : -1, .events = POLLIN };
		pf[1] = (struct pollfd){ .fd = s, .events = POLLIN };
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		if (pf[0].revents) {
			n = read(0, buf, sizeof(buf));
			if (n <= 0) {
				shutdown(s, SHUT_WR);
				in_open = 0;
			} else if (send(s, buf, (size_t)n, MSG_NOSIGNAL) != n) {
				return 1;
			}
		}
		if (pf[1].revents) {
			n = recv(s, buf, sizeof(buf), 0);
			if (n <= 0)
				return 0;
			if (write(1, buf, (size_t)n) != n)
				return 1;
		}
	}
}

/* "<this program> --relay" when its path is plain enough for QEMU to split. */
static char *relay_cmd(void)
{
	char exe[4096], *out;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n <= 0)
		return NULL;
	exe[n] = '\0';
	if (exe[strspn(exe, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._+-")])
		return NULL; /* QEMU would split it: fall back to nc */
	return asprintf(&out, "%s --relay", exe) < 0 ? NULL : out;
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

/* QEMU_OPTS: split on spaces, as the reference's unquoted $QEMU_OPTS. */
static int split_spaces(char *s, struct list *l)
{
	for (char *tok = strtok(s, " \t\n"); tok; tok = strtok(NULL, " \t\n"))
		if (add(l, "QEMU_OPTS", tok) < 0)
			return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct img_vm_opts o;
	struct list shares = { 0 }, fwds = { 0 }, gfwds = { 0 }, fwdirs = { 0 }, qopts = { 0 };
	uint64_t empty[MAXN];
	unsigned vlans[MAXN];
	size_t nempty = 0, nvlans = 0;
	int c, print = 0, dry = 0, quiet = 0, verbose = 0, graphics = -1, certs = 0, r, rc;
	char *state_home = NULL, *config_home = NULL, *qemu_opts_env = NULL, *relay_str = NULL;
	struct img_ctx *ctx;
	struct img_vm *vm;
	struct img_vm_result res;
	struct img_vm_info info;
	struct termios tio;
	int have_tio;
	struct option *longopts;
	char *shortopts;

	tool_name = "vmlaunch";
	if (argc == 4 && !strcmp(argv[1], "--relay"))
		return relay(argv[2], argv[3]);
	memset(&o, 0, sizeof(o));
	tool_getopt(&tool_doc, &longopts, &shortopts);
	while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		switch (c) {
		case OPT_NAME:
			o.name = optarg;
			break;
		case OPT_STATE_DIR:
			o.state_dir = optarg;
			break;
		case OPT_EPHEMERAL:
			o.ephemeral = 1;
			break;
		case OPT_FRESH:
			o.fresh = 1;
			break;
		case 'm':
			if (parse_uint("--memory", optarg, 16, 1 << 24, &o.memory_mib) < 0)
				return 2;
			break;
		case 'c':
			if (parse_uint("--cores", optarg, 1, 1024, &o.cores) < 0)
				return 2;
			break;
		case OPT_STORE:
			o.store_image = optarg;
			break;
		case OPT_EMPTY:
			if (nempty == MAXN ||
			    tool_parse_size("--empty-disk", optarg, &empty[nempty]) < 0)
				return 2;
			if (!empty[nempty]) {
				tool_err("--empty-disk: the size must not be 0");
				return 2;
			}
			nempty++;
			break;
		case OPT_SHARE:
			if (add(&shares, "--share", optarg) < 0)
				return 2;
			break;
		case OPT_FORWARD:
			if (add(&fwds, "--forward", optarg) < 0)
				return 2;
			break;
		case OPT_GFORWARD:
			if (add(&gfwds, "--guest-forward", optarg) < 0)
				return 2;
			break;
		case OPT_RESTRICT:
			o.restrict_network = 1;
			break;
		case OPT_VLAN:
			if (nvlans == MAXN ||
			    parse_uint("--vlan", optarg, 1, 255, &vlans[nvlans]) < 0)
				return 2;
			nvlans++;
			break;
		case OPT_VLAN_INDEX:
			if (parse_uint("--vlan-index", optarg, 1, 254, &o.vlan_index) < 0)
				return 2;
			break;
		case OPT_GRAPHICS:
			graphics = 1;
			break;
		case OPT_NOGRAPHIC:
			graphics = 0;
			break;
		case OPT_BOOT:
			if (!strcmp(optarg, "efi"))
				o.boot = IMG_VM_BOOT_EFI;
			else if (!strcmp(optarg, "bios"))
				o.boot = IMG_VM_BOOT_BIOS;
			else if (!strcmp(optarg, "direct"))
				o.boot = IMG_VM_BOOT_DIRECT;
			else {
				tool_err("--boot: '%s' is not efi, bios or direct", optarg);
				return 2;
			}
			break;
		case OPT_KERNEL:
			o.kernel = optarg;
			break;
		case OPT_INITRD:
			o.initrd = optarg;
			break;
		case OPT_APPEND:
			o.append = optarg;
			break;
		case OPT_SECURE:
			o.secure_boot = 1;
			break;
		case OPT_TPM:
			o.tpm = 1;
			break;
		case OPT_DISKIF:
			if (!strcmp(optarg, "virtio"))
				o.disk_if = IMG_VM_DISK_VIRTIO;
			else if (!strcmp(optarg, "scsi"))
				o.disk_if = IMG_VM_DISK_SCSI;
			else if (!strcmp(optarg, "ide"))
				o.disk_if = IMG_VM_DISK_IDE;
			else {
				tool_err("--disk-interface: '%s' is not virtio, scsi or ide",
				         optarg);
				return 2;
			}
			break;
		case OPT_CERTS:
			certs = 1;
			break;
		case OPT_BIOS:
			o.bios_file = optarg;
			break;
		case OPT_QGA:
			o.guest_agent = 1;
			break;
		case OPT_QEMU:
			o.qemu = optarg;
			break;
		case OPT_SWTPM:
			o.swtpm = optarg;
			break;
		case OPT_ACCEL:
			if (!strcmp(optarg, "auto"))
				o.accel = IMG_VM_ACCEL_AUTO;
			else if (!strcmp(optarg, "kvm"))
				o.accel = IMG_VM_ACCEL_KVM;
			else if (!strcmp(optarg, "tcg"))
				o.accel = IMG_VM_ACCEL_TCG;
			else {
				tool_err("--accel: '%s' is not auto, kvm or tcg", optarg);
				return 2;
			}
			break;
		case OPT_KVMDEV:
			o.kvm_device = optarg;
			break;
		case OPT_FWDIR:
			if (add(&fwdirs, "--firmware-dir", optarg) < 0)
				return 2;
			break;
		case OPT_SERIAL:
			o.serial_log = optarg;
			break;
		case OPT_EXPECT:
			o.expect = optarg;
			break;
		case OPT_TIMEOUT:
			if (parse_uint("--timeout", optarg, 1, 1000000, &o.timeout_s) < 0)
				return 2;
			break;
		case OPT_STOP:
			if (parse_uint("--stop-timeout", optarg, 1, 3600, &o.stop_timeout_s) < 0)
				return 2;
			break;
		case OPT_PRINT:
			print = 1;
			break;
		case OPT_DRY:
			dry = o.dry_run = 1;
			break;
		case 'q':
			quiet = 1;
			break;
		case 'v':
			verbose = 1;
			break;
		case OPT_HELP:
			tool_help(&tool_doc, stdout);
			return 0;
		case OPT_VERSION:
			printf("vmlaunch (libimg) %s\n", IMG_VERSION);
			return 0;
		default:
			fprintf(stderr, "Try 'vmlaunch --help'.\n");
			return 2;
		}
	}
	if (optind >= argc) {
		tool_err("no IMAGE given (see --help)");
		return 2;
	}
	o.image = argv[optind++];
	if (optind < argc && !strcmp(argv[optind], "--"))
		optind++;
	else if (optind < argc) {
		tool_err("unexpected argument '%s' (QEMU arguments go after --)", argv[optind]);
		return 2;
	}
	o.extra_args = (const char *const *)argv + optind;
	o.nextra_args = (size_t)(argc - optind);
	if (o.timeout_s && !o.expect) {
		tool_err("--timeout needs --expect");
		return 2;
	}
	if ((o.initrd || o.append) && !o.kernel && o.boot != IMG_VM_BOOT_DIRECT) {
		tool_err("--initrd/--append need --kernel (or --boot direct)");
		return 2;
	}

	/* The environment, in one place. */
	o.net_opts = env("QEMU_NET_OPTS");
	o.kernel_params = env("QEMU_KERNEL_PARAMS");
	o.disk_image = env("NIX_DISK_IMAGE");
	o.efi_vars = env("NIX_EFI_VARS");
	o.swtpm_dir = env("NIX_SWTPM_DIR");
	o.shared_dir = env("SHARED_DIR");
	o.tmpdir = env("TMPDIR");
	if (gfwds.n)
		o.relay_cmd = relay_str = relay_cmd();
	if (env("QEMU_OPTS")) {
		qemu_opts_env = strdup(env("QEMU_OPTS"));
		if (!qemu_opts_env || split_spaces(qemu_opts_env, &qopts) < 0)
			return 2;
	}
	if (env("XDG_STATE_HOME"))
		state_home = strdup(env("XDG_STATE_HOME"));
	else if (env("HOME") && asprintf(&state_home, "%s/.local/state", env("HOME")) < 0)
		state_home = NULL;
	if (env("XDG_CONFIG_HOME"))
		config_home = strdup(env("XDG_CONFIG_HOME"));
	else if (env("HOME") && asprintf(&config_home, "%s/.config", env("HOME")) < 0)
		config_home = NULL;
	o.state_home = state_home;
	o.config_home = config_home;
	o.graphics = graphics >= 0 ? graphics : (env("DISPLAY") || env("WAYLAND_DISPLAY"));
	if (certs) {
		o.host_certs = env("NIX_SSL_CERT_FILE");
		if (!o.host_certs)
			o.host_certs = access("/etc/ssl/certs/ca-certificates.crt", R_OK) == 0
			                   ? "/etc/ssl/certs/ca-certificates.crt"
			                   : "/etc/pki/tls/certs/ca-bundle.crt";
	}
	/* A terminal gets an interactive console; otherwise (and for --expect)
	 * the console only goes to the log, which we watch. */
	o.console =
	    !o.expect && isatty(0) && isatty(1) ? IMG_VM_CONSOLE_STDIO : IMG_VM_CONSOLE_FILE;
	o.shares = shares.v;
	o.nshares = shares.n;
	o.forwards = fwds.v;
	o.nforwards = fwds.n;
	o.guest_forwards = gfwds.v;
	o.nguest_forwards = gfwds.n;
	o.qemu_opts = qopts.v;
	o.nqemu_opts = qopts.n;
	o.empty_disks = empty;
	o.nempty_disks = nempty;
	o.vlans = vlans;
	o.nvlans = nvlans;
	if (fwdirs.n) {
		o.firmware_dirs = fwdirs.v;
		o.nfirmware_dirs = fwdirs.n;
		o.no_firmware_fallback = 1;
	}

	if (img_ctx_new(&ctx) < 0) {
		tool_err("out of memory");
		return 1;
	}
	img_ctx_set_log(ctx,
	                quiet     ? IMG_LOG_ERROR
	                : verbose ? IMG_LOG_DEBUG
	                          : IMG_LOG_WARN,
	                tool_log_cb, NULL);
	rc = 1;
	if ((r = img_vm_new(ctx, &o, &vm)) < 0) {
		tool_err("%s", img_ctx_error(ctx));
		goto out_ctx;
	}
	img_vm_get_info(vm, &info);
	if (print) {
		char *s;

		if (img_vm_cmdline(vm, &s) == 0) {
			fputs(s, stdout);
			free(s);
			rc = 0;
		}
		goto out_vm;
	}
	if (dry) {
		char *s;

		if (img_vm_describe(vm, &s) == 0) {
			fputs(s, stdout);
			free(s);
			rc = 0;
		}
		goto out_vm;
	}
	if (!quiet) {
		fprintf(stderr, "vmlaunch: accelerator: %s (%s)\n",
		        info.accel == IMG_VM_ACCEL_KVM ? "kvm" : "tcg", info.accel_reason);
		if (info.fw_code)
			fprintf(stderr, "vmlaunch: firmware: %s (%s)\n", info.fw_code,
			        info.fw_descriptor ? info.fw_descriptor : "known path");
	}
	/* No deadline: img_vm_run() stops the VM gracefully (power-down, grace
	 * period, quit, kill) and reaps every child, which takes a while. */
	tool_install_signals(ctx, 0);
	if ((r = img_vm_prepare(ctx, vm)) < 0) {
		tool_err("%s", img_ctx_error(ctx));
		goto out_vm;
	}
	img_vm_get_info(vm, &info);
	if (!quiet && o.console == IMG_VM_CONSOLE_FILE)
		fprintf(stderr, "vmlaunch: console log: %s\n", info.console_log);
	/* QEMU puts an interactive terminal in raw mode; put it back whatever
	 * way QEMU ends (a SIGKILLed QEMU cannot). */
	have_tio = o.console == IMG_VM_CONSOLE_STDIO && tcgetattr(0, &tio) == 0;
	r = img_vm_run(ctx, vm, &res);
	if (have_tio)
		tcsetattr(0, TCSANOW, &tio);
	if (r < 0) {
		tool_err("%s", img_ctx_error(ctx));
		goto out_vm;
	}
	if (o.expect) {
		if (res.expect_found) {
			rc = 0;
		} else if (res.timed_out) {
			tool_err("'%s' did not appear within %u s; console log: %s", o.expect,
			         o.timeout_s, o.serial_log ? o.serial_log : info.console_log);
		} else if (res.cancelled) {
			tool_err("stopped by a signal before '%s' appeared; console log: %s",
			         o.expect, o.serial_log ? o.serial_log : info.console_log);
		} else {
			tool_err("the VM stopped (QEMU status %d) before '%s' appeared; console "
			         "log: %s",
			         res.exit_status, o.expect,
			         o.serial_log ? o.serial_log : info.console_log);
		}
		if (rc && o.ephemeral && !o.serial_log)
			show_tail(info.console_log);
	} else {
		rc = res.exit_status;
	}
out_vm:
	img_vm_free(vm);
out_ctx:
	img_ctx_free(ctx);
	free(state_home);
	free(config_home);
	free(qemu_opts_env);
	free(relay_str);
	return rc;
}
