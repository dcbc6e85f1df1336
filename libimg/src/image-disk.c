/*
 * image-disk.c -- the EFI, BIOS and HYBRID recipes: a partitioned system
 * disk written in one pass, no VM, no root.
 *
 *   --efi     GPT: ESP (FAT32, systemd-boot or a UKI) + root (ext4 "nixos")
 *   --bios    MBR: one bootable ext4 root partition at 1 MiB
 *   --hybrid  GPT: BIOS boot (1 MiB) + ESP + root
 *
 * --efi --verity adds a fourth piece: the root partition's dm-verity hash
 * tree (verity.c, superblock at its start) in its own partition right after
 * the root, with the Discoverable Partitions Specification's root-verity
 * type. It covers the whole root partition, so the guest must mount the
 * root read-only through dm-verity; with --size the root gives up the
 * verity partition's room (the root, not the tree, takes what is left).
 *
 * Plan everything first (root tree and its ext4 size, ESP tree and whether
 * it fits, the partition layout), then create the output once and write the
 * table, the ESP and the root through slices of the output device. GRUB
 * (i386-pc boot.img + core.img from --grub DIR, else from a closure path's
 * lib/grub/i386-pc) is installed for --bios and --hybrid; without one the
 * disk has no BIOS boot loader and the manifest says "bootloader": "none"
 * (building a core.img would need grub-mkimage, a subprocess, which the
 * build path never runs).
 *
 * With --tar the root tree is read from the stream and the boot files
 * (kernel, initrd, systemd-boot, the UKI stub, kernel-params, ...) are
 * taken from that tree, not from the host: the ESP files share the root
 * tree's data. So every byte must be readable before the ESP is written: an
 * uncompressed tar file is referred to in place (nothing copied twice), a
 * pipe or a compressed file is staged beside the output in an unlinked file
 * (image-root.c, source-tar.c), never in TMPDIR. Writing then is exactly
 * what the closure on disk gives, in the same order: the same bytes, raw
 * and qcow2.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs-ext4.h"
#include "fs-fat32.h"
#include "image-private.h"
#include "verity.h"
#include <img/boot.h>
#include <img/disk.h>
#include <img/fs.h>
#include <img/manifest.h>
#include <img/repro.h>
#include <img/source.h>

#define MIB               (1ull << 20)
#define DEFAULT_BOOT_SIZE (256ull << 20)

/* ---- GRUB i386-pc -------------------------------------------------------- */

/* Offsets in boot.img and in core.img's first sector (grub/i386/pc/boot.h). */
#define GRUB_BPB_START     0x03
#define GRUB_BPB_END       0x5A
#define GRUB_KERNEL_SECTOR 0x5C  /* u64: where core.img starts */
#define GRUB_BOOT_DRIVE    0x64  /* 0xFF: the drive the BIOS booted from */
#define GRUB_MBR_CODE_END  0x1B8 /* disk signature and partition table follow */
#define GRUB_BLOCKLIST     0x1F4 /* diskboot.img: u64 start, u16 len, u16 segment */
_Static_assert(GRUB_MBR_CODE_END == IMG_DISK_BOOT_CODE, "boot.img's code is LBA 0's boot code");

struct grub {
	uint8_t boot[512];
	uint8_t *core;
	size_t core_len;
	uint64_t at;                      /* sector core.img starts at (grub_prepare) */
	uint8_t code[IMG_DISK_BOOT_CODE]; /* LBA 0's boot code (grub_prepare) */
};

/*
 * Take boot.img (@bn) and core.img (@cn) into @g, whichever source they come
 * from (host files or the root tree): boot.img 512 bytes ending in 55 AA,
 * core.img from 512 bytes up to @room. @where names the directory.
 */
static int grub_read(struct img_ctx *ctx, const char *where, const struct img_node *bn,
                     const struct img_node *cn, size_t room, struct grub *g)
{
	int r;

	if (bn->size != 512)
		return img_set_error(ctx, -EINVAL, "%s/boot.img: %llu bytes, not 512", where,
		                     (unsigned long long)bn->size);
	if (cn->size > room || cn->size < 512)
		return img_set_error(ctx, -EFBIG,
		                     "%s/core.img: %llu bytes (it must fit in %zu KiB)", where,
		                     (unsigned long long)cn->size, room >> 10);
	g->core_len = (size_t)cn->size;
	g->core = calloc(1, IMG_ALIGN_UP(g->core_len, 512)); /* whole sectors go out */
	if (!g->core)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	r = img_node_read_data(ctx, bn, 0, g->boot, 512);
	if (r >= 0)
		r = img_node_read_data(ctx, cn, 0, g->core, g->core_len);
	if (r >= 0 && (g->boot[510] != 0x55 || g->boot[511] != 0xAA))
		r = img_set_error(ctx, -EINVAL, "%s/boot.img: not a GRUB boot.img (no 55 AA)",
		                  where);
	return r;
}

