/*
 * boot.h -- the EFI System Partition contents for a NixOS system.
 *
 * Given a system toplevel inside a closure on the host, plan its boot
 * entries (img_boot_plan_build): from the toplevel's boot.json (bootspec
 * v1, img/bootspec.h: the system and one entry per specialisation), or,
 * when it has none, from its kernel, initrd, init and kernel-params files
 * (one entry). Then build the tree the FAT32 writer puts on the ESP, as
 * NixOS's systemd-boot-builder would:
 *
 *   EFI/BOOT/BOOTX64.EFI, EFI/systemd/systemd-bootx64.efi   systemd-boot
 *   EFI/nixos/<hash>-<name>[-<file>].efi                     kernels, initrds
 *   loader/loader.conf                                       timeout, default, editor 0
 *   loader/entries/nixos-generation-1.conf                   the system
 *   loader/entries/nixos-generation-1-specialisation-NAME.conf
 *
 * or, with uki set, one unified kernel image (systemd-stub + .osrel,
 * .cmdline, .initrd, .linux) per entry at EFI/Linux/<id>.efi, started by
 * systemd-boot when the closure (or --bootloader) has it; without
 * systemd-boot the system's UKI is EFI/BOOT/BOOTX64.EFI itself (and a
 * system with specialisations needs systemd-boot). img_boot_grub_cfg()
 * writes the same entries as the grub.cfg NixOS's install-grub.pl lays out.
 *
 * Store paths are resolved under opts->root: a symlink /nix/store/x/kernel
 * -> /nix/store/y/bzImage is followed inside root, never on the host's /.
 * With opts->tree (a root tree read from a tar stream, store paths under
 * nix/store/) they are looked up and followed inside that tree instead, and
 * the ESP files share the tree nodes' data: the tree (and whatever its data
 * refers to) must outlive the ESP tree.
 *
 * Calling sequence:
 *   struct img_boot_opts bo = { .system = "/nix/store/...-nixos-system-x", ... };
 *   struct img_boot_esp *esp;
 *   img_boot_esp_build(ctx, &bo, &esp);
 *   ... img_fs_find("vfat")->write(ctx, esp->tree, &fo, dev) ...
 *   img_boot_esp_free(esp);
 */
#ifndef IMG_BOOT_H
#define IMG_BOOT_H

#include <stddef.h>
#include <stdint.h>
#include <img/context.h>
#include <img/tree.h>

