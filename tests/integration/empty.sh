#!/usr/bin/env bash
# empty.sh -- mkvmimage --empty: sizes, formats, temp name + rename, exit codes.
. "$SRCDIR/tests/lib.sh"
t_begin empty

# usage errors: exit 2, nothing written
t_expect_exit 2 "$MKVMIMAGE" --empty -o "$T/a.img"
t_expect_exit 2 "$MKVMIMAGE" --empty --size 0 -o "$T/a.img"
t_expect_exit 2 "$MKVMIMAGE" --empty --size 12Q -o "$T/a.img"
t_expect_exit 2 "$MKVMIMAGE" --empty --size 64M
t_expect_exit 2 "$MKVMIMAGE" --empty --size 64M --format vhd -o "$T/a.img"
[ ! -e "$T/a.img" ] || t_fail "a.img written on a usage error"

"$MKVMIMAGE" --empty --size 64M -o "$T/e.img" || t_fail "raw build"
[ "$(stat -c %s "$T/e.img")" = $((64 << 20)) ] || t_fail "raw size"
"$MKVMIMAGE" --empty --size 64M -o "$T/e.qcow2" || t_fail "qcow2 build"
qemu-img info --output=json "$T/e.qcow2" | grep -q '"format": "qcow2"' || t_fail "not qcow2"
"$MKVMIMAGE" --empty --size 64M --format raw -o "$T/f.qcow2" || t_fail "forced raw"
qemu-img info --output=json "$T/f.qcow2" | grep -q '"format": "raw"' || t_fail "--format raw ignored"
# what it wrote is an empty ext4 labelled nixos, in both formats
t_need e2fsck dumpe2fs qemu-img
e2fsck -fn "$T/e.img" >"$T/fsck" 2>&1 || t_fail "e2fsck: $(cat "$T/fsck")"
dumpe2fs -h "$T/e.img" 2>/dev/null | grep -q '^Filesystem volume name: *nixos$' || t_fail "label is not nixos"
qemu-img check -q "$T/e.qcow2" || t_fail "qemu-img check"
qemu-img convert -O raw "$T/e.qcow2" "$T/e2.img" || t_fail "qemu-img convert"
cmp -s "$T/e.img" "$T/e2.img" || t_fail "the qcow2 holds another disk than the raw image"
rm -f "$T/e2.img"
# no temporaries left behind
ls -A "$T" | grep -q '\.tmp-' && t_fail "temporary left: $(ls -A "$T")"
# output directory missing: exit 1 with the name
t_expect_exit 1 "$MKVMIMAGE" --empty --size 64M -o "$T/nodir/x.img"
grep -q "nodir/x.img" "$T/stderr" || t_fail "message does not name the output"
t_pass