/* --grub DIR: the two files on the host, read as tree nodes would be. */
static int grub_load(struct img_ctx *ctx, const char *dir, size_t room, struct grub *g)
{
	char bp[4096], cp[4096];
	struct img_node bn = { .type = IMG_NODE_REG }, cn = { .type = IMG_NODE_REG };
	struct stat st;

	snprintf(bp, sizeof(bp), "%s/boot.img", dir);
	snprintf(cp, sizeof(cp), "%s/core.img", dir);
	if (stat(bp, &st) < 0 || !S_ISREG(st.st_mode))
		return img_set_error(ctx, -ENOENT, "--grub: %s: not a regular file", bp);
	bn.size = (uint64_t)st.st_size;
	if (stat(cp, &st) < 0 || !S_ISREG(st.st_mode))
		return img_set_error(ctx, -ENOENT, "--grub: %s: not a regular file", cp);
	cn.size = (uint64_t)st.st_size;
	bn.data = (struct img_data){ .kind = IMG_DATA_PATH, .path = bp };
	cn.data = (struct img_data){ .kind = IMG_DATA_PATH, .path = cp };
	return grub_read(ctx, dir, &bn, &cn, room, g);
}

/*
 * Point core.img at itself (its blocklist: the sectors after its first, at
 * sector @at) and make LBA 0's boot code from boot.img pointing at core.img,
 * as grub-bios-setup does: boot.img's code around the BPB area, which stays
 * zero (the partition table's MBR has none), and the disk signature and
 * table after it are the table's. Both are ready before the disk's head goes
 * out, so the disk is written in order (core.img right after LBA 0 for
 * --bios, at the start of the BIOS boot partition for --hybrid).
 */
static void grub_prepare(struct grub *g, uint64_t at)
{
	uint64_t sectors = IMG_DIV_ROUND_UP(g->core_len, 512);

	g->at = at;
	img_put_le64(g->core + GRUB_BLOCKLIST, at + 1);
	img_put_le16(g->core + GRUB_BLOCKLIST + 8, (uint16_t)(sectors - 1));
	memset(g->code, 0, sizeof(g->code));
	memcpy(g->code, g->boot, GRUB_BPB_START);
	memcpy(g->code + GRUB_BPB_END, g->boot + GRUB_BPB_END, GRUB_MBR_CODE_END - GRUB_BPB_END);
	img_put_le64(g->code + GRUB_KERNEL_SECTOR, at);
	g->code[GRUB_BOOT_DRIVE] = 0xFF;
}

/* Bytes of core.img on the disk (whole sectors). */
static uint64_t grub_core_bytes(const struct grub *g)
{
	return IMG_ALIGN_UP((uint64_t)g->core_len, 512);
}

static int grub_write_core(struct img_dev *dev, const struct grub *g)
{
	return img_dev_pwrite(dev, g->core, grub_core_bytes(g), g->at * 512);
}

/* ---- the recipe ---------------------------------------------------------- */

struct disk_build {
	struct img_ctx *ctx;
	const struct img_build_opts *o;
	struct img_closure *c;
	struct img_tree *root;
	struct img_tar_source *tar; /* --tar: the stream the root tree refers to */
	char **paths;               /* the store paths (the closure's, else the tree's) */
	size_t npaths;
	char **tree_paths; /* --tar without a closure: owns paths */
	char *tree_name;   /* --tar: "the tar stream FILE", for messages */
	struct img_boot_esp *esp;
	const char *system;
	struct img_disk_layout l;
	struct img_dev *dev;
	struct grub grub;
	int have_grub;
	char ids[IMG_DISK_MAX_PARTS][40]; /* file system IDs read back before finishing */
	struct img_verity verity;         /* --verity: the root's hash tree */
	struct img_verity_tap *vtap;      /* ... hashing the root as it is written */
	/* A planned disk: the root's ext4 between its walks, on its slice. */
	struct img_ext4_job *root_job;
	struct img_dev *root_dev;
};

