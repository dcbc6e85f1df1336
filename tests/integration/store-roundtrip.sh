#!/usr/bin/env bash
# store-roundtrip.sh -- mkvmimage --store-image: fsck.erofs (erofs-utils, not
# ours) passes and --extract gives back the input (contents, modes as Nix
# canonicalises them, symlink targets, owner 0:0, times = epoch), and every input form gives the same
# bytes: closure on disk, tar file (plain, gzip, xz, zstd), tar on a pipe in
# sorted and shuffled entry order, relative and store-relative names.
. "$SRCDIR/tests/lib.sh"
t_begin store-roundtrip
t_need fsck.erofs tar gzip xz zstd shuf
export SOURCE_DATE_EPOCH=1

S=$T/root/nix/store
A=$S/0123456789abcdfghijklmnpqrsvwxyz-edge
B=$S/zyxwvsrqpnmlkjihgfdcba9876543210-other
mkdir -p "$A/bin" "$A/sizes" "$A/many" "$B/share"
for n in 0 1 4063 4064 4065 4095 4096 4097 8191 8193 12345 1048577; do
	head -c "$n" /dev/urandom >"$A/sizes/f$n"
done
printf '#!/bin/sh\necho hi\n' >"$A/bin/hello"
chmod 755 "$A/bin/hello"
chmod 600 "$A/sizes/f1"
for i in $(seq 1 3000); do : >"$A/many/entry-$i"; done
ln -s ../bin/hello "$A/sizes/link"
ln -s "$(printf 'x%.0s' $(seq 1 4000))" "$A/longlink"
: >"$A/$(printf 'n%.0s' $(seq 1 255))"
d=$A/deep
for i in $(seq 1 120); do d=$d/d; done
mkdir -p "$d" && echo bottom >"$d/leaf"
printf 'bytes' >"$A/non-utf8-$(printf '\xff\xfe')"
echo "shared" >"$B/share/one"
ln "$B/share/one" "$B/share/two"
ln -s "$A" "$B/share/abs-link"
printf "/nix/store/%s\n" "${B##*/}" "${A##*/}" >"$T/closure"

M() { "$MKVMIMAGE" -q --store-image "$@"; }
M --root "$T/root" "$T/closure" -o "$T/disk.img" || t_fail "from the closure on disk"
fsck.erofs "$T/disk.img" >/dev/null || t_fail "fsck.erofs on disk.img"

# The extracted tree equals the input.
fsck.erofs --extract="$T/x" "$T/disk.img" >/dev/null || t_fail "fsck.erofs --extract"
list() { (cd "$1" && find . -mindepth 1 -printf '%y %m %U:%G %l %P\n' | LC_ALL=C sort); }
sizes() { (cd "$1" && find . -type f -printf '%s %P\n' | LC_ALL=C sort); }
# modes as Nix makes them (docs/store-image.md): 0555 where the owner could
# execute, else 0444; symlinks as they are
(cd "$T/root/nix/store" && list .) | sed 's/ [0-9]*:[0-9]* / 0:0 /' |
	sed -E 's/^([fd]) [0-7]*[1357][0-7][0-7] /\1 555 /; t; s/^([fd]) [0-7]+ /\1 444 /' | LC_ALL=C sort >"$T/want.list"
list "$T/x" >"$T/got.list"
diff "$T/want.list" "$T/got.list" >"$T/list.diff" || t_fail "extracted tree differs: $(head -20 "$T/list.diff")"
diff <(sizes "$T/root/nix/store") <(sizes "$T/x") >/dev/null || t_fail "sizes differ"
diff -r --no-dereference "$T/root/nix/store" "$T/x" >/dev/null || t_fail "contents differ"
bad=$(cd "$T/x" && find . -type f -newermt @2 -print | head -3)
[ -z "$bad" ] || t_fail "mtime is not the epoch: $bad"
t=$(stat -c %Y "$T/x/0123456789abcdfghijklmnpqrsvwxyz-edge/bin/hello")
[ "$t" = 1 ] || t_fail "mtime $t, not 1"

