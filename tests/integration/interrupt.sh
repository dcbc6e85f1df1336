#!/usr/bin/env bash
# interrupt.sh -- a build stopped from outside (issue 17.12, #11):
#  - SIGINT/SIGTERM at random points always end with the cleanup and the
#    "interrupted" message (exit 1, nothing left), never with the deadline's
#    SIGALRM (exit 142), or the build finished first (exit 0, a valid image);
#  - SIGKILL leaves the temporaries; the next build of that name names them
#    and removes those that are provably ours and unowned, and nothing else:
#    not a look-alike without our marker, not a symlink (nor what it points
#    at), not one with another link, not one a live process holds.
. "$SRCDIR/tests/lib.sh"
t_begin interrupt
t_need fsck.erofs python3 sha256sum flock

P=$T/root/nix/store/0123456789abcdfghijklmnpqrsvwxyz-med
mkdir -p "$P" "$T/out"
for i in 1 2 3; do head -c 40M /dev/urandom >"$P/big$i"; done
for i in $(seq 1 2000); do echo "$i" >"$P/s$i"; done
echo "/nix/store/${P##*/}" >"$T/closure"
O=$T/out/s.img
build() { "$MKVMIMAGE" --store-image --root "$T/root" "$T/closure" -o "$O" "$@"; }
# in the background: exec, so that $! is mkvmimage itself, not a subshell
bg_build() { (exec "$MKVMIMAGE" --store-image --root "$T/root" "$T/closure" -o "$O" "$@") & }

# 1. signals at random points
RANDOM=17
for i in $(seq 1 10); do
	sig=$([ $((i % 2)) = 0 ] && echo INT || echo TERM)
	delay=$(printf "0.%03d" $((RANDOM % 700 + 20)))
	bg_build 2>"$T/err"
	pid=$!
	# counted from the first temporary: before it, the handlers may not be
	# in place yet on a loaded host (the default action would kill it)
	for _ in $(seq 1 500); do
		[ -n "$(find "$T/out" -name '.s.img.tmp-*')" ] || ! kill -0 "$pid" 2>/dev/null && break
		sleep 0.01
	done
	sleep "$delay"
	kill -"$sig" "$pid" 2>/dev/null
	rc=0
	wait "$pid" || rc=$?
	case $rc in
	0) fsck.erofs "$O" >/dev/null || t_fail "run $i ($sig at ${delay}s): exit 0 but fsck.erofs fails" ;;
	1) grep -qx 'mkvmimage: interrupted; nothing written' "$T/err" ||
		t_fail "run $i ($sig at ${delay}s): exit 1 but: $(cat "$T/err")"
	   [ ! -e "$O" ] || t_fail "run $i: output left after an interruption" ;;
	*) t_fail "run $i ($sig at ${delay}s): exit $rc: $(cat "$T/err")" ;;
	esac
	left=$(find "$T/out" -name '.*tmp-*')
	[ -z "$left" ] || t_fail "run $i ($sig at ${delay}s): left $left"
	rm -f "$O" "$O.json"
done

# 1b. a tar on a pipe that stalls: the read is interrupted, the build ends
# at once with its cleanup and message (it used to wait for the deadline and
# die of SIGALRM, exit 142)
(cd "$T/root" && tar -cf "$T/s.tar" nix/store)
mkfifo "$T/fifo"
(exec "$MKVMIMAGE" --store-image --tar - -o "$O" <"$T/fifo" 2>"$T/err") &
pid=$!
{ head -c 1048576 "$T/s.tar"; sleep 4; } >"$T/fifo" &
feeder=$!
# the handlers are in place before the temporaries exist: wait for them, so
# that a loaded host does not see SIGTERM before the build can catch it
for _ in $(seq 1 500); do
	[ -n "$(find "$T/out" -name '.s.img.tmp-*')" ] && break
	sleep 0.01
done
[ -n "$(find "$T/out" -name '.s.img.tmp-*')" ] || t_fail "stalled pipe: the build made no temporary in 5 s"
sleep 0.2
t0=$(date +%s%N)
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
t1=$(date +%s%N)
kill "$feeder" 2>/dev/null
wait "$feeder" 2>/dev/null
[ "$rc" = 1 ] && grep -qx 'mkvmimage: interrupted; nothing written' "$T/err" ||
	t_fail "stalled pipe: exit $rc: $(cat "$T/err")"
[ $(((t1 - t0) / 1000000)) -lt 1500 ] || t_fail "stalled pipe: took $(((t1 - t0) / 1000000)) ms to stop"
[ -z "$(find "$T/out" -name '.*tmp-*')" ] && [ ! -e "$O" ] || t_fail "stalled pipe: left $(ls -A "$T/out")"

