/*
 * vm.h -- start a VM on a disk image the way the NixOS runner (qemu-vm.nix
 * startVM) does, safely: VM description -> QEMU argv as data, firmware from
 * QEMU's firmware descriptors, per-VM state, and supervision of QEMU and
 * swtpm.
 *
 * Calling sequence (what vmlaunch does):
 *   struct img_vm_opts o = { .image = "disk.qcow2", ... };   borrowed strings
 *   struct img_vm *vm;
 *   img_vm_new(ctx, &o, &vm);     validate, read the image / manifest / firmware
 *                                 descriptors, pick the accelerator, compute
 *                                 every state path and the argv; writes nothing
 *   img_vm_argv(vm)               the QEMU argv (borrowed, NULL-terminated)
 *   img_vm_cmdline(vm, &s)        the same, shell-quoted (--print-cmdline)
 *   img_vm_describe(vm, &s)       what would be created and chosen (--dry-run)
 *   img_vm_prepare(ctx, vm);      state dir, overlay, EFI vars, empty disks, ...
 *   img_vm_run(ctx, vm, &res);    swtpm, QEMU, console watch, graceful stop
 *   img_vm_free(vm);              removes an --ephemeral state dir it created
 *
 * The library reads no environment: the tool maps QEMU_OPTS, QEMU_NET_OPTS,
 * QEMU_KERNEL_PARAMS, NIX_DISK_IMAGE, NIX_EFI_VARS, NIX_SWTPM_DIR, SHARED_DIR,
 * TMPDIR, XDG_STATE_HOME, XDG_CONFIG_HOME, DISPLAY/WAYLAND_DISPLAY and
 * NIX_SSL_CERT_FILE into struct img_vm_opts, and answers the one name
 * --system asks of @env (NIXPKGS_QEMU_KERNEL_<system.name>). Signals: the caller's handler
 * calls img_ctx_cancel(); img_vm_run() sees it and stops the VM gracefully.
 */
#ifndef IMG_VM_H
#define IMG_VM_H

#include <stddef.h>
#include <stdint.h>
#include <img/context.h>