/* The index of the partition of @role in @l, or -1. */
static int part_index(const struct img_disk_layout *l, enum img_part_role role)
{
	for (size_t i = 0; i < l->nparts; i++)
		if (l->parts[i].role == role)
			return (int)i;
	return -1;
}

/*
 * --verity: once the root's size is planned, a partition for its hash tree
 * after it (superblock block + tree, in whole MiB), and the layout planned
 * again. With --size the root shrinks by that much, so the disk keeps its
 * size and the tree partition its exact room.
 */
static int plan_verity(struct disk_build *b)
{
	struct img_disk_part *root = &b->l.parts[b->l.nparts - 1];
	uint64_t rs = root->size, vs;

	vs = IMG_ALIGN_UP((1 + img_verity_tree_blocks(rs / IMG_VERITY_BLOCK)) * IMG_VERITY_BLOCK,
	                  MIB);
	if (b->o->size) {
		if (rs <= vs)
			return img_set_error(b->ctx, -ENOSPC,
			                     "--size %llu leaves no room for the root's verity "
			                     "partition (%llu MiB)",
			                     (unsigned long long)b->o->size,
			                     (unsigned long long)(vs / MIB));
		rs -= vs;
	}
	root->size = rs;
	img_disk_layout_add(&b->l, IMG_PART_ROOT_VERITY, vs);
	b->l.size = b->o->size;
	return img_disk_plan(b->ctx, &b->l);
}

/*
 * Without --grub DIR: the first store path of the closure (in store-path
 * order) that carries a prebuilt i386-pc boot.img and core.img in
 * lib/grub/i386-pc. Read from the root tree, so a closure on disk and a tar
 * stream find the same files. 1 = found, 0 = none, <0 = error.
 */
static int grub_from_closure(struct disk_build *b, size_t room, struct grub *g)
{
	for (size_t i = 0; i < b->npaths; i++) {
		const char *base = strrchr(b->paths[i], '/');
		struct img_node *bn, *cn;
		char p[4096];
		int r;

		base = base ? base + 1 : b->paths[i];
		snprintf(p, sizeof(p), "nix/store/%s/lib/grub/i386-pc/boot.img", base);
		bn = img_tree_lookup(b->root, p);
		snprintf(p, sizeof(p), "nix/store/%s/lib/grub/i386-pc/core.img", base);
		cn = img_tree_lookup(b->root, p);
		if (!bn || !cn || bn->type != IMG_NODE_REG || cn->type != IMG_NODE_REG)
			continue;
		snprintf(p, sizeof(p), "%s/lib/grub/i386-pc", b->paths[i]);
		r = grub_read(b->ctx, p, bn, cn, room, g);
		return r < 0 ? r : 1;
	}
	return 0;
}

