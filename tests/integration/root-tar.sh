#!/usr/bin/env bash
# root-tar.sh -- the root file system from a tar stream (--tar): an
# uncompressed tar file, a zstd-compressed one (staged beside the output), a
# pipe and stdin redirected from a file all give the same bytes, raw and
# qcow2, as reading the closure from disk, blocks of zeros stored like any
# other in every case (the layout is fixed before any data is read);
# device nodes and FIFOs (which only a tar can bring) land with their numbers.
. "$SRCDIR/tests/lib.sh"
t_begin root-tar
t_need e2fsck debugfs python3 zstd tar

"$SRCDIR/fixtures/closures/make-test-store.sh" "$T/s" --many 500 || t_fail "test store"
CI=$T/s/closure-info
# A file with blocks of zeros inside (as binaries have): allocated like the
# others from every input form alike.
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
# 8 blocks of content, 3 of them (12 KiB) zeros: all 8 allocated (64 sectors),
# one extent (the layout does not depend on the bytes)
debugfs -R "stat $sp/zero-blocks" "$T/disk.img" 2>/dev/null >"$T/stat"
grep -q 'Blockcount: 64$' "$T/stat" || t_fail "zero blocks not allocated: $(cat "$T/stat")"
grep -q '^(0-7):' "$T/stat" || t_fail "zero-blocks not one extent: $(cat "$T/stat")"
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

# store-relative names, no closure file: a set-user-ID file loses the bit (one
# warning names it); device nodes, FIFOs and sockets are refused by name, as
# a Nix store holds none (docs/root-image.md)
python3 - "$T" <<'PY' || t_fail "making the tars"
import io, sys, tarfile
p = "5ddddddddddddddddddddddddddddddd-devs/"
def make(name, *extra):
    with tarfile.open(sys.argv[1] + "/" + name, "w", format=tarfile.GNU_FORMAT) as t:
        def add(name, kind, mode, ma=0, mi=0, data=b""):
            i = tarfile.TarInfo(p + name)
            i.type, i.mode, i.devmajor, i.devminor = kind, mode, ma, mi
            i.size = len(data)
            t.addfile(i, io.BytesIO(data) if data else None)
        add("", tarfile.DIRTYPE, 0o755)
        add("file", tarfile.REGTYPE, 0o4755, data=b"setuid\n")
        add("plain", tarfile.REGTYPE, 0o666, data=b"plain\n")
        for e in extra:
            add(*e)
make("set-id.tar")
make("chr.tar", ("null", tarfile.CHRTYPE, 0o666, 1, 3))
make("blk.tar", ("disk", tarfile.BLKTYPE, 0o660, 259, 70000))
make("fifo.tar", ("fifo", tarfile.FIFOTYPE, 0o600))
PY
"$MKVMIMAGE" --tar "$T/set-id.tar" -o "$T/dev.img" 2>"$T/warn" || t_fail "set-id build: $(cat "$T/warn")"
e2fsck -fn "$T/dev.img" >"$T/fsck" 2>&1 || t_fail "e2fsck (set-id): $(cat "$T/fsck")"
D=/nix/store/5ddddddddddddddddddddddddddddddd-devs
debugfs -R "ls -p $D" "$T/dev.img" 2>/dev/null >"$T/ls"
for want in /100555/0/0/file/7/ /100444/0/0/plain/6/; do
	grep -qF "$want" "$T/ls" || t_fail "missing $want in $(cat "$T/ls")"
done
grep -q "warning: .*set-id.tar: set-user-ID, set-group-ID or sticky bits dropped from 1 entry (first: $D/file)" \
	"$T/warn" || t_fail "set-id warning: $(cat "$T/warn")"
for k in chr:null:'a character device' blk:disk:'a block device' fifo:fifo:'a FIFO'; do
	IFS=: read -r tarname entry what <<<"$k"
	t_expect_exit 1 "$MKVMIMAGE" -q --tar "$T/$tarname.tar" -o "$T/no.img"
	grep -q "$tarname.tar: $D/$entry is $what; a Nix store holds only" "$T/stderr" ||
		t_fail "$tarname: $(cat "$T/stderr")"
	[ ! -e "$T/no.img" ] && [ -z "$(find "$T" -name '.no.img*')" ] || t_fail "$tarname: output left"
done
t_pass
