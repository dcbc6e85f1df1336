#!/usr/bin/env bash
# output-not-input.sh -- the output and the manifest are never one of the
# inputs, nor the manifest the image (issue 17.5, 17.7): every such call exits
# 2 naming both, and every input is byte-for-byte what it was, with no
# temporary left beside it.
. "$SRCDIR/tests/lib.sh"
t_begin output-not-input
t_need tar sha256sum

S=$T/root/nix/store
P=$S/0123456789abcdfghijklmnpqrsvwxyz-hello
mkdir -p "$P/bin" "$T/ci" "$T/grub" "$T/work"
printf '#!/bin/sh\necho hi\n' >"$P/bin/hello"
echo "/nix/store/${P##*/}" >"$T/closure"
cp "$T/closure" "$T/ci/store-paths"
printf '/nix/store/%s\nsha256:%s\n0\n\n0\n' "${P##*/}" "$(printf '0%.0s' $(seq 52))" \
	>"$T/ci/registration"
(cd "$T/root" && tar -cf "$T/in.tar" nix/store)
head -c 512 /dev/zero >"$T/grub/boot.img"
head -c 1024 /dev/zero >"$T/grub/core.img"
printf 'MZ stub' >"$T/stub.efi"
printf 'MZ boot' >"$T/boot.efi"
ln -s "$T/in.tar" "$T/link.tar"
ln "$T/in.tar" "$T/hard.tar"
snapshot() { # everything but the output directory and the test's own files
	(cd "$T" && find . \( -path ./work -o -name 'std*' -o -name 'snap.*' \) -prune -o -print0 |
		LC_ALL=C sort -z | xargs -0 sha256sum 2>/dev/null
	find . \( -path ./work -o -name 'std*' -o -name 'snap.*' \) -prune -o -printf '%p %y %i\n' |
		LC_ALL=C sort)
}
snapshot >"$T/snap.before"

refused() { # pattern mkvmimage-args...
	local pat=$1
	shift
	t_expect_exit 2 "$MKVMIMAGE" -q "$@"
	grep -qE -- "$pat" "$T/stderr" || t_fail "$*: message '$(cat "$T/stderr")' does not match /$pat/"
}
M=--store-image
refused 'is the closure' $M --root "$T/root" -o "$T/closure" "$T/closure"
refused "is the closure's store-paths" $M --root "$T/root" -o "$T/ci/store-paths" "$T/ci"
refused "is the closure's registration" --root "$T/root" -o "$T/ci/registration" "$T/ci"
refused 'is the --tar input' $M --tar "$T/in.tar" -o "$T/in.tar"
refused 'is the --tar input' $M --tar "$T/link.tar" -o "$T/in.tar"
refused 'is the --tar input' $M --tar "$T/in.tar" -o "$T/hard.tar"
refused 'is the --tar input' $M --tar "$T/in.tar" "$T/closure" -o "$T/work/x.img" --manifest "$T/in.tar"
refused "is --grub's core.img" --bios --root "$T/root" --grub "$T/grub" -o "$T/grub/core.img" "$T/closure"
refused "is --grub's boot.img" --bios --root "$T/root" --grub "$T/grub" -o "$T/work/x.img" \
	--manifest "$T/grub/boot.img" "$T/closure"
refused 'is the --uki-stub file' --efi --root "$T/root" --uki-stub "$T/stub.efi" -o "$T/stub.efi" "$T/closure"
refused 'is the --bootloader file' --efi --root "$T/root" --bootloader "$T/boot.efi" -o "$T/boot.efi" "$T/closure"
# the manifest named like the image, existing or not, by another spelling too
refused 'is the output image' $M --tar "$T/in.tar" -o "$T/work/x.img" --manifest "$T/work/x.img"
refused 'is the output image' $M --tar "$T/in.tar" -o "$T/work/x.img" --manifest "$T/work/../work/./x.img"
: >"$T/work/y.img"
refused 'is the output image' $M --tar "$T/in.tar" -o "$T/work/y.img" --manifest "$T/work/../work/y.img"
rm "$T/work/y.img"

snapshot >"$T/snap.after"
cmp -s "$T/snap.before" "$T/snap.after" || t_fail "an input changed: $(diff "$T/snap.before" "$T/snap.after" | head -5)"
[ -z "$(ls -A "$T/work")" ] || t_fail "left in the output directory: $(ls -A "$T/work")"
[ -z "$(find "$T" -name '.*.tmp-*')" ] || t_fail "temporary left: $(find "$T" -name '.*.tmp-*')"

# a symlink as the output name is replaced, not written through: allowed
ln -s "$T/in.tar" "$T/work/out.img"
"$MKVMIMAGE" -q $M --tar "$T/in.tar" -o "$T/work/out.img" || t_fail "output over a symlink"
[ ! -L "$T/work/out.img" ] || t_fail "the output is still the symlink"
snapshot >"$T/snap.after"
cmp -s "$T/snap.before" "$T/snap.after" || t_fail "an input changed through a symlinked output"
t_pass
