#!/usr/bin/env python3
"""diffimg.py -- say where two disk images differ, by structure.

    diffimg.py A B [--max N]

Exit 0 when A and B are byte-identical, 1 when they differ (with a report on
stdout), 2 on usage errors. The report names the layer, partition and
structure of each differing byte range:

  qcow2   header fields, L1 table, refcount table/blocks, L2 tables, data
          clusters; then the virtual disks are compared (qemu-img convert -O raw)
  GPT     protective MBR, primary/backup header fields, partition entries
  MBR     boot code, disk signature, partition entries
  ext4    superblock fields, group descriptors, block/inode bitmaps, inode
          table (inode numbers and fields), other blocks (data/directories/
          extent trees/journal) as block ranges
  FAT     boot sector / BPB fields, FSInfo, FATs (cluster numbers), directory
          clusters vs file clusters (found by walking the directory tree)
  EROFS   superblock fields, metadata (inode nid ranges), data blocks
Layouts are taken from image A; facts are from the specs (UEFI 2.10 ch. 5,
the ext4 disk layout wiki, Microsoft's FAT spec, the kernel's
fs/erofs/erofs_fs.h, QEMU's docs/interop/qcow2.txt).
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile

MAX = 40
out_lines = []


def say(msg):
    out_lines.append(msg)


def ranges(a: bytes, b: bytes, base=0, gap=16):
    """Differing byte ranges [start, end) of equal-length buffers."""
    res = []
    n = min(len(a), len(b))
    i = 0
    while i < n:
        if a[i] != b[i]:
            j = i
            last = i
            while j < n and j - last <= gap:
                if a[j] != b[j]:
                    last = j
                j += 1
            res.append((base + i, base + last + 1))
            i = last + 1
        else:
            # skip equal chunks fast
            k = i + 4096
            if k <= n and a[i:k] == b[i:k]:
                i = k
            else:
                i += 1
    if len(a) != len(b):
        res.append((base + n, base + max(len(a), len(b))))
    return res


def fields_diff(name, a, b, fields):
    """fields: list of (offset, size, fieldname). Reports named differing fields."""
    named = []
    covered = set()
    for off, size, fname in fields:
        if a[off:off + size] != b[off:off + size]:
            named.append(f"{fname}@{off:#x}")
        covered.update(range(off, off + size))
    other = [r for r in ranges(a, b) if not all(x in covered for x in range(r[0], r[1]))]
    msg = ", ".join(named)
    if other:
        msg += (", " if msg else "") + "other bytes " + ", ".join(f"{s:#x}-{e:#x}" for s, e in other[:6])
    if msg:
        say(f"{name}: {msg}")


class Img:
    def __init__(self, path):
        self.f = open(path, "rb")
        self.f.seek(0, 2)
        self.size = self.f.tell()

    def read(self, off, n):
        self.f.seek(off)
        d = self.f.read(n)
        return d + b"\0" * (n - len(d))


def blockdiff(A, B, off, length, chunk=1 << 20):
    """Yield differing byte ranges (absolute) in [off, off+length)."""
    pos = off
    end = off + length
    while pos < end:
        n = min(chunk, end - pos)
        a = A.read(pos, n)
        b = B.read(pos, n)
        if a != b:
            for r in ranges(a, b, pos):
                yield r
        pos += n


# ---------------------------------------------------------------- ext4
EXT4_SB = [
    (0x0, 4, "s_inodes_count"), (0x4, 4, "s_blocks_count_lo"), (0xC, 4, "s_free_blocks_count_lo"),
    (0x10, 4, "s_free_inodes_count"), (0x2C, 4, "s_mtime"), (0x30, 4, "s_wtime"),
    (0x34, 2, "s_mnt_count"), (0x40, 4, "s_lastcheck"), (0x48, 4, "s_creator_os"),
    (0x5C, 4, "s_feature_compat"), (0x60, 4, "s_feature_incompat"), (0x64, 4, "s_feature_ro_compat"),
    (0x68, 16, "s_uuid"), (0x78, 16, "s_volume_name"), (0x88, 64, "s_last_mounted"),
    (0xD0, 16, "s_journal_uuid"), (0xE0, 4, "s_journal_inum"), (0xEC, 16, "s_hash_seed"),
    (0xFC, 1, "s_def_hash_version"), (0x108, 4, "s_mkfs_time"), (0x10C, 68, "s_jnl_blocks"),
    (0x150, 4, "s_blocks_count_hi"), (0x174, 1, "s_log_groups_per_flex"), (0x178, 8, "s_kbytes_written"),
    (0x194, 4, "s_first_error_time"), (0x270, 4, "s_lpf_ino"), (0x27C, 4, "s_checksum_seed"),
    (0x3FC, 4, "s_checksum"),
]
EXT4_INODE = [
    (0x0, 2, "i_mode"), (0x2, 2, "i_uid"), (0x4, 4, "i_size_lo"), (0x8, 4, "i_atime"), (0xC, 4, "i_ctime"),
    (0x10, 4, "i_mtime"), (0x14, 4, "i_dtime"), (0x18, 2, "i_gid"), (0x1A, 2, "i_links_count"),
    (0x1C, 4, "i_blocks_lo"), (0x20, 4, "i_flags"), (0x28, 60, "i_block"), (0x64, 4, "i_generation"),
    (0x68, 4, "i_file_acl_lo"), (0x6C, 4, "i_size_high"), (0x7C, 2, "i_checksum_lo"),
    (0x82, 2, "i_checksum_hi"), (0x84, 4, "i_ctime_extra"), (0x88, 4, "i_mtime_extra"),
    (0x8C, 4, "i_atime_extra"), (0x90, 4, "i_crtime"), (0x94, 4, "i_crtime_extra"),
]


def diff_ext4(A, B, base, length, where):
    sa = A.read(base + 1024, 1024)
    sb = B.read(base + 1024, 1024)
    fields_diff(f"{where} ext4 superblock", sa, sb, EXT4_SB)
    bs = 1024 << struct.unpack_from("<I", sa, 0x18)[0]
    blocks = struct.unpack_from("<I", sa, 0x4)[0] | (struct.unpack_from("<I", sa, 0x150)[0] << 32)
    first = struct.unpack_from("<I", sa, 0x14)[0]
    bpg = struct.unpack_from("<I", sa, 0x20)[0]
    ipg = struct.unpack_from("<I", sa, 0x28)[0]
    isz = struct.unpack_from("<H", sa, 0x58)[0] or 128
    incompat = struct.unpack_from("<I", sa, 0x60)[0]
    dsz = struct.unpack_from("<H", sa, 0xFE)[0] if incompat & 0x80 else 32
    dsz = dsz or 32
    ngroups = (blocks - first + bpg - 1) // bpg
    gdt_off = base + (first + 1) * bs
    gda = A.read(gdt_off, ngroups * dsz)
    gdb = B.read(gdt_off, ngroups * dsz)
    known = {}  # block -> label

    def lo_hi(d, o, lo, hi):
        v = struct.unpack_from("<I", d, o + lo)[0]
        if dsz >= 64:
            v |= struct.unpack_from("<I", d, o + hi)[0] << 32
        return v

    for g in range(ngroups):
        o = g * dsz
        if gda[o:o + dsz] != gdb[o:o + dsz]:
            say(f"{where} ext4 group descriptor {g} differs")
        bb = lo_hi(gda, o, 0x0, 0x20)
        ib = lo_hi(gda, o, 0x4, 0x24)
        it = lo_hi(gda, o, 0x8, 0x28)
        known[bb] = f"block bitmap of group {g}"
        known[ib] = f"inode bitmap of group {g}"
        itb = (ipg * isz + bs - 1) // bs
        for k in range(itb):
            known[it + k] = ("itable", g, k)
    reported = 0
    other = []
    done = set()
    for s, e in blockdiff(A, B, base, min(length, blocks * bs)):
        blk0 = (s - base) // bs
        blk1 = (e - 1 - base) // bs
        for blk in range(blk0, blk1 + 1):
            if blk in done:
                continue
            done.add(blk)
            lab = known.get(blk)
            if blk <= first + (ngroups * dsz + bs - 1) // bs:
                continue  # superblock/GDT, reported above
            if lab is None:
                other.append(blk)
            elif isinstance(lab, tuple):
                _, g, k = lab
                ta = A.read(base + blk * bs, bs)
                tb = B.read(base + blk * bs, bs)
                for i in range(bs // isz):
                    if ta[i * isz:(i + 1) * isz] != tb[i * isz:(i + 1) * isz]:
                        ino = g * ipg + k * (bs // isz) + i + 1
                        if reported < MAX:
                            fields_diff(f"{where} ext4 inode {ino}", ta[i * isz:(i + 1) * isz],
                                        tb[i * isz:(i + 1) * isz], EXT4_INODE)
                        reported += 1
            else:
                say(f"{where} ext4 {lab}")
    if other:
        say(f"{where} ext4 other blocks (data, directories, extent/journal blocks): {fmt_runs(sorted(set(other)))}")
        owners = ext4_owners(A, base, length, sorted(set(other))[:30])
        if owners:
            say(f"{where} ext4 those blocks belong to: {owners}")


def ext4_owners(A, base, length, blocks):
    """Map blocks of image A to file names with debugfs (icheck + ncheck)."""
    if not shutil.which("debugfs") and not os.path.exists("/sbin/debugfs"):
        return None
    dbg = shutil.which("debugfs") or "/sbin/debugfs"
    with tempfile.TemporaryDirectory(dir=os.environ.get("DIFFIMG_TMP")) as td:
        path = A.f.name
        if base:
            path = os.path.join(td, "part.img")
            with open(path, "wb") as f:
                pos = 0
                while pos < length:
                    n = min(1 << 22, length - pos)
                    f.write(A.read(base + pos, n))
                    pos += n

        def run(cmd):
            r = subprocess.run([dbg, "-R", cmd, path], capture_output=True, text=True)
            return r.stdout.splitlines()[1:]

        inos = {}
        for line in run("icheck " + " ".join(map(str, blocks))):
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                inos.setdefault(int(parts[1]), []).append(parts[0])
        if not inos:
            return "no inode (metadata: extent tree, journal or directory index?)"
        names = {}
        for line in run("ncheck " + " ".join(map(str, inos))):
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[0].isdigit():
                names[int(parts[0])] = parts[1]
        return "; ".join(f"inode {i} {names.get(i, '?')} (blocks {','.join(b[:4])})"
                         for i, b in sorted(inos.items()))


def fmt_runs(nums, limit=20):
    runs = []
    for n in nums:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    s = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit])
    if len(runs) > limit:
        s += f", ... ({len(runs)} runs)"
    return s


# ---------------------------------------------------------------- FAT
FAT_BS = [
    (0x0, 3, "BS_jmpBoot"), (0x3, 8, "BS_OEMName"), (0xB, 2, "BPB_BytsPerSec"), (0xD, 1, "BPB_SecPerClus"),
    (0xE, 2, "BPB_RsvdSecCnt"), (0x10, 1, "BPB_NumFATs"), (0x15, 1, "BPB_Media"), (0x18, 2, "BPB_SecPerTrk"),
    (0x1A, 2, "BPB_NumHeads"), (0x1C, 4, "BPB_HiddSec"), (0x20, 4, "BPB_TotSec32"), (0x24, 4, "BPB_FATSz32"),
    (0x2C, 4, "BPB_RootClus"), (0x30, 2, "BPB_FSInfo"), (0x32, 2, "BPB_BkBootSec"), (0x40, 1, "BS_DrvNum"),
    (0x43, 4, "BS_VolID"), (0x47, 11, "BS_VolLab"), (0x52, 8, "BS_FilSysType"), (0x5A, 420, "boot code"),
]


def diff_fat(A, B, base, length, where):
    ba = A.read(base, 512)
    bb = B.read(base, 512)
    fields_diff(f"{where} FAT boot sector", ba, bb, FAT_BS)
    bps = struct.unpack_from("<H", ba, 0xB)[0] or 512
    spc = ba[0xD] or 1
    rsvd = struct.unpack_from("<H", ba, 0xE)[0]
    nfats = ba[0x10]
    fatsz = struct.unpack_from("<I", ba, 0x24)[0] or struct.unpack_from("<H", ba, 0x16)[0]
    rootclus = struct.unpack_from("<I", ba, 0x2C)[0]
    fsinfo = struct.unpack_from("<H", ba, 0x30)[0]
    csize = bps * spc
    data0 = base + (rsvd + nfats * fatsz) * bps
    if fsinfo and A.read(base + fsinfo * bps, bps) != B.read(base + fsinfo * bps, bps):
        say(f"{where} FAT FSInfo sector differs (free count / next free)")
    for s, e in blockdiff(A, B, base + bps, (rsvd - 1) * bps):
        if not (fsinfo and base + fsinfo * bps <= s < base + (fsinfo + 1) * bps):
            say(f"{where} FAT reserved sectors differ at sector {(s - base) // bps} (backup boot sector?)")
            break
    fat = A.read(base + rsvd * bps, fatsz * bps)
    for n in range(nfats):
        cl = sorted({(s - base - (rsvd + n * fatsz) * bps) // 4
                     for s, e in blockdiff(A, B, base + (rsvd + n * fatsz) * bps, fatsz * bps)})
        if cl:
            say(f"{where} FAT #{n + 1}: entries of clusters {fmt_runs(cl)}")
    # classify clusters: walk directories from the root cluster
    nclus = (fatsz * bps) // 4

    def chain(c):
        seen = []
        while 2 <= c < 0x0FFFFFF7 and c < nclus and len(seen) < 1 << 20:
            seen.append(c)
            c = struct.unpack_from("<I", fat, c * 4)[0] & 0x0FFFFFFF
        return seen

    dirs = {}
    todo = [(rootclus, "/")]
    while todo:
        c, path = todo.pop()
        for cc in chain(c):
            if cc in dirs:
                continue
            dirs[cc] = path
            d = A.read(data0 + (cc - 2) * csize, csize)
            for i in range(0, csize, 32):
                e = d[i:i + 32]
                if e[0] == 0:
                    break
                if e[0] == 0xE5 or e[11] == 0x0F or e[11] & 0x08:
                    continue
                if e[11] & 0x10 and e[0:2] != b". " and e[0:2] != b"..":
                    sub = struct.unpack_from("<H", e, 20)[0] << 16 | struct.unpack_from("<H", e, 26)[0]
                    name = e[0:8].decode("latin1").rstrip() + ("." + e[8:11].decode("latin1").rstrip()
                                                                if e[8:11].strip() else "")
                    todo.append((sub, path + name + "/"))
    dcl, fcl = [], []
    for s, e in blockdiff(A, B, data0, base + length - data0):
        for c in range((s - data0) // csize + 2, (e - 1 - data0) // csize + 3):
            (dcl if c in dirs else fcl).append(c)
    if dcl:
        say(f"{where} FAT directory clusters: " +
            ", ".join(f"{c} ({dirs[c]})" for c in sorted(set(dcl))[:MAX]))
    if fcl:
        say(f"{where} FAT file data clusters: {fmt_runs(sorted(set(fcl)))}")


# ---------------------------------------------------------------- EROFS
EROFS_SB = [
    (0x0, 4, "magic"), (0x4, 4, "checksum"), (0x8, 4, "feature_compat"), (0xC, 1, "blkszbits"),
    (0xE, 2, "root_nid"), (0x10, 8, "inos"), (0x18, 8, "build_time"), (0x20, 4, "build_time_nsec"),
    (0x24, 4, "blocks"), (0x28, 4, "meta_blkaddr"), (0x2C, 4, "xattr_blkaddr"), (0x30, 16, "uuid"),
    (0x40, 16, "volume_name"), (0x50, 4, "feature_incompat"),
]


def diff_erofs(A, B, base, length, where):
    sa = A.read(base + 1024, 128)
    sb = B.read(base + 1024, 128)
    fields_diff(f"{where} EROFS superblock", sa, sb, EROFS_SB)
    bs = 1 << sa[0xC]
    meta = struct.unpack_from("<I", sa, 0x28)[0] * bs
    metas, datas = [], []
    for s, e in blockdiff(A, B, base, length):
        if base + 1024 <= s < base + 1024 + 128 and e <= base + 1024 + 128:
            continue
        rel = s - base
        blk = rel // bs
        # inode slots are 32 bytes from meta_blkaddr; call everything at or
        # after it "metadata" unless it is a whole-block difference run
        if rel >= meta:
            metas.append(((rel - meta) // 32, (e - base - 1 - meta) // 32, blk))
        else:
            datas.append(blk)
    if metas:
        say(f"{where} EROFS metadata/data after meta_blkaddr: nid slots " +
            ", ".join(f"{a}-{b} (block {k})" for a, b, k in metas[:MAX]) +
            ("" if len(metas) <= MAX else f" ... ({len(metas)} ranges)"))
    if datas:
        say(f"{where} EROFS blocks before meta_blkaddr (file data): {fmt_runs(sorted(set(datas)))}")


# ---------------------------------------------------------------- partitions
def fs_kind(A, base):
    sb = A.read(base, 2048)
    if sb[1024 + 0x38:1024 + 0x3A] == b"\x53\xef":
        return "ext4"
    if sb[1024:1028] == b"\xe2\xe1\xf5\xe0":
        return "erofs"
    if sb[510:512] == b"\x55\xaa" and (sb[0x52:0x57] == b"FAT32" or sb[0x36:0x39] == b"FAT"):
        return "fat"
    return None


def diff_fs(A, B, base, length, where):
    k = fs_kind(A, base)
    if k == "ext4":
        diff_ext4(A, B, base, length, where)
    elif k == "erofs":
        diff_erofs(A, B, base, length, where)
    elif k == "fat":
        diff_fat(A, B, base, length, where)
    else:
        rs = list(blockdiff(A, B, base, length))
        if rs:
            say(f"{where} (no known file system): bytes " +
                ", ".join(f"{s - base:#x}-{e - base:#x}" for s, e in rs[:10]))


GPT_HDR = [
    (0x0, 8, "signature"), (0x8, 4, "revision"), (0xC, 4, "header_size"), (0x10, 4, "header_crc32"),
    (0x18, 8, "my_lba"), (0x20, 8, "alternate_lba"), (0x28, 8, "first_usable_lba"),
    (0x30, 8, "last_usable_lba"), (0x38, 16, "disk_guid"), (0x48, 8, "partition_entry_lba"),
    (0x50, 4, "num_partition_entries"), (0x54, 4, "sizeof_partition_entry"),
    (0x58, 4, "partition_entry_array_crc32"),
]
GPT_ENT = [(0x0, 16, "type_guid"), (0x10, 16, "unique_guid"), (0x20, 8, "first_lba"),
           (0x28, 8, "last_lba"), (0x30, 8, "attributes"), (0x38, 72, "name")]
MBR = [(0, 440, "boot code"), (440, 4, "disk signature"), (444, 2, "reserved"),
       (446, 16, "partition 1"), (462, 16, "partition 2"), (478, 16, "partition 3"),
       (494, 16, "partition 4"), (510, 2, "boot signature")]


def diff_disk(A, B, where="disk"):
    if A.size != B.size:
        say(f"{where}: sizes differ: {A.size} vs {B.size}")
    m = A.read(0, 512)
    h = A.read(512, 512)
    parts = []
    covered = []
    if fs_kind(A, 0) is not None and h[:8] != b"EFI PART":
        diff_fs(A, B, 0, A.size, where)
        return
    fields_diff(f"{where} MBR (sector 0)", m, B.read(0, 512), MBR)
    if h[:8] == b"EFI PART":
        fields_diff(f"{where} GPT primary header", h, B.read(512, 512), GPT_HDR)
        elba = struct.unpack_from("<Q", h, 0x48)[0]
        n = struct.unpack_from("<I", h, 0x50)[0]
        esz = struct.unpack_from("<I", h, 0x54)[0]
        ea = A.read(elba * 512, n * esz)
        eb = B.read(elba * 512, n * esz)
        for i in range(n):
            e = ea[i * esz:(i + 1) * esz]
            if e != eb[i * esz:(i + 1) * esz]:
                fields_diff(f"{where} GPT entry {i + 1}", e, eb[i * esz:(i + 1) * esz], GPT_ENT)
            if e[:16] != b"\0" * 16:
                f, l = struct.unpack_from("<QQ", e, 0x20)
                name = e[0x38:0x80].decode("utf-16-le", "replace").rstrip("\0")
                parts.append((i + 1, name, f * 512, (l - f + 1) * 512))
        alt = struct.unpack_from("<Q", h, 0x20)[0]
        fields_diff(f"{where} GPT backup header", A.read(alt * 512, 512), B.read(alt * 512, 512), GPT_HDR)
        ba = A.read(alt * 512, 512)
        belba = struct.unpack_from("<Q", ba, 0x48)[0]
        if A.read(belba * 512, n * esz) != B.read(belba * 512, n * esz):
            say(f"{where} GPT backup entries differ")
        covered += [(0, elba * 512 + n * esz), (belba * 512, A.size)]
    elif m[510:512] == b"\x55\xaa" and fs_kind(A, 0) is None:
        for i in range(4):
            e = m[446 + 16 * i:462 + 16 * i]
            f, c = struct.unpack_from("<II", e, 8)
            if e[4] and c:
                parts.append((i + 1, f"type {e[4]:02x}", f * 512, c * 512))
    if not parts:
        diff_fs(A, B, 0, A.size, where)
        return
    for num, name, off, ln in parts:
        diff_fs(A, B, off, ln, f"{where} partition {num} ({name})")
        covered.append((off, off + ln))
    # gaps between partitions (boot code after the MBR, GRUB core image, ...)
    for s, e in blockdiff(A, B, 0, A.size):
        if s < 1024 or any(a <= s < b for a, b in covered):
            continue
        say(f"{where}: outside any partition at {s:#x}-{e:#x} (sector {s // 512})")
        break


# ---------------------------------------------------------------- qcow2
QCOW2_HDR = [
    (0, 4, "magic"), (4, 4, "version"), (8, 8, "backing_file_offset"), (16, 4, "backing_file_size"),
    (20, 4, "cluster_bits"), (24, 8, "size"), (32, 4, "crypt_method"), (36, 4, "l1_size"),
    (40, 8, "l1_table_offset"), (48, 8, "refcount_table_offset"), (56, 4, "refcount_table_clusters"),
    (60, 4, "nb_snapshots"), (64, 8, "snapshots_offset"), (72, 8, "incompatible_features"),
    (80, 8, "compatible_features"), (88, 8, "autoclear_features"), (96, 4, "refcount_order"),
    (100, 4, "header_length"), (104, 1, "compression_type"),
]


def diff_qcow2(pa, pb):
    A, B = Img(pa), Img(pb)
    ha, hb = A.read(0, 4096), B.read(0, 4096)
    fields_diff("qcow2 header", ha[:112], hb[:112], QCOW2_HDR)
    if ha[112:] != hb[112:]:
        say("qcow2 header extensions / backing file name differ")
    cb = struct.unpack_from(">I", ha, 20)[0]
    cs = 1 << cb
    l1o = struct.unpack_from(">Q", ha, 40)[0]
    l1n = struct.unpack_from(">I", ha, 36)[0]
    rto = struct.unpack_from(">Q", ha, 48)[0]
    rtc = struct.unpack_from(">I", ha, 56)[0]
    if A.size != B.size:
        say(f"qcow2 file sizes differ: {A.size} vs {B.size}")
    l1a = A.read(l1o, l1n * 8)
    if l1a != B.read(l1o, l1n * 8):
        say("qcow2 L1 table differs at entries " +
            fmt_runs(sorted({(s - l1o) // 8 for s, e in ranges(l1a, B.read(l1o, l1n * 8), l1o)})))
    rta = A.read(rto, rtc * cs)
    if rta != B.read(rto, rtc * cs):
        say("qcow2 refcount table differs")
    rblocks = set()
    for i in range(0, len(rta), 8):
        v = struct.unpack_from(">Q", rta, i)[0]
        if v:
            rblocks.add(v // cs)
    l2s = set()
    for i in range(l1n):
        v = struct.unpack_from(">Q", l1a, i * 8)[0] & 0x00FFFFFFFFFFFE00
        if v:
            l2s.add(v // cs)
    kinds = {"refcount block": [], "L2 table": [], "data/other": []}
    for s, e in blockdiff(A, B, 0, max(A.size, B.size)):
        for c in range(s // cs, (e - 1) // cs + 1):
            if c == 0 or l1o // cs <= c <= (l1o + l1n * 8 - 1) // cs or rto // cs <= c < rto // cs + rtc:
                continue
            k = "refcount block" if c in rblocks else "L2 table" if c in l2s else "data/other"
            kinds[k].append(c)
    for k, v in kinds.items():
        if v:
            say(f"qcow2 {k} host clusters: {fmt_runs(sorted(set(v)))}")
    # the guest view
    with tempfile.TemporaryDirectory(dir=os.environ.get("DIFFIMG_TMP")) as td:
        ra, rb = os.path.join(td, "a.raw"), os.path.join(td, "b.raw")
        for src, dst in ((pa, ra), (pb, rb)):
            subprocess.run(["qemu-img", "convert", "-O", "raw", src, dst], check=True)
        a2, b2 = Img(ra), Img(rb)
        if subprocess.run(["cmp", "-s", ra, rb]).returncode == 0:
            say("qcow2: the virtual disks are identical (only the container differs)")
        else:
            diff_disk(a2, b2, "virtual disk")


def main(argv):
    global MAX
    args = [a for a in argv[1:] if not a.startswith("--max")]
    for a in argv[1:]:
        if a.startswith("--max="):
            MAX = int(a[6:])
    if len(args) != 2:
        sys.stderr.write(__doc__)
        return 2
    pa, pb = args
    if subprocess.run(["cmp", "-s", pa, pb]).returncode == 0:
        return 0
    with open(pa, "rb") as f:
        magic = f.read(4)
    if magic == b"QFI\xfb":
        diff_qcow2(pa, pb)
    else:
        diff_disk(Img(pa), Img(pb))
    if not out_lines:
        say("files differ, but no known structure explains it")
    print(f"{pa} and {pb} differ:")
    for line in out_lines[:MAX * 4]:
        print("  " + line)
    if len(out_lines) > MAX * 4:
        print(f"  ... {len(out_lines) - MAX * 4} more")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