static int plan(struct disk_build *b, uint64_t *root_min)
{
	struct img_ctx *ctx = b->ctx;
	const struct img_build_opts *o = b->o;
	const struct img_fs_ops *ext4 = img_fs_find("ext4");
	struct img_fs_opts fo = { .label = o->label ? o->label : ROOT_LABEL, .id_role = "root" };
	uint64_t root_size, esp_need, boot_size = o->boot_size ? o->boot_size : DEFAULT_BOOT_SIZE;
	int efi = o->mode != IMG_MODE_BIOS, r;

	if (!ext4)
		return img_set_error(ctx, -ENOSYS, "the ext4 writer is not built in");
	fo.extra =
	    o->additional_space_set ? o->additional_space : img_root_default_headroom(b->root);
	r = ext4->estimate(ctx, b->root, &fo, &root_size);
	if (r < 0)
		return r;
	fo.extra = 0;
	r = ext4->estimate(ctx, b->root, &fo, root_min);
	if (r < 0)
		return r;

	if (efi) {
		struct img_fs_opts eo = { .label = "ESP", .id_role = "fat-esp" };
		const struct img_fs_ops *vfat = img_fs_find("vfat");

		if (!vfat)
			return img_set_error(ctx, -ENOSYS, "the FAT32 writer is not built in");
		r = vfat->estimate(ctx, b->esp->tree, &eo, &esp_need);
		if (r < 0)
			return r;
		if (esp_need > boot_size)
			return img_set_error(ctx, -ENOSPC,
			                     "--boot-size %llu MiB is too small for the ESP "
			                     "content: it needs at least %llu MiB",
			                     (unsigned long long)(boot_size >> 20),
			                     (unsigned long long)IMG_DIV_ROUND_UP(esp_need, MIB));
	}
	memset(&b->l, 0, sizeof(b->l));
	b->l.label = o->mode == IMG_MODE_BIOS ? IMG_DISK_MBR : IMG_DISK_GPT;
	b->l.size = o->size;
	if (o->mode == IMG_MODE_HYBRID)
		img_disk_layout_add(&b->l, IMG_PART_BIOS_BOOT, MIB);
	if (efi)
		img_disk_layout_add(&b->l, IMG_PART_ESP, boot_size);
	img_disk_layout_add(&b->l, IMG_PART_ROOT, o->size ? *root_min : root_size);
	r = img_disk_plan(ctx, &b->l);
	if (r >= 0 && o->verity)
		r = plan_verity(b);
	if (r < 0)
		return r;
	if (o->mode != IMG_MODE_EFI && o->grub_dir) {
		/* MBR: the gap before 1 MiB; GPT: the BIOS boot partition. */
		size_t room = o->mode == IMG_MODE_BIOS ? (size_t)(MIB - 512) : (size_t)MIB;

		r = grub_load(ctx, o->grub_dir, room, &b->grub);
		if (r < 0)
			return r;
		b->have_grub = 1;
	} else if (o->mode != IMG_MODE_EFI) {
		r = grub_from_closure(
		    b, o->mode == IMG_MODE_BIOS ? (size_t)(MIB - 512) : (size_t)MIB, &b->grub);
		if (r < 0)
			return r;
		b->have_grub = r;
	}
	return 0;
}

static int write_part(struct disk_build *b, const struct img_disk_part *p,
                      const struct img_fs_ops *fs, struct img_tree *t, const struct img_fs_opts *fo)
{
	struct img_dev *s;
	struct img_fs_opts o = *fo;
	int r;

	r = img_dev_slice_new(b->dev, p->offset, p->size, &s);
	if (r < 0)
		return r;
	o.size = p->size;
	r = fs->write(b->ctx, t, &o, s);
	if (r >= 0)
		r = img_dev_flush(s);
	img_dev_unref(s);
	if (r < 0)
		img_error_prefix(b->ctx, r, "partition %u (%s)", p->number, p->rolename);
	return r;
}

/*
 * A disk whose format lays itself out for a plan (uncompressed qcow2,
 * dynamic VHD, VDI, sparse VMDK: img_image_output_plans) is planned whole
 * before its first write (img_dev_plan on the disk's device): the table's
 * head, GRUB's core.img (--bios: after LBA 0; --hybrid: in the BIOS boot
 * partition), the ESP's used bytes, every range the root's ext4 will write
 * (its first walk runs here, writing nothing), with --verity the verity
 * partition's superblock and tree, the table's tail. Then the disk goes out
 * front to back, tables first, and is hashed as it is written (the verity
 * tree is computed from the root's writes and follows it, verity.c). A raw
 * or fixed VHD disk needs no plan (it is written in order already).
 */
static bool want_plan(const struct img_build_opts *o)
{
	return img_image_output_plans(o);
}

static int plan_disk(struct disk_build *b, const struct img_fs_opts *rfo)
{
	struct img_fs_opts o = *rfo;
	uint64_t end;
	int r = 0;

	for (size_t i = 0; i < b->l.nparts && r >= 0; i++) {
		const struct img_disk_part *p = &b->l.parts[i];

		if (p->role != IMG_PART_ROOT)
			continue;
		r = img_dev_slice_new(b->dev, p->offset, p->size, &b->root_dev);
		o.size = p->size;
		if (r >= 0)
			r = img_ext4_layout(b->ctx, b->root, &o, b->root_dev, 0, &b->root_job);
		if (r < 0)
			return img_error_prefix(b->ctx, r, "partition %u (%s)", p->number,
			                        p->rolename);
	}
	r = img_disk_plan_head(&b->l, b->dev);
	/* core.img next: the gap after LBA 0, or the first partition's start */
	if (r >= 0 && b->have_grub)
		r = img_dev_plan(b->dev, b->grub.at * 512, grub_core_bytes(&b->grub));
	for (size_t i = 0; i < b->l.nparts && r >= 0; i++) {
		const struct img_disk_part *p = &b->l.parts[i];

		if (p->role == IMG_PART_ESP) {
			r = img_fat32_written_bytes(b->ctx, b->esp->tree, p->size, &end);
			if (r >= 0)
				r = img_dev_plan(b->dev, p->offset, end);
		} else if (p->role == IMG_PART_ROOT) {
			r = img_ext4_plan_ranges(b->root_job);
		} else if (p->role == IMG_PART_ROOT_VERITY) {
			/* the rest of the partition stays zeros */
			r = img_dev_plan(b->dev, p->offset, b->verity.hash_size);
		}
	}
	if (r >= 0)
		r = img_disk_plan_tail(&b->l, b->dev);
	/* through the root's slice, which was given ranges too: it completes
	 * the disk's plan and lets the slice be written (dev.h) */
	return r < 0 ? r : img_dev_plan_done(b->root_dev);
}