# The same bytes from every input form.
(cd "$T/root" && tar --sort=name -cf "$T/s.tar" nix/store/*-edge nix/store/*-other)
M --tar "$T/s.tar" -o "$T/tar.img" || t_fail "from a tar file"
cmp "$T/disk.img" "$T/tar.img" || t_fail "tar file != closure on disk"
for z in gzip xz zstd; do
	$z -c "$T/s.tar" >"$T/s.tar.$z"
	M --tar "$T/s.tar.$z" -o "$T/$z.img" || t_fail "from a $z tar"
	cmp "$T/disk.img" "$T/$z.img" || t_fail "$z tar != closure on disk"
done
(cd "$T/root" && tar --sort=name -cf - nix/store) |
	"$MKVMIMAGE" -v --store-image --tar - -o "$T/pipe.img" 2>"$T/pipe.log" || t_fail "pipe"
cmp "$T/disk.img" "$T/pipe.img" || t_fail "sorted pipe != closure on disk"
# A sorted stream goes straight into place: only inline tails are staged.
read -r inplace staged < <(sed -n 's/.*: \([0-9]*\) bytes went straight into place, \([0-9]*\) staged.*/\1 \2/p' "$T/pipe.log")
[ "${inplace:-0}" -gt 1048576 ] && [ "$staged" -lt 100000 ] ||
	t_fail "sorted pipe: in place ${inplace:-?}, staged ${staged:-?}: $(cat "$T/pipe.log")"
# A duplicate entry at the end (last wins) moves data out of place and back.
cp "$T/s.tar" "$T/dup.tar"
(cd "$T/root" && tar -rf "$T/dup.tar" nix/store/*-edge/sizes/f8193)
cat "$T/dup.tar" | M --tar - -o "$T/dup.img" || t_fail "pipe with a duplicate"
cmp "$T/disk.img" "$T/dup.img" || t_fail "pipe with a duplicate != closure on disk"
(cd "$T/root" && find nix/store | shuf --random-source=<(yes 42) |
	tar --no-recursion -T - -cf - | gzip) | M --tar - -o "$T/shuf.img" || t_fail "shuffled pipe"
cmp "$T/disk.img" "$T/shuf.img" || t_fail "shuffled pipe != closure on disk"
# store-relative names, as the reference's --transform makes them, absolute names
(cd "$T/root/nix/store" && tar -cf - ./*) | M --tar - -o "$T/rel.img" || t_fail "store-relative"
cmp "$T/disk.img" "$T/rel.img" || t_fail "store-relative names != closure on disk"
(cd / && tar -P -cf - "$A" "$B") | M --store-dir "$S" --tar - -o "$T/abs.img" || t_fail "absolute"
fsck.erofs "$T/abs.img" >/dev/null || t_fail "fsck.erofs on abs.img"
# closure + tar: the tar must hold exactly the closure
M --root "$T/root" "$T/closure" --tar "$T/s.tar" -o "$T/both.img" || t_fail "closure + tar"
cmp "$T/disk.img" "$T/both.img" || t_fail "closure + tar differs"
# ... and with no --root: nothing of the closure exists on this host
[ ! -e "/nix/store/${A##*/}" ] || t_fail "the test store path exists on the host"
M "$T/closure" --tar "$T/s.tar" -o "$T/noroot.img" || t_fail "closure + tar, no host store"
cmp "$T/disk.img" "$T/noroot.img" || t_fail "closure + tar without --root differs"
echo "/nix/store/${A##*/}" >"$T/closure1"
t_expect_exit 1 "$MKVMIMAGE" -q --store-image --root "$T/root" "$T/closure1" --tar "$T/s.tar" -o "$T/no.img"
[ ! -e "$T/no.img" ] || t_fail "output left after a closure/tar mismatch"

# qcow2 holds the same image; label and UUID as blkid sees them.
M --tar "$T/s.tar" -o "$T/q.qcow2" || t_fail "qcow2"
qemu-img compare -q "$T/disk.img" "$T/q.qcow2" || t_fail "qcow2 content differs"
if t_can "label and type by blkid" cmd:blkid; then
	blkid -p -o value -s LABEL "$T/disk.img" | grep -qx nix-store || t_fail "label"
	blkid -p -o value -s TYPE "$T/disk.img" | grep -qx erofs || t_fail "type"
fi
grep -q '"filesystem": "erofs"' "$T/disk.img.json" || t_fail "manifest"
t_pass
