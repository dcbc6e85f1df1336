#!/usr/bin/env bash
# root-tree.sh -- the default mode (ext4 root, no partition table) on a test
# store with every kind of entry: e2fsck -fn clean, the tree read back with
# debugfs equals the input (contents, modes as Nix canonicalises them, owners,
# symlink targets), the
# NixOS layout, hard links, a sparse file over 4 GiB, qcow2 = raw.
. "$SRCDIR/tests/lib.sh"
t_begin root-tree
t_need e2fsck debugfs dumpe2fs qemu-img python3

"$SRCDIR/fixtures/closures/make-test-store.sh" "$T/s" || t_fail "test store"
S=/nix/store
A=$S/0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-files-1.0
Y=$S/4yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy-nixos-system-test-1.0

"$MKVMIMAGE" -q --root "$T/s" -o "$T/r.img" "$T/s/closure-info" || t_fail "build"
e2fsck -fn "$T/r.img" >"$T/fsck" 2>&1 || t_fail "e2fsck: $(cat "$T/fsck")"
dumpe2fs -h "$T/r.img" >"$T/dump" 2>/dev/null || t_fail "dumpe2fs"
grep -q '^Filesystem volume name: *nixos$' "$T/dump" || t_fail "label"
for f in has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg \
	sparse_super large_file huge_file dir_nlink extra_isize metadata_csum; do
	grep '^Filesystem features:' "$T/dump" | grep -qw "$f" || t_fail "feature $f missing"
done
grep -q '^Filesystem flags: *signed_directory_hash' "$T/dump" || t_fail "hash flag"
grep -q '^Filesystem created: *Thu Jan  1 00:00:01 1970' "$T/dump" || t_fail "mkfs time"

# read everything back with debugfs and compare with the input
mkdir "$T/out"
debugfs -R "rdump / $T/out" "$T/r.img" >/dev/null 2>&1 || t_fail "rdump"
diff -r --no-dereference "$T/s/nix/store" "$T/out/nix/store" >"$T/diff" 2>&1 ||
	t_fail "contents differ: $(head -c 600 "$T/diff")"
listing() { # path type mode(0777: rdump drops setuid when it chowns) uid gid size target
	(cd "$1" && find . -mindepth 1 \( -type d -printf '%P d %m %U %G\n' \) -o \
		\( ! -type d -printf '%P %y %m %U %G %s %l\n' \) | LC_ALL=C sort)
}
# the input with the modes Nix gives a store path (docs/root-image.md): 0555
# where the owner could execute, else 0444, no set-id or sticky bits
cp -a "$T/s/nix/store" "$T/canon"
find "$T/canon" ! -type l -perm -u+x -exec chmod 0555 {} +
find "$T/canon" ! -type l ! -perm -u+x -exec chmod 0444 {} +
listing "$T/canon" | sed 's/ [0-9]*[0-7]\([0-7][0-7][0-7]\) 0 0/ \1 0 0/' >"$T/in.lst"
chmod -R u+w "$T/canon"
listing "$T/out/nix/store" | sed 's/ [0-9]*[0-7]\([0-7][0-7][0-7]\) 0 0/ \1 0 0/' >"$T/out.lst"
cmp -s "$T/in.lst" "$T/out.lst" || t_fail "listing differs: $(diff "$T/in.lst" "$T/out.lst" | head -5)"
[ "$(wc -l <"$T/in.lst")" -gt 10200 ] || t_fail "listing too short"
[ "$(ls "$T/out/nix/store/2ccccccccccccccccccccccccccccccc-many" | wc -l)" = 10000 ] ||
	t_fail "10,000-entry directory"
