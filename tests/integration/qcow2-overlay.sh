#!/usr/bin/env bash
# qcow2-overlay.sh -- an overlay libimg creates works with QEMU's tools:
# `qemu-img info --backing-chain` shows the chain, `qemu-io` writes into
# it, `qemu-img check` stays clean, and both readers agree on the result.
. "$SRCDIR/tests/lib.sh"
t_begin qcow2-overlay
t_need qemu-img qemu-io
TOOL="$BUILDDIR/qcow2-tool"
[ -x "$TOOL" ] || t_fail "$TOOL not built"

"$TOOL" write "$T/base.qcow2" --size 33554432 --compress zstd pattern 31 200 200000 ||
	t_fail "base"
(cd "$T" && "$TOOL" overlay ov.qcow2 base.qcow2) || t_fail "overlay"
info=$(qemu-img info --backing-chain "$T/ov.qcow2") || t_fail "qemu-img info: $info"
echo "$info" | grep -q "^backing file: $T/base.qcow2\$" || t_fail "backing not absolute: $info"
echo "$info" | grep -q "^backing file format: qcow2" || t_fail "no backing format: $info"
[ "$(echo "$info" | grep -c '^image: ')" = 2 ] || t_fail "chain: $info"
echo "$info" | grep -q "virtual size: 32 MiB (33554432 bytes)" || t_fail "size: $info"
qemu-img check "$T/ov.qcow2" >/dev/null || t_fail "check of the fresh overlay"
qemu-io -c 'write -P 0x42 100k 300k' -c 'write -z 8M 64k' "$T/ov.qcow2" >/dev/null ||
	t_fail "qemu-io write"
qemu-img check "$T/ov.qcow2" >/dev/null || t_fail "check after qemu-io"
qemu-io -c 'read -P 0x42 100k 300k' "$T/ov.qcow2" | grep -q "read 307200/307200" ||
	t_fail "qemu-io read back"
qemu-img convert -O raw "$T/ov.qcow2" "$T/ov.ref" || t_fail "convert"
"$TOOL" dump "$T/ov.qcow2" "$T/ov.out" --allow-backing || t_fail "our reader"
cmp -s "$T/ov.ref" "$T/ov.out" || t_fail "readers disagree"

# A raw backing file, and an overlay on top of an overlay.
"$TOOL" write "$T/base.raw" --format raw --size 8388608 pattern 32 50 100000 || t_fail "raw"
"$TOOL" overlay "$T/ovr.qcow2" "$T/base.raw" || t_fail "overlay raw"
qemu-img info "$T/ovr.qcow2" | grep -q "backing file format: raw" || t_fail "raw format"
qemu-img compare "$T/base.raw" "$T/ovr.qcow2" >/dev/null || t_fail "raw overlay differs"
"$TOOL" overlay "$T/ov3.qcow2" "$T/ov.qcow2" qcow2 || t_fail "overlay of overlay"
[ "$(qemu-img info --backing-chain "$T/ov3.qcow2" | grep -c '^image: ')" = 3 ] ||
	t_fail "3-deep chain"
qemu-img compare "$T/ov.ref" "$T/ov3.qcow2" >/dev/null || t_fail "ov3 differs"
t_pass
