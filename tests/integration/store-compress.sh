#!/usr/bin/env bash
# store-compress.sh -- mkvmimage --store-image --compress-fs: fsck.erofs (a
# program we did not write; Debian's 1.5, and 1.8 when bench/out has it)
# checks every image and extracts it, and the extracted tree must equal the
# input: files around every block and pcluster boundary, compressible,
# incompressible and mixed data, runs of zeros, files over the 4 MiB segment
# a compressing thread takes. The image is smaller than the uncompressed
# one, the same from a directory, a tar file and a shuffled tar pipe, and
# --verity on top verifies with veritysetup.
. "$SRCDIR/tests/lib.sh"
t_begin store-compress
t_need fsck.erofs tar python3 jq

S=$T/root/nix/store
A=$S/0123456789abcdfghijklmnpqrsvwxyz-a
B=$S/zyxwvsrqpnmlkjihgfdcba9876543210-b
mkdir -p "$A/text" "$A/rand" "$A/mix" "$B/deep/er"
python3 - "$A" <<'PY'
import os, random, sys
d = sys.argv[1]
rnd = random.Random(14)
words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(500)]
def text(n):
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(words) + (b"\n" if rnd.random() < 0.1 else b" ")
    return bytes(out[:n])
sizes = [0, 1, 100, 4095, 4096, 4097, 8191, 8192, 8193, 12288, 65536, 131071, 131073, 1 << 20]
big = [(4 << 20) - 1, (4 << 20) + 1, (8 << 20) + 12345]  # one, two and three segments
for s in sizes + big:
    open(f"{d}/text/t{s}", "wb").write(text(s))
for s in sizes + [(4 << 20) + 1]:
    open(f"{d}/rand/r{s}", "wb").write(rnd.randbytes(s))
# mixed: alternating random and text runs; zeros; a file that is mostly zeros
m = bytearray()
for i in range(40):
    m += rnd.randbytes(rnd.randint(100, 9000)) if i % 2 else text(rnd.randint(100, 20000))
open(f"{d}/mix/mixed", "wb").write(m)
open(f"{d}/mix/zeros", "wb").write(bytes(1 << 20))
open(f"{d}/mix/sparse", "wb").write(bytes(1 << 20) + text(5000) + bytes(700000))
for i in range(300):
    open(f"{d}/mix/small{i:03d}", "wb").write(text(rnd.randint(0, 20000)))
PY
ln -s text/t4096 "$A/link"
echo b >"$B/deep/er/b"
chmod 0555 "$A/text/t8192"

check() { # check IMAGE: fsck.erofs (each version we have) + extraction = the tree
	local fsck
	for fsck in fsck.erofs ${FSCK18:-}; do
		"$fsck" "$1" >"$T/fsck.out" 2>&1 || t_fail "$fsck $1: $(tail -5 "$T/fsck.out")"
		rm -rf "$T/x"
		"$fsck" --extract="$T/x" "$1" >"$T/fsck.out" 2>&1 ||
			t_fail "$fsck --extract $1: $(tail -5 "$T/fsck.out")"
		diff -r --no-dereference "$S" "$T/x" >"$T/diff" || t_fail "$fsck: extracted tree of $1 differs: $(head -5 "$T/diff")"
		[ "$(stat -c %a "$T/x/0123456789abcdfghijklmnpqrsvwxyz-a/text/t8192")" = 555 ] ||
			t_fail "mode lost"
	done
}
FSCK18=
for f in "$SRCDIR/bench/out/erofs-utils/bin/fsck.erofs"; do [ -x "$f" ] && FSCK18=$f; done
[ -n "$FSCK18" ] || echo "note: no erofs-utils 1.8 in bench/out (bench/setup-erofs-utils.sh): checking with $(fsck.erofs -V 2>&1 | head -1) only"

printf '%s\n' /nix/store/0123456789abcdfghijklmnpqrsvwxyz-a /nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-b >"$T/closure"
"$MKVMIMAGE" -q --store-image --root "$T/root" -o "$T/plain.img" "$T/closure" || t_fail "uncompressed build"
for alg in lz4 lz4hc lz4hc:12; do
	"$MKVMIMAGE" -q --store-image --compress-fs "$alg" --root "$T/root" -o "$T/$alg.img" "$T/closure" ||
		t_fail "build --compress-fs $alg"
	check "$T/$alg.img"
	[ "$(stat -c %s "$T/$alg.img")" -lt "$(stat -c %s "$T/plain.img")" ] || t_fail "$alg: not smaller"
	[ "$(jq -r .partitions[0].fs_compression "$T/$alg.img.json")" = "$([ $alg = lz4hc ] && echo lz4hc:9 || echo $alg)" ] ||
		t_fail "$alg: manifest fs_compression is $(jq -r .partitions[0].fs_compression "$T/$alg.img.json")"
	[ "$(jq -r .sha256 "$T/$alg.img.json")" = "$(sha256sum <"$T/$alg.img" | cut -d' ' -f1)" ] ||
		t_fail "$alg: the manifest's sha256 is not the file's"
	echo "$alg: $(stat -c %s "$T/$alg.img") bytes (uncompressed $(stat -c %s "$T/plain.img"))"