/* --hybrid's BIOS boot partition after core.img (written with the head): zeros. */
static int write_bios_boot(struct disk_build *b, const struct img_disk_part *p)
{
	uint64_t core = b->have_grub ? grub_core_bytes(&b->grub) : 0;

	return img_dev_write_zeroes(b->dev, p->offset + core, p->size - core);
}

/* The planned root: its second walk, on the slice its first one laid out. */
static int emit_root(struct disk_build *b, const struct img_disk_part *p)
{
	int r = img_ext4_emit(b->root_job);

	if (r >= 0)
		r = img_dev_flush(b->root_dev);
	img_ext4_job_free(b->root_job);
	b->root_job = NULL;
	if (r < 0)
		img_error_prefix(b->ctx, r, "partition %u (%s)", p->number, p->rolename);
	return r;
}

/* The manifest's view of @p's entries for @loader, appended to @m. */
static int manifest_entries(struct img_manifest *m, const struct img_boot_plan *p,
                            const char *loader, const struct img_boot_esp *esp,
                            struct img_manifest_entry *out, char **owned)
{
	for (size_t i = 0; i < p->nentries; i++) {
		const struct img_boot_entry *e = &p->entries[i];
		struct img_manifest_entry *me = &out[m->nentries++];
		int grub = !strcmp(loader, "grub");

		me->id = e->id;
		me->title = grub ? e->grub_title : e->title;
		me->specialisation = e->specialisation;
		me->loader = (char *)loader;
		if (grub)
			me->path = "boot/grub/grub.cfg";
		else if (esp->uki_paths[i])
			me->path = esp->uki_paths[i];
		else if (img_asprintf(&owned[i], "loader/entries/%s.conf", e->id) < 0)
			return -ENOMEM;
		else
			me->path = owned[i];
		me->kernel = e->kernel;
		me->initrd = e->initrd;
		me->options = e->options;
		me->is_default = i == p->default_entry;
	}
	return 0;
}

