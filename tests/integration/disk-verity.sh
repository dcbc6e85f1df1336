#!/usr/bin/env bash
# disk-verity.sh -- mkvmimage --efi --verity: the root's dm-verity hash tree
# in its own GPT partition right after the root, with the Discoverable
# Partitions Specification's root-verity (x86-64) type, as sgdisk shows it.
# The root and verity partitions cut out with dd (offsets from sfdisk, not
# our manifest) are what veritysetup (a program we did not write) verifies
# with the manifest's root hash, hash offset 0 inside the partition; one
# flipped byte in the root makes it fail; the root still passes e2fsck -fn.
# The rest of the disk is the disk without --verity but for the room the
# tree takes; --size keeps the disk's size (the root shrinks); rebuilt under
# another cwd, umask and TMPDIR the disk is byte-identical. As qcow2 (planned,
# tables first, tree hashed as the root is written) it is the raw disk byte
# for byte, as qemu-img converts it back.
. "$SRCDIR/tests/lib.sh"
t_begin disk-verity
t_need veritysetup sgdisk sfdisk e2fsck python3 jq cmp qemu-img
. "$SRCDIR/tests/integration/disk-lib.sh"
disk_store "$T"
R=$T/root

mkdir "$T/w1" "$T/w2" "$T/tmp1" "$T/tmp2"
(cd "$T/w1" && umask 022 && TMPDIR=$T/tmp1 "$MKVMIMAGE" -q --efi --verity --root "$R" \
	-o "$T/v.img" "$T/closure") || t_fail "build --efi --verity"
M=$T/v.img.json

# the partition table, by sgdisk and sfdisk
sgdisk -v "$T/v.img" >"$T/sgdisk" 2>&1 || t_fail "sgdisk -v: $(cat "$T/sgdisk")"
grep -q "No problems found" "$T/sgdisk" || t_fail "sgdisk: $(cat "$T/sgdisk")"
sgdisk -p "$T/v.img" >"$T/p" || t_fail "sgdisk -p"
grep -Eq '^ +3 .* 830C +nixos-verity$' "$T/p" || t_fail "sgdisk -p: no nixos-verity partition 3: $(cat "$T/p")"
grep -Eq '^ +2 .* 8304 +nixos$' "$T/p" || t_fail "sgdisk -p: the root is not partition 2: $(cat "$T/p")"
sgdisk -i 3 "$T/v.img" >"$T/i3" || t_fail "sgdisk -i 3"
grep -q "Partition GUID code: 2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5" "$T/i3" ||
	t_fail "partition 3 is not a root verity (x86-64) partition: $(cat "$T/i3")"
grep -q "Partition name: 'nixos-verity'" "$T/i3" || t_fail "partition 3 name: $(cat "$T/i3")"
VGUID=$(sed -n 's/^Partition unique GUID: //p' "$T/i3" | tr A-F a-f)
sgdisk -i 2 "$T/v.img" >"$T/i2" || t_fail "sgdisk -i 2"
grep -q "Partition GUID code: 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" "$T/i2" ||
	t_fail "the root's type changed: $(cat "$T/i2")"
RGUID=$(sed -n 's/^Partition unique GUID: //p' "$T/i2" | tr A-F a-f)
[ "$VGUID" != "$RGUID" ] || t_fail "root and verity partitions share a GUID"

# the manifest: the verity partition, and the root's verity object
m() { jq -er "$1" "$M" || t_fail "manifest: no $1"; }
[ "$(m '.partitions[2].role')" = root-verity ] || t_fail "manifest: partition 3 role"
[ "$(m '.partitions[2].type')" = 2c7357ed-ebd2-46d9-aec1-23d437ec2bf5 ] || t_fail "manifest: partition 3 type"
[ "$(m '.partitions[2].uuid')" = "$VGUID" ] || t_fail "manifest: partition 3 GUID is not sgdisk's"
[ "$(jq '.partitions[2].filesystem' "$M")" = null ] || t_fail "manifest: the verity partition has a file system"
v() { m ".partitions[1].verity.$1"; }
ROOTHASH=$(v root_hash)
[ "$(v hash_algorithm)" = sha256 ] || t_fail "hash_algorithm"
[ "$(v data_block_size)" = 4096 ] && [ "$(v hash_block_size)" = 4096 ] || t_fail "block sizes"
[ "$(v data_offset)" = "$(m '.partitions[1].offset')" ] || t_fail "data_offset is not the root's offset"
[ "$(v data_blocks)" = $(($(m '.partitions[1].size') / 4096)) ] || t_fail "data_blocks do not cover the root"
[ "$(v hash_offset)" = "$(m '.partitions[2].offset')" ] || t_fail "hash_offset is not the verity partition's"
[ "$(v hash_size)" -le "$(m '.partitions[2].size')" ] || t_fail "hash_size beyond the partition"
[ "$(jq '.partitions[0].verity' "$M")" = null ] || t_fail "the ESP got a verity object"

# the oracle: the partitions as sfdisk places them, veritysetup verify
disk_part "$T/v.img" 2 "$T/root.img"
disk_part "$T/v.img" 3 "$T/hash.img"
[ "$(stat -c %s "$T/root.img")" = $(($(v data_blocks) * 4096)) ] || t_fail "sfdisk's root size"
veritysetup verify "$T/root.img" "$T/hash.img" "$ROOTHASH" ||
	t_fail "veritysetup verify rejects the root"