# 2. SIGKILL while both temporaries exist
bg_build -q 2>/dev/null
pid=$!
for _ in $(seq 1 400); do
	[ -n "$(find "$T/out" -name '.s.img.tmp-*' -size +1M)" ] && break
	sleep 0.01
done
kill -KILL "$pid"
wait "$pid" 2>/dev/null
img=$(find "$T/out" -name '.s.img.tmp-*')
man=$(find "$T/out" -name '.s.img.json.tmp-*')
[ -n "$img" ] && [ -n "$man" ] || t_fail "SIGKILL left no temporaries ($(ls -A "$T/out"))"

# look-alikes that are not ours to remove, and a decoy a symlink points at
echo secret >"$T/decoy"
: >"$T/out/.s.img.tmp-AAAAAA"                      # no marker
ln -s "$T/decoy" "$T/out/.s.img.tmp-BBBBBB"         # a symlink
python3 - "$T/out" "$T" <<'PY' || t_fail "making look-alikes"
import os, sys
out, t = sys.argv[1], sys.argv[2]
for name in ("CCCCCC", "DDDDDD"):
    p = os.path.join(out, ".s.img.tmp-" + name)
    open(p, "w").close()
    os.setxattr(p, "user.libimg.tmp", b"libimg-tmp-v1 pid=1")
os.link(os.path.join(out, ".s.img.tmp-CCCCCC"), os.path.join(t, "other-link"))
PY
# DDDDDD is held by a live process, as a running build holds its own
(exec 9<"$T/out/.s.img.tmp-DDDDDD" && flock 9 && exec sleep 60) >/dev/null 2>&1 &
holder=$!
sleep 0.2
sum() { (cd "$T" && sha256sum decoy other-link && ls -A out | LC_ALL=C sort); }
# the killed build's own temporaries are left out (their random names may
# begin with A to D as well: only the four look-alikes are kept)
keep() { awk '/\.s\.img(\.json)?\.tmp-/ && !/\.s\.img\.tmp-(AAAAAA|BBBBBB|CCCCCC|DDDDDD)$/ { next } { print }'; }
sum | keep >"$T/before"

build 2>"$T/err" || t_fail "build after SIGKILL: $(cat "$T/err")"
for w in 'AAAAAA: .*not removed: it carries no libimg marker' 'BBBBBB: .*not removed: a symlink' \
	'CCCCCC: .*not removed: it has other links' 'DDDDDD: .*not removed: a running build holds it' \
	"${img##*/}: removed a temporary" "${man##*/}: removed a temporary"; do
	grep -q "warning: .*$w" "$T/err" || t_fail "no warning /$w/: $(cat "$T/err")"
done
kill "$holder"
wait "$holder" 2>/dev/null
fsck.erofs "$O" >/dev/null || t_fail "fsck.erofs after the stale cleanup"
# -q keeps warnings out; run once more to see the words, with nothing left to remove
for f in "$img" "$man"; do
	[ ! -e "$f" ] || t_fail "stale $f not removed"
done
sum | keep | grep -v "^s.img" >"$T/after"
grep -v "^s.img" "$T/before" | cmp -s - "$T/after" || t_fail "a look-alike or the decoy changed: $(diff "$T/before" "$T/after")"
[ "$(cat "$T/decoy")" = secret ] || t_fail "the decoy changed"

# the words: a fresh SIGKILL, then a build that is not quiet
rm -f "$O" "$O.json"
bg_build -q 2>/dev/null
pid=$!
for _ in $(seq 1 400); do
	[ -n "$(find "$T/out" -name '.s.img.tmp-*' ! -name '*AAAAAA' ! -name '*BBBBBB' ! -name '*CCCCCC' ! -name '*DDDDDD' -size +1M)" ] && break
	sleep 0.01
done
kill -KILL "$pid"
wait "$pid" 2>/dev/null
build 2>"$T/err" || t_fail "build after the second SIGKILL: $(cat "$T/err")"
grep -q "warning: .*/\.s\.img\.tmp-[A-Za-z0-9]\{6\}: removed a temporary ([0-9]* bytes) left by an earlier build (pid $pid)" "$T/err" ||
	t_fail "no removal message: $(cat "$T/err")"
grep -q "warning: .*/\.s\.img\.json\.tmp-[A-Za-z0-9]\{6\}: removed a temporary" "$T/err" ||
	t_fail "no removal message for the manifest: $(cat "$T/err")"
# the look-alike with our marker and no live holder any more was ours to
# remove (by the quiet build killed above, which looked first)
[ ! -e "$T/out/.s.img.tmp-DDDDDD" ] || t_fail "DDDDDD, marked and unowned, not removed"
[ -z "$(find "$T/out" -name '.s.img*tmp-*' ! -name '*AAAAAA' ! -name '*BBBBBB' ! -name '*CCCCCC')" ] ||
	t_fail "left: $(ls -A "$T/out")"
t_pass
