/*
 * disk.c -- partition layout planning, the one libfdisk bridge (GPT and MBR
 * writing), and a defensive GPT/MBR reader.
 *
 * Specs: UEFI 2.x "GUID Partition Table (GPT) Disk Layout" (headers, entry
 * array, protective MBR, CRC32), the classic MBR partition table, UAPI
 * Discoverable Partitions Specification (root and root-verity types), formats.md section 4.
 *
 * libfdisk only works on a file descriptor, and the output may be qcow2:
 * the table is written onto a sparse memfd of the disk's size (only the
 * first 34 and the last 33 sectors ever hold anything) and those sectors
 * are copied into the output device.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <libfdisk/libfdisk.h>
#include <zlib.h>

#include "private.h"
#include <img/disk.h>
#include <img/repro.h>

#define MIB           (1ull << 20)
#define GPT_TAIL      (33ull * IMG_DISK_SECTOR) /* backup entry array + header */
#define GPT_HEAD_SECT 34ull                     /* PMBR + header + 32 entry sectors */

/* ---- planning ----------------------------------------------------------- */

int img_disk_layout_add(struct img_disk_layout *l, enum img_part_role role, uint64_t size)
{
	struct img_disk_part *p;

	if (l->nparts >= IMG_DISK_MAX_PARTS)
		return -ENOSPC;
	p = &l->parts[l->nparts++];
	memset(p, 0, sizeof(*p));
	p->role = role;
	p->size = size;
	return 0;
}

static int describe(struct img_ctx *ctx, enum img_disk_label label, struct img_disk_part *p)
{
	const char *type = NULL, *idrole = NULL;

	switch (p->role) {
	case IMG_PART_ESP:
		p->rolename = "esp";
		p->name = "ESP";
		type = label == IMG_DISK_GPT ? IMG_GPT_TYPE_ESP : "ef";
		idrole = "part-esp";
		break;
	case IMG_PART_ROOT:
		p->rolename = "root";
		p->name = "nixos";
		type = label == IMG_DISK_GPT ? IMG_GPT_TYPE_ROOT_X86_64 : "83";
		idrole = "part-root";
		break;
	case IMG_PART_BIOS_BOOT:
		if (label != IMG_DISK_GPT)
			return img_set_error(ctx, -EINVAL,
			                     "a BIOS boot partition needs a GPT partition table");
		p->rolename = "bios-boot";
		p->name = "bios-boot";
		type = IMG_GPT_TYPE_BIOS_BOOT;
		idrole = "part-bios-boot";
		break;
	case IMG_PART_ROOT_VERITY:
		if (label != IMG_DISK_GPT)
			return img_set_error(ctx, -EINVAL,
			                     "a root verity partition needs a GPT partition table");
		p->rolename = "root-verity";
		p->name = "nixos-verity";
		type = IMG_GPT_TYPE_ROOT_VERITY_X86_64;
		idrole = "part-root-verity";
		break;
	default:
		return img_set_error(ctx, -EINVAL, "unknown partition role %d", (int)p->role);
	}
	snprintf(p->type, sizeof(p->type), "%s", type);
	if (label == IMG_DISK_GPT) {
		img_repro_uuid_str(ctx, idrole, p->uuid);
	} else {
		p->name = NULL;
		p->uuid[0] = 0;
	}
	return 0;
}