done
# lz4hc:12 is no larger than lz4
[ "$(stat -c %s "$T/lz4hc:12.img")" -le "$(stat -c %s "$T/lz4.img")" ] || t_fail "lz4hc:12 larger than lz4"

# the same bytes from a tar file and from a shuffled tar on a pipe
(cd "$T/root" && tar --sort=name -cf "$T/in.tar" nix/store)
(cd "$T/root" && find nix/store | shuf --random-source=<(yes 3) | tar --no-recursion -T - -cf "$T/shuf.tar")
"$MKVMIMAGE" -q --store-image --compress-fs lz4hc --tar "$T/in.tar" -o "$T/tar.img" || t_fail "build from a tar file"
"$MKVMIMAGE" -q --store-image --compress-fs lz4hc --tar - -o "$T/pipe.img" <"$T/shuf.tar" || t_fail "build from a pipe"
cmp "$T/lz4hc.img" "$T/tar.img" || t_fail "tar file gives other bytes"
cmp "$T/lz4hc.img" "$T/pipe.img" || t_fail "shuffled tar pipe gives other bytes"

# with --verity: the tree follows the compressed file system
if command -v veritysetup >/dev/null; then
	"$MKVMIMAGE" -q --store-image --compress-fs lz4 --verity --root "$T/root" -o "$T/v.img" "$T/closure" ||
		t_fail "build --compress-fs --verity"
	M=$T/v.img.json
	HOFF=$(jq -r .partitions[0].verity.hash_offset "$M")
	[ "$HOFF" = "$(stat -c %s "$T/lz4.img")" ] || t_fail "hash offset $HOFF is not the compressed size"
	cmp -n "$HOFF" "$T/lz4.img" "$T/v.img" || t_fail "--verity changed the compressed file system"
	veritysetup verify "$T/v.img" "$T/v.img" "$(jq -r .partitions[0].verity.root_hash "$M")" \
		--hash-offset="$HOFF" || t_fail "veritysetup verify"
else
	echo "note: veritysetup not installed: --verity with --compress-fs not checked"
fi

# Files that compression would make bigger stay plain, and the image is
# never larger than the uncompressed one: a file of many segments saving no
# block (noise), and one saving a block whose indexes take two (8 KiB of
# zeros before 32 MiB of noise). Both once failed the build ("the device
# holds ... needed").
N=$T/noise/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-noise
mkdir -p "$N"
python3 - "$N" <<'PY'
import random, sys
rnd = random.Random(20)
open(f"{sys.argv[1]}/noise", "wb").write(rnd.randbytes((8 << 20) + 5))
open(f"{sys.argv[1]}/head", "wb").write(bytes(8192) + rnd.randbytes(32 << 20))
open(f"{sys.argv[1]}/text", "wb").write(b"compressible " * 2000)
PY
echo /nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-noise >"$T/noise.closure"
"$MKVMIMAGE" -q --store-image --root "$T/noise" -o "$T/noise-plain.img" "$T/noise.closure" ||
	t_fail "noise: uncompressed build"
for alg in lz4 lz4hc; do
	"$MKVMIMAGE" -q --store-image --compress-fs $alg --root "$T/noise" -o "$T/noise-$alg.img" \
		"$T/noise.closure" || t_fail "noise: build --compress-fs $alg"
	[ "$(stat -c %s "$T/noise-$alg.img")" -le "$(stat -c %s "$T/noise-plain.img")" ] ||
		t_fail "noise: --compress-fs $alg made the image larger"
	rm -rf "$T/x"
	fsck.erofs --extract="$T/x" "$T/noise-$alg.img" >"$T/fsck.out" 2>&1 ||
		t_fail "noise: fsck.erofs --extract: $(tail -5 "$T/fsck.out")"
	diff -r "$T/noise/nix/store" "$T/x" >/dev/null || t_fail "noise: extracted tree differs"
	[ "$(jq -r .sha256 "$T/noise-$alg.img.json")" = "$(sha256sum <"$T/noise-$alg.img" | cut -d' ' -f1)" ] ||
		t_fail "noise: the manifest's sha256 is not the file's"
done

# refusals
t_expect_exit 2 "$MKVMIMAGE" -q --store-image --compress-fs zstd --root "$T/root" -o "$T/x.img" "$T/closure"
t_expect_exit 2 "$MKVMIMAGE" -q --store-image --compress-fs lz4hc:13 --root "$T/root" -o "$T/x.img" "$T/closure"
t_expect_exit 2 "$MKVMIMAGE" -q --store-image --compress-fs lz4 --root "$T/root" -o "$T/x.qcow2" "$T/closure"
t_expect_exit 2 "$MKVMIMAGE" -q --compress-fs lz4 --root "$T/root" -o "$T/x.img" "$T/closure"
gzip -1 -c "$T/in.tar" >"$T/in.tar.gz"
t_expect_exit 1 "$MKVMIMAGE" -q --store-image --compress-fs lz4 --tar "$T/in.tar.gz" -o "$T/x.img"
grep -q "compressed tar" "$T/stderr" || t_fail "message: $(cat "$T/stderr")"
[ ! -e "$T/x.img" ] && [ ! -e "$T/x.qcow2" ] || t_fail "partial output left behind"
t_pass
