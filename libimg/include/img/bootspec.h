/*
 * bootspec.h -- a NixOS system's boot.json (bootspec v1, RFC 0125).
 *
 * A NixOS toplevel describes how to boot it in boot.json:
 *
 *   { "org.nixos.bootspec.v1": { "kernel": "/nix/store/...-linux/bzImage",
 *       "initrd": "...", "init": "<toplevel>/init", "kernelParams": [ ... ],
 *       "label": "NixOS 25.05 (Linux 6.12)", "system": "x86_64-linux",
 *       "toplevel": "/nix/store/...-nixos-system-x", "initrdSecrets": "..." },
 *     "org.nixos.specialisation.v1": { "NAME": { "org.nixos.bootspec.v1": {...},
 *                                                ... }, ... },
 *     "org.nixos.systemd-boot": { "sortKey": "...", "devicetree": "..." } }
 *
 * img_bootspec_parse() checks the document as hostile input: valid JSON (one
 * value, nothing after it), the types of every field it uses, paths
 * absolute and inside the store directory, no control byte in any text that
 * ends up in a boot entry, specialisation names usable as file names. Every
 * refusal names the file and the field ("x/boot.json:
 * org.nixos.specialisation.v1.a.org.nixos.bootspec.v1.kernel: not a
 * string"). Whether the paths are in the closure is the caller's check
 * (boot.c knows the closure).
 *
 * Calling sequence:
 *   struct img_bootspec *bs;
 *   img_bootspec_parse(ctx, text, len, "/nix/store/...-system/boot.json", "/nix/store", &bs);
 *   ... bs->sys.kernel, bs->specs[i].name ...
 *   img_bootspec_free(bs);
 */
#ifndef IMG_BOOTSPEC_H
#define IMG_BOOTSPEC_H

#include <stddef.h>
#include <img/context.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IMG_BOOTSPEC_MAX (1u << 20) /* a larger boot.json is refused */

struct img_bootspec_system {
	char *name;   /* specialisation name; NULL for the system itself */
	char *kernel; /* store paths, as written (not resolved) */
	char *initrd; /* required here: NixOS's builders need one */
	char *init;
	char *toplevel;
	char *system;         /* "x86_64-linux" */
	char *label;          /* "NixOS 25.05 (Linux 6.12)" */
	char **kernel_params; /* kernelParams, in order */
	size_t nkernel_params;
	char *sort_key;       /* org.nixos.systemd-boot.sortKey, default "nixos" */
	char *devicetree;     /* org.nixos.systemd-boot.devicetree, or NULL */
	char *initrd_secrets; /* initrdSecrets, or NULL (not run by libimg) */
};

struct img_bootspec {
	struct img_bootspec_system sys;
	struct img_bootspec_system *specs; /* specialisations, sorted by name (bytewise) */
	size_t nspecs;
};

/*
 * Parse @len bytes at @text (the content of @file, for messages) with paths
 * under @store_dir (NULL = "/nix/store"). -EINVAL with a message naming
 * @file and the field for anything malformed.
 */
IMG_EXPORT int img_bootspec_parse(struct img_ctx *ctx, const char *text, size_t len,
                                  const char *file, const char *store_dir,
                                  struct img_bootspec **out);
IMG_EXPORT void img_bootspec_free(struct img_bootspec *bs);

/*
 * 1 if @s holds no control byte (0x00-0x1F, 0x7F): safe to put into one line
 * of a boot entry or configuration file. Tools check option values with it.
 */
IMG_EXPORT int img_bootspec_text_ok(const char *s);

#ifdef __cplusplus
}
#endif
#endif
