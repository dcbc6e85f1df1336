#!/usr/bin/env bash
# store-repro.sh -- two store-image builds that differ in wall clock, TMPDIR,
# umask, working directory, locale and tar entry order give the same bytes,
# raw and qcow2; SOURCE_DATE_EPOCH and --seed change exactly what they should.
. "$SRCDIR/tests/lib.sh"
t_begin store-repro
t_need tar shuf

S=$T/root/nix/store
A=$S/0123456789abcdfghijklmnpqrsvwxyz-a
mkdir -p "$A/d1/d2" "$S/zyxwvsrqpnmlkjihgfdcba9876543210-b"
for i in $(seq 1 200); do head -c $((i * 37)) /dev/urandom >"$A/d1/f$i"; done
echo x >"$A/d1/d2/y"
ln -s d1/f1 "$A/l"
echo b >"$S/zyxwvsrqpnmlkjihgfdcba9876543210-b/b"

build() { # name, shuffle seed, extra args
	local name=$1 seed=$2
	shift 2
	(cd "$T/root" && find nix/store | shuf --random-source=<(yes "$seed") |
		tar --no-recursion -T - -cf -) >"$T/$name.tar"
	${MK:-} "$MKVMIMAGE" -q --store-image --tar "$T/$name.tar" -o "$T/$name.img" "$@" || t_fail "build $name"
	${MK:-} "$MKVMIMAGE" -q --store-image --tar - -o "$T/$name.qcow2" "$@" <"$T/$name.tar" || t_fail "build $name.qcow2"
}
mkdir -p "$T/tmp1" "$T/tmp2" "$T/cwd"
(umask 022; export TMPDIR=$T/tmp1 LC_ALL=C; build one 1)
sleep 1.1
# The second run also sees another wall clock (faketime, when installed).
FT=()
# (not with a sanitizer build: libfaketime cannot be preloaded before ASan)
faketime -f '+3y' "$MKVMIMAGE" --version >/dev/null 2>&1 && FT=(faketime -f '+3y')
(umask 077; export TMPDIR=$T/tmp2 LC_ALL=C.UTF-8; cd "$T/cwd"; MK="${FT[*]}" build two 2)
cmp -s "$T/one.tar" "$T/two.tar" && t_fail "the two tars have the same entry order"
cmp "$T/one.img" "$T/two.img" || t_fail "raw images differ"
cmp "$T/one.qcow2" "$T/two.qcow2" || t_fail "qcow2 images differ"
[ -z "$(ls -A "$T/tmp1" "$T/tmp2" | grep -v :)" ] || t_fail "something was written to TMPDIR"
ls -A "$T" | grep -q stage && t_fail "staging file left behind"

# The epoch is the superblock time (offset 1024 + 0x18); the seed moves the UUID (1024 + 0x30).
(export SOURCE_DATE_EPOCH=1700000000; build three 1)
[ "$(od -An -tu8 -j $((1024 + 24)) -N8 "$T/three.img" | tr -d ' ')" = 1700000000 ] ||
	t_fail "build time is not SOURCE_DATE_EPOCH"
build four 1 --seed other
# (the checksum at 1024 + 4 covers the UUID, so it moves too)
cmp -s <(head -c 1028 "$T/one.img") <(head -c 1028 "$T/four.img") || t_fail "--seed changed bytes before the checksum"
cmp -s <(tail -c +1033 "$T/one.img" | head -c 40) <(tail -c +1033 "$T/four.img" | head -c 40) ||
	t_fail "--seed changed superblock fields before the UUID"
cmp -s <(od -An -tx1 -j 1072 -N16 "$T/one.img") <(od -An -tx1 -j 1072 -N16 "$T/four.img") &&
	t_fail "--seed did not change the UUID"
t_pass
