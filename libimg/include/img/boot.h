/*
 * boot.h -- the EFI System Partition contents for a NixOS system.
 *
 * Given a system toplevel (the store path holding kernel, initrd, init and
 * kernel-params) inside a closure on the host, build the tree the FAT32
 * writer puts on the ESP, as NixOS's systemd-boot-builder would:
 *
 *   EFI/BOOT/BOOTX64.EFI, EFI/systemd/systemd-bootx64.efi   systemd-boot
 *   EFI/nixos/<hash>-<name>-<file>.efi                       kernel, initrd
 *   loader/loader.conf, loader/entries/nixos-generation-1.conf
 *
 * or, with uki set, one unified kernel image (systemd-stub + .osrel,
 * .cmdline, .initrd, .linux) at EFI/BOOT/BOOTX64.EFI.
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
	const char *bootloader;    /* systemd-boot EFI binary on the host, or NULL = closure */
	int uki;                   /* build a UKI instead of loader entries */
	const char *uki_stub;      /* linuxx64.efi.stub on the host, or NULL = closure, then
	                              /usr/lib/systemd/boot/efi/linuxx64.efi.stub */
	const char *kernel_params; /* appended to the toplevel's kernel-params, or NULL */
	/* When set: read the closure's files from this finished root tree (store
	 * paths at nix/store/<name>) instead of from the host under root. Every
	 * file the ESP needs must have its data available (not IMG_DATA_NONE). */
	const struct img_tree *tree;
	const char *tree_name; /* for messages: "the tar stream x.tar" */
};

struct img_boot_esp {
	struct img_tree *tree;  /* the finished ESP tree */
	char *kernel_params;    /* the toplevel's kernel-params + opts->kernel_params */
	char *cmdline;          /* "init=<toplevel>/init <kernel_params>" */
	const char *bootloader; /* "systemd-boot" or "uki" */
	int uki_fd;             /* memfd holding the UKI (tree data), or -1 */
};

/*
 * Build the ESP tree for opts->system. Errors name what is missing and how
 * to supply it (--system, --bootloader, --uki-stub).
 */
IMG_EXPORT int img_boot_esp_build(struct img_ctx *ctx, const struct img_boot_opts *opts,
                                  struct img_boot_esp **out);
IMG_EXPORT void img_boot_esp_free(struct img_boot_esp *esp);

/*
 * The kernel parameters of opts->system (its kernel-params file under
 * opts->root or in opts->tree, without init=), with opts->kernel_params
 * appended; malloc'ed into *out. A system without kernel-params gives
 * opts->kernel_params (or "").
 */
IMG_EXPORT int img_boot_kernel_params_read(struct img_ctx *ctx, const struct img_boot_opts *opts,
                                           char **out);

#ifdef __cplusplus
}
#endif
#endif
