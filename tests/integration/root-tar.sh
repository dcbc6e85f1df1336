#!/usr/bin/env bash
# root-tar.sh -- the root file system from a tar stream (--tar): an
# uncompressed tar file, a zstd-compressed one (data replayed into the planned
# blocks) and a pipe all give the same bytes as reading the closure from disk;
# device nodes and FIFOs (which only a tar can bring) land with their numbers.
. "$SRCDIR/tests/lib.sh"
t_begin root-tar
t_need e2fsck debugfs python3 zstd tar

"$SRCDIR/fixtures/closures/make-test-store.sh" "$T/s" --many 500 || t_fail "test store"
CI=$T/s/closure-info
"$MKVMIMAGE" -q --root "$T/s" -o "$T/disk.img" "$CI" || t_fail "disk build"
(cd "$T/s" && tar -cf "$T/s.tar" nix) || t_fail "tar"
zstd -q "$T/s.tar" -o "$T/s.tar.zst" || t_fail "zstd"
"$MKVMIMAGE" -q --tar "$T/s.tar" -o "$T/tar.img" "$CI" || t_fail "tar build"
"$MKVMIMAGE" -q --tar "$T/s.tar.zst" -o "$T/zst.img" "$CI" || t_fail "tar.zst build"
"$MKVMIMAGE" -q --tar - -o "$T/pipe.img" "$CI" <"$T/s.tar.zst" || t_fail "pipe build"
for f in tar zst pipe; do
	cmp "$T/disk.img" "$T/$f.img" || t_fail "$f image differs from the disk build"
done
e2fsck -fn "$T/zst.img" >"$T/fsck" 2>&1 || t_fail "e2fsck: $(cat "$T/fsck")"

# device nodes and a FIFO, store-relative names, no closure file
python3 - "$T/dev.tar" <<'PY' || t_fail "making dev.tar"
import io, sys, tarfile
p = "5ddddddddddddddddddddddddddddddd-devs/"
with tarfile.open(sys.argv[1], "w", format=tarfile.GNU_FORMAT) as t:
    def add(name, kind, mode, ma=0, mi=0, data=b""):
        i = tarfile.TarInfo(p + name)
        i.type, i.mode, i.devmajor, i.devminor = kind, mode, ma, mi
        i.size = len(data)
        t.addfile(i, io.BytesIO(data) if data else None)
    add("", tarfile.DIRTYPE, 0o755)
    add("null", tarfile.CHRTYPE, 0o666, 1, 3)
    add("disk", tarfile.BLKTYPE, 0o660, 259, 70000)
    add("fifo", tarfile.FIFOTYPE, 0o600)
    add("file", tarfile.REGTYPE, 0o4755, data=b"setuid\n")
PY
"$MKVMIMAGE" -q --tar "$T/dev.tar" -o "$T/dev.img" || t_fail "dev build"
e2fsck -fn "$T/dev.img" >"$T/fsck" 2>&1 || t_fail "e2fsck (devices): $(cat "$T/fsck")"
D=/nix/store/5ddddddddddddddddddddddddddddddd-devs
debugfs -R "ls -p $D" "$T/dev.img" 2>/dev/null >"$T/ls"
for want in /020666/0/0/null/ /060660/0/0/disk/ /010600/0/0/fifo/ /104755/0/0/file/7/; do
	grep -qF "$want" "$T/ls" || t_fail "missing $want in $(cat "$T/ls")"
done
debugfs -R "stat $D/null" "$T/dev.img" 2>/dev/null | grep -qi 'device major/minor number: 01:03' ||
	t_fail "1:3"
debugfs -R "stat $D/disk" "$T/dev.img" 2>/dev/null | grep -qi 'device major/minor number: 259:70000' ||
	t_fail "259:70000: $(debugfs -R "stat $D/disk" "$T/dev.img" 2>/dev/null | grep -i device)"
t_pass