int img_disk_plan(struct img_ctx *ctx, struct img_disk_layout *l)
{
	uint64_t off = MIB, tail, need;

	if (l->label != IMG_DISK_GPT && l->label != IMG_DISK_MBR)
		return img_set_error(ctx, -EINVAL, "a disk layout needs a GPT or MBR label");
	if (!l->nparts)
		return img_set_error(ctx, -EINVAL, "a disk layout needs a partition");
	if (l->label == IMG_DISK_MBR && l->nparts > 4)
		return img_set_error(ctx, -EINVAL, "an MBR holds at most 4 partitions");
	/* GPT: the backup array and header sit after the last partition; with
	 * 1 MiB sizes that costs one MiB at the end. MBR needs nothing there. */
	tail = l->label == IMG_DISK_GPT ? GPT_TAIL : 0;
	for (size_t i = 0; i < l->nparts; i++) {
		struct img_disk_part *p = &l->parts[i];
		int r = describe(ctx, l->label, p);

		if (r < 0)
			return r;
		if (!p->size)
			p->size = MIB;
		if (p->size > (1ull << 62))
			return img_set_error(ctx, -EFBIG, "partition %s: size too large",
			                     p->rolename);
		p->size = IMG_ALIGN_UP(p->size, MIB);
		p->offset = off;
		p->number = (unsigned)i + 1;
		p->bootable = l->label == IMG_DISK_MBR && p->role == IMG_PART_ROOT;
		off += p->size;
	}
	need = IMG_ALIGN_UP(off + tail, MIB);
	if (l->size) {
		struct img_disk_part *last = &l->parts[l->nparts - 1];

		if (l->size < need)
			return img_set_error(ctx, -ENOSPC,
			                     "--size %llu bytes is too small for the partitions: "
			                     "at least %llu bytes (%llu MiB) are needed",
			                     (unsigned long long)l->size, (unsigned long long)need,
			                     (unsigned long long)(need / MIB));
		/* The last partition takes the rest, in whole MiB. */
		last->size = (l->size - tail - last->offset) / MIB * MIB;
	} else {
		l->size = need;
	}
	if (l->label == IMG_DISK_GPT) {
		img_repro_uuid_str(ctx, "gpt-disk", l->disk_guid);
		l->mbr_signature = 0;
	} else {
		l->disk_guid[0] = 0;
		l->mbr_signature = img_repro_u32(ctx, "mbr-signature");
	}
	return 0;
}

/* ---- the libfdisk bridge ----------------------------------------------- */

static int fdisk_fail(struct img_ctx *ctx, int r, const char *what)
{
	if (r >= 0)
		r = -EIO;
	return img_set_error(ctx, r, "partition table: libfdisk: %s: %s", what, strerror(-r));
}

static int add_part(struct img_ctx *ctx, struct fdisk_context *cxt, struct fdisk_label *lb,
                    enum img_disk_label label, const struct img_disk_part *p)
{
	struct fdisk_partition *pa = fdisk_new_partition();
	struct fdisk_parttype *t = NULL;
	size_t partno = 0;
	int r;

	if (!pa)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	t = fdisk_label_parse_parttype(lb, p->type);
	if (!t) {
		fdisk_unref_partition(pa);
		return img_set_error(ctx, -EINVAL, "libfdisk does not know partition type %s",
		                     p->type);
	}
	r = fdisk_partition_set_partno(pa, p->number - 1);
	if (r == 0)
		r = fdisk_partition_set_start(pa, p->offset / IMG_DISK_SECTOR);
	if (r == 0)
		r = fdisk_partition_set_size(pa, p->size / IMG_DISK_SECTOR);
	if (r == 0)
		r = fdisk_partition_size_explicit(pa, 1);
	if (r == 0)
		r = fdisk_partition_set_type(pa, t);
	if (r == 0 && label == IMG_DISK_GPT)
		r = fdisk_partition_set_uuid(pa, p->uuid);
	if (r == 0 && label == IMG_DISK_GPT)
		r = fdisk_partition_set_name(pa, p->name);
	if (r == 0)
		r = fdisk_add_partition(cxt, pa, &partno);
	fdisk_unref_parttype(t);
	fdisk_unref_partition(pa);
	if (r < 0)
		return fdisk_fail(ctx, r, p->rolename);
	if (partno != p->number - 1)
		return img_set_error(ctx, -EIO, "libfdisk placed partition %s at %zu, not %u",
		                     p->rolename, partno + 1, p->number);
	if (p->bootable) {
		r = fdisk_toggle_partition_flag(cxt, partno, DOS_FLAG_ACTIVE);
		if (r < 0)
			return fdisk_fail(ctx, r, "setting the boot flag");
	}
	return 0;
}

static int copy_region(struct img_ctx *ctx, int fd, struct img_dev *dev, uint64_t off, uint64_t len)
{
	uint8_t *buf = malloc(len);
	int r;

	if (!buf)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	r = img_pread_full(fd, buf, len, off);
	if (r < 0)
		r = img_set_error(ctx, r, "partition table: reading the staging copy: %s",
		                  strerror(-r));
	else
		r = img_dev_pwrite(dev, buf, len, off);
	free(buf);
	return r;
}

