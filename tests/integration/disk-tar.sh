#!/usr/bin/env bash
# disk-tar.sh -- partitioned disks (--efi, --efi --uki, --hybrid, --bios)
# from a tar stream (--tar): an uncompressed tar file, a pipe, a gzip file, a
# gzip pipe, a pipe with the entries shuffled (files before their
# directories) and a tar without a closure file all give the same bytes, raw
# and qcow2, as the closure on disk. The boot files (kernel and initrd behind
# the toplevel's store symlinks, systemd-boot, the UKI stub, kernel-params)
# come from the tar: the tar builds get an empty --root and a TMPDIR that
# does not exist. Checked with sgdisk -v, fsck.fat -n, e2fsck -fn and the
# kernel copied out with mcopy. A tar missing the kernel, or whose kernel
# link leads outside the store, fails naming the path and leaves nothing.
. "$SRCDIR/tests/lib.sh"
t_begin disk-tar
t_need sgdisk sfdisk fsck.fat mcopy e2fsck python3 gzip tar cmp
. "$SRCDIR/tests/integration/disk-lib.sh"
disk_store "$T"
R=$T/root
STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
[ -r "$STUB" ] || t_skip "no $STUB"
# the UKI stub from the closure (so, with --tar, from the tar)
cp "$STUB" "$R$B/lib/systemd/boot/efi/linuxx64.efi.stub"
mkdir "$T/empty" "$T/out"

(cd "$R" && tar -cf "$T/s.tar" nix) || t_fail "tar"
gzip -c "$T/s.tar" >"$T/s.tar.gz" || t_fail "gzip"
python3 - "$T/s.tar" "$T/shuf.tar" <<'PY' || t_fail "shuffled tar"
import random, sys, tarfile
src = tarfile.open(sys.argv[1])
members = src.getmembers()
random.Random(7).shuffle(members)
members.sort(key=lambda m: not m.isfile())  # files before any directory
with tarfile.open(sys.argv[2], "w", format=tarfile.GNU_FORMAT) as out:
    for m in members:
        out.addfile(m, src.extractfile(m) if m.isfile() else None)
PY

