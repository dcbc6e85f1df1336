#!/usr/bin/env bash
# golden.sh -- the bytes of every output kind are the ones recorded in
# tests/repro/golden.sha256: a change in how the writers keep their state
# (memory per entry, spilling, write order; docs/memory.md) must not change
# a single byte of what they write. A change meant to alter the output
# regenerates the file with --update and says so in its commit.
#
# Usage: MKVMIMAGE=... SRCDIR=... golden.sh [--update]
# The closure comes from bench/make-many.py (deterministic: the same tree on
# every machine); the bootloader is a stand-in file, so nothing depends on
# the host's packages.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
update=${1:-}
here=$(cd "$(dirname "$0")" && pwd)
golden=$here/golden.sha256
t_begin golden
export SOURCE_DATE_EPOCH=1

python3 "$here/../../bench/make-many.py" --root "$T/c" --paths 3 --files 300 --system \
	--hardlinks 0.05 >/dev/null
printf 'MZ stand-in bootloader, never booted\n' >"$T/boot.efi"

# NAME ARGS...: one build; prints "sha256  NAME".
build() {
	local name=$1
	shift
	"$MKVMIMAGE" -q --no-manifest --root "$T/c" -o "$T/$name" "$@" "$T/c/store-paths"
	(cd "$T" && sha256sum "$name")
	rm -f "$T/$name"
}
{
	build store.img --store-image
	build store.qcow2 --store-image
	build store-lz4.img --store-image --compress-fs lz4hc
	build store-keep.img --store-image --keep-hardlinks
	build store-verity.img --store-image --verity
	build root.img
	build root.qcow2
	build root-keep.img --keep-hardlinks
	build root-zstd.qcow2 --compress zstd
	build efi.img --efi --bootloader "$T/boot.efi"
	build efi.qcow2 --efi --bootloader "$T/boot.efi"
	build bios.img --bios
} >"$T/now.sha256"

if [ "$update" = --update ]; then
	cp "$T/now.sha256" "$golden"
	echo "golden.sh: $golden rewritten"
	exit 0
fi
if ! diff -u "$golden" "$T/now.sha256"; then
	t_fail "output bytes differ from tests/repro/golden.sha256 (above: - recorded, + now)"
fi
echo "PASS golden: $(wc -l <"$golden") outputs byte-identical to the recorded hashes"
