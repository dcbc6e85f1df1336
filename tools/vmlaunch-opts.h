/*
 * vmlaunch-opts.h -- every vmlaunch option, once: getopt's table, --help,
 * the man page vmlaunch.1 and the shell completions all come from here
 * (tool-opts.h). A new option is a row here and a case in vmlaunch.c.
 */
#ifndef VMLAUNCH_OPTS_H
#define VMLAUNCH_OPTS_H

#include "tool-opts.h"

enum {
	OPT_NAME = 256,
	OPT_STATE_DIR,
	OPT_EPHEMERAL,
	OPT_FRESH,
	OPT_STORE,
	OPT_EMPTY,
	OPT_SHARE,
	OPT_FORWARD,
	OPT_GFORWARD,
	OPT_RESTRICT,
	OPT_VLAN,
	OPT_VLAN_INDEX,
	OPT_GRAPHICS,
	OPT_NOGRAPHIC,
	OPT_BOOT,
	OPT_KERNEL,
	OPT_INITRD,
	OPT_APPEND,
	OPT_SECURE,
	OPT_TPM,
	OPT_DISKIF,
	OPT_CERTS,
	OPT_BIOS,
	OPT_QGA,
	OPT_QEMU,
	OPT_SWTPM,
	OPT_ACCEL,
	OPT_KVMDEV,
	OPT_FWDIR,
	OPT_SERIAL,
	OPT_EXPECT,
	OPT_TIMEOUT,
	OPT_STOP,
	OPT_PRINT,
	OPT_DRY,
	OPT_HELP,
	OPT_VERSION,
};

