#!/usr/bin/env bash
# store-hostile.sh -- hostile tars (fixtures/tar, made by gen-hostile.py):
# from a file and from a pipe, mkvmimage --store-image exits 1 with a message
# naming the problem and leaves no output (image, manifest, staging file).
. "$SRCDIR/tests/lib.sh"
t_begin store-hostile

F=$SRCDIR/fixtures/tar
check() { # fixture, pattern the message must match
	local f=$F/$1 pat=$2
	[ -f "$f" ] || t_fail "fixture $1 missing"
	t_expect_exit 1 "$MKVMIMAGE" -q --store-image --tar "$f" -o "$T/out/x.img"
	grep -Eqi "$pat" "$T/stderr" || t_fail "$1 (file): message '$(cat "$T/stderr")' lacks /$pat/"
	t_expect_exit 1 bash -c 'cat "$1" | "$2" -q --store-image --tar - -o "$3"' _ "$f" "$MKVMIMAGE" "$T/out/x.img"
	grep -Eqi "$pat" "$T/stderr" || t_fail "$1 (pipe): message '$(cat "$T/stderr")' lacks /$pat/"
	[ -z "$(ls -A "$T/out")" ] || t_fail "$1: left behind: $(ls -A "$T/out")"
}
mkdir -p "$T/out"
check traversal.tar "'\.\.' path component"
check absolute-outside.tar "outside the store"
check relative-outside.tar "outside the store"
check empty-component.tar "empty path component"
check absurd-size.tar "claims 1099511627776 bytes|truncat"
check truncated.tar "truncat"
check truncated.tar.gz "truncat"
check hardlink-missing.tar "hard link to a missing entry"
check corrupt-header.tar "damaged|corrupt|checksum"
check symlink-escape.tar "not a directory"
check long-name.tar "at most 255"
check deep.tar "at most 4095"
check not-a-tar.tar "not a tar stream"
# A symlink loop is only data (links are never followed): accepted, valid.
"$MKVMIMAGE" -q --store-image --tar "$F/symlink-loop.tar" -o "$T/loop.img" || t_fail "symlink loop refused"
if t_can "fsck.erofs on the symlink loop" cmd:fsck.erofs; then
	fsck.erofs "$T/loop.img" >/dev/null || t_fail "fsck.erofs on loop.img"
fi
t_pass
