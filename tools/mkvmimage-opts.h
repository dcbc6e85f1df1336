/*
 * mkvmimage-opts.h -- every mkvmimage option, once: getopt's table, --help,
 * the man page mkvmimage.1 and the shell completions all come from here
 * (tool-opts.h). A new option is a row here and a case in mkvmimage.c.
 */
#ifndef MKVMIMAGE_OPTS_H
#define MKVMIMAGE_OPTS_H

#include "tool-opts.h"

enum {
	OPT_EFI = 256,
	OPT_BIOS,
	OPT_HYBRID,
	OPT_STORE,
	OPT_EMPTY,
	OPT_FORMAT,
	OPT_VPC_SUB,
	OPT_VMDK_SUB,
	OPT_COMPRESS,
	OPT_CLUSTER,
	OPT_TAR,
	OPT_ROOT,
	OPT_STORE_DIR,
	OPT_SIZE,
	OPT_ADDITIONAL,
	OPT_BOOT_SIZE,
	OPT_LABEL,
	OPT_SYSTEM,
	OPT_BOOTLOADER,
	OPT_UKI,
	OPT_UKI_STUB,
	OPT_GRUB,
	OPT_KPARAMS,
	OPT_SPECIALISATION,
	OPT_KEEP_HARDLINKS,
	OPT_VERITY,
	OPT_COMPRESS_FS,
	OPT_SEED,
	OPT_MANIFEST,
	OPT_NO_MANIFEST,
	OPT_NO_DIRECT_IO,
	OPT_VERSION,
};