static int write_manifest(struct disk_build *b)
{
	const struct img_build_opts *o = b->o;
	struct img_manifest_partition mp[IMG_DISK_MAX_PARTS];
	struct img_manifest m = { 0 };
	char vuuid[37], vroot[65], vsalt[65];
	struct img_manifest_verity mv = {
		.root_hash = vroot,
		.hash_algorithm = IMG_VERITY_ALGORITHM,
		.data_block_size = IMG_VERITY_BLOCK,
		.hash_block_size = IMG_VERITY_BLOCK,
		.data_offset = b->verity.data_offset,
		.data_blocks = b->verity.data_blocks,
		.hash_offset = b->verity.hash_offset,
		.hash_size = b->verity.hash_size,
		.salt = vsalt,
		.uuid = vuuid,
	};
	struct img_boot_plan *gp = NULL;
	struct img_manifest_entry *me = NULL;
	char **owned = NULL;
	size_t n = 0;
	int r = 0;

	memset(mp, 0, sizeof(mp));
	img_uuid_unparse(b->verity.uuid, vuuid);
	img_hex(b->verity.root, sizeof(b->verity.root), vroot);
	img_hex(b->verity.salt, sizeof(b->verity.salt), vsalt);
	for (size_t i = 0; i < b->l.nparts; i++) {
		const struct img_disk_part *p = &b->l.parts[i];

		mp[i].number = p->number;
		mp[i].role = (char *)p->rolename;
		mp[i].name = (char *)p->name;
		mp[i].type = (char *)p->type;
		mp[i].uuid = p->uuid[0] ? (char *)p->uuid : NULL;
		mp[i].offset = p->offset;
		mp[i].size = p->size;
		if (p->role == IMG_PART_ESP) {
			mp[i].filesystem = "vfat";
			mp[i].label = "ESP";
		} else if (p->role == IMG_PART_ROOT) {
			mp[i].filesystem = "ext4";
			mp[i].label = (char *)(o->label ? o->label : ROOT_LABEL);
			mp[i].verity = o->verity ? &mv : NULL;
		}
		if (mp[i].filesystem)
			mp[i].fs_uuid = b->ids[i];
	}
	m.virtual_size = b->l.size;
	m.partition_table = b->l.label == IMG_DISK_GPT ? "gpt" : "mbr";
	m.disk_guid = b->l.label == IMG_DISK_GPT ? b->l.disk_guid : NULL;
	m.partitions = mp;
	m.npartitions = b->l.nparts;
	if (o->mode == IMG_MODE_BIOS)
		m.boot = b->have_grub ? "bios" : "none";
	else
		m.boot = "efi"; /* --hybrid boots both ways; EFI is what it was built for first */
	m.system = (char *)b->system;
	if (b->system && o->mode != IMG_MODE_EFI) {
		/* the entries of the grub.cfg image-root.c put into the root */
		struct img_boot_opts bo =
		    img_image_grub_boot_opts(o, b->c, b->root, b->system, b->tree_name);

		r = img_boot_plan_build(b->ctx, &bo, &gp);
		if (r < 0)
			return r;
	}
	if (b->esp)
		n += b->esp->plan->nentries;
	if (gp)
		n += gp->nentries;
	me = calloc(n ? n : 1, sizeof(*me));
	owned = calloc(n ? n : 1, sizeof(*owned));
	if (!me || !owned) {
		r = img_set_error(b->ctx, -ENOMEM, "out of memory");
		goto out;
	}
	m.entries = me;
	if (b->esp) {
		m.kernel_params = b->esp->kernel_params;
		m.bootloader = (char *)b->esp->bootloader;
		m.boot_source = (char *)b->esp->plan->source;
		r = manifest_entries(&m, b->esp->plan, b->esp->bootloader, b->esp, me, owned);
	} else if (gp) {
		m.bootloader = b->have_grub ? "grub" : "none";
		m.kernel_params = gp->entries[0].kernel_params;
		m.boot_source = (char *)gp->source;
	}
	/* GRUB's entries when there is a GRUB to show them */
	if (r >= 0 && gp && b->have_grub)
		r = manifest_entries(&m, gp, "grub", NULL, me,
		                     owned + (b->esp ? b->esp->plan->nentries : 0));
	if (r < 0) {
		r = img_set_error(b->ctx, -ENOMEM, "out of memory");
		goto out;
	}
	r = img_image_write_manifest(b->ctx, o, b->dev, &m);
out:
	for (size_t i = 0; owned && i < n; i++)
		free(owned[i]);
	free(owned);
	free(me);
	img_boot_plan_free(gp);
	return r;
}

/*
 * --verity, once the layout is planned: the root's hash tree over the whole
 * root partition, superblock at the verity partition's start (so the
 * partition alone is veritysetup's hash device with hash offset 0).
 */
static int setup_verity(struct disk_build *b)
{
	const struct img_disk_part *rp = &b->l.parts[part_index(&b->l, IMG_PART_ROOT)];
	const struct img_disk_part *vp = &b->l.parts[part_index(&b->l, IMG_PART_ROOT_VERITY)];
	int r = img_verity_init(b->ctx, &b->verity, rp->offset, rp->size, vp->offset);

	if (r >= 0 && b->verity.hash_size > vp->size)
		r = img_set_error(b->ctx, -EIO,
		                  "verity: the tree (%llu bytes) does not fit its partition "
		                  "(%llu bytes)",
		                  (unsigned long long)b->verity.hash_size,
		                  (unsigned long long)vp->size);
	if (r < 0)
		img_error_prefix(b->ctx, r, "partition %u (%s)", vp->number, vp->rolename);
	return r;
}

/*
 * The tree into its partition once the root is written, the rest of the
 * partition zeros. Tapped, the tree goes first and the zeros after it: the
 * partition in file order. Without a tap (read back), as it always was:
 * zeros over the partition, then the tree.
 */
