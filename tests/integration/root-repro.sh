#!/usr/bin/env bash
# root-repro.sh -- the ext4 root is bit-identical across builds that differ in
# wall clock, working directory, TMPDIR, umask, closure line order (and
# duplicates) and input mtimes; raw and qcow2. A different SOURCE_DATE_EPOCH
# or seed does change it (the comparison can fail).
. "$SRCDIR/tests/lib.sh"
t_begin root-repro
t_need python3 e2fsck dumpe2fs

"$SRCDIR/fixtures/closures/make-test-store.sh" "$T/s" --many 300 || t_fail "test store"
sp=$T/s/closure-info/store-paths
mkdir -p "$T/ci2" "$T/w1" "$T/w2" "$T/tmp1" "$T/tmp2"
# reversed, with a duplicate line, and the same registration
{ tac "$sp"; head -1 "$sp"; } >"$T/ci2/store-paths"
cp "$T/s/closure-info/registration" "$T/ci2/registration"

# another wall clock for the second build, where libfaketime can be preloaded
# (not into a sanitizer build)
FT=0
faketime '2035-06-07 08:09:10' "$MKVMIMAGE" --version >/dev/null 2>&1 && FT=1
build() { # dir tmpdir umask closure output [faketime]
	(
		cd "$1" && umask "$3" && export TMPDIR="$2" SOURCE_DATE_EPOCH=1 &&
			if [ -n "${6:-}" ] && [ "$FT" = 1 ]; then
				faketime "$6" "$MKVMIMAGE" -q --root "$T/s" -o "$5" "$4"
			else
				"$MKVMIMAGE" -q --root "$T/s" -o "$5" "$4"
			fi
	) || t_fail "build $5"
}
for fmt in img qcow2; do
	build "$T/w1" "$T/tmp1" 022 "$T/s/closure-info" "$T/a.$fmt"
done
# change every input mtime (and atime), then build again elsewhere
find "$T/s/nix/store" -exec touch -h -d '2001-02-03 04:05:06' {} +
for fmt in img qcow2; do
	build "$T/w2" "$T/tmp2" 077 "$T/ci2" "$T/b.$fmt" '2035-06-07 08:09:10'
done
cmp "$T/a.img" "$T/b.img" || t_fail "raw images differ"
cmp "$T/a.qcow2" "$T/b.qcow2" || t_fail "qcow2 images differ"
# the comparison can fail: another epoch gives other bytes
(cd "$T/w1" && SOURCE_DATE_EPOCH=1000 "$MKVMIMAGE" -q --root "$T/s" -o "$T/c.img" "$T/s/closure-info") ||
	t_fail "build c"
cmp -s "$T/a.img" "$T/c.img" && t_fail "SOURCE_DATE_EPOCH does not change the image"
# --empty too
(cd "$T/w1" && "$MKVMIMAGE" -q --empty --size 64M -o "$T/e1.img") || t_fail "empty 1"
(cd "$T/w2" && umask 077 && TMPDIR="$T/tmp2" "$MKVMIMAGE" -q --empty --size 64M -o "$T/e2.img") ||
	t_fail "empty 2"
cmp "$T/e1.img" "$T/e2.img" || t_fail "empty images differ"
for f in a.img c.img e1.img; do
	e2fsck -fn "$T/$f" >"$T/fsck" 2>&1 || t_fail "e2fsck $f: $(cat "$T/fsck")"
done
dumpe2fs -h "$T/e1.img" 2>/dev/null | grep -q '^Block count: *16384$' || t_fail "--empty size"
t_pass