#ifdef __cplusplus
extern "C" {
#endif

enum img_vm_boot {
	IMG_VM_BOOT_AUTO = 0, /* from the manifest, else the partition table */
	IMG_VM_BOOT_EFI,
	IMG_VM_BOOT_BIOS,
	IMG_VM_BOOT_DIRECT, /* -kernel/-initrd/-append */
};

enum img_vm_accel {
	IMG_VM_ACCEL_AUTO = 0, /* KVM when /dev/kvm answers KVM_GET_API_VERSION, else TCG */
	IMG_VM_ACCEL_KVM,
	IMG_VM_ACCEL_TCG,
};

enum img_vm_disk_if {
	IMG_VM_DISK_VIRTIO = 0, /* virtio-blk-pci */
	IMG_VM_DISK_SCSI,       /* virtio-scsi-pci + scsi-hd */
	IMG_VM_DISK_IDE,        /* ide-hd on the q35 AHCI controller (6 ports) */
};

/* Secure Boot, as img_vm_firmware_find() is asked for it. */
enum img_vm_secure_boot {
	IMG_VM_SB_OFF = 0,  /* firmware without secure-boot */
	IMG_VM_SB_SETUP,    /* secure-boot, no keys enrolled (setup mode), as the reference */
	IMG_VM_SB_ENROLLED, /* secure-boot with enrolled keys */
};

enum img_vm_tpm_model {
	IMG_VM_TPM_TIS = 0, /* tpm-tis, the reference's default on x86 */
	IMG_VM_TPM_CRB,     /* tpm-crb */
};

enum img_vm_console {
	IMG_VM_CONSOLE_STDIO = 0, /* serial + HMP multiplexed on stdio (Ctrl-a x), logged */
	IMG_VM_CONSOLE_FILE,      /* serial only into the console log (headless, --expect) */
};

/* Everything vmlaunch can be told. Strings and arrays are borrowed for img_vm_new(). */
struct img_vm_opts {
	const char *image;      /* IMAGE, never written; or NULL with @system */
	const char *name;       /* default: image base name without suffix */
	const char *state_dir;  /* default: <state_home>/vmlaunch/<name> */
	const char *state_home; /* $XDG_STATE_HOME, else ~/.local/state (tool resolves) */
	const char *tmpdir;     /* for --ephemeral (default /tmp) */
	int ephemeral;          /* state in <tmpdir>/vmlaunch-<name>.XXXXXX, removed by free */
	int fresh;              /* discard overlay and EFI vars first (only files of ours) */
	int dry_run;            /* img_vm_new() also checks the state as img_vm_prepare()
	                           would, logging what a start refuses as warnings */

	/*
	 * --system TOPLEVEL instead of IMAGE: what the reference's run script
	 * does (`nixos-rebuild build-vm`): direct boot of TOPLEVEL, the host
	 * store shared as tag nix-store, an empty ext4 root disk (label nixos)
	 * made on first start at @disk_image or <state>/<name>.qcow2, the
	 * closure's registration at regInfo= (in the xchg share).
	 */
	const char *system;       /* a store path, or a link to one (result) */
	const char *root;         /* the host directory standing for "/" (default "/") */
	const char *store_dir;    /* default "/nix/store" */
	const char *closure_info; /* closureInfo DIR; default: read @nix_db */
	const char *nix_db;       /* default <root>/nix/var/nix/db/db.sqlite */
	uint64_t disk_size;       /* the root disk's size in bytes; default 1024 MiB */
	int no_root_disk;         /* no root disk: the guest's root is a tmpfs */
	int store_image_auto;     /* build the closure's EROFS store image (cached) */
	/*
	 * The kernel: TOPLEVEL/kernel, unless @kernel (--kernel FILE) or,
	 * without it, the variable NIXPKGS_QEMU_KERNEL_<system.name> (every
	 * character but A-Z, a-z, 0-9 of system.name made '_', as the
	 * reference) names another; @initrd and @append are refused. The
	 * library reads no environment: @env, when set, is asked for that one
	 * name only (a NULL or empty answer: not set). vmlaunch passes getenv.
	 */
	const char *(*env)(void *user, const char *name);
	void *env_user;
	const char *const *consoles; /* console= values, the last preferred; default
	                              * ttyS0,115200n8 and tty0 as the reference */
	size_t nconsoles;

	unsigned memory_mib; /* default 1024 */
	unsigned cores;      /* default 1 */

	const char *store_image;     /* read-only drive, format from its magic (raw/qcow2) */
	const uint64_t *empty_disks; /* sizes in bytes; made new at every start, */
	size_t nempty_disks;         /* as the reference's (in its fresh TMPDIR), */
	int keep_empty_disks;        /* unless kept */
	const char *const *drives;   /* extra drives "FILE[,DRIVE-OPTIONS]" */
	size_t ndrives;

	/* 9p shares. Always, as the reference: "xchg" (<state>/xchg), "shared"
	 * (@shared_dir, else the xchg directory) and, with @host_certs, "certs"
	 * (a copy of the bundle in <state>/certs). The guest mounts them as its
	 * configuration says (qemu-vm.nix: /tmp/xchg, /tmp/shared, /etc/ssl/certs). */
	const char *const *shares; /* "TAG:SOURCE:TARGET[:MODEL]" */
	size_t nshares;
	const char *shared_dir; /* $SHARED_DIR: shared as tag "shared" */
	const char *xchg_dir;   /* instead of <state>/xchg ($TMPDIR/xchg with USE_TMPDIR) */
	const char *host_certs; /* CA bundle to share as tag "certs" (NULL = off) */

	const char *const *forwards; /* "[tcp|udp:][HOSTADDR:]HOSTPORT:GUESTPORT" */
	size_t nforwards;
	const char *const *guest_forwards; /* "GUESTADDR:GUESTPORT:HOSTADDR:HOSTPORT" */
	size_t nguest_forwards;
	int restrict_network;
	const unsigned *vlans; /* 1..255 */
	size_t nvlans;
	unsigned vlan_index;  /* last MAC byte on VLANs, 1..254; 0 = derived from the name */
	const char *net_opts; /* $QEMU_NET_OPTS, appended to the user netdev */
	int no_net;           /* no network device at all (networkingOptions = []) */
	/* What QEMU runs (split on spaces, no shell) per guest-forward connection,
	 * with HOSTADDR and HOSTPORT appended; default "nc". vmlaunch passes
	 * "<itself> --relay" so no netcat is needed. Letters, digits, "/._+-". */
	const char *relay_cmd;

	int graphics; /* 0: -nographic */
	enum img_vm_console console;

	enum img_vm_boot boot;
	const char *kernel, *initrd, *append; /* direct boot */
	const char *kernel_params;            /* $QEMU_KERNEL_PARAMS (direct boot) */
	int secure_boot;                      /* setup mode (no keys) unless @enrolled_keys */
	int enrolled_keys;                    /* firmware with the keys enrolled */
	int tpm;
	enum img_vm_tpm_model tpm_model;
	const char *firmware;          /* UEFI code FILE (efi.firmware): no descriptor search */
	const char *efi_vars_template; /* with @firmware: the variable store template */
	int no_virtio_keyboard;        /* the reference's qemu.virtioKeyboard = false */
	enum img_vm_disk_if disk_if;
	const char *bios_file;
	int guest_agent;

	const char *qemu;  /* default "qemu-system-x86_64" */
	const char *swtpm; /* default "swtpm" */
	enum img_vm_accel accel;
	const char *kvm_device; /* default "/dev/kvm" (tests inject) */

	const char *serial_log;  /* extra copy of the console log */
	const char *expect;      /* text to wait for on the console */
	unsigned timeout_s;      /* for expect; 0 = none */
	unsigned stop_timeout_s; /* powerdown grace before quit; default 10 */

	const char *disk_image; /* $NIX_DISK_IMAGE: overlay path */
	const char *efi_vars;   /* $NIX_EFI_VARS */
	const char *swtpm_dir;  /* $NIX_SWTPM_DIR */

	/* Firmware descriptor directories, lowest priority first. NULL: the
	 * standard /usr/share/qemu/firmware, /etc/qemu/firmware and
	 * <config_home>/qemu/firmware. */
	const char *const *firmware_dirs;
	size_t nfirmware_dirs;
	const char *config_home;  /* $XDG_CONFIG_HOME (or ~/.config) */
	int no_firmware_fallback; /* do not fall back to known OVMF paths */

	const char *const *qemu_opts; /* $QEMU_OPTS, already split on spaces */
	size_t nqemu_opts;
	const char *const *extra_args; /* after -- */
	size_t nextra_args;
};

struct img_vm;

/*
 * Validate @o, read what decides the VM (image header, manifest, partition
 * table, firmware descriptors, /dev/kvm) and build the argv. Writes nothing.
 * Errors name the input and say what to do.
 */
IMG_EXPORT int img_vm_new(struct img_ctx *ctx, const struct img_vm_opts *o, struct img_vm **out);
/* Free; removes an ephemeral state directory img_vm_prepare() made. NULL ok. */
IMG_EXPORT void img_vm_free(struct img_vm *vm);

/* The QEMU argv, NULL-terminated; argv[0] is the binary. Valid until free. */
IMG_EXPORT char *const *img_vm_argv(const struct img_vm *vm);
/* The argv shell-quoted on one line (malloc'ed, newline at the end). */
IMG_EXPORT int img_vm_cmdline(const struct img_vm *vm, char **out);
/* --dry-run text: files to create, firmware, accelerator, boot mode (malloc'ed). */
IMG_EXPORT int img_vm_describe(const struct img_vm *vm, char **out);

/* Facts chosen by img_vm_new() (borrowed strings, valid until free). */
struct img_vm_info {
	const char *name;
	const char *state_dir;
	enum img_vm_boot boot;
	const char *boot_source; /* "option", "manifest", "partition table" */
	enum img_vm_accel accel; /* KVM or TCG */
	const char *accel_reason;
	const char *fw_code; /* NULL unless EFI */
	const char *fw_vars_template;
	const char *fw_descriptor; /* the descriptor file, or NULL for a fallback path */
	const char *console_log;
	const char *qmp_socket;
	/* --system */
	const char *root_disk;   /* NULL: tmpfs root */
	int root_disk_created;   /* made by img_vm_prepare() just now */
	const char *store_image; /* the store image attached, or NULL */
	int store_image_cached;  /* --store-image auto found it built already */
	size_t closure_paths;    /* how many store paths the closure holds */
};
IMG_EXPORT void img_vm_get_info(const struct img_vm *vm, struct img_vm_info *info);

/*
 * Create the state: 0700 dirs, 0600 files; overlay, EFI vars, empty disks,
 * log. Takes the state directory's lock (held until img_vm_free(), and by
 * QEMU and swtpm while they run): -EBUSY naming the holder if another
 * vmlaunch has it. Never follows a symbolic link in the state, never
 * changes a directory it did not make, reuses or removes only regular
 * files of the caller's that carry vmlaunch's marks; see docs/vm-state.md.
 */
IMG_EXPORT int img_vm_prepare(struct img_ctx *ctx, struct img_vm *vm);

struct img_vm_result {
	int exit_status;   /* QEMU's exit status (128+sig if killed) */
	int expect_found;  /* the expected text appeared */
	int timed_out;     /* --timeout passed first */
	int stopped_first; /* the VM stopped before the text appeared */
	int cancelled;     /* img_ctx_cancel() (a signal) stopped it */
};

/*
 * Start swtpm (if asked) and QEMU, watch the console, stop gracefully on
 * cancel or once the expected text appears (QMP system_powerdown, wait,
 * quit, then SIGKILL), reap every child. Returns 0 when QEMU ran (see @res),
 * <0 when something could not be started.
 */
IMG_EXPORT int img_vm_run(struct img_ctx *ctx, struct img_vm *vm, struct img_vm_result *res);

/*
 * Firmware discovery, public for tests and --dry-run. Pick the first
 * descriptor (override by file name across @dirs, lowest priority first;
 * an empty file masks; sorted by name) for UEFI on x86_64 q35 with a flash
 * mapping in split mode whose files exist; @secure_boot (IMG_VM_SB_*) needs
 * secure-boot without enrolled-keys (SETUP) or with (ENROLLED); otherwise
 * secure-boot firmware is skipped.
 */
struct img_vm_firmware {
	char *descriptor; /* path of the JSON file, NULL for a fallback */
	char *code, *code_format;
	char *vars, *vars_format;
	int requires_smm, secure_boot, enrolled_keys;
};
IMG_EXPORT int img_vm_firmware_find(struct img_ctx *ctx, const char *const *dirs, size_t ndirs,
                                    int secure_boot /* enum img_vm_secure_boot */,
                                    struct img_vm_firmware *fw);
/* Parse one descriptor; -EINVAL with a message for bad JSON, 1 if it does not fit. */
IMG_EXPORT int img_vm_firmware_parse(struct img_ctx *ctx, const char *path, const char *json,
                                     size_t len, int secure_boot, struct img_vm_firmware *fw);
IMG_EXPORT void img_vm_firmware_release(struct img_vm_firmware *fw);

#ifdef __cplusplus
}
#endif
#endif