static int write_verity(struct disk_build *b)
{
	const struct img_disk_part *vp = &b->l.parts[part_index(&b->l, IMG_PART_ROOT_VERITY)];
	uint64_t hs = b->verity.hash_size;
	int r = 0;

	if (!b->vtap)
		r = img_dev_write_zeroes(b->dev, vp->offset, vp->size);
	if (r >= 0)
		r = img_verity_write(b->ctx, b->dev, &b->verity, b->vtap);
	if (r >= 0 && b->vtap)
		r = img_dev_write_zeroes(b->dev, vp->offset + hs, vp->size - hs);
	if (r < 0)
		img_error_prefix(b->ctx, r, "partition %u (%s)", vp->number, vp->rolename);
	return r;
}

/* The closure on disk: seed, system toplevel (read under --root), root tree. */
static int host_root(struct disk_build *b)
{
	struct img_ctx *ctx = b->ctx;
	const struct img_build_opts *o = b->o;
	int r;

	r = img_image_load_closure(ctx, o, &b->c);
	if (r >= 0)
		r = img_image_set_seed(ctx, o, (const char *const *)b->c->paths, b->c->npaths);
	if (r < 0)
		return r;
	b->paths = b->c->paths;
	b->npaths = b->c->npaths;
	/* the layout links the system (--system, or the one toplevel) */
	r = img_root_tree_build(ctx, o, b->c, &b->root);
	if (r >= 0)
		b->system = img_root_tree_system(b->root);
	return r;
}

/*
 * --tar: the root tree from the stream (its data readable now, see the top
 * of this file), the seed, the store paths searched for systemd-boot and
 * the UKI stub, and the system toplevel, all from the tree (and the
 * closure, when one is given: its paths need not exist here).
 */
static int tar_root(struct disk_build *b)
{
	struct img_ctx *ctx = b->ctx;
	const struct img_build_opts *o = b->o;
	int r = 0;

	if (o->closure) {
		struct img_closure_opts co = { .store_dir = o->store_dir,
			                       .root = o->root,
			                       .no_check_exists = 1 };

		r = img_closure_load(ctx, o->closure, &co, &b->c);
	}
	if (r >= 0)
		r = img_root_tree_build_tar(ctx, o, b->c, &b->root, &b->tar);
	if (r < 0)
		return r;
	if (b->c) {
		b->paths = b->c->paths;
		b->npaths = b->c->npaths;
	} else {
		r = img_root_tree_paths(ctx, o, b->root, &b->tree_paths, &b->npaths);
		if (r < 0)
			return r;
		b->paths = b->tree_paths;
	}
	if (img_asprintf(&b->tree_name, "the tar stream %s",
	                 strcmp(o->tar, "-") ? o->tar : "on stdin") < 0)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	b->system = img_root_tree_system(b->root);
	return 0;
}

