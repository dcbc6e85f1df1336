#!/usr/bin/env bash
# make-closure.sh -- generate a benchmark closure (>= 500 MB) from installed files.
#
# Usage: bench/make-closure.sh --root DIR [--min-mb N]
# (N above what the fixed list gives adds bigger directories in a fixed
# order until the closure reaches N MB.)
#
# Copies a fixed list of installed directories (headers, docs, locales, a Python
# and a Perl library, GCC's back ends: a mix of many small files, symlinks and
# some large binaries) into fake store paths DIR/nix/store/<hash>-<name>, where
# <hash> is 32 nix-base32 characters derived from <name> (so the names are the
# same on every run), and writes DIR/store-paths (the closure, one store path a
# line, sorted) and DIR/registration (a closureInfo-style stub). Then
# `mkvmimage --root DIR DIR/store-paths` reads it.
#
# Deterministic for a given machine: the same sources, the same names, files
# copied with their modes. Re-running on a finished DIR does nothing (the
# marker DIR/.complete); a half-made DIR is removed and rebuilt.
set -euo pipefail

root= min_mb=500
while [ $# -gt 0 ]; do
	case "$1" in
	--root) root=$2; shift 2 ;;
	--min-mb) min_mb=$2; shift 2 ;;
	-h|--help) sed -n '2,16p' "$0"; exit 0 ;;
	*) echo "make-closure.sh: unknown argument '$1'" >&2; exit 2 ;;
	esac
done
[ -n "$root" ] || { echo "make-closure.sh: --root DIR is required" >&2; exit 2; }

if [ -e "$root/.complete" ]; then
	echo "make-closure.sh: $root is already complete ($(cat "$root/.complete"))"
	exit 0
fi
rm -rf "$root"
mkdir -p "$root/nix/store"

# name -> source directory, in a fixed order. Missing sources are skipped;
# the total is checked at the end.
sources=(
	"include-headers-1.0:/usr/include"
	"share-doc-1.0:/usr/share/doc"
	"locale-data-1.0:/usr/share/locale"
	"python3-lib-3.11:/usr/lib/python3.11"
	"perl-lib-5.36:/usr/share/perl"
	"gcc-libexec-12:/usr/lib/gcc"
	"i18n-data-1.0:/usr/share/i18n"
	"zoneinfo-1.0:/usr/share/zoneinfo"
)
# Taken in this order, only while the closure is still below --min-mb (the
# 2 GiB runs of bench/onepass.sh): big libraries and binaries, as a desktop
# closure holds them.
extra=(
	"multiarch-libs-1.0:/usr/lib/x86_64-linux-gnu"
	"openjdk-17:/usr/lib/jvm"
	"llvm-14:/usr/lib/llvm-14"
	"kernel-modules-1.0:/usr/lib/modules"
	"share-misc-1.0:/usr/share/misc"
)

# The 32-character hash part: sha256 of the name, mapped onto the nix-base32
# alphabet (0-9 a-z without e o u t). Not Nix's own hashing: only the shape matters.
store_hash() {
	python3 -c '
import hashlib, sys
a = "0123456789abcdfghijklmnpqrsvwxyz"
d = hashlib.sha256(sys.argv[1].encode()).digest()
print("".join(a[b % 32] for b in d[:32]))' "$1"
}

: >"$root/store-paths.unsorted"
total=0
add() {
	local name=${1%%:*} src=${1#*:} p
	[ -d "$src" ] || { echo "make-closure.sh: skipping missing $src" >&2; return 0; }
	p="/nix/store/$(store_hash "$name")-$name"
	# cp -a keeps modes and symlinks; no reflinks so the data really exists twice.
	cp -a --reflink=never "$src" "$root$p"
	echo "$p" >>"$root/store-paths.unsorted"
	total=$((total + $(du -s --apparent-size -B1 "$root$p" | cut -f1)))
}
for s in "${sources[@]}"; do
	add "$s"
done
for s in "${extra[@]}"; do
	[ $((total >> 20)) -lt "$min_mb" ] || break
	add "$s"
done
LC_ALL=C sort -u "$root/store-paths.unsorted" >"$root/store-paths"
rm -f "$root/store-paths.unsorted"

# A registration in the shape of closureInfo's (path, hash, size, deriver, refs);
# the image only stores it, so placeholder hashes are enough (of the right
# shape: sha256: and 52 nix-base32 characters, as mkvmimage checks).
while read -r p; do
	printf '%s\nsha256:%s%s\n%s\n\n0\n' "$p" "$(store_hash "$p$p")" "$(store_hash "$p" | cut -c1-20)" \
		"$(du -s --apparent-size -B1 "$root$p" | cut -f1)"
done <"$root/store-paths" >"$root/registration"

mb=$(( $(du -s --apparent-size -B1 "$root/nix/store" | cut -f1) >> 20 ))
files=$(find "$root/nix/store" | wc -l)
if [ "$mb" -lt "$min_mb" ]; then
	echo "make-closure.sh: only $mb MB of sources found (need $min_mb)" >&2
	exit 1
fi
echo "$mb MB, $files entries, $(wc -l <"$root/store-paths") store paths" >"$root/.complete"
echo "make-closure.sh: $root: $(cat "$root/.complete")"