static const struct tool_opt mkvmimage_opts[] = {
	T_SECTION("Modes (at most one; none: a bare ext4 file system)"),
	{ .name = "efi",
	  .val = OPT_EFI,
	  .help = "GPT disk: ESP (FAT32) + ext4 root, UEFI boot files",
	  .more = "The ESP (label and GPT name ESP) holds systemd-boot and loader entries, "
	          "or a unified kernel image (--uki), for the closure's NixOS system; the "
	          "root is ext4, label nixos." },
	{ .name = "bios",
	  .val = OPT_BIOS,
	  .help = "MBR disk: one bootable ext4 root partition at 1 MiB",
	  .more = "GRUB goes into the MBR and the gap before the partition when a GRUB "
	          "i386-pc directory is found (--grub)." },
	{ .name = "hybrid",
	  .val = OPT_HYBRID,
	  .help = "GPT disk: BIOS boot partition + ESP + ext4 root",
	  .more = "Boots with UEFI and with a BIOS." },
	{ .name = "store-image",
	  .val = OPT_STORE,
	  .help = "EROFS Nix store image (label nix-store)",
	  .more = "Its root holds the store paths by base name: /nix/store/abc-foo is "
	          "/abc-foo." },
	{ .name = "empty",
	  .val = OPT_EMPTY,
	  .help = "an empty ext4 file system (label nixos) of --size",
	  .more = "Takes no CLOSURE." },

	T_SECTION("Output"),
	{ .name = "output",
	  .short_name = 'o',
	  .val = 'o',
	  .arg = "FILE",
	  .help = "the image to write (required)",
	  .more = "Written under a temporary name beside FILE and renamed when complete: a "
	          "failure or a signal leaves nothing behind.",
	  .complete = TC_FILE },
	{ .name = "format",
	  .val = OPT_FORMAT,
	  .arg = "FORMAT",
	  .help = "raw, qcow2, vpc, vdi, vmdk (default: by FILE's suffix)",
	  .more = "qcow2 for .qcow2, vpc (VHD) for .vhd and .vpc, vdi for .vdi, vmdk for "
	          ".vmdk, raw otherwise. Every format is written directly, without a "
	          "conversion pass; streamOptimized VMDK deflates its grains when the "
	          "image is complete.",
	  .complete = TC_WORDS,
	  .words = "raw qcow2 vpc vdi vmdk" },
	{ .name = "vpc-subformat",
	  .val = OPT_VPC_SUB,
	  .arg = "KIND",
	  .help = "VHD kind: fixed (default; Azure, Hyper-V) or dynamic",
	  .more = "A VHD's virtual size is rounded up to a whole MiB, as Azure requires; "
	          "a partitioned disk is planned in whole MiB already.",
	  .complete = TC_WORDS,
	  .words = "fixed dynamic" },
	{ .name = "vmdk-subformat",
	  .val = OPT_VMDK_SUB,
	  .arg = "KIND",
	  .help = "monolithicSparse (default) or streamOptimized (OVA)",
	  .more = "monolithicSparse runs in place (VMware Workstation, VirtualBox, qemu); "
	          "streamOptimized is the compressed form OVF/OVA imports (ESXi, vSphere) "
	          "take.",
	  .complete = TC_WORDS,
	  .words = "monolithicSparse streamOptimized" },
	{ .name = "compress",
	  .val = OPT_COMPRESS,
	  .arg = "ALG",
	  .help = "qcow2 with compressed clusters: zstd or zlib",
	  .complete = TC_WORDS,
	  .words = "zstd zlib" },
	{ .name = "cluster-size",
	  .val = OPT_CLUSTER,
	  .arg = "SIZE",
	  .help = "qcow2 cluster size, 512 to 2M (default 64K)",
	  .more = "A power of two." },
	{ .name = "manifest",
	  .val = OPT_MANIFEST,
	  .arg = "FILE",
	  .help = "JSON manifest path (default FILE.json)",
	  .more = "The manifest describes the image: format, virtual size, boot mode, "
	          "partitions with their GUIDs, labels and UUIDs, the NixOS system, the "
	          "sha256 of the output, the seed and the epoch.",
	  .complete = TC_FILE },
	{ .name = "no-manifest",
	  .val = OPT_NO_MANIFEST,
	  .help = "do not write a manifest",
	  .more = "The output is then not hashed at all, neither as it is written nor read back." },
	{ .name = "no-direct-io",
	  .val = OPT_NO_DIRECT_IO,
	  .help = "write through the page cache instead of O_DIRECT",
	  .more = "File data then goes through copy_file_range, then fsync: the same bytes, "
	          "for file systems where direct I/O is slow, or to keep a fresh image "
	          "cached for an immediate boot. Compressed qcow2 always uses the page "
	          "cache." },

	T_SECTION("Input"),
	{ .name = "tar",
	  .val = OPT_TAR,
	  .arg = "FILE|-",
	  .help = "read the closure's contents from a tar stream",
	  .more = "Any compression libarchive reads. CLOSURE becomes optional. Entry names "
	          "may be absolute (/nix/store/x-foo/bin/a), relative with the store "
	          "prefix (nix/store/x-foo/bin/a) or relative to the store (x-foo/bin/a).",
	  .complete = TC_FILE },
	{ .name = "root",
	  .val = OPT_ROOT,
	  .arg = "DIR",
	  .help = "directory standing for / when reading store paths",
	  .more = "Default /: /nix/store/x is read from DIR/nix/store/x.",
	  .complete = TC_DIR },
	{ .name = "store-dir",
	  .val = OPT_STORE_DIR,
	  .arg = "DIR",
	  .help = "the store directory (default /nix/store)",
	  .complete = TC_DIR },
	{ .name = "keep-hardlinks",
	  .val = OPT_KEEP_HARDLINKS,
	  .help = "keep hard links (default: dereference them)" },

	T_SECTION("Sizes and labels"),
	{ .name = "size",
	  .val = OPT_SIZE,
	  .arg = "SIZE",
	  .help = "total size of the disk or file system",
	  .more = "Default: computed from the content. Required with --empty." },
	{ .name = "additional-space",
	  .val = OPT_ADDITIONAL,
	  .arg = "SIZE",
	  .help = "free space added to the computed root size",
	  .more = "Default: 64 MiB plus a tenth of the file data." },
	{ .name = "boot-size",
	  .val = OPT_BOOT_SIZE,
	  .arg = "SIZE",
	  .help = "ESP size (default 256M)" },
	{ .name = "label",
	  .val = OPT_LABEL,
	  .arg = "NAME",
	  .help = "label of the root (or store) file system" },

	T_SECTION("Store image"),
	{ .name = "verity",
	  .val = OPT_VERITY,
	  .help = "add a dm-verity hash tree (SHA-256)",
	  .more = "In veritysetup's format, salt and UUID from the seed; the file system "
	          "bytes do not change. --store-image: the tree is appended, superblock at "
	          "the file system's size (the hash offset). --efi: the tree of the whole "
	          "root partition goes into its own partition after it (nixos-verity, the "
	          "Discoverable Partitions Specification's root verity type for x86-64, "
	          "superblock at its start); the guest must then mount the root read-only "
	          "through dm-verity. The manifest's store or root partition gets a verity "
	          "object: root hash, algorithm, data and hash offsets, salt "
	          "(docs/store-image.md, docs/root-image.md). Only with --store-image or "
	          "--efi." },
	{ .name = "compress-fs",
	  .val = OPT_COMPRESS_FS,
	  .arg = "ALG",
	  .help = "compressed EROFS: lz4, lz4hc or lz4hc:LEVEL",
	  .more = "File data in 4 KiB LZ4 pclusters (LEVEL 1..12, default 9); a file "
	          "that does not shrink by a block stays uncompressed. Raw output; the "
	          "data must be at hand (a closure, a tar file or a tar pipe, not a "
	          "compressed tar). Two threads compress while one reads.",
	  .complete = TC_WORDS,
	  .words = "lz4 lz4hc" },

	T_SECTION("Booting"),
	{ .name = "system",
	  .val = OPT_SYSTEM,
	  .arg = "PATH",
	  .help = "the NixOS system (toplevel) store path to boot",
	  .more = "Default: the closure path holding kernel, initrd and init.",
	  .complete = TC_DIR },
	{ .name = "kernel-params",
	  .val = OPT_KPARAMS,
	  .arg = "TEXT",
	  .help = "extra kernel parameters for every boot entry",
	  .more = "Appended to each entry's kernelParams (boot.json) or kernel-params. One "
	          "line: a control character (a newline, a tab) is refused." },
	{ .name = "specialisation",
	  .val = OPT_SPECIALISATION,
	  .arg = "NAME",
	  .help = "boot the system's specialisation NAME by default",
	  .more = "The default of loader.conf and grub.cfg; every entry stays in the menu. "
	          "NAME must be one of the specialisations in the system's boot.json." },
	{ .name = "bootloader",
	  .val = OPT_BOOTLOADER,
	  .arg = "FILE",
	  .help = "systemd-boot EFI binary (default: from the closure)",
	  .complete = TC_FILE },
	{ .name = "uki",
	  .val = OPT_UKI,
	  .help = "boot a unified kernel image instead of loader entries" },
	{ .name = "uki-stub",
	  .val = OPT_UKI_STUB,
	  .arg = "FILE",
	  .help = "the linuxx64.efi.stub to build the UKI from",
	  .more = "Implies --uki. Default: from the closure's systemd.",
	  .complete = TC_FILE },
	{ .name = "grub",
	  .val = OPT_GRUB,
	  .arg = "DIR",
	  .help = "GRUB i386-pc directory (boot.img, core.img) for --bios",
	  .more = "Also for --hybrid. Default: a closure path's lib/grub/i386-pc. Without "
	          "one the disk has no boot loader: a warning, and \"bootloader\": \"none\" "
	          "in the manifest.",
	  .complete = TC_DIR },

	T_SECTION("Reproducibility"),
	{ .name = "seed",
	  .val = OPT_SEED,
	  .arg = "STRING",
	  .help = "reproducibility seed (default: from the inputs)",
	  .more = "Every identifier (GPT GUIDs, MBR signature, file system UUIDs) is "
	          "derived from it. The default comes from the sorted closure and the "
	          "options that change the output." },

	T_SECTION("Messages"),
	{ .name = "quiet", .short_name = 'q', .val = 'q', .help = "no progress line, only errors" },
	{ .name = "verbose", .short_name = 'v', .val = 'v', .help = "say more" },
	{ .name = "help", .short_name = 'h', .val = 'h', .help = "this text" },
	{ .name = "version", .val = OPT_VERSION, .help = "the version" },
	{ 0 },
};