# the big directory is hash-indexed (e2fsck above checked the index)
debugfs -R "htree $S/2ccccccccccccccccccccccccccccccc-many" "$T/r.img" 2>/dev/null >"$T/htree"
grep -q 'Number of entries (count): [1-9][0-9]' "$T/htree" || t_fail "no htree: $(head -c 300 "$T/htree")"
# exact mode bits from the inodes themselves: set-id and sticky bits dropped,
# no write bits, r-x where the owner could execute
debugfs -R "ls -p $A" "$T/r.img" 2>/dev/null >"$T/ls"
for mm in 4755:0555 2755:0555 1777:0555 0600:0444 0444:0444 0000:0444 7777:0555; do
	m=${mm%:*} want=${mm#*:}
	grep -qa "/10$want/0/0/mode-$m/10/" "$T/ls" || t_fail "mode $m: $(grep -a mode-$m "$T/ls")"
done
# ... said once, naming the first such entry in canonical order
"$MKVMIMAGE" --root "$T/s" -o "$T/w.img" "$T/s/closure-info" 2>"$T/warn" || t_fail "build (warnings)"
[ "$(grep -c 'warning: .*set-user-ID, set-group-ID or sticky bits dropped' "$T/warn")" = 1 ] ||
	t_fail "no single set-id warning: $(cat "$T/warn")"
grep -q "dropped from 4 entries (first: $A/mode-1777)" "$T/warn" || t_fail "warning: $(cat "$T/warn")"
cmp -s "$T/r.img" "$T/w.img" || t_fail "-q changed the image"
rm -f "$T/w.img" "$T/w.img.json"

# the NixOS layout
for d in nix/var/nix/db nix/var/nix/gcroots nix/var/nix/profiles boot etc lost+found; do
	[ -d "$T/out/$d" ] || t_fail "/$d missing"
done
[ -z "$(ls -A "$T/out/etc")" ] || t_fail "/etc not empty"
cmp -s "$T/out/nix-path-registration" "$T/s/closure-info/registration" ||
	t_fail "/nix-path-registration"
[ "$(readlink "$T/out/nix/var/nix/profiles/system")" = system-1-link ] || t_fail "system link"
[ "$(readlink "$T/out/nix/var/nix/profiles/system-1-link")" = "$Y" ] || t_fail "system-1-link"
debugfs -R "ls -p /nix" "$T/r.img" 2>/dev/null | grep -qa '/041775/0/0/store/' ||
	t_fail "/nix/store mode"
# hard links: dereferenced by default, kept with --keep-hardlinks
ino() { debugfs -R "stat $1" "$2" 2>/dev/null | sed -n 's/^Inode: \([0-9]*\).*/\1/p'; }
[ "$(ino "$A/bin/hello" "$T/r.img")" != "$(ino "$A/bin/hello-hardlink" "$T/r.img")" ] ||
	t_fail "hard link kept by default"
"$MKVMIMAGE" -q --keep-hardlinks --root "$T/s" -o "$T/h.img" "$T/s/closure-info" ||
	t_fail "build --keep-hardlinks"
e2fsck -fn "$T/h.img" >"$T/fsck" 2>&1 || t_fail "e2fsck (hard links): $(cat "$T/fsck")"
[ "$(ino "$A/bin/hello" "$T/h.img")" = "$(ino "$A/bin/hello-hardlink" "$T/h.img")" ] ||
	t_fail "hard link not kept"
debugfs -R "stat $A/bin/hello" "$T/h.img" 2>/dev/null | grep -q 'Links: 2' || t_fail "link count"

# qcow2 holds the same file system as raw
"$MKVMIMAGE" -q --root "$T/s" -o "$T/r.qcow2" "$T/s/closure-info" || t_fail "qcow2 build"
qemu-img check "$T/r.qcow2" >/dev/null 2>&1 || t_fail "qemu-img check"
qemu-img compare -f raw -F qcow2 "$T/r.img" "$T/r.qcow2" >/dev/null || t_fail "qcow2 != raw"

# a sparse file over 4 GiB: its two data ranges are where they belong
B=$S/5bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-big
mkdir -p "$T/b$B"
printf 'start' | dd of="$T/b$B/big" bs=1 conv=notrunc status=none
printf 'end' | dd of="$T/b$B/big" bs=1M seek=4097 conv=notrunc status=none
# and blocks of zeros inside a file, between data (allocated, never holes)
{ head -c 5000 /dev/urandom; head -c 12288 /dev/zero; head -c 7000 /dev/urandom; } >"$T/b$B/zeros-inside"
echo "$B" >"$T/b/closure"
"$MKVMIMAGE" -q --root "$T/b" -o "$T/big.img" "$T/b/closure" || t_fail "big build"
e2fsck -fn "$T/big.img" >"$T/fsck" 2>&1 || t_fail "e2fsck (big): $(cat "$T/fsck")"
debugfs -R "stat $B/big" "$T/big.img" 2>/dev/null | grep -q 'Size: 4296015875' || t_fail "big size"
for lb in 0 1048832; do
	pb=$(debugfs -R "bmap $B/big $lb" "$T/big.img" 2>/dev/null)
	[ "$pb" -gt 0 ] 2>/dev/null || t_fail "block $lb of the big file not mapped"
	dd if="$T/b$B/big" bs=4096 skip=$lb count=1 status=none >"$T/want"
	dd if="$T/big.img" bs=4096 skip="$pb" count=1 status=none >"$T/got"
	[ -s "$T/want" ] && cmp -s -n "$(stat -c %s "$T/want")" "$T/want" "$T/got" ||
		t_fail "big file block $lb"
done
[ "$(du -k "$T/big.img" | cut -f1)" -lt 200000 ] || t_fail "big image not sparse"
# as a planned qcow2 (the data copied straight into the writer, the host
# file's holes skipped): the raw image's bytes, and no 4 GiB of zeros
"$MKVMIMAGE" -q --root "$T/b" -o "$T/big.qcow2" "$T/b/closure" || t_fail "big qcow2 build"
qemu-img check "$T/big.qcow2" >/dev/null 2>&1 || t_fail "qemu-img check (big)"
qemu-img compare -f raw -F qcow2 "$T/big.img" "$T/big.qcow2" >/dev/null || t_fail "big qcow2 != raw"
[ "$(du -k "$T/big.qcow2" | cut -f1)" -lt 200000 ] || t_fail "big qcow2 not sparse"
debugfs -R "cat $B/zeros-inside" "$T/big.img" 2>/dev/null | cmp -s - "$T/b$B/zeros-inside" ||
	t_fail "a file with zeros inside differs"
t_pass
