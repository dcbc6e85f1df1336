/*
 * vm.c -- VM description -> QEMU argv, as data.
 *
 * Implements the argument side of NixOS's qemu-vm.nix startVM (nixpkgs
 * nixos/modules/virtualisation/qemu-vm.nix; docs/cli.md): -nodefaults and
 * every device explicit, q35, virtio-rng, drives with explicit format=, the
 * system disk with serial "root", user networking with forwards bound to
 * 127.0.0.1, VLANs over a loopback multicast socket, 9p shares, a serial
 * console that is always logged, QMP, TPM, firmware pflash. Values that
 * land inside a QEMU option list have their commas doubled (QEMU's
 * escaping); nothing is ever joined into a shell string.
 */
#include <arpa/inet.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vm-private.h"

/* QEMU option values: ',' is written ",,". */
static char *esc(struct img_vm *vm, const char *s)
{
	size_t n = 0;
	char *out, *p;

	for (const char *q = s; *q; q++)
		n += *q == ',' ? 2 : 1;
	out = vm_keep(vm, malloc(n + 1));
	if (!out)
		return NULL;
	p = out;
	for (const char *q = s; *q; q++) {
		*p++ = *q;
		if (*q == ',')
			*p++ = ',';
	}
	*p = '\0';
	return out;
}

/* ---- spec parsing ---------------------------------------------------------- */

