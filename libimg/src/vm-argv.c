/*
 * vm-argv.c -- VM description -> QEMU argv, as data.
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
#include <stdlib.h>

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