static const char *const mkvmimage_sections[] = {
	"SIZES",
	"A SIZE is a byte count or a number with a K, M, G or T suffix (powers of 1024).",
	"ENVIRONMENT",
	"SOURCE_DATE_EPOCH: every timestamp in the image, in seconds (default 1).",
	"EXIT STATUS",
	"0 on success, 1 on failure (nothing is left behind), 2 on a usage error.",
	"EXAMPLES",
	"mkvmimage --efi -o disk.qcow2 /path/to/closure-info\n"
	"mkvmimage --store-image -o store.img closure.txt\n"
	"tar -C / -c nix/store/... | mkvmimage --store-image --tar - -o store.img\n"
	"mkvmimage --empty --size 4G -o empty.qcow2",
	"SEE ALSO",
	"vmlaunch(1), qemu-img(1)",
	NULL,
};

static const struct tool_doc tool_doc = {
	.name = "mkvmimage",
	.synopsis = "[MODE] [OPTIONS] [CLOSURE]",
	.summary = "build VM disk images for Nix closures",
	.description =
	    "Build a VM disk image holding a Nix closure. CLOSURE is a file of store\n"
	    "paths (closureInfo's store-paths), a closureInfo directory, or - for stdin.\n"
	    "\n"
	    "Everything happens in one process: no root, no loop devices, no mkfs or "
	    "qemu-img. The same inputs, seed and SOURCE_DATE_EPOCH give the same bytes. "
	    "A closureInfo directory's registration is copied into the image as "
	    "/nix-path-registration. Errors name the input and line.",
	.shortopts_prefix = "",
	.opts = mkvmimage_opts,
	.help_footer = "Sizes: bytes, or a number with K, M, G or T (powers of 1024).\n"
	               "Environment: SOURCE_DATE_EPOCH (default 1) sets every timestamp.\n",
	.sections = mkvmimage_sections,
};

#endif