static const struct tool_opt vmlaunch_opts[] = {
	T_SECTION("State"),
	{ .name = "name",
	  .val = OPT_NAME,
	  .arg = "NAME",
	  .help = "VM name (default: IMAGE's base name)",
	  .more = "IMAGE's base name without its suffix." },
	{ .name = "state-dir",
	  .val = OPT_STATE_DIR,
	  .arg = "DIR",
	  .help = "the VM's state (default $XDG_STATE_HOME/vmlaunch/NAME)",
	  .more = "Default: $XDG_STATE_HOME/vmlaunch/NAME. The overlay, EFI variables, TPM state, "
	          "console log and sockets "
	          "live; ~/.local/state/vmlaunch/NAME without XDG_STATE_HOME. Never the "
	          "working directory.",
	  .complete = TC_DIR },
	{ .name = "ephemeral",
	  .val = OPT_EPHEMERAL,
	  .help = "state in a temporary directory, removed on exit",
	  .more = "The directory is made under TMPDIR." },
	{ .name = "fresh",
	  .val = OPT_FRESH,
	  .help = "discard the overlay and EFI variables first" },

	T_SECTION("Machine"),
	{ .name = "memory",
	  .short_name = 'm',
	  .val = 'm',
	  .arg = "MIB",
	  .help = "memory (default 1024)" },
	{ .name = "cores", .short_name = 'c', .val = 'c', .arg = "N", .help = "CPUs (default 1)" },
	{ .name = "accel",
	  .val = OPT_ACCEL,
	  .arg = "ACCEL",
	  .help = "auto, kvm or tcg (default auto: KVM if usable)",
	  .more = "auto trusts KVM only when QEMU can start a paused KVM guest, and says "
	          "which accelerator it chose and why.",
	  .complete = TC_WORDS,
	  .words = "auto kvm tcg" },
	{ .name = "kvm-device",
	  .val = OPT_KVMDEV,
	  .arg = "PATH",
	  .help = "the KVM device to probe (default /dev/kvm)",
	  .complete = TC_FILE },
	{ .name = "qemu",
	  .val = OPT_QEMU,
	  .arg = "PATH",
	  .help = "QEMU binary (default qemu-system-x86_64)",
	  .complete = TC_FILE },

	T_SECTION("Disks"),
	{ .name = "store-image",
	  .val = OPT_STORE,
	  .arg = "FILE",
	  .help = "attach an EROFS store image read-only",
	  .complete = TC_FILE },
	{ .name = "empty-disk",
	  .val = OPT_EMPTY,
	  .arg = "SIZE",
	  .help = "an extra empty writable disk (repeatable)" },
	{ .name = "disk-interface",
	  .val = OPT_DISKIF,
	  .arg = "IF",
	  .help = "virtio, scsi or ide (default virtio)",
	  .complete = TC_WORDS,
	  .words = "virtio scsi ide" },

	T_SECTION("Boot"),
	{ .name = "boot",
	  .val = OPT_BOOT,
	  .arg = "MODE",
	  .help = "efi, bios or direct (default: from the image)",
	  .more = "Without it the image's manifest says, else its partition table.",
	  .complete = TC_WORDS,
	  .words = "efi bios direct" },
	{ .name = "kernel",
	  .val = OPT_KERNEL,
	  .arg = "FILE",
	  .help = "direct kernel boot with this kernel",
	  .complete = TC_FILE },
	{ .name = "initrd",
	  .val = OPT_INITRD,
	  .arg = "FILE",
	  .help = "the initrd for direct boot",
	  .more = "Needs --kernel or --boot direct.",
	  .complete = TC_FILE },
	{ .name = "append",
	  .val = OPT_APPEND,
	  .arg = "TEXT",
	  .help = "the kernel command line for direct boot",
	  .more = "Needs --kernel or --boot direct." },
	{ .name = "secure-boot",
	  .val = OPT_SECURE,
	  .help = "UEFI Secure Boot (q35, SMM, enrolled keys)" },
	{ .name = "tpm",
	  .val = OPT_TPM,
	  .help = "TPM 2.0 through swtpm",
	  .more = "swtpm is started before QEMU and stopped with it." },
	{ .name = "swtpm",
	  .val = OPT_SWTPM,
	  .arg = "PATH",
	  .help = "swtpm binary (default swtpm)",
	  .complete = TC_FILE },
	{ .name = "bios-file",
	  .val = OPT_BIOS,
	  .arg = "FILE",
	  .help = "an alternative BIOS for --boot bios / direct",
	  .more = "For example qboot, instead of SeaBIOS.",
	  .complete = TC_FILE },
	{ .name = "firmware-dir",
	  .val = OPT_FWDIR,
	  .arg = "DIR",
	  .help = "search only DIR for firmware descriptors (repeatable)",
	  .more = "Lowest priority first, with no fallback to known firmware paths. "
	          "Default: /usr/share/qemu/firmware, /etc/qemu/firmware and "
	          "$XDG_CONFIG_HOME/qemu/firmware.",
	  .complete = TC_DIR },

	T_SECTION("Sharing and network"),
	{ .name = "share",
	  .val = OPT_SHARE,
	  .arg = "TAG:SOURCE:TARGET[:MODEL]",
	  .help = "9p share (repeatable; xchg, shared always)",
	  .more = "Host directory SOURCE as mount tag TAG; TARGET is where the guest's "
	          "configuration mounts it. MODEL is passthrough, mapped-xattr (default), "
	          "mapped-file or none. Every VM also gets the reference's shares: xchg "
	          "(STATE/xchg) and shared (SHARED_DIR, else xchg), model none; those "
	          "tags, certs and nix-store are vmlaunch's own." },
	{ .name = "host-certs",
	  .val = OPT_CERTS,
	  .help = "share the host CA bundle as tag certs",
	  .more = "A copy of NIX_SSL_CERT_FILE, else of the system bundle, in "
	          "STATE/certs, readable by every guest user." },
	{ .name = "forward",
	  .val = OPT_FORWARD,
	  .arg = "[tcp|udp:][HOSTADDR:]HOSTPORT:GUESTPORT",
	  .help = "host to guest port forward (repeatable)",
	  .more = "HOSTADDR defaults to 127.0.0.1." },
	{ .name = "guest-forward",
	  .val = OPT_GFORWARD,
	  .arg = "GUESTADDR:GUESTPORT:HOSTADDR:HOSTPORT",
	  .help = "guest to host TCP forward (repeatable)",
	  .more = "vmlaunch relays the connections itself." },
	{ .name = "restrict-network",
	  .val = OPT_RESTRICT,
	  .help = "isolate the guest (forwards still work)" },
	{ .name = "vlan",
	  .val = OPT_VLAN,
	  .arg = "N",
	  .help = "join virtual network N, 1-255 (repeatable)",
	  .more = "VMs on one host on the same network can talk." },
	{ .name = "vlan-index",
	  .val = OPT_VLAN_INDEX,
	  .arg = "N",
	  .help = "last MAC byte on VLANs, 1-254 (default: from the name)" },

	T_SECTION("Display and console"),
	{ .name = "graphics", .val = OPT_GRAPHICS, .help = "a graphical display" },
	{ .name = "nographic",
	  .val = OPT_NOGRAPHIC,
	  .help = "no display (default without DISPLAY/WAYLAND_DISPLAY)" },
	{ .name = "guest-agent",
	  .val = OPT_QGA,
	  .help = "virtio-serial channel for the QEMU guest agent",
	  .more = "Its socket is in the state directory." },
	{ .name = "serial-log",
	  .val = OPT_SERIAL,
	  .arg = "FILE",
	  .help = "copy of the console log",
	  .more = "One is always kept in the state directory.",
	  .complete = TC_FILE },

	T_SECTION("CI checks and inspection"),
	{ .name = "expect",
	  .val = OPT_EXPECT,
	  .arg = "TEXT",
	  .help = "exit 0 once TEXT appears on the console",
	  .more = "Headless: the VM is stopped as soon as TEXT appears on the serial "
	          "console; exit 1, naming the log, if the VM stops first." },
	{ .name = "timeout",
	  .val = OPT_TIMEOUT,
	  .arg = "SECONDS",
	  .help = "give up on --expect after this long (exit 1)" },
	{ .name = "stop-timeout",
	  .val = OPT_STOP,
	  .arg = "SECONDS",
	  .help = "grace after ACPI power-down before quit (default 10)" },
	{ .name = "print-cmdline",
	  .val = OPT_PRINT,
	  .help = "print the QEMU command line and exit" },
	{ .name = "dry-run",
	  .val = OPT_DRY,
	  .help = "say what would be created and chosen, then exit" },
	{ .name = "quiet", .short_name = 'q', .val = 'q', .help = "only errors" },
	{ .name = "verbose", .short_name = 'v', .val = 'v', .help = "say more" },
	{ .name = "help", .val = OPT_HELP, .help = "this text" },
	{ .name = "version", .val = OPT_VERSION, .help = "the version" },
	{ 0 },
};

