#!/usr/bin/env bash
# verity.sh -- a compressed dm-verity store image in a real guest kernel, one
# boot for every check: mkvmimage --store-image --compress-fs lz4hc --verity
# of the whole fixture closure (its busybox and other files compress); the
# kernel command line
# carries dm-mod.create= tables made from the manifest's root hash, offsets
# and salt for two devices: the store image (vdb) and a copy with one flipped
# byte in a file's data block (vdc). The guest's device-mapper (dm-verity)
# checks them: the store mounts through /dev/mapper/nix-store, the marker
# carries the fixture's checksum and the sha256 of every file on the store as
# the guest reads it (decompressed by the guest's EROFS) equals the host's;
# reading the corrupted copy fails with EIO and the kernel says which block
# is corrupted.
. "$SRCDIR/tests/lib.sh"
t_begin boot-verity
. "$SRCDIR/tests/boot/lib-boot.sh"
t_need jq python3
boot_fixture

boot_root_image "$T/root.qcow2"
SOURCE_DATE_EPOCH=1 boot_tool "$MKVMIMAGE" --store-image --compress-fs lz4hc --verity --root "$ROOT" \
	-o "$T/store.img" "$CLOSURE_ALL"
SOURCE_DATE_EPOCH=1 boot_tool "$MKVMIMAGE" --store-image --root "$ROOT" -o "$T/plain.img" "$CLOSURE_ALL"
[ "$(jq -r .partitions[0].verity.hash_offset "$T/store.img.json")" -lt "$(stat -c %s "$T/plain.img")" ] ||
	t_fail "the compressed store is not smaller than the uncompressed one"
rm -f "$T/plain.img"
M=$T/store.img.json
v() { jq -er ".partitions[0].verity.$1" "$M" || t_fail "manifest: no verity.$1"; }
RH=$(v root_hash)
HOFF=$(v hash_offset)
NB=$(v data_blocks)
SALT=$(v salt)
[ "$(v hash_algorithm)" = sha256 ] || t_fail "algorithm"

# the corrupted copy: one byte in the middle of the store payload's data
cp "$T/store.img" "$T/bad.img"
python3 - "$ROOT/nix/store/$(head -1 "$CLOSURE_STORE/store-paths" | xargs basename)/share/payload" \
	"$T/bad.img" <<'PY' || t_fail "corrupting the copy"
import sys
payload = open(sys.argv[1], "rb").read()
img = bytearray(open(sys.argv[2], "rb").read())
probe = payload[8192:8192 + 256]
at = img.find(probe)
assert at > 0 and img.find(probe, at + 1) < 0, "payload block not found once"
img[at + 100] ^= 0x5A
open(sys.argv[2], "wb").write(img)
PY
cmp -s "$T/store.img" "$T/bad.img" && t_fail "the copy is not corrupted"

table() { # table DEV
	echo "0 $((NB * 8)) verity 1 $1 $1 4096 4096 $NB $((HOFF / 4096 + 1)) sha256 $RH $SALT"
}
DM="nix-store,,,ro,$(table /dev/vdb);bad-store,,,ro,$(table /dev/vdc)"
boot_vm "$T/console.log" --boot direct --kernel "$KERNEL" --initrd "$INITRD" \
	--append "$APPEND dm-mod.create=\"$DM\" fixture.expect-eio=bad-store fixture.store-sums" \
	--store-image "$T/store.img" --expect "$MARKER" --timeout 300 "$T/root.qcow2" \
	-- -drive "file=$T/bad.img,format=raw,if=virtio,readonly=on"
boot_check_marker "$T/console.log" no
log=$(tr -d '\r' <"$T/console.log")
grep -q 'dm-create: /dev/mapper/nix-store is' <<<"$log" || t_fail "no verity device for the store"
grep -q 'store image (LABEL=nix-store) is /dev/mapper/nix-store' <<<"$log" ||
	t_fail "the store was not mounted through dm-verity"
grep -q 'store /dev/mapper/nix-store erofs' <<<"$log" || t_fail "the system does not see the store on the verity device"
grep -qx 'LIBIMG-VERITY-EIO name=bad-store result=eio' <<<"$log" ||
	t_fail "reading the corrupted copy did not fail with EIO: $(grep -E 'VERITY-EIO|verity' <<<"$log")"
grep -q 'verity: .*data block [0-9]* is corrupted' <<<"$log" ||
	t_fail "the kernel did not report a corrupted data block"
want=$(cd "$ROOT/nix/store" && find $(sed 's|.*/||' "$CLOSURE_ALL/store-paths") -type f -exec sha256sum {} + |
	LC_ALL=C sort -k2 | sha256sum | cut -d' ' -f1)
grep -qx "LIBIMG-STORE-SUMS $want" <<<"$log" ||
	t_fail "the guest read other file contents from the compressed store: $(grep STORE-SUMS <<<"$log") (wanted $want)"
boot_no_strays
t_pass
