#!/usr/bin/env bash
# store-policy.sh -- what a Nix store holds, the same for a closure on disk
# and a tar of it (issue 17.6, 17.11): modes as Nix canonicalises them (0555
# where the owner could execute, else 0444; set-id and sticky bits dropped
# with one warning naming the first entry), `~nix~case~hack~N` removed from
# names and from symlink targets, a hacked name meeting its plain twin
# refused, device nodes, FIFOs and sockets refused by name. Checked with
# fsck.erofs --extract (erofs-utils) and debugfs (e2fsprogs).
. "$SRCDIR/tests/lib.sh"
t_begin store-policy
t_need fsck.erofs debugfs tar python3

S=$T/root/nix/store
A=$S/0123456789abcdfghijklmnpqrsvwxyz-case
mkdir -p "$A/dir~nix~case~hack~2/sub" "$A/bin"
printf 'upper\n' >"$A/Readme"
printf 'lower\n' >"$A/readme~nix~case~hack~1"
printf 'in a hacked dir\n' >"$A/dir~nix~case~hack~2/sub/f"
printf '#!/bin/sh\n' >"$A/bin/tool"
ln -s "readme~nix~case~hack~1" "$A/link-to-hacked"
ln -s "../dir~nix~case~hack~2/sub/f" "$A/bin/deep-link"
ln -s "/nix/store/${A##*/}/readme~nix~case~hack~1" "$A/abs-link"
chmod 4755 "$A/bin/tool"
chmod 0777 "$A/Readme"
chmod 2750 "$A/dir~nix~case~hack~2"
chmod 0600 "$A/dir~nix~case~hack~2/sub/f"
echo "/nix/store/${A##*/}" >"$T/closure"
(cd "$T/root" && tar -cf "$T/s.tar" nix/store)

"$MKVMIMAGE" --store-image --root "$T/root" "$T/closure" -o "$T/dir.img" 2>"$T/dir.err" ||
	t_fail "directory build: $(cat "$T/dir.err")"
"$MKVMIMAGE" --store-image --tar "$T/s.tar" -o "$T/tar.img" 2>"$T/tar.err" ||
	t_fail "tar build: $(cat "$T/tar.err")"
cmp "$T/dir.img" "$T/tar.img" || t_fail "directory and tar input give different images"
for e in dir tar; do
	[ "$(grep -c 'set-user-ID, set-group-ID or sticky bits dropped from 2 entries' "$T/$e.err")" = 1 ] ||
		t_fail "$e: set-id warning: $(cat "$T/$e.err")"
	grep -q "(first: /nix/store/${A##*/}/bin/tool)" "$T/$e.err" || t_fail "$e: first entry: $(cat "$T/$e.err")"
done
fsck.erofs "$T/dir.img" >/dev/null || t_fail "fsck.erofs"
fsck.erofs --extract="$T/x" "$T/dir.img" >/dev/null || t_fail "fsck.erofs --extract"
X=$T/x/${A##*/}
(cd "$X" && find . -printf '%y %m %P -> %l\n' | LC_ALL=C sort) >"$T/got"
cat >"$T/want" <<'LIST'
d 555 bin -> 
d 555 dir -> 
d 555 dir/sub -> 
d 555  -> 
f 444 dir/sub/f -> 
f 444 readme -> 
f 555 Readme -> 
f 555 bin/tool -> 
l 777 abs-link -> /nix/store/0123456789abcdfghijklmnpqrsvwxyz-case/readme
l 777 bin/deep-link -> ../dir/sub/f
l 777 link-to-hacked -> readme
LIST
LC_ALL=C sort -o "$T/want" "$T/want"
diff "$T/want" "$T/got" >"$T/diff" || t_fail "extracted tree: $(cat "$T/diff")"
[ "$(cat "$X/link-to-hacked")" = lower ] || t_fail "link to a hacked name dangles"
[ "$(cat "$X/bin/deep-link")" = "in a hacked dir" ] || t_fail "link through a hacked dir dangles"

# the root file system holds the same
"$MKVMIMAGE" -q --root "$T/root" "$T/closure" -o "$T/r.img" || t_fail "root build"
"$MKVMIMAGE" -q --tar "$T/s.tar" -o "$T/rt.img" || t_fail "root tar build"
cmp "$T/r.img" "$T/rt.img" || t_fail "root: directory and tar input differ"
P=/nix/store/${A##*/}
debugfs -R "ls -p $P" "$T/r.img" 2>/dev/null >"$T/ls"
for want in /100444/0/0/readme/ /100555/0/0/Readme/ /040555/0/0/dir/ /120777/0/0/link-to-hacked/; do
	grep -qF "$want" "$T/ls" || t_fail "root: no $want in $(cat "$T/ls")"
done
debugfs -R "stat $P/link-to-hacked" "$T/r.img" 2>/dev/null | grep -q 'Fast link dest: "readme"' ||
	t_fail "root: link target not stripped"

# a hacked name beside its plain twin: which one wins must not depend on
# readdir or entry order: refused, naming both
printf 'twin\n' >"$A/readme"
t_expect_exit 1 "$MKVMIMAGE" -q --store-image --root "$T/root" "$T/closure" -o "$T/no.img"
grep -q "readme~nix~case~hack~1: becomes .*/readme without its case hack suffix" "$T/stderr" ||
	t_fail "directory twin: $(cat "$T/stderr")"
(cd "$T/root" && tar -cf "$T/twin.tar" nix/store/*/readme nix/store/*/readme~nix~case~hack~1)
t_expect_exit 1 "$MKVMIMAGE" -q --store-image --tar "$T/twin.tar" -o "$T/no.img"
grep -q "entry '.*readme~nix~case~hack~1' becomes '.*/readme' without its case hack suffix" "$T/stderr" ||
	t_fail "tar twin: $(cat "$T/stderr")"
rm "$A/readme"

# a FIFO and a socket in a closure on disk: refused by name
mkfifo "$A/pipe"
t_expect_exit 1 "$MKVMIMAGE" -q --store-image --root "$T/root" "$T/closure" -o "$T/no.img"
grep -q "$P/pipe is a FIFO; a Nix store holds only" "$T/stderr" || t_fail "fifo: $(cat "$T/stderr")"
rm "$A/pipe"
(cd "$A" && python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("sock")') || t_fail "socket"
t_expect_exit 1 "$MKVMIMAGE" -q --root "$T/root" "$T/closure" -o "$T/no.img"
grep -q "$P/sock is a socket; a Nix store holds only" "$T/stderr" || t_fail "socket: $(cat "$T/stderr")"
[ ! -e "$T/no.img" ] && [ -z "$(find "$T" -name '.no.img*')" ] || t_fail "output left behind"
t_pass
