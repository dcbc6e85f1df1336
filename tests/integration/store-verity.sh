#!/usr/bin/env bash
# store-verity.sh -- mkvmimage --store-image --verity: the hash tree after the
# EROFS is what veritysetup (cryptsetup, a program we did not write) verifies
# with the root hash and offsets of the manifest, and byte for byte what
# `veritysetup format` writes for the same data, salt and UUID; one flipped
# byte in the data or in the tree makes the verification fail. The file
# system part is the image without --verity, byte for byte; every input form
# (tar file, sorted tar pipe, qcow2) gives the same bytes.
. "$SRCDIR/tests/lib.sh"
t_begin store-verity
t_need veritysetup jq fsck.erofs tar qemu-img

S=$T/root/nix/store
A=$S/0123456789abcdfghijklmnpqrsvwxyz-a
mkdir -p "$A/d1/d2" "$S/zyxwvsrqpnmlkjihgfdcba9876543210-b"
# enough data for two levels of tree (over 128 data blocks)
for i in $(seq 1 60); do head -c $((i * 4099)) /dev/urandom >"$A/d1/f$i"; done
echo x >"$A/d1/d2/y"
ln -s d1/f1 "$A/l"
echo b >"$S/zyxwvsrqpnmlkjihgfdcba9876543210-b/b"
(cd "$T/root" && tar --sort=name -cf "$T/in.tar" nix/store)

"$MKVMIMAGE" -q --store-image --tar "$T/in.tar" -o "$T/plain.img" || t_fail "build without --verity"
"$MKVMIMAGE" -q --store-image --verity --tar "$T/in.tar" -o "$T/v.img" || t_fail "build --verity"
"$MKVMIMAGE" -q --store-image --verity --tar - -o "$T/pipe.img" <"$T/in.tar" || t_fail "build from a pipe"
"$MKVMIMAGE" -q --store-image --verity --tar "$T/in.tar" -o "$T/v.qcow2" || t_fail "build qcow2"
cmp "$T/v.img" "$T/pipe.img" || t_fail "a sorted tar pipe gives other bytes than the tar file"
qemu-img convert -f qcow2 -O raw "$T/v.qcow2" "$T/q.img" || t_fail "qemu-img convert"
cmp "$T/v.img" "$T/q.img" || t_fail "qcow2 holds other bytes than the raw image"

M=$T/v.img.json
v() { jq -er ".partitions[0].verity.$1" "$M" || t_fail "manifest: no verity.$1"; }
ROOTHASH=$(v root_hash)
HOFF=$(v hash_offset)
HSIZE=$(v hash_size)
BLOCKS=$(v data_blocks)
SALT=$(v salt)
VUUID=$(v uuid)
[ "$(v hash_algorithm)" = sha256 ] || t_fail "hash_algorithm is not sha256"
[ "$(v data_offset)" = 0 ] || t_fail "data_offset is not 0"
[ "$(v data_block_size)" = 4096 ] && [ "$(v hash_block_size)" = 4096 ] || t_fail "block sizes"
size=$(stat -c %s "$T/plain.img")
[ "$HOFF" = "$size" ] || t_fail "hash_offset $HOFF is not the file system size $size"
[ "$BLOCKS" = $((size / 4096)) ] || t_fail "data_blocks $BLOCKS for $size bytes"
[ "$(stat -c %s "$T/v.img")" = $((HOFF + HSIZE)) ] || t_fail "image size is not hash_offset + hash_size"
[ "$(jq -r .virtual_size "$M")" = $((HOFF + HSIZE)) ] || t_fail "virtual_size"
[ "$BLOCKS" -gt 128 ] || t_fail "the test data should need two tree levels ($BLOCKS blocks)"
cmp -n "$size" "$T/plain.img" "$T/v.img" || t_fail "--verity changed the file system bytes"

# the oracle: veritysetup verify, and its own format of the same data
veritysetup verify "$T/v.img" "$T/v.img" "$ROOTHASH" --hash-offset="$HOFF" ||
	t_fail "veritysetup verify rejects the image"
veritysetup dump "$T/v.img" --hash-offset="$HOFF" >"$T/dump" || t_fail "veritysetup dump"
grep -q "UUID:[[:space:]]*$VUUID" "$T/dump" || t_fail "superblock UUID is not the manifest's: $(cat "$T/dump")"
grep -q "Salt:[[:space:]]*$SALT" "$T/dump" || t_fail "superblock salt is not the manifest's"
veritysetup format --salt="$SALT" --uuid="$VUUID" "$T/plain.img" "$T/ref.hash" >"$T/format.out" ||
	t_fail "veritysetup format"
grep -q "Root hash:[[:space:]]*$ROOTHASH" "$T/format.out" || t_fail "veritysetup format computes another root hash"
cmp "$T/ref.hash" <(tail -c +$((HOFF + 1)) "$T/v.img") || t_fail "the tree differs from veritysetup's"

# the EROFS still checks and extracts (the tree after it is not its business)
fsck.erofs --extract="$T/out" "$T/v.img" >/dev/null 2>&1 || t_fail "fsck.erofs --extract"
diff -r "$T/root/nix/store" "$T/out" || t_fail "extracted tree differs"

# one flipped byte in a file's data block, then in the tree: both must fail
flip() { # flip FILE OFFSET
	local b
	b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	printf "\\$(printf %03o $(((b ^ 0x5a) & 255)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
cp "$T/v.img" "$T/bad.img"
flip "$T/bad.img" $((4096 * 3 + 17))
cmp -s "$T/v.img" "$T/bad.img" && t_fail "flip did nothing"
veritysetup verify "$T/bad.img" "$T/bad.img" "$ROOTHASH" --hash-offset="$HOFF" 2>/dev/null &&
	t_fail "veritysetup accepts a flipped data byte"
cp "$T/v.img" "$T/bad.img"
flip "$T/bad.img" $((HSIZE / 2 + HOFF + 5))
veritysetup verify "$T/bad.img" "$T/bad.img" "$ROOTHASH" --hash-offset="$HOFF" 2>/dev/null &&
	t_fail "veritysetup accepts a flipped tree byte"

# the salt and UUID come from the seed
"$MKVMIMAGE" -q --store-image --verity --seed other --tar "$T/in.tar" -o "$T/s.img" || t_fail "build --seed"
[ "$(jq -r .partitions[0].verity.salt "$T/s.img.json")" != "$SALT" ] || t_fail "--seed did not change the salt"
[ "$(jq -r .partitions[0].verity.root_hash "$T/s.img.json")" != "$ROOTHASH" ] || t_fail "--seed did not change the root hash"

# usage errors
t_expect_exit 2 "$MKVMIMAGE" -q --verity --tar "$T/in.tar" -o "$T/x.img"
grep -q -- "--verity needs --store-image" "$T/stderr" || t_fail "message: $(cat "$T/stderr")"
t_expect_exit 1 "$MKVMIMAGE" -q --store-image --verity --size 20000001 --tar "$T/in.tar" -o "$T/x.img"
grep -q "multiple of 4096" "$T/stderr" || t_fail "message: $(cat "$T/stderr")"
[ ! -e "$T/x.img" ] || t_fail "partial output left behind"
t_pass
