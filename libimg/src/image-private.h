/*
 * image-private.h -- what the recipes (image-*.c) share.
 */
#ifndef IMG_IMAGE_PRIVATE_H
#define IMG_IMAGE_PRIVATE_H

#include "private.h"
#include <img/boot.h>
#include <img/closure.h>
#include <img/image.h>
#include <img/tree.h>

/*
 * Set the context's seed: opts->seed if given, else a hash of the label and
 * the sorted store paths @paths (with no paths, --empty, the size instead).
 * Never the mode: a root file system keeps its UUID bare, in --efi or in
 * --hybrid (image.c says why).
 */
int img_image_set_seed(struct img_ctx *ctx, const struct img_build_opts *o,
                       const char *const *paths, size_t npaths);
/* qemu's name of the output format ("raw", "qcow2", "vpc", "vdi", "vmdk"). */
const char *img_image_format_name(const struct img_build_opts *o);
/* The vdisk.h format of a VPC, VDI or VMDK output (0 for raw and qcow2). */
enum img_vdisk_format img_image_vdisk_format(const struct img_build_opts *o);
/*
 * Does the output's device lay its file out for a plan (img_dev_plan), so
 * that it goes out front to back and is hashed as written? Uncompressed
 * qcow2, dynamic VHD, VDI, monolithicSparse VMDK. Raw and fixed VHD are in
 * order without one; zstd qcow2 and streamOptimized VMDK pack at finish.
 */
bool img_image_output_plans(const struct img_build_opts *o);
/*
 * Create the output device of @size bytes in the requested format. VPC
 * rounds a bare file system's size up to 1 MiB (VDI, VMDK: 512 bytes); a
 * partitioned disk must have that size already.
 */
int img_image_create_output(struct img_ctx *ctx, const struct img_build_opts *o, uint64_t size,
                            struct img_dev **out);
/*
 * The directory o->output is in (malloc'ed; NULL: out of memory): where a
 * recipe keeps its temporary files (a tar's staging file, the ext4 block
 * cache's spill), never TMPDIR, so they land on the output's file system.
 */
char *img_image_output_dir(const struct img_build_opts *o);
/* Load opts->closure with opts->root / opts->store_dir. */
int img_image_load_closure(struct img_ctx *ctx, const struct img_build_opts *o,
                           struct img_closure **out);

/*
 * The NixOS root tree (image-root.c, docs/root-image.md): /nix/store/<paths>
 * read from the host (@c may be NULL: the layout only), /nix/var/nix/{db,
 * gcroots,profiles}, /nix-path-registration when @c has a registration,
 * /nix/var/nix/profiles/system -> the system toplevel (o->system, else the
 * closure path holding kernel, initrd and init), /boot, an empty /etc.
 * The tree is finished; the caller frees it. Write it with
 * img_fs_find("ext4")->write(), label o->label or "nixos".
 */
int img_root_tree_build(struct img_ctx *ctx, const struct img_build_opts *o,
                        const struct img_closure *c, struct img_tree **out);
/*
 * The same tree with the store read from the tar stream o->tar (@c, if
 * given, supplies the registration and the seed's paths; its paths need not
 * exist here), and the context's seed set (from @c, else from the store
 * paths in the tree). Every regular file's bytes are readable when this
 * returns (a pipe's and a compressed file's are staged in an unlinked file
 * beside o->output, never in TMPDIR; an uncompressed file's are ranges of
 * it), so nothing waits for img_tar_source_replay(). The tree refers to
 * *tar's files: free the tree first, then img_tar_source_free(*tar).
 */
struct img_tar_source;
int img_root_tree_build_tar(struct img_ctx *ctx, const struct img_build_opts *o,
                            const struct img_closure *c, struct img_tree **out,
                            struct img_tar_source **tar);
/* The root file system's label unless --label says otherwise. */
#define ROOT_LABEL "nixos"
/* Where the root layout links the system toplevel (system -> system-1-link -> it). */
#define ROOT_SYSTEM_LINK "nix/var/nix/profiles/system-1-link"
/* The system toplevel the layout of root tree @t linked, or NULL (borrowed from @t). */
const char *img_root_tree_system(struct img_tree *t);

/*
 * The system toplevel in a root tree: o->system (which must be among the
 * candidates), else the one store path holding kernel, initrd and init;
 * *out malloc'ed, NULL (return 0) when there is none. The candidates are
 * @c's paths, or with @c NULL the store paths in the tree.
 */
int img_root_find_system(struct img_ctx *ctx, const struct img_build_opts *o,
                         const struct img_closure *c, struct img_tree *t, char **out);
/* The store paths in a root tree (<store dir>/<name>, sorted); free with
 * img_root_tree_paths_free(*out, *nout). */
int img_root_tree_paths(struct img_ctx *ctx, const struct img_build_opts *o, struct img_tree *t,
                        char ***out, size_t *nout);
void img_root_tree_paths_free(char **paths, size_t n);
/* Free space added to the root file system when --additional-space is not given. */
uint64_t img_root_default_headroom(const struct img_tree *tree);

/*
 * The manifest (image-manifest.c). Fill @m with what the recipe knows (mode,
 * boot, partition_table, disk_guid, partitions, system, kernel_params,
 * bootloader, virtual_size); this adds generator, image, format,
 * compression, the sha256 of o->output (call it after img_dev_finish of
 * @dev, the output's device: its hash as written, else the file read
 * back), seed and epoch, and writes o->manifest. Does nothing when
 * o->manifest is NULL.
 */
struct img_manifest;
struct img_manifest_verity;
int img_image_write_manifest(struct img_ctx *ctx, const struct img_build_opts *o,
                             struct img_dev *dev, struct img_manifest *m);
/*
 * The manifest of a bare file system (no partition table): one partition
 * entry numbered 0 at offset 0; system, kernel_params and bootloader "none"
 * when the root tree @t (NULL: none, a store image) links a NixOS system
 * (ROOT_SYSTEM_LINK), so a tar build says what a closure build says.
 * @fs_uuid as img_image_fs_id() read it.
 */
int img_image_manifest_bare(struct img_ctx *ctx, const struct img_build_opts *o,
                            struct img_dev *dev, const struct img_closure *c, struct img_tree *t,
                            const char *fs, const char *label, uint64_t size, const char *fs_uuid,
                            struct img_manifest_verity *verity, const char *fs_compression);
/* The ID blkid shows for the file system @fs ("vfat", "ext4", "erofs") at @off. */
int img_image_fs_id(struct img_ctx *ctx, struct img_dev *dev, uint64_t off, const char *fs,
                    char *out, size_t len);

/* How the root tree's store is read for GRUB's plan (the tree itself). */
struct img_boot_opts img_image_grub_boot_opts(const struct img_build_opts *o,
                                              const struct img_closure *c, struct img_tree *t,
                                              const char *system, const char *tree_name);
/*
 * --bios, --hybrid (image-common.c): add boot/grub/grub.cfg, the menu of
 * @system's boot entries (img_boot_grub_cfg), to the root tree @t before
 * it is finished. Store paths are read from @t itself.
 */
int img_image_grub_cfg(struct img_ctx *ctx, const struct img_build_opts *o,
                       const struct img_closure *c, struct img_tree *t, const char *system);

/* The recipes, one per file. */
int img_build_root(struct img_ctx *ctx, const struct img_build_opts *o);  /* ROOT, EMPTY */
int img_build_store(struct img_ctx *ctx, const struct img_build_opts *o); /* STORE */
int img_build_disk(struct img_ctx *ctx, const struct img_build_opts *o);  /* EFI, BIOS, HYBRID */

#endif