int img_build_disk(struct img_ctx *ctx, const struct img_build_opts *o)
{
	struct disk_build b = { .ctx = ctx, .o = o };
	const struct img_fs_ops *ext4 = img_fs_find("ext4");
	struct img_fs_opts rfo = { .label = o->label ? o->label : ROOT_LABEL, .id_role = "root" };
	struct img_fs_opts efo = { .label = "ESP", .id_role = "fat-esp" };
	char *outdir;
	uint64_t root_min = 0;
	const struct img_disk_part *rp;
	uint8_t *gpt_tail = NULL;
	int r;

	if (o->mode == IMG_MODE_BIOS && (o->uki || o->bootloader))
		return img_set_error(ctx, -EINVAL, "--uki and --bootloader need --efi or --hybrid");
	if (o->verity && o->mode != IMG_MODE_EFI)
		return img_set_error(ctx, -EINVAL, "--verity needs --store-image or --efi");
	/* the ext4 cache's spill goes beside the output */
	outdir = img_image_output_dir(o);
	if (!outdir)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	rfo.spill_dir = outdir;
	r = o->tar ? tar_root(&b) : host_root(&b);
	if (r < 0)
		goto out;
	if (o->mode != IMG_MODE_BIOS) {
		struct img_boot_opts bo = {
			.system = b.system,
			.root = b.c ? b.c->root : o->root,
			.store_dir = b.c ? b.c->store_dir : o->store_dir,
			.paths = (const char *const *)b.paths,
			.npaths = b.npaths,
			.bootloader = o->bootloader,
			.uki = o->uki,
			.uki_stub = o->uki_stub,
			.kernel_params = o->kernel_params,
			.specialisation = o->specialisation,
			.tree = b.tar ? b.root : NULL,
			.tree_name = b.tree_name,
		};

		r = img_boot_esp_build(ctx, &bo, &b.esp);
		if (r < 0)
			goto out;
	}
	r = plan(&b, &root_min);
	if (r < 0)
		goto out;
	rp = &b.l.parts[part_index(&b.l, IMG_PART_ROOT)];
	if (rp->size < root_min) {
		r = img_set_error(ctx, -ENOSPC,
		                  "--size %llu leaves %llu MiB for the root file system, which "
		                  "needs at least %llu MiB",
		                  (unsigned long long)o->size, (unsigned long long)(rp->size >> 20),
		                  (unsigned long long)IMG_DIV_ROUND_UP(root_min, MIB));
		goto out;
	}
	if (o->mode != IMG_MODE_EFI && !b.have_grub)
		img_log(
		    ctx, IMG_LOG_WARN,
		    "no GRUB given (--grub DIR, or a closure path with "
		    "lib/grub/i386-pc/boot.img and core.img): the disk has no BIOS boot loader");

	/* core.img goes out right after the table's head: in the gap, or at
	 * the start of the BIOS boot partition, the hybrid layout's first */
	if (b.have_grub)
		grub_prepare(&b.grub,
		             o->mode == IMG_MODE_BIOS
		                 ? 1
		                 : b.l.parts[part_index(&b.l, IMG_PART_BIOS_BOOT)].offset / 512);
	if (o->verity) {
		r = setup_verity(&b);
		if (r < 0)
			goto out;
	}
	r = img_image_create_output(ctx, o, b.l.size, &b.dev);
	if (r < 0)
		goto out;
	if (want_plan(o))
		r = plan_disk(&b, &rfo);
	/* a new disk: the root's writes are the verity data, hashed as they go
	 * (every format writes them in order or falls back, verity.c) */
	if (r >= 0 && o->verity)
		r = img_verity_tap_new(ctx, b.dev, &b.verity, &b.vtap);
	/* the GPT's backup last: the disk goes out front to back, GRUB's
	 * stages in their places on the way */
	if (r >= 0)
		r = img_disk_write_head(ctx, &b.l, b.dev, b.have_grub ? b.grub.code : NULL,
		                        &gpt_tail);
	if (r >= 0 && b.have_grub)
		r = grub_write_core(b.dev, &b.grub);
	for (size_t i = 0; i < b.l.nparts && r >= 0; i++) {
		const struct img_disk_part *p = &b.l.parts[i];

		if (p->role == IMG_PART_ESP)
			r = write_part(&b, p, img_fs_find("vfat"), b.esp->tree, &efo);
		else if (p->role == IMG_PART_ROOT && b.root_job)
			r = emit_root(&b, p);
		else if (p->role == IMG_PART_ROOT)
			r = write_part(&b, p, ext4, b.root, &rfo);
		else if (p->role == IMG_PART_BIOS_BOOT)
			r = write_bios_boot(&b, p);
	}
	for (size_t i = 0; i < b.l.nparts && r >= 0; i++)
		if (b.l.parts[i].role == IMG_PART_ESP || b.l.parts[i].role == IMG_PART_ROOT)
			r = img_image_fs_id(ctx, b.dev, b.l.parts[i].offset,
			                    b.l.parts[i].role == IMG_PART_ESP ? "vfat" : "ext4",
			                    b.ids[i], sizeof(b.ids[i]));
	if (r >= 0 && o->verity)
		r = write_verity(&b);
	if (r >= 0)
		r = img_disk_write_tail(&b.l, b.dev, gpt_tail);
	if (r >= 0)
		r = img_dev_finish(b.dev);
	if (r >= 0)
		r = write_manifest(&b);
out:
	free(gpt_tail);
	img_verity_tap_free(b.vtap);
	img_ext4_job_free(b.root_job);
	img_dev_unref(b.root_dev);
	img_dev_unref(b.dev);
	img_boot_esp_free(b.esp);
	img_tree_free(b.root);
	img_tar_source_free(b.tar); /* after the trees that refer to its files */
	img_root_tree_paths_free(b.tree_paths, b.npaths);
	free(b.tree_name);
	img_closure_free(b.c);
	free(b.grub.core);
	free(outdir);
	return r;
}
