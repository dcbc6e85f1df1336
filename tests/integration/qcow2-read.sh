#!/usr/bin/env bash
# qcow2-read.sh -- images made by qemu-img (convert from raw, -c zlib, -c
# zstd, v2 "compat=0.10", several cluster sizes, overlays made with
# `create -b -F` and written by qemu-io) read back byte-identical through
# libimg's reader; a backing file is refused unless allowed.
. "$SRCDIR/tests/lib.sh"
t_begin qcow2-read
t_need qemu-img qemu-io
TOOL="$BUILDDIR/qcow2-tool"
[ -x "$TOOL" ] || t_fail "$TOOL not built"

"$TOOL" write "$T/src.raw" --format raw --size 67108864 pattern 21 400 300000 \
	text 40000000 6000000 || t_fail "making the source"

readback() {
	local name=$1
	shift
	qemu-img convert -O qcow2 "$@" "$T/src.raw" "$T/$name.qcow2" || t_fail "$name: convert"
	"$TOOL" dump "$T/$name.qcow2" "$T/$name.out" || t_fail "$name: our reader"
	cmp -s "$T/src.raw" "$T/$name.out" || t_fail "$name: differs from the source"
	rm -f "$T/$name.out"
	echo "ok $name"
}
readback plain
readback zlib -c
readback zstd -c -o compression_type=zstd
readback c512 -o cluster_size=512
readback c2m -c -o cluster_size=2M
readback zstd-4k -c -o compression_type=zstd,cluster_size=4096
readback v2 -o compat=0.10
readback v2-zlib -c -o compat=0.10

# Overlay made by qemu-img, written by qemu-io (data + zero clusters).
qemu-img create -q -f qcow2 -b "$T/zstd.qcow2" -F qcow2 "$T/ov.qcow2" || t_fail "create -b"
qemu-io -c 'write -P 0x5a 1M 200k' -c 'write -z 2M 128k' -c 'write -P 0x11 63M 1M' \
	"$T/ov.qcow2" >/dev/null || t_fail "qemu-io"
t_expect_exit 1 "$TOOL" dump "$T/ov.qcow2" "$T/ov.out"
grep -q "backing file '$T/zstd.qcow2'" "$T/stderr" || t_fail "refusal does not name the backing file"
"$TOOL" dump "$T/ov.qcow2" "$T/ov.out" --allow-backing || t_fail "overlay: our reader"
qemu-img convert -O raw "$T/ov.qcow2" "$T/ov.ref" || t_fail "overlay: qemu-img convert"
cmp -s "$T/ov.ref" "$T/ov.out" || t_fail "overlay: differs from qemu's reading"
echo "ok overlay"

# A relative backing name resolves against the overlay's directory.
mkdir "$T/sub"
cp "$T/src.raw" "$T/sub/base.raw"
(cd "$T/sub" && qemu-img create -q -f qcow2 -b base.raw -F raw ov2.qcow2) || t_fail "create rel"
qemu-io -c 'write -P 0x77 0 64k' "$T/sub/ov2.qcow2" >/dev/null || t_fail "qemu-io rel"
"$TOOL" dump "$T/sub/ov2.qcow2" "$T/ov2.out" --allow-backing || t_fail "relative backing"
qemu-img convert -O raw "$T/sub/ov2.qcow2" "$T/ov2.ref"
cmp -s "$T/ov2.ref" "$T/ov2.out" || t_fail "relative overlay differs"
echo "ok relative overlay"
t_pass
