#!/usr/bin/env bash
# root-bad.sh -- every bad closure in fixtures/closures/bad (and the generated
# ones below) is refused: exit 1, a message naming file:line, no output file.
. "$SRCDIR/tests/lib.sh"
t_begin root-bad

F=$SRCDIR/fixtures/closures/bad
H=0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
mkdir -p "$T/root/nix/store/$H-files-1.0" "$T/root/nix/store/1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-names"

check() { # closure line what
	local c=$1 line=$2 what=$3 where
	t_expect_exit 1 "$MKVMIMAGE" -q --root "$T/root" -o "$T/out.img" "$c"
	[ ! -e "$T/out.img" ] || t_fail "$c: output written"
	ls -A "$T" | grep -q '\.tmp' && t_fail "$c: temporary left behind"
	where=$c
	[ -n "$line" ] && where="$c:$line:"
	grep -qF -- "$where" "$T/stderr" || t_fail "$c: message does not name $where: $(cat "$T/stderr")"
	grep -qF -- "$what" "$T/stderr" || t_fail "$c: message lacks '$what': $(cat "$T/stderr")"
}

n=0
while IFS='|' read -r file line what; do
	case "$file" in '#'* | '') continue ;; esac
	check "$F/$file" "$line" "$what"
	n=$((n + 1))
done <"$F/cases"
[ "$n" -ge 10 ] || t_fail "only $n cases read"

# a line of 1 MB
python3 -c 'print("/nix/store/" + "a" * (1 << 20))' >"$T/long.txt"
check "$T/long.txt" 1 "too long"
# a directory where a file is expected: store-paths in a closureInfo directory
mkdir -p "$T/ci/store-paths"
check "$T/ci" "" "is a directory"
# a closureInfo directory without store-paths, a closure that does not exist
mkdir -p "$T/ci2"
check "$T/ci2" "" "no store-paths"
check "$T/nonexistent.txt" "" "No such file"
# the same on standard input names <stdin>
t_expect_exit 1 "$MKVMIMAGE" -q --root "$T/root" -o "$T/out.img" - <"$F/nested.txt"
grep -qF '<stdin>:3:' "$T/stderr" || t_fail "stdin: $(cat "$T/stderr")"
[ ! -e "$T/out.img" ] || t_fail "stdin: output written"
# --size too small: a clear error, nothing written
printf '/nix/store/%s-files-1.0\n' $H >"$T/ok.txt"
head -c 30000000 /dev/zero >"$T/root/nix/store/$H-files-1.0/blob"
t_expect_exit 1 "$MKVMIMAGE" -q --root "$T/root" --size 20M -o "$T/out.img" "$T/ok.txt"
grep -q 'too small' "$T/stderr" || t_fail "--size too small: $(cat "$T/stderr")"
[ ! -e "$T/out.img" ] || t_fail "--size too small: output written"
# and the good closure works
"$MKVMIMAGE" -q --root "$T/root" -o "$T/out.img" "$T/ok.txt" || t_fail "good closure"
t_pass