/*
 * The table through libfdisk on a staging memfd the size of the disk; on
 * success *@fd_out is that memfd, the table regions filled in.
 */
static int stage_table(struct img_ctx *ctx, const struct img_disk_layout *l, struct img_dev *dev,
                       int *fd_out)
{
	struct fdisk_context *cxt = NULL;
	struct fdisk_label *lb;
	char id[40], fdname[64];
	int fd, r;

	if (img_dev_size(dev) != l->size)
		return img_set_error(
		    ctx, -EINVAL, "partition table: device has %llu bytes, layout %llu",
		    (unsigned long long)img_dev_size(dev), (unsigned long long)l->size);
	fd = memfd_create("libimg-partition-table", MFD_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		return img_set_error(ctx, r, "partition table: memfd_create: %s", strerror(-r));
	}
	if (ftruncate(fd, (off_t)l->size) < 0) {
		r = -errno;
		close(fd);
		return img_set_error(ctx, r, "partition table: staging file: %s", strerror(-r));
	}
	snprintf(fdname, sizeof(fdname), "/proc/self/fd/%d", fd);
	cxt = fdisk_new_context();
	if (!cxt) {
		close(fd);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	r = fdisk_disable_dialogs(cxt, 1);
	if (r == 0)
		r = fdisk_assign_device_by_fd(cxt, fd, fdname, 0);
	if (r < 0) {
		r = fdisk_fail(ctx, r, "opening the staging file");
		goto out;
	}
	if (fdisk_get_sector_size(cxt) != IMG_DISK_SECTOR) {
		r = img_set_error(ctx, -EIO, "libfdisk chose %lu-byte sectors, not 512",
		                  fdisk_get_sector_size(cxt));
		goto out;
	}
	r = fdisk_create_disklabel(cxt, l->label == IMG_DISK_GPT ? "gpt" : "dos");
	if (r < 0) {
		r = fdisk_fail(ctx, r, "creating the label");
		goto out;
	}
	if (l->label == IMG_DISK_GPT)
		snprintf(id, sizeof(id), "%s", l->disk_guid);
	else
		snprintf(id, sizeof(id), "0x%08x", l->mbr_signature);
	r = fdisk_set_disklabel_id_from_string(cxt, id);
	if (r < 0) {
		r = fdisk_fail(ctx, r, "setting the disk identifier");
		goto out;
	}
	lb = fdisk_get_label(cxt, NULL);
	for (size_t i = 0; i < l->nparts; i++) {
		r = add_part(ctx, cxt, lb, l->label, &l->parts[i]);
		if (r < 0)
			goto out;
	}
	r = fdisk_write_disklabel(cxt);
	if (r < 0) {
		r = fdisk_fail(ctx, r, "writing the table");
		goto out;
	}
	/* nosync: the staging file is a memfd; never a global sync(). */
	r = fdisk_deassign_device(cxt, 1);
	if (r < 0) {
		r = fdisk_fail(ctx, r, "closing the staging file");
		goto out;
	}
out:
	fdisk_unref_context(cxt);
	if (r < 0)
		close(fd);
	else
		*fd_out = fd;
	return r;
}

int img_disk_write_head(struct img_ctx *ctx, const struct img_disk_layout *l, struct img_dev *dev,
                        const uint8_t *boot_code, uint8_t **tail)
{
	int fd = -1, r;

	*tail = NULL;
	r = stage_table(ctx, l, dev, &fd);
	if (r < 0)
		return r;
	if (boot_code && (r = img_pwrite_full(fd, boot_code, IMG_DISK_BOOT_CODE, 0)) < 0)
		r = img_set_error(ctx, r, "partition table: the boot code: %s", strerror(-r));
	if (r == 0)
		r = copy_region(ctx, fd, dev, 0,
		                (l->label == IMG_DISK_GPT ? GPT_HEAD_SECT : 1) * IMG_DISK_SECTOR);
	if (r == 0 && l->label == IMG_DISK_GPT) {
		*tail = malloc(GPT_TAIL);
		if (!*tail)
			r = img_set_error(ctx, -ENOMEM, "out of memory");
		else if ((r = img_pread_full(fd, *tail, GPT_TAIL, l->size - GPT_TAIL)) < 0)
			r = img_set_error(ctx, r, "partition table: reading the staging copy: %s",
			                  strerror(-r));
		if (r < 0) {
			free(*tail);
			*tail = NULL;
		}
	}
	close(fd);
	return r;
}

int img_disk_plan_head(const struct img_disk_layout *l, struct img_dev *dev)
{
	/* an MBR is its first sector */
	return img_dev_plan(dev, 0,
	                    (l->label == IMG_DISK_GPT ? GPT_HEAD_SECT : 1) * IMG_DISK_SECTOR);
}

int img_disk_plan_tail(const struct img_disk_layout *l, struct img_dev *dev)
{
	return l->label == IMG_DISK_GPT ? img_dev_plan(dev, l->size - GPT_TAIL, GPT_TAIL) : 0;
}

int img_disk_write_tail(const struct img_disk_layout *l, struct img_dev *dev, const uint8_t *tail)
{
	if (l->label != IMG_DISK_GPT || !tail)
		return 0;
	return img_dev_pwrite(dev, tail, GPT_TAIL, l->size - GPT_TAIL);
}

int img_disk_write(struct img_ctx *ctx, const struct img_disk_layout *l, struct img_dev *dev)
{
	uint8_t *tail;
	int r = img_disk_write_head(ctx, l, dev, NULL, &tail);

	if (r == 0)
		r = img_disk_write_tail(l, dev, tail);
	free(tail);
	return r;
}

/* ---- reading ----------------------------------------------------------- */

/* GPT stores the first three GUID fields little-endian. */
static void guid_text(const uint8_t *g, char out[37])
{
	uint8_t be[16];

	be[0] = g[3];
	be[1] = g[2];
	be[2] = g[1];
	be[3] = g[0];
	be[4] = g[5];
	be[5] = g[4];
	be[6] = g[7];
	be[7] = g[6];
	memcpy(be + 8, g + 8, 8);
	img_uuid_unparse(be, out);
}

/* Largest entry array we read (128 entries of 128 bytes is the norm). */
#define GPT_MAX_ARRAY (1u << 20)

static int gpt_read_header(struct img_ctx *ctx, struct img_dev *dev, uint64_t lba,
                           struct img_disk_info *info)
{
	uint64_t nsect = img_dev_size(dev) / IMG_DISK_SECTOR, entries_lba, first, last;
	uint8_t hdr[IMG_DISK_SECTOR], *arr;
	uint32_t hsize, crc, n, esize;
	uint64_t arrlen;
	int r;

	r = img_dev_pread(dev, hdr, sizeof(hdr), lba * IMG_DISK_SECTOR);
	if (r < 0)
		return r;
	if (memcmp(hdr, "EFI PART", 8))
		return 1;
	hsize = img_get_le32(hdr + 12);
	if (hsize < 92 || hsize > IMG_DISK_SECTOR)
		return 1;
	crc = img_get_le32(hdr + 16);
	memset(hdr + 16, 0, 4);
	if ((uint32_t)crc32(0, hdr, hsize) != crc)
		return 1;
	if (img_get_le64(hdr + 24) != lba)
		return 1;
	first = img_get_le64(hdr + 40);
	last = img_get_le64(hdr + 48);
	entries_lba = img_get_le64(hdr + 72);
	n = img_get_le32(hdr + 80);
	esize = img_get_le32(hdr + 84);
	if (esize < 128 || esize % 8 || n == 0 || (uint64_t)n * esize > GPT_MAX_ARRAY)
		return 1;
	arrlen = IMG_ALIGN_UP((uint64_t)n * esize, IMG_DISK_SECTOR);
	if (entries_lba >= nsect || arrlen / IMG_DISK_SECTOR > nsect - entries_lba ||
	    first > last || last >= nsect)
		return 1;
	arr = malloc(arrlen);
	if (!arr)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	r = img_dev_pread(dev, arr, arrlen, entries_lba * IMG_DISK_SECTOR);
	if (r < 0) {
		free(arr);
		return r;
	}
	if ((uint32_t)crc32(0, arr, (uInt)((uint64_t)n * esize)) != img_get_le32(hdr + 88)) {
		free(arr);
		return 1;
	}
	info->label = IMG_DISK_GPT;
	guid_text(hdr + 56, info->disk_guid);
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *e = arr + (uint64_t)i * esize;
		static const uint8_t zero[16];
		uint64_t s, t;
		char type[37];

		if (!memcmp(e, zero, 16))
			continue;
		s = img_get_le64(e + 32);
		t = img_get_le64(e + 40);
		if (s > t || t >= nsect)
			continue; /* nonsense entry: not counted */
		guid_text(e, type);
		if (!strcmp(type, IMG_GPT_TYPE_ESP))
			info->has_esp = 1;
		if (!strcmp(type, IMG_GPT_TYPE_BIOS_BOOT))
			info->has_bios_boot = 1;
		if (info->nparts < IMG_DISK_MAX_PARTS) {
			size_t k = info->nparts;

			info->parts[k].number = i + 1;
			info->parts[k].offset = s * IMG_DISK_SECTOR;
			info->parts[k].size = (t - s + 1) * IMG_DISK_SECTOR;
			memcpy(info->parts[k].type, type, sizeof(type));
			guid_text(e + 16, info->parts[k].uuid);
			for (int c = 0; c < 36; c++) {
				uint16_t ch = img_get_le16(e + 56 + 2 * c);

				if (!ch)
					break;
				info->parts[k].name[c] = ch < 0x80 && ch >= 0x20 ? (char)ch : '?';
			}
		}
		info->nparts++;
	}
	free(arr);
	return 0;
}