#ifdef __cplusplus
extern "C" {
#endif

struct img_boot_opts {
	const char *system;       /* toplevel store path (required) */
	const char *root;         /* host directory standing for "/"; NULL = "/" */
	const char *store_dir;    /* NULL = "/nix/store" */
	const char *const *paths; /* the closure's store paths, searched for systemd-boot */
	size_t npaths;
	const char *bootloader;     /* systemd-boot EFI binary on the host, or NULL = closure */
	int uki;                    /* build a UKI instead of loader entries */
	const char *uki_stub;       /* linuxx64.efi.stub on the host, or NULL = closure, then
	                               /usr/lib/systemd/boot/efi/linuxx64.efi.stub */
	const char *kernel_params;  /* appended to every entry's kernel parameters, or NULL */
	const char *specialisation; /* the specialisation booted by default, or NULL: the system */
	/* When set: read the closure's files from this finished root tree (store
	 * paths at nix/store/<name>) instead of from the host under root. Every
	 * file the ESP needs must have its data available (not IMG_DATA_NONE). */
	const struct img_tree *tree;
	const char *tree_name; /* for messages: "the tar stream x.tar" */
};

/* One boot entry: the system, or one of its specialisations. */
struct img_boot_entry {
	char *id;             /* "nixos-generation-1", "nixos-generation-1-specialisation-NAME" */
	char *title;          /* systemd-boot's: "NixOS", "NixOS (NAME)" */
	char *grub_title;     /* GRUB's: "NixOS[ - Default]", "NixOS (NAME - DATE - VERSION)" */
	char *specialisation; /* NAME, or NULL for the system itself */
	char *toplevel;       /* the toplevel this entry boots */
	char *kernel;         /* resolved store paths (symlinks followed in the closure) */
	char *initrd;
	char *devicetree;    /* or NULL */
	char *init;          /* bootspec init, or <toplevel>/init */
	char *label;         /* bootspec label, or the toplevel's nixos-version (may be "") */
	char *nixos_version; /* the toplevel's nixos-version, or NULL */
	char *sort_key;      /* "nixos" unless the bootspec's systemd-boot extension says */
	char *kernel_params; /* kernelParams joined by spaces (or kernel-params) + opts' */
	char *options;       /* "init=<init> <kernel_params>", the entry's command line */
	char *efi_kernel;    /* on the ESP: "/EFI/nixos/<hash>-<name>-bzImage.efi" */
	char *efi_initrd;
	char *efi_devicetree; /* or NULL */
};

struct img_boot_plan {
	const char *source;  /* "bootspec" (boot.json) or "files" (kernel, initrd, ...) */
	char *bootspec_file; /* "<toplevel>/boot.json" when source is bootspec */
	struct img_boot_entry *entries; /* [0] the system, then specialisations by name */
	size_t nentries;
	size_t default_entry; /* the one loader.conf and grub.cfg boot: 0 unless
	                         opts->specialisation */
};

/*
 * Plan opts->system's entries. Errors: a bad boot.json (img/bootspec.h),
 * a path outside the closure or the store, a missing kernel or initrd, a
 * control character in any text that goes into an entry (opts->kernel_params
 * included).
 */
IMG_EXPORT int img_boot_plan_build(struct img_ctx *ctx, const struct img_boot_opts *opts,
                                   struct img_boot_plan **out);
IMG_EXPORT void img_boot_plan_free(struct img_boot_plan *plan);

/*
 * The grub.cfg for @plan, as install-grub.pl lays it out for a first
 * generation: the header (grubenv, next_entry, default 0, timeout), one
 * menuentry per entry (the system first, then its specialisations), and
 * the "NixOS - All configurations" submenu. Kernels and initrds are read
 * from the store on the file system with label @label (search --label).
 * malloc'ed into *out.
 */
IMG_EXPORT int img_boot_grub_cfg(struct img_ctx *ctx, const struct img_boot_plan *plan,
                                 const char *label, char **out);

struct img_boot_esp {
	struct img_tree *tree;      /* the finished ESP tree */
	struct img_boot_plan *plan; /* the entries it boots */
	char *kernel_params;        /* entries[0].kernel_params (borrowed from plan) */
	char *cmdline;              /* entries[0].options (borrowed from plan) */
	const char *bootloader;     /* "systemd-boot" or "uki" */
	int *uki_fds;               /* memfds holding the UKIs (tree data), nentries of them */
	char **uki_paths;           /* "EFI/Linux/<id>.efi" or "EFI/BOOT/BOOTX64.EFI" per entry */
};

/*
 * Build the ESP tree for opts->system. Errors name what is missing and how
 * to supply it (--system, --bootloader, --uki-stub).
 */
IMG_EXPORT int img_boot_esp_build(struct img_ctx *ctx, const struct img_boot_opts *opts,
                                  struct img_boot_esp **out);
IMG_EXPORT void img_boot_esp_free(struct img_boot_esp *esp);

/*
 * The kernel parameters of opts->system (its boot.json's kernelParams, or
 * without one its kernel-params file, under opts->root or in opts->tree,
 * without init=), with opts->kernel_params appended; malloc'ed into *out.
 * A system without either gives opts->kernel_params (or "").
 */
IMG_EXPORT int img_boot_kernel_params_read(struct img_ctx *ctx, const struct img_boot_opts *opts,
                                           char **out);

#ifdef __cplusplus
}
#endif
#endif