tb() { # out mode-args...: a tar build, nothing from the host's store, no TMPDIR
	local o=$1
	shift
	TMPDIR=/nonexistent "$MKVMIMAGE" -q --root "$T/empty" "$@" -o "$o"
}
for mode in efi "efi --uki" hybrid bios; do
	tag=${mode// /}
	# shellcheck disable=SC2086
	for fmt in img qcow2; do
		d=$T/out/disk-$tag.$fmt
		"$MKVMIMAGE" -q --$mode --root "$R" -o "$d" "$T/closure" || t_fail "--$mode disk build"
		tb "$T/out/file-$tag.$fmt" --$mode --tar "$T/s.tar" "$T/closure" || t_fail "--$mode tar file"
		cat "$T/s.tar" | tb "$T/out/pipe-$tag.$fmt" --$mode --tar - "$T/closure" ||
			t_fail "--$mode pipe"
		tb "$T/out/gz-$tag.$fmt" --$mode --tar "$T/s.tar.gz" "$T/closure" || t_fail "--$mode gz file"
		cat "$T/s.tar.gz" | tb "$T/out/gzpipe-$tag.$fmt" --$mode --tar - "$T/closure" ||
			t_fail "--$mode gz pipe"
		cat "$T/shuf.tar" | tb "$T/out/shuf-$tag.$fmt" --$mode --tar - "$T/closure" ||
			t_fail "--$mode shuffled pipe"
		tb "$T/out/noclosure-$tag.$fmt" --$mode --tar "$T/s.tar" || t_fail "--$mode no closure"
		for k in file pipe gz gzpipe shuf noclosure; do
			cmp "$d" "$T/out/$k-$tag.$fmt" || t_fail "--$mode $fmt: $k differs from the disk build"
			diff <(grep -v '"image"' "$d.json") <(grep -v '"image"' "$T/out/$k-$tag.$fmt.json") ||
				t_fail "--$mode $fmt: $k manifest differs"
		done
	done
done
ls -A "$T/empty" | grep -q . && t_fail "something was written under --root"

# Programs we did not write, on images built from the tar.
for tag in efi efi--uki hybrid; do
	img=$T/out/gzpipe-$tag.img
	sgdisk -v "$img" >"$T/sgdisk" 2>&1 || t_fail "sgdisk -v $tag: $(cat "$T/sgdisk")"
	grep -q "No problems found" "$T/sgdisk" || t_fail "sgdisk $tag: $(cat "$T/sgdisk")"
	n=1
	[ "$tag" = hybrid ] && n=2
	disk_part "$img" "$n" "$T/esp"
	fsck.fat -n "$T/esp" >"$T/fsck" 2>&1 || t_fail "fsck.fat $tag: $(cat "$T/fsck")"
	disk_part "$img" $((n + 1)) "$T/rootfs"
	e2fsck -fn "$T/rootfs" >"$T/e2fsck" 2>&1 || t_fail "e2fsck $tag: $(cat "$T/e2fsck")"
done
export MTOOLS_SKIP_CHECK=1
img=$T/out/shuf-efi.img
off=$(disk_json "$img.json" 'm["partitions"][0]["offset"]')
mcopy -n -i "$img@@$off" "::/EFI/nixos/${K#$S/}-bzImage.efi" "$T/kernel" || t_fail "mcopy kernel"
cmp "$R$K/bzImage" "$T/kernel" || t_fail "the kernel on the ESP is not the input's"
mcopy -n -i "$img@@$off" "::/EFI/nixos/${I#$S/}-initrd.efi" "$T/initrd" || t_fail "mcopy initrd"
cmp "$R$I/initrd" "$T/initrd" || t_fail "the initrd on the ESP is not the input's"
mcopy -n -i "$img@@$off" ::/EFI/BOOT/BOOTX64.EFI "$T/sdboot" || t_fail "mcopy systemd-boot"
cmp "$R$B/lib/systemd/boot/efi/systemd-bootx64.efi" "$T/sdboot" || t_fail "systemd-boot"
mcopy -n -i "$img@@$off" ::/loader/entries/nixos-generation-1.conf "$T/entry" || t_fail "entry"
grep -qx "options init=$Y/init console=ttyS0 loglevel=4" "$T/entry" || t_fail "entry: $(cat "$T/entry")"
disk_part "$T/out/pipe-bios.img" 1 "$T/rootfs"
e2fsck -fn "$T/rootfs" >"$T/e2fsck" 2>&1 || t_fail "e2fsck bios: $(cat "$T/e2fsck")"
[ "$(disk_json "$T/out/pipe-bios.img.json" 'm["kernel_params"]')" = "console=ttyS0 loglevel=4" ] ||
	t_fail "bios manifest kernel params"

# Bad input: the kernel's package missing from the tar, the kernel link
# leading outside the store; a file and a pipe. Exit 1, the path named,
# nothing left behind.
(cd "$R" && tar -cf "$T/nok.tar" --exclude="nix/store/${K#$S/}" nix) || t_fail "tar without kernel"
t_expect_exit 1 tb "$T/x.img" --efi --tar "$T/nok.tar" "$T/closure"
grep -qF "$K/bzImage: not in the tar stream $T/nok.tar ($Y/kernel leads there)" "$T/stderr" ||
	t_fail "missing kernel message: $(cat "$T/stderr")"
ln -sfn /boot/vmlinuz "$R$Y/kernel"
(cd "$R" && tar -cf "$T/out.tar" nix) || t_fail "tar with an outside link"
t_expect_exit 1 tb "$T/x.img" --efi --uki --tar - "$T/closure" <"$T/out.tar"
grep -qF "/boot/vmlinuz: outside the store, so not in the tar stream on stdin" "$T/stderr" ||
	t_fail "outside link message: $(cat "$T/stderr")"
got=0
cat "$T/out.tar" | tb "$T/x.qcow2" --hybrid --tar - "$T/closure" 2>"$T/stderr" || got=$?
[ "$got" = 1 ] || t_fail "pipe with an outside link: exit $got"
grep -qF "/boot/vmlinuz: outside the store" "$T/stderr" || t_fail "pipe: $(cat "$T/stderr")"
[ -z "$(ls "$T" | grep -E '^x\.|\.tmp-')" ] || t_fail "output left after an error: $(ls "$T")"
t_pass
