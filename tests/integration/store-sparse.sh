#!/usr/bin/env bash
# store-sparse.sh -- a file over 4 GiB (a sparse source): extended inode with
# a 64-bit size, head and inline tail where they belong, holes stay holes in
# the image, and the closure on disk, a sparse tar on a pipe and a sparse tar
# file give the same bytes. fsck.erofs checks the structure (extracting
# 5 GiB would only test the disk). A qcow2 output is planned without the
# holes: a few MiB, hashed as it is written, qemu reads store.img from it.
. "$SRCDIR/tests/lib.sh"
t_begin store-sparse
t_need fsck.erofs dump.erofs tar

P=0123456789abcdfghijklmnpqrsvwxyz-big
D=$T/root/nix/store/$P
mkdir -p "$D"
size=$((5 * 1024 * 1024 * 1024 + 5))
printf 'head\n' >"$D/file"
truncate -s "$size" "$D/file"
printf 'tail!' | dd of="$D/file" bs=1 seek=$((size - 5)) conv=notrunc 2>/dev/null
echo small >"$D/small"
echo "/nix/store/$P" >"$T/closure"
M() { "$MKVMIMAGE" -q --no-manifest --store-image "$@"; }
# Same bytes, without reading 5 GiB of holes: same size, little allocated,
# the same first and last MiB (all data and metadata live there).
same() {
	[ "$(stat -c %s "$1")" = "$(stat -c %s "$2")" ] || return 1
	[ "$(du -k "$2" | cut -f1)" -lt 4096 ] || return 1
	cmp -s <(head -c 1M "$1") <(head -c 1M "$2") && cmp -s <(tail -c 1M "$1") <(tail -c 1M "$2")
}
M --root "$T/root" "$T/closure" -o "$T/disk.img" || t_fail "closure on disk"
fsck.erofs "$T/disk.img" >/dev/null || t_fail "fsck.erofs"
[ "$(du -k "$T/disk.img" | cut -f1)" -lt 4096 ] || t_fail "holes were written: $(du -h "$T/disk.img")"
dump.erofs --path="/$P/file" "$T/disk.img" >"$T/dump" || t_fail "dump.erofs"
grep -q "Size: $size " "$T/dump" || t_fail "size: $(head -3 "$T/dump")"
grep -q "Inode size: 64" "$T/dump" || t_fail "not an extended inode: $(cat "$T/dump")"
nid=$(sed -n 's/^NID: \([0-9]*\).*/\1/p' "$T/dump")
# The 5-byte tail is inlined right after the 64-byte inode; the head is in block 1.
[ "$(dd if="$T/disk.img" bs=1 skip=$((nid * 32 + 64)) count=5 2>/dev/null)" = "tail!" ] || t_fail "tail"
[ "$(dd if="$T/disk.img" bs=1 skip=4096 count=4 2>/dev/null)" = "head" ] || t_fail "head"

(cd "$T/root" && tar --sparse -cf - nix) | M --tar - -o "$T/pipe.img" || t_fail "sparse tar on a pipe"
same "$T/disk.img" "$T/pipe.img" || t_fail "pipe != closure on disk"
(cd "$T/root" && tar --sparse -cf "$T/s.tar" nix)
M --tar "$T/s.tar" -o "$T/file.img" || t_fail "sparse tar file"
same "$T/disk.img" "$T/file.img" || t_fail "tar file != closure on disk"

"$MKVMIMAGE" -v --store-image --root "$T/root" "$T/closure" -o "$T/disk.qcow2" 2>"$T/log" ||
	t_fail "qcow2: $(tail -3 "$T/log")"
grep -q 'taken as it was written' "$T/log" || t_fail "qcow2 read back: $(grep sha256 "$T/log")"
[ "$(stat -c %s "$T/disk.qcow2")" -lt $((16 << 20)) ] ||
	t_fail "qcow2 holds the holes: $(stat -c %s "$T/disk.qcow2") bytes"
if t_can "qcow2 against the raw image" cmd:qemu-img; then
	qemu-img check -q "$T/disk.qcow2" || t_fail "qemu-img check"
	qemu-img compare -q -f raw -F qcow2 "$T/disk.img" "$T/disk.qcow2" || t_fail "qcow2 != raw"
fi
t_pass
