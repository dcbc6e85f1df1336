#!/usr/bin/env bash
# root-tar.sh -- the root file system from a tar stream (--tar): an
# uncompressed tar file, a zstd-compressed one (staged beside the output), a
# pipe and stdin redirected from a file all give the same bytes, raw and
# qcow2, as reading the closure from disk, blocks of zeros becoming holes in
# every case;
# device nodes and FIFOs (which only a tar can bring) land with their numbers.
. "$SRCDIR/tests/lib.sh"
t_begin root-tar
t_need e2fsck debugfs python3 zstd tar

"$SRCDIR/fixtures/closures/make-test-store.sh" "$T/s" --many 500 || t_fail "test store"
CI=$T/s/closure-info
# A file with blocks of zeros inside (as binaries have): they must become
# holes from every input form alike.
sp=$(head -n1 "$CI/store-paths")
python3 - "$T/s$sp/zero-blocks" <<'PY' || t_fail "zero-blocks file"
import sys
with open(sys.argv[1], "wb") as f:
    f.write(b"A" * 5000 + b"\0" * (3 * 4096 - 5000) + b"\0" * 8192 + b"B" * 4096 + b"\0" * 4096 + b"C" * 10)
PY
"$MKVMIMAGE" -q --root "$T/s" -o "$T/disk.img" "$CI" || t_fail "disk build"
"$MKVMIMAGE" -q --root "$T/s" -o "$T/disk.qcow2" "$CI" || t_fail "disk build (qcow2)"
(cd "$T/s" && tar -cf "$T/s.tar" nix) || t_fail "tar"
zstd -q "$T/s.tar" -o "$T/s.tar.zst" || t_fail "zstd"
"$MKVMIMAGE" -q --tar "$T/s.tar" -o "$T/tar.img" "$CI" || t_fail "tar build"
"$MKVMIMAGE" -q --tar "$T/s.tar.zst" -o "$T/zst.img" "$CI" || t_fail "tar.zst build"
"$MKVMIMAGE" -q --tar "$T/s.tar.zst" -o "$T/zst.qcow2" "$CI" || t_fail "tar.zst build (qcow2)"
"$MKVMIMAGE" -q --tar - -o "$T/file.img" "$CI" <"$T/s.tar.zst" || t_fail "stdin file build"
cat "$T/s.tar.zst" | "$MKVMIMAGE" -q --tar - -o "$T/pipe.img" "$CI" || t_fail "pipe build"
cat "$T/s.tar" | "$MKVMIMAGE" -q --tar - -o "$T/pipe.qcow2" "$CI" || t_fail "pipe build (qcow2)"
for f in tar.img zst.img file.img pipe.img zst.qcow2 pipe.qcow2; do
	cmp "$T/disk.${f#*.}" "$T/$f" || t_fail "$f differs from the disk build"
done
e2fsck -fn "$T/zst.img" >"$T/fsck" 2>&1 || t_fail "e2fsck: $(cat "$T/fsck")"
# 7 blocks of content, 3 of them (12 KiB) zeros: 4 blocks allocated (32 sectors)
debugfs -R "stat $sp/zero-blocks" "$T/disk.img" 2>/dev/null >"$T/stat"
grep -q 'Blockcount: 32$' "$T/stat" || t_fail "zero blocks not holes: $(cat "$T/stat")"
debugfs -R "dump $sp/zero-blocks $T/zero-back" "$T/disk.img" 2>/dev/null
cmp "$T/s$sp/zero-blocks" "$T/zero-back" || t_fail "zero-blocks reads back wrong"

# A NixOS system in the stream: the manifest names it and its kernel
# parameters as for the closure on disk (the paths are not on the host).
. "$SRCDIR/tests/integration/disk-lib.sh"
disk_store "$T/n"
"$MKVMIMAGE" -q --root "$T/n/root" -o "$T/n.img" "$T/n/closure" || t_fail "system build"
(cd "$T/n/root" && tar -cf - nix) | "$MKVMIMAGE" -q --tar - -o "$T/nt.img" "$T/n/closure" ||
	t_fail "system build from a pipe"
(cd "$T/n/root" && tar -cf - nix) | "$MKVMIMAGE" -q --tar - -o "$T/nn.img" ||
	t_fail "system build from a pipe, no closure"
cmp "$T/n.img" "$T/nt.img" || t_fail "system tar build differs"
for m in n nt nn; do
	python3 - "$T/$m.img.json" "$Y" <<'PY' || t_fail "$m manifest: $(cat "$T/$m.img.json")"
import json, sys
m = json.load(open(sys.argv[1]))
assert m.get("system") == sys.argv[2], m.get("system")
assert m.get("kernel_params") == "console=ttyS0 loglevel=4", m.get("kernel_params")
PY
done

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