static int looks_like_fat_boot_sector(const uint8_t *s)
{
	return (s[0] == 0xEB || s[0] == 0xE9) &&
	       (!memcmp(s + 0x36, "FAT", 3) || !memcmp(s + 0x52, "FAT32", 5));
}

int img_disk_probe(struct img_ctx *ctx, struct img_dev *dev, struct img_disk_info *info)
{
	uint64_t nsect = img_dev_size(dev) / IMG_DISK_SECTOR;
	uint8_t mbr[IMG_DISK_SECTOR];
	int r, protective = 0;

	memset(info, 0, sizeof(*info));
	if (nsect < 2)
		return 0;
	r = img_dev_pread(dev, mbr, sizeof(mbr), 0);
	if (r < 0)
		return r;
	if (mbr[510] != 0x55 || mbr[511] != 0xAA)
		return 0;
	for (int i = 0; i < 440; i++)
		if (mbr[i])
			info->has_boot_code = 1;
	for (int i = 0; i < 4; i++)
		if (mbr[446 + 16 * i + 4] == 0xEE)
			protective = 1;
	if (protective) {
		r = gpt_read_header(ctx, dev, 1, info);
		if (r > 0 && nsect > 1)
			r = gpt_read_header(ctx, dev, nsect - 1, info);
		if (r <= 0)
			return r;
		memset(info, 0, sizeof(*info)); /* a PMBR without a valid GPT */
		return 0;
	}
	if (looks_like_fat_boot_sector(mbr))
		return 0;
	for (int i = 0; i < 4; i++) {
		const uint8_t *e = mbr + 446 + 16 * i;
		uint32_t start = img_get_le32(e + 8), count = img_get_le32(e + 12);

		if (e[0] != 0 && e[0] != 0x80)
			goto not_mbr;
		if (!e[4])
			continue;
		if (!count || !start || (uint64_t)start + count > nsect)
			goto not_mbr;
	}
	info->label = IMG_DISK_MBR;
	info->mbr_signature = img_get_le32(mbr + 440);
	for (int i = 0; i < 4; i++) {
		const uint8_t *e = mbr + 446 + 16 * i;
		size_t k = info->nparts;

		if (!e[4])
			continue;
		if (e[4] == 0xEF)
			info->has_esp = 1;
		if (e[0] == 0x80)
			info->has_active = 1;
		info->parts[k].number = (unsigned)i + 1;
		info->parts[k].offset = (uint64_t)img_get_le32(e + 8) * IMG_DISK_SECTOR;
		info->parts[k].size = (uint64_t)img_get_le32(e + 12) * IMG_DISK_SECTOR;
		snprintf(info->parts[k].type, sizeof(info->parts[k].type), "%02x", e[4]);
		info->parts[k].bootable = e[0] == 0x80;
		info->nparts++;
	}
	return 0;
not_mbr:
	memset(info, 0, sizeof(*info));
	return 0;
}