static const char *const vmlaunch_sections[] = {
	"ENVIRONMENT",
	"For compatibility with the NixOS VM runner: QEMU_OPTS (extra QEMU arguments, "
	"split on spaces), QEMU_NET_OPTS (appended to the user-mode netdev), "
	"QEMU_KERNEL_PARAMS (appended to the kernel command line in direct boot), "
	"NIX_DISK_IMAGE (the overlay's path), NIX_EFI_VARS (the EFI variable store), "
	"NIX_SWTPM_DIR (the TPM state), SHARED_DIR (shared as tag shared), TMPDIR "
	"(for --ephemeral).\n"
	"\n"
	"Also XDG_STATE_HOME, XDG_CONFIG_HOME and HOME (default directories), "
	"NIX_SSL_CERT_FILE (--host-certs), DISPLAY and WAYLAND_DISPLAY (graphics by "
	"default).",
	"EXIT STATUS",
	"QEMU's exit status; with --expect 0 when the text appeared, else 1; 1 on "
	"failure, 2 on a usage error.",
	"EXAMPLES",
	"vmlaunch disk.qcow2\n"
	"vmlaunch --store-image store.img disk.qcow2\n"
	"vmlaunch --ephemeral --expect login: --timeout 300 disk.qcow2",
	"SEE ALSO",
	"mkvmimage(1), qemu-system-x86_64(1)",
	NULL,
};

static const struct tool_doc tool_doc = {
	.name = "vmlaunch",
	.synopsis = "[OPTIONS] IMAGE [-- QEMU-ARGS...]",
	.summary = "start QEMU on a VM disk image",
	.description = "Start QEMU on IMAGE (qcow2, raw, VHD, VDI or VMDK). IMAGE is never\n"
	               "written: the VM writes to an overlay in its state directory.\n"
	               "\n"
	               "Arguments after -- are appended to QEMU's command line. IMAGE may be "
	               "made by mkvmimage or by another tool; its manifest, when "
	               "there is one beside it, says how it boots.",
	.shortopts_prefix = "+",
	.opts = vmlaunch_opts,
	.help_footer =
	    "Environment: QEMU_OPTS, QEMU_NET_OPTS, QEMU_KERNEL_PARAMS, NIX_DISK_IMAGE,\n"
	    "NIX_EFI_VARS, NIX_SWTPM_DIR, SHARED_DIR, TMPDIR, NIX_SSL_CERT_FILE.\n",
	.sections = vmlaunch_sections,
};

#endif