veritysetup dump "$T/hash.img" >"$T/dump" || t_fail "veritysetup dump"
grep -q "UUID:[[:space:]]*$(v uuid)" "$T/dump" || t_fail "superblock UUID: $(cat "$T/dump")"
grep -q "Salt:[[:space:]]*$(v salt)" "$T/dump" || t_fail "superblock salt: $(cat "$T/dump")"
grep -q "Data blocks:[[:space:]]*$(v data_blocks)" "$T/dump" || t_fail "superblock data blocks"
e2fsck -fn "$T/root.img" >"$T/fsck" 2>&1 || t_fail "e2fsck -fn: $(cat "$T/fsck")"
# veritysetup's own format of the same root, salt and UUID: the same tree
veritysetup format --salt="$(v salt)" --uuid="$(v uuid)" "$T/root.img" "$T/ref.hash" >"$T/format.out" ||
	t_fail "veritysetup format"
grep -q "Root hash:[[:space:]]*$ROOTHASH" "$T/format.out" || t_fail "veritysetup format computes another root hash"
cmp -n "$(v hash_size)" "$T/ref.hash" "$T/hash.img" || t_fail "the tree differs from veritysetup's"
cmp -s -n "$(($(stat -c %s "$T/hash.img") - $(v hash_size)))" /dev/zero \
	<(tail -c +$(($(v hash_size) + 1)) "$T/hash.img") || t_fail "the verity partition's tail is not zero"

# one flipped byte in the root (an inode table block, and the last block)
flip() { # flip FILE OFFSET
	local b
	b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	printf "\\$(printf %03o $(((b ^ 0x5a) & 255)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
for off in $((4096 * 40 + 3)) $(($(stat -c %s "$T/root.img") - 1)); do
	cp "$T/root.img" "$T/bad.img"
	flip "$T/bad.img" "$off"
	cmp -s "$T/root.img" "$T/bad.img" && t_fail "flip did nothing"
	veritysetup verify "$T/bad.img" "$T/hash.img" "$ROOTHASH" 2>/dev/null &&
		t_fail "veritysetup accepts a root with a flipped byte at $off"
done

# without --verity: the same ESP and root bytes, the disk one verity partition shorter
"$MKVMIMAGE" -q --efi --root "$R" -o "$T/plain.img" "$T/closure" || t_fail "build without --verity"
disk_part "$T/plain.img" 2 "$T/plain-root.img"
cmp "$T/root.img" "$T/plain-root.img" || t_fail "--verity changed the root file system"
[ $(($(stat -c %s "$T/v.img") - $(stat -c %s "$T/plain.img"))) = "$(m '.partitions[2].size')" ] ||
	t_fail "the disk grew by more than the verity partition"

# reproducible: another cwd, umask and TMPDIR give the same bytes
(cd "$T/w2" && umask 077 && TMPDIR=$T/tmp2 TZ=Asia/Tokyo "$MKVMIMAGE" -q --efi --verity \
	--root "$R" -o "$T/v2.img" "$T/closure") || t_fail "second build"
cmp "$T/v.img" "$T/v2.img" || t_fail "--efi --verity differs between builds"
"$MKVMIMAGE" -q --efi --verity --seed other --root "$R" -o "$T/s.img" "$T/closure" || t_fail "build --seed"
[ "$(jq -r .partitions[1].verity.salt "$T/s.img.json")" != "$(v salt)" ] || t_fail "--seed did not change the salt"
[ "$(jq -r .partitions[2].uuid "$T/s.img.json")" != "$VGUID" ] || t_fail "--seed did not change the partition GUID"

# qcow2: the same disk, every byte (root, tree, its zero tail, both GPTs)
"$MKVMIMAGE" -q --efi --verity --format qcow2 --root "$R" -o "$T/v.qcow2" "$T/closure" || t_fail "build qcow2"
qemu-img check "$T/v.qcow2" >"$T/check" 2>&1 || t_fail "qemu-img check: $(cat "$T/check")"
qemu-img convert -f qcow2 -O raw "$T/v.qcow2" "$T/q.img" || t_fail "qemu-img convert"
cmp "$T/v.img" "$T/q.img" || t_fail "the qcow2 disk holds other bytes than the raw one"
[ "$(jq -r .partitions[1].verity.root_hash "$T/v.qcow2.json")" = "$ROOTHASH" ] || t_fail "qcow2: another root hash"

# --size: the disk keeps its size, the root gives up the tree's room
"$MKVMIMAGE" -q --efi --verity --size 400M --root "$R" -o "$T/z.img" "$T/closure" || t_fail "build --size"
[ "$(stat -c %s "$T/z.img")" = $((400 << 20)) ] || t_fail "--size 400M: $(stat -c %s "$T/z.img") bytes"
Z=$T/z.img.json
[ "$(jq -r .partitions[2].role "$Z")" = root-verity ] || t_fail "--size: the verity partition is not last"
disk_part "$T/z.img" 2 "$T/zroot.img"
disk_part "$T/z.img" 3 "$T/zhash.img"
veritysetup verify "$T/zroot.img" "$T/zhash.img" "$(jq -r .partitions[1].verity.root_hash "$Z")" ||
	t_fail "--size: veritysetup verify"
e2fsck -fn "$T/zroot.img" >"$T/fsck" 2>&1 || t_fail "--size: e2fsck -fn: $(cat "$T/fsck")"
sgdisk -v "$T/z.img" | grep -q "No problems found" || t_fail "--size: sgdisk -v"

# usage errors: not for the other disk kinds, no output left
for mode in --bios --hybrid; do
	t_expect_exit 2 "$MKVMIMAGE" -q $mode --verity --root "$R" -o "$T/x.img" "$T/closure"
	grep -q -- "--verity needs --store-image or --efi" "$T/stderr" || t_fail "message: $(cat "$T/stderr")"
done
t_expect_exit 1 "$MKVMIMAGE" -q --efi --verity --size 260M --root "$R" -o "$T/x.img" "$T/closure"
[ ! -e "$T/x.img" ] || t_fail "partial output left behind"
t_pass