static int parse_port(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	if (!*s || *s < '0' || *s > '9')
		return -1;
	v = strtoul(s, &end, 10);
	if (*end || v == 0 || v > 65535)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static int is_ipv4(const char *s)
{
	struct in_addr a;

	return inet_pton(AF_INET, s, &a) == 1;
}

/* "[tcp|udp:][HOSTADDR:]HOSTPORT:GUESTPORT" */
static int parse_forward(struct img_ctx *ctx, const char *spec, struct vm_forward *f)
{
	char buf[256], *parts[4];
	size_t n = 0;
	char *p = buf;

	if (strlen(spec) >= sizeof(buf))
		goto bad;
	strcpy(buf, spec);
	memset(f, 0, sizeof(*f));
	while (n < 4) {
		parts[n++] = p;
		p = strchr(p, ':');
		if (!p)
			break;
		*p++ = '\0';
	}
	if (p)
		goto bad;
	{
		size_t i = 0;

		if (n >= 3 && (!strcmp(parts[0], "tcp") || !strcmp(parts[0], "udp"))) {
			f->udp = !strcmp(parts[0], "udp");
			i = 1;
		}
		if (n - i == 3) {
			if (!is_ipv4(parts[i]))
				return img_set_error(ctx, -EINVAL,
				                     "--forward %s: '%s' is not an IPv4 address "
				                     "(SLiRP forwards IPv4 only)",
				                     spec, parts[i]);
			snprintf(f->host_addr, sizeof(f->host_addr), "%s", parts[i]);
			i++;
		} else if (n - i == 2) {
			strcpy(f->host_addr, "127.0.0.1");
		} else {
			goto bad;
		}
		if (parse_port(parts[i], &f->host_port) || parse_port(parts[i + 1], &f->guest_port))
			goto bad;
	}
	return 0;
bad:
	return img_set_error(
	    ctx, -EINVAL, "--forward %s: expected [tcp|udp:][HOSTADDR:]HOSTPORT:GUESTPORT", spec);
}

/* "GUESTADDR:GUESTPORT:HOSTADDR:HOSTPORT" */
static int parse_guest_forward(struct img_ctx *ctx, const char *spec, struct vm_guest_forward *g)
{
	char buf[128], *a, *b, *c, *d;

	if (strlen(spec) >= sizeof(buf))
		goto bad;
	strcpy(buf, spec);
	a = buf;
	if (!(b = strchr(a, ':')))
		goto bad;
	*b++ = '\0';
	if (!(c = strchr(b, ':')))
		goto bad;
	*c++ = '\0';
	if (!(d = strchr(c, ':')))
		goto bad;
	*d++ = '\0';
	if (!is_ipv4(a) || !is_ipv4(c) || parse_port(b, &g->guest_port) ||
	    parse_port(d, &g->host_port))
		goto bad;
	/* As the reference asserts: the guest address is on SLiRP's network. */
	if (strncmp(a, "10.0.2.", 7))
		return img_set_error(ctx, -EINVAL,
		                     "--guest-forward %s: the guest address must be in 10.0.2.0/24 "
		                     "(the user network)",
		                     spec);
	snprintf(g->guest_addr, sizeof(g->guest_addr), "%s", a);
	snprintf(g->host_addr, sizeof(g->host_addr), "%s", c);
	return 0;
bad:
	return img_set_error(ctx, -EINVAL,
	                     "--guest-forward %s: expected GUESTADDR:GUESTPORT:HOSTADDR:HOSTPORT "
	                     "(IPv4 addresses, TCP)",
	                     spec);
}

static int valid_tag(const char *t)
{
	if (!*t || strlen(t) > 31)
		return 0;
	for (; *t; t++)
		if (!((*t >= 'a' && *t <= 'z') || (*t >= 'A' && *t <= 'Z') ||
		      (*t >= '0' && *t <= '9') || *t == '-' || *t == '_' || *t == '.'))
			return 0;
	return 1;
}

/* The tags the reference's guest configuration mounts; vmlaunch provides
 * them itself (xchg, shared, certs; nix-store in --system mode). */
static const char *const reserved_tags[] = { "xchg", "shared", "certs", "nix-store" };

/* "TAG:SOURCE:TARGET[:MODEL]" */
static int parse_share(struct img_ctx *ctx, struct img_vm *vm, const char *spec, struct vm_share *s)
{
	char *buf = vm_strdup(vm, spec), *src, *tgt, *model;

	if (!buf)
		return -ENOMEM;
	if (!(src = strchr(buf, ':')) || !(tgt = strchr(src + 1, ':')))
		return img_set_error(ctx, -EINVAL, "--share %s: expected TAG:SOURCE:TARGET[:MODEL]",
		                     spec);
	*src++ = '\0';
	*tgt++ = '\0';
	model = strchr(tgt, ':');
	if (model)
		*model++ = '\0';
	else
		model = "mapped-xattr"; /* the reference's default securityModel */
	if (!valid_tag(buf))
		return img_set_error(ctx, -EINVAL,
		                     "--share %s: tag '%s' must be 1-31 letters, digits, '-', '_' "
		                     "or '.'",
		                     spec, buf);
	for (size_t i = 0; i < IMG_ARRAY_SIZE(reserved_tags); i++)
		if (!strcmp(buf, reserved_tags[i]))
			return img_set_error(
			    ctx, -EINVAL,
			    "--share %s: tag '%s' is vmlaunch's own (xchg, shared, "
			    "certs and nix-store are the reference's shares; use "
			    "SHARED_DIR for shared, --host-certs for certs)",
			    spec, buf);
	if (!*src || !*tgt || tgt[0] != '/')
		return img_set_error(ctx, -EINVAL,
		                     "--share %s: SOURCE must be given and TARGET absolute", spec);
	if (strcmp(model, "passthrough") && strcmp(model, "mapped-xattr") &&
	    strcmp(model, "mapped-file") && strcmp(model, "none"))
		return img_set_error(ctx, -EINVAL,
		                     "--share %s: model '%s' is not one of passthrough, "
		                     "mapped-xattr, mapped-file, none",
		                     spec, model);
	s->tag = buf;
	s->source = src;
	s->target = tgt;
	s->model = model;
	return 0;
}

/* @src NULL: a directory of the state, set once its path is known. */
int vm_add_share(struct img_ctx *ctx, struct img_vm *vm, const char *tag, const char *src,
                 const char *tgt, const char *model)
{
	struct vm_share *s = &vm->shares[vm->nshares];

	for (size_t i = 0; i < vm->nshares; i++)
		if (!strcmp(vm->shares[i].tag, tag))
			return img_set_error(ctx, -EINVAL, "9p tag '%s' is used twice", tag);
	s->tag = vm_strdup(vm, tag);
	s->source = src ? vm_strdup(vm, src) : NULL;
	s->target = vm_strdup(vm, tgt);
	s->model = vm_strdup(vm, model);
	s->ours = !src;
	vm->nshares++;
	return 0;
}

int vm_parse_specs(struct img_ctx *ctx, struct img_vm *vm)
{
	const struct img_vm_opts *o = &vm->o;
	int r;

	vm->fwd = vm_keep(vm, img_malloc0(sizeof(*vm->fwd) * (o->nforwards + 1)));
	vm->gfwd = vm_keep(vm, img_malloc0(sizeof(*vm->gfwd) * (o->nguest_forwards + 1)));
	vm->shares = vm_keep(vm, img_malloc0(sizeof(*vm->shares) * (o->nshares + 5)));
	if (!vm->fwd || !vm->gfwd || !vm->shares)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < o->nforwards; i++) {
		if ((r = parse_forward(ctx, o->forwards[i], &vm->fwd[i])) < 0)
			return r;
		for (size_t j = 0; j < i; j++)
			if (vm->fwd[j].host_port == vm->fwd[i].host_port &&
			    vm->fwd[j].udp == vm->fwd[i].udp)
				return img_set_error(
				    ctx, -EINVAL, "--forward %s: host port %u is forwarded twice",
				    o->forwards[i], vm->fwd[i].host_port);
		vm->nfwd++;
	}
	if (o->relay_cmd) {
		const char *c = o->relay_cmd;

		if (!*c || c[0] == ' ' || strstr(c, "  ") || c[strlen(c) - 1] == ' ' ||
		    c[strspn(
		        c, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._+- ")])
			return img_set_error(
			    ctx, -EINVAL,
			    "relay command '%s': only letters, digits, '/._+-' and "
			    "single spaces",
			    c);
	}
	for (size_t i = 0; i < o->nguest_forwards; i++) {
		if ((r = parse_guest_forward(ctx, o->guest_forwards[i], &vm->gfwd[i])) < 0)
			return r;
		vm->ngfwd++;
	}
	for (size_t i = 0; i < o->nshares; i++) {
		struct vm_share s = { 0 };

		if ((r = parse_share(ctx, vm, o->shares[i], &s)) < 0)
			return r;
		if ((r = vm_add_share(ctx, vm, s.tag, s.source, s.target, s.model)) < 0)
			return r;
	}
	/* The reference's own shares, always: xchg (a directory of the state),
	 * shared ($SHARED_DIR, else xchg), certs (a copy of the host bundle). */
	if ((r = vm_add_share(ctx, vm, "xchg", NULL, "/tmp/xchg", "none")) < 0 ||
	    (r = vm_add_share(ctx, vm, "shared", o->shared_dir, "/tmp/shared", "none")) < 0)
		return r;
	if (o->host_certs &&
	    (r = vm_add_share(ctx, vm, "certs", NULL, "/etc/ssl/certs", "none")) < 0)
		return r;
	for (size_t i = 0; i < o->nvlans; i++) {
		if (o->vlans[i] < 1 || o->vlans[i] > 255)
			return img_set_error(ctx, -EINVAL, "--vlan %u: must be 1 to 255",
			                     o->vlans[i]);
		for (size_t j = 0; j < i; j++)
			if (o->vlans[j] == o->vlans[i])
				return img_set_error(ctx, -EINVAL, "--vlan %u given twice",
				                     o->vlans[i]);
	}
	return 0;
}

/* The state's shares get their paths in vm_compute_paths() (vm-state.c). */

/* ---- argv --------------------------------------------------------------------- */

static int push(struct img_vm *vm, const char *s)
{
	if (!s)
		return -ENOMEM;
	if (vm->argc + 1 >= VM_MAX_ARGS)
		return -E2BIG;
	vm->argv[vm->argc++] = (char *)s;
	vm->argv[vm->argc] = NULL;
	return 0;
}

static int push2(struct img_vm *vm, const char *opt, const char *val)
{
	int r = push(vm, opt);

	return r < 0 ? r : push(vm, val);
}

static const char *const disk_if_name[] = { "virtio", "scsi", "ide" };

/* One drive + its device on the chosen interface. @extra_drive without comma. */
static int push_disk(struct img_vm *vm, unsigned *ide_port, const char *id, const char *file,
                     const char *format, const char *drive_extra, const char *serial, int bootindex)
{
	char *boot = bootindex ? vm_printf(vm, ",bootindex=%d", bootindex) : "";
	const char *dev;
	int r;

	r = push2(vm, "-drive",
	          vm_printf(vm, "if=none,id=%s,file=%s,format=%s%s%s", id, esc(vm, file), format,
	                    drive_extra ? "," : "", drive_extra ? drive_extra : ""));
	if (r < 0)
		return r;
	switch (vm->o.disk_if) {
	case IMG_VM_DISK_SCSI:
		dev = vm_printf(vm, "scsi-hd,drive=%s,bus=scsi0.0,serial=%s%s", id, serial, boot);
		break;
	case IMG_VM_DISK_IDE:
		/* q35's ICH9 AHCI: six buses ide.0..ide.5, one device each. An
		 * ide-hd cannot be read-only (QEMU refuses), so a read-only drive
		 * becomes an ide-cd: the guest still finds it by label. */
		if (*ide_port >= 6)
			return -ENOSPC;
		dev = vm_printf(vm, "%s,drive=%s,bus=ide.%u,serial=%s%s",
		                drive_extra && strstr(drive_extra, "readonly=on") ? "ide-cd"
		                                                                  : "ide-hd",
		                id, (*ide_port)++, serial, boot);
		break;
	default:
		dev = vm_printf(vm, "virtio-blk-pci,drive=%s,serial=%s%s", id, serial, boot);
		break;
	}
	return push2(vm, "-device", dev);
}

static char *user_netdev(struct img_vm *vm)
{
	char *s = vm_printf(vm, "user,id=user.0");

	if (vm->o.restrict_network)
		s = vm_printf(vm, "%s,restrict=on", s);
	for (size_t i = 0; s && i < vm->nfwd; i++) {
		const struct vm_forward *f = &vm->fwd[i];

		s = vm_printf(vm, "%s,hostfwd=%s:%s:%u-:%u", s, f->udp ? "udp" : "tcp",
		              f->host_addr, f->host_port, f->guest_port);
	}
	/* The reference's guest forward: QEMU (libslirp) runs "nc HOST PORT" per
	 * connection, splitting the words itself. Both values were checked to be
	 * an IPv4 address and a port number, the command's characters too. */
	for (size_t i = 0; s && i < vm->ngfwd; i++) {
		const struct vm_guest_forward *g = &vm->gfwd[i];

		s = vm_printf(vm, "%s,guestfwd=tcp:%s:%u-cmd:%s %s %u", s, g->guest_addr,
		              g->guest_port, vm->o.relay_cmd ? vm->o.relay_cmd : "nc", g->host_addr,
		              g->host_port);
	}
	if (s && vm->o.net_opts && *vm->o.net_opts)
		s = vm_printf(vm, "%s,%s", s, vm->o.net_opts);
	return s;
}

static int share_cmp(const void *a, const void *b)
{
	return strcmp(((const struct vm_share *)a)->tag, ((const struct vm_share *)b)->tag);
}

int vm_build_argv(struct img_ctx *ctx, struct img_vm *vm)
{
	const struct img_vm_opts *o = &vm->o;
	unsigned ide_port = 0;
	int r = 0;

	if (!vm->argv)
		vm->argv = vm_keep(vm, img_malloc0(sizeof(char *) * VM_MAX_ARGS));
	if (!vm->argv)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	vm->argc = 0;
	vm->argv[0] = NULL;

#define P(s)                                                                                       \
	do {                                                                                       \
		if ((r = push(vm, (s))) < 0)                                                       \
			goto fail;                                                                 \
	} while (0)
#define P2(a, b)                                                                                   \
	do {                                                                                       \
		if ((r = push2(vm, (a), (b))) < 0)                                                 \
			goto fail;                                                                 \
	} while (0)

	P(vm_strdup(vm, o->qemu));
	P2("-name", esc(vm, o->name));
	P("-nodefaults");
	P("-no-user-config");
	P2("-machine", vm->have_fw && vm->fw.requires_smm ? "q35,smm=on" : "q35");
	P2("-accel", vm->accel == IMG_VM_ACCEL_KVM ? "kvm" : "tcg");
	P2("-cpu", vm->accel == IMG_VM_ACCEL_KVM ? "host" : "max");
	P2("-m", vm_printf(vm, "%u", o->memory_mib));
	P2("-smp", vm_printf(vm, "%u", o->cores));
	P2("-device", "virtio-rng-pci");

	/* Firmware. */
	if (vm->boot == IMG_VM_BOOT_EFI) {
		P2("-drive", vm_printf(vm, "if=pflash,format=%s,unit=0,readonly=on,file=%s",
		                       vm->fw.code_format, esc(vm, vm->fw.code)));
		P2("-drive", vm_printf(vm, "if=pflash,format=%s,unit=1,readonly=off,file=%s",
		                       vm->fw.vars_format, esc(vm, vm->efi_vars)));
		if (vm->fw.requires_smm && vm->fw.secure_boot)
			P2("-global", "driver=cfi.pflash01,property=secure,value=on");
	} else if (o->bios_file) {
		P2("-bios", vm_strdup(vm, o->bios_file));
	}
	if (vm->boot == IMG_VM_BOOT_DIRECT) {
		P2("-kernel", vm->kernel);
		if (vm->initrd)
			P2("-initrd", vm->initrd);
		P2("-append", vm->append);
	}

	/* Disks: the writable overlay, the store image, empty disks. */
	if (o->disk_if == IMG_VM_DISK_SCSI)
		P2("-device", "virtio-scsi-pci,id=scsi0");
	if (!o->system || vm->root_disk) {
		r = push_disk(vm, &ide_port, "root", o->system ? vm->root_disk : vm->overlay,
		              o->system ? vm->root_disk_format : "qcow2",
		              "cache=writeback,werror=report", "root", 1);
		if (r < 0)
			goto fail;
	}
	/* The store image: the reference's second drive (bootindex=2). */
	if (o->store_image || vm->store_cache) {
		r = push_disk(
		    vm, &ide_port, "store", o->store_image ? o->store_image : vm->store_cache,
		    o->store_image ? vm->store_format : "raw", "readonly=on", "nix-store", 2);
		if (r < 0)
			goto fail;
	}
	for (size_t i = 0; i < o->nempty_disks; i++) {
		char *id = vm_printf(vm, "empty%zu", i);

		r = push_disk(vm, &ide_port, id, vm->empty_paths[i], "qcow2",
		              "cache=writeback,werror=report", id, 0);
		if (r < 0)
			goto fail;
	}

	/* Networking: SLiRP, then VLANs on loopback multicast (no root, no switch). */
	/* Extra drives (the reference's qemu.drives): FILE[,DRIVE-OPTIONS]. */
	for (size_t i = 0; i < o->ndrives; i++) {
		r = push_disk(vm, &ide_port, vm_printf(vm, "drive%zu", i), vm->drive_files[i],
		              vm->drive_formats[i], vm->drive_opts[i], vm_printf(vm, "drive%zu", i),
		              0);
		if (r < 0)
			goto fail;
	}

	if (!o->no_net) {
		P2("-netdev", user_netdev(vm));
		P2("-device", "virtio-net-pci,netdev=user.0,mac=52:54:00:12:34:56");
	}
	for (size_t i = 0; i < o->nvlans; i++) {
		unsigned v = o->vlans[i];

		P2("-netdev",
		   vm_printf(vm, "socket,id=vlan%u,mcast=230.0.0.1:%u,localaddr=127.0.0.1", v,
		             20000 + v));
		P2("-device",
		   vm_printf(vm, "virtio-net-pci,netdev=vlan%u,mac=52:54:00:12:%02x:%02x", v, v,
		             vm->vlan_index));
	}

	/* 9p shares as the reference passes them (one -virtfs each, in the
	 * order of its attribute set: sorted by tag). Where the guest mounts
	 * them is its own configuration (qemu-vm.nix's fileSystems). */
	qsort(vm->shares, vm->nshares, sizeof(*vm->shares), share_cmp);
	for (size_t i = 0; i < vm->nshares; i++) {
		const struct vm_share *s = &vm->shares[i];

		P2("-virtfs", vm_printf(vm, "local,path=%s,security_model=%s,mount_tag=%s",
		                        esc(vm, s->source), s->model, s->tag));
	}

	/* Serial console, always logged. */
	if (o->console == IMG_VM_CONSOLE_STDIO) {
		P2("-chardev",
		   vm_printf(vm, "stdio,id=con0,mux=on,signal=off,logfile=%s,logappend=on",
		             esc(vm, vm->console_log)));
		P2("-serial", "chardev:con0");
		P2("-mon", "chardev=con0,mode=readline");
	} else {
		P2("-chardev",
		   vm_printf(vm, "file,id=con0,path=%s,append=on", esc(vm, vm->console_log)));
		P2("-serial", "chardev:con0");
	}

	/* QMP: one socket for people, one private connection for vmlaunch. */
	P2("-chardev",
	   vm_printf(vm, "socket,id=qmp,path=%s,server=on,wait=off", esc(vm, vm->qmp_sock)));
	P2("-mon", "chardev=qmp,mode=control");
	P2("-chardev", vm_printf(vm, "socket,id=ctl,fd=%d", VM_CTL_FD));
	P2("-mon", "chardev=ctl,mode=control");

	if (o->guest_agent) {
		P2("-chardev", vm_printf(vm, "socket,id=qga0,path=%s,server=on,wait=off",
		                         esc(vm, vm->qga_sock)));
		P2("-device", "virtio-serial-pci,id=vser0");
		P2("-device",
		   "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0");
	}
	if (o->tpm) {
		P2("-chardev", vm_printf(vm, "socket,id=chrtpm,path=%s", esc(vm, vm->swtpm_sock)));
		P2("-tpmdev", "emulator,id=tpm0,chardev=chrtpm");
		P2("-device",
		   o->tpm_model == IMG_VM_TPM_CRB ? "tpm-crb,tpmdev=tpm0" : "tpm-tis,tpmdev=tpm0");
	}
	/* The reference's input devices, with or without graphics: a virtio
	 * keyboard (qemu.virtioKeyboard) and a USB tablet (x86). */
	if (o->graphics)
		P2("-device", "virtio-vga");
	if (!o->no_virtio_keyboard)
		P2("-device", "virtio-keyboard-pci");
	P2("-device", "qemu-xhci,id=usb");
	P2("-device", "usb-tablet,bus=usb.0");
	if (!o->graphics)
		P("-nographic");
	for (size_t i = 0; i < o->nqemu_opts; i++)
		if (*o->qemu_opts[i])
			P(o->qemu_opts[i]);
	for (size_t i = 0; i < o->nextra_args; i++)
		P(o->extra_args[i]);
	return 0;
#undef P
#undef P2
fail:
	if (r == -E2BIG)
		return img_set_error(ctx, r, "the QEMU command line has too many arguments");
	if (r == -ENOSPC)
		return img_set_error(ctx, r,
		                     "--disk-interface ide: q35's AHCI controller has 6 ports; "
		                     "use virtio or scsi for more disks");
	return img_set_error(ctx, -ENOMEM, "out of memory");
}

/* ---- the handle ---------------------------------------------------------------- */

static const char **dup_strv(struct img_vm *vm, const char *const *v, size_t n)
{
	const char **out = vm_keep(vm, img_malloc0(sizeof(char *) * (n + 1)));

	for (size_t i = 0; out && i < n; i++)
		out[i] = vm_strdup(vm, v[i]);
	return out;
}

static void *dup_mem(struct img_vm *vm, const void *p, size_t n)
{
	void *q = vm_keep(vm, img_malloc0(n ? n : 1));

	if (q && n)
		memcpy(q, p, n);
	return q;
}

static int copy_opts(struct img_vm *vm, const struct img_vm_opts *in)
{
	struct img_vm_opts *o = &vm->o;

	*o = *in;
#define S(f) o->f = vm_strdup(vm, in->f)
	S(image);
	S(system);
	S(root);
	S(store_dir);
	S(closure_info);
	S(nix_db);
	S(name);
	S(state_dir);
	S(state_home);
	S(tmpdir);
	S(store_image);
	S(shared_dir);
	S(host_certs);
	S(net_opts);
	S(relay_cmd);
	S(kernel);
	S(initrd);
	S(append);
	S(kernel_params);
	S(bios_file);
	S(qemu);
	S(swtpm);
	S(kvm_device);
	S(firmware);
	S(efi_vars_template);
	S(xchg_dir);
	S(serial_log);
	S(expect);
	S(disk_image);
	S(efi_vars);
	S(swtpm_dir);
	S(config_home);
#undef S
	o->shares = dup_strv(vm, in->shares, in->nshares);
	o->forwards = dup_strv(vm, in->forwards, in->nforwards);
	o->guest_forwards = dup_strv(vm, in->guest_forwards, in->nguest_forwards);
	o->qemu_opts = dup_strv(vm, in->qemu_opts, in->nqemu_opts);
	o->extra_args = dup_strv(vm, in->extra_args, in->nextra_args);
	o->consoles = dup_strv(vm, in->consoles, in->nconsoles);
	o->drives = dup_strv(vm, in->drives, in->ndrives);
	o->firmware_dirs =
	    in->firmware_dirs ? dup_strv(vm, in->firmware_dirs, in->nfirmware_dirs) : NULL;
	o->empty_disks = dup_mem(vm, in->empty_disks, sizeof(uint64_t) * in->nempty_disks);
	o->vlans = dup_mem(vm, in->vlans, sizeof(unsigned) * in->nvlans);
	if (!o->qemu)
		o->qemu = "qemu-system-x86_64";
	if (!o->swtpm)
		o->swtpm = "swtpm";
	if (!o->kvm_device)
		o->kvm_device = "/dev/kvm";
	if (!o->tmpdir || !*o->tmpdir)
		o->tmpdir = "/tmp";
	if (!o->memory_mib)
		o->memory_mib = 1024;
	if (!o->cores)
		o->cores = 1;
	if (!o->stop_timeout_s)
		o->stop_timeout_s = 10;
	return 0;
}

int img_vm_new(struct img_ctx *ctx, const struct img_vm_opts *in, struct img_vm **out)
{
	struct img_vm *vm;
	int r;

	*out = NULL;
	if ((!in->image || !*in->image) && (!in->system || !*in->system))
		return img_set_error(ctx, -EINVAL, "no IMAGE given (or --system TOPLEVEL)");
	vm = img_malloc0(sizeof(*vm));
	if (!vm)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	vm_dir_init(&vm->tmp);
	vm_dir_init(&vm->state);
	vm_dir_init(&vm->disk);
	vm_dir_init(&vm->vars);
	vm_dir_init(&vm->tpm);
	vm_dir_init(&vm->xchg);
	vm->disk_dir = vm->vars_dir = vm->tpm_dir = &vm->state;
	vm->lock_fd = vm->serial_fd = -1;
	copy_opts(vm, in);
	if ((r = vm_parse_specs(ctx, vm)) < 0 || (r = vm_resolve(ctx, vm)) < 0 ||
	    (r = vm_build_argv(ctx, vm)) < 0 ||
	    (in->dry_run && (r = vm_check_state(ctx, vm)) < 0)) {
		img_vm_free(vm);
		return r;
	}
	*out = vm;
	return 0;
}

void img_vm_free(struct img_vm *vm)
{
	if (!vm)
		return;
	/* The ephemeral state: emptied through the fd we made it with, removed
	 * by its name in the TMPDIR we hold, never by following a path. */
	if (vm->o.ephemeral && vm->state_created && vm->state.fd >= 0 && vm->tmp.fd >= 0) {
		char *b = vm_strdup(vm, vm->state_dir);

		if (b)
			vm_dir_rmrf(&vm->tmp, &vm->state, basename(b));
	}
	vm_dir_close(&vm->tpm);
	vm_dir_close(&vm->xchg);
	vm_dir_close(&vm->vars);
	vm_dir_close(&vm->disk);
	vm_dir_close(&vm->state);
	vm_dir_close(&vm->tmp);
	if (vm->serial_fd >= 0)
		close(vm->serial_fd);
	if (vm->lock_fd >= 0)
		close(vm->lock_fd); /* the lock goes with the last holder (QEMU has ended) */
	img_vm_firmware_release(&vm->fw);
	for (size_t i = 0; i < vm->npool; i++)
		free(vm->pool[i]);
	free(vm->pool);
	free(vm);
}

char *const *img_vm_argv(const struct img_vm *vm)
{
	return vm->argv;
}

/* Shell-quote: bare when only safe characters, else '...' with '\'' for '. */
static int quote_into(FILE *f, const char *s)
{
	int safe = *s != '\0';

	for (const char *p = s; *p; p++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
		            "_-./=:,@%+",
		            *p))
			safe = 0;
	if (safe)
		return fputs(s, f);
	fputc('\'', f);
	for (const char *p = s; *p; p++) {
		if (*p == '\'')
			fputs("'\\''", f);
		else
			fputc(*p, f);
	}
	return fputc('\'', f);
}

int img_vm_cmdline(const struct img_vm *vm, char **out)
{
	size_t len;
	FILE *f = open_memstream(out, &len);

	if (!f)
		return -ENOMEM;
	for (size_t i = 0; i < vm->argc; i++) {
		if (i)
			fputc(' ', f);
		quote_into(f, vm->argv[i]);
	}
	fputc('\n', f);
	return fclose(f) ? -ENOMEM : 0;
}

static const char *const boot_name[] = { "auto", "efi", "bios", "direct" };

/* What a start does with @path; the full checks (owner, marks, the lock)
 * are vm_check_state()'s warnings. */
static void file_line(FILE *f, const char *what, const char *path, mode_t type, int fresh)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		fprintf(f, "  %-22s %s (new)\n", what, path);
	else if ((st.st_mode & S_IFMT) != type)
		fprintf(f, "  %-22s %s (exists, a %s: a start refuses it)\n", what, path,
		        vm_file_kind(st.st_mode));
	else
		fprintf(f, "  %-22s %s (exists, %s)\n", what, path,
		        fresh ? "removed by --fresh if vmlaunch made it" : "kept");
}

int img_vm_describe(const struct img_vm *vm, char **out)
{
	const struct img_vm_opts *o = &vm->o;
	size_t len;
	FILE *f = open_memstream(out, &len);

	if (!f)
		return -ENOMEM;
	fprintf(f, "vm %s\n", o->name);
	if (o->system) {
		fprintf(f, "system: %s (%zu store paths in its closure, from %s)\n", vm->sys_path,
		        vm->nclo, o->closure_info ? o->closure_info : vm->nix_db);
		fprintf(f, "nix store: %s\n",
		        o->store_image || vm->store_cache
		            ? "the store image (EROFS, nix-store)"
		            : "the host's, shared as 9p tag nix-store");
	} else {
		fprintf(f, "image: %s (%s, never written)\n", vm->image, vm->image_format);
	}
	fprintf(f, "boot: %s (from the %s)\n", boot_name[vm->boot], vm->boot_source);
	fprintf(f, "accelerator: %s (%s)\n", vm->accel == IMG_VM_ACCEL_KVM ? "kvm" : "tcg",
	        vm->accel_reason);
	if (vm->boot == IMG_VM_BOOT_EFI) {
		fprintf(f, "firmware: %s (%s)\n", vm->fw.code, vm->fw.code_format);
		fprintf(f, "  vars template: %s\n", vm->fw.vars);
		fprintf(f, "  chosen by: %s\n",
		        vm->fw.descriptor ? vm->fw.descriptor
		                          : "known path (no descriptor matched)");
		fprintf(f, "  secure boot: %s, SMM: %s\n", vm->fw.secure_boot ? "yes" : "no",
		        vm->fw.requires_smm ? "on" : "off");
	} else if (vm->boot == IMG_VM_BOOT_DIRECT) {
		fprintf(f, "kernel: %s\ninitrd: %s\nappend: %s\n", vm->kernel,
		        vm->initrd ? vm->initrd : "(none)", vm->append);
	}
	fprintf(f, "disk interface: %s\n", disk_if_name[o->disk_if]);
	fprintf(f, "state: %s%s\n", vm->state_dir,
	        o->ephemeral ? " (ephemeral: removed on exit)" : "");
	fprintf(f, "would create:\n");
	if (vm->state_is_template)
		fprintf(f, "  %-22s %s (new)\n", "state directory", vm->state_dir);
	else
		file_line(f, "state directory", vm->state_dir, S_IFDIR, 0);
	if (!o->system)
		file_line(f, "overlay (qcow2)", vm->overlay, S_IFREG, o->fresh);
	else if (vm->root_disk)
		file_line(f, "root disk (ext4 nixos)", vm->root_disk, S_IFREG, 0);
	else
		fprintf(f, "  %-22s %s\n", "root", "tmpfs (no root disk)");
	if (vm->store_cache)
		file_line(f, "store image (cache)", vm->store_cache, S_IFREG, 0);
	if (o->system)
		fprintf(f, "  %-22s %s\n", "registration", vm->reg_host);
	if (vm->boot == IMG_VM_BOOT_EFI)
		file_line(f, "EFI variables", vm->efi_vars, S_IFREG, o->fresh);
	if (o->tpm)
		file_line(f, "swtpm state", vm->swtpm_dir, S_IFDIR, 0);
	for (size_t i = 0; i < o->nempty_disks; i++)
		file_line(f, "empty disk", vm->empty_paths[i], S_IFREG, 0);
	file_line(f, "9p xchg directory", vm->xchg_dir, S_IFDIR, 0);
	if (o->host_certs)
		file_line(f, "CA bundle copy", vm->certs_dir, S_IFDIR, 0);
	fprintf(f, "  %-22s %s\n", "console log", vm->console_log);
	fprintf(f, "  %-22s %s\n", "QMP socket", vm->qmp_sock);
	if (o->guest_agent)
		fprintf(f, "  %-22s %s\n", "guest agent socket", vm->qga_sock);
	for (size_t i = 0; i < vm->nfwd; i++)
		fprintf(f, "forward: %s %s:%u -> guest port %u\n", vm->fwd[i].udp ? "udp" : "tcp",
		        vm->fwd[i].host_addr, vm->fwd[i].host_port, vm->fwd[i].guest_port);
	for (size_t i = 0; i < o->nvlans; i++)
		fprintf(f, "vlan %u: mac 52:54:00:12:%02x:%02x\n", o->vlans[i], o->vlans[i],
		        vm->vlan_index);
	return fclose(f) ? -ENOMEM : 0;
}

void img_vm_get_info(const struct img_vm *vm, struct img_vm_info *info)
{
	memset(info, 0, sizeof(*info));
	info->name = vm->o.name;
	info->state_dir = vm->state_dir;
	info->boot = vm->boot;
	info->boot_source = vm->boot_source;
	info->accel = vm->accel;
	info->accel_reason = vm->accel_reason;
	if (vm->boot == IMG_VM_BOOT_EFI) {
		info->fw_code = vm->fw.code;
		info->fw_vars_template = vm->fw.vars;
		info->fw_descriptor = vm->fw.descriptor;
	}
	info->console_log = vm->console_log;
	info->qmp_socket = vm->qmp_sock;
	info->root_disk = vm->root_disk;
	info->root_disk_created = vm->root_disk_created;
	info->store_image = vm->o.store_image ? vm->o.store_image : vm->store_cache;
	info->store_image_cached = vm->store_cached;
	info->closure_paths = vm->nclo;
}
