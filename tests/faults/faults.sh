#!/usr/bin/env bash
# faults.sh -- what happens when the world fails mid-build (issue 7, item 3):
# the output file system fills up, an input becomes unreadable, SIGINT or
# SIGTERM arrives. Each time: non-zero exit, a message, no output left, no
# temporary left.
. "$SRCDIR/tests/lib.sh"
t_begin faults
t_need python3 setpriv mkfifo

H=0000000000000000000000000000000
S="$T/root/nix/store"
mkdir -p "$S/a$H-data" "$T/out"
# 24 MiB of incompressible data in one file, plus a few small ones.
python3 -c "import os,sys; sys.stdout.buffer.write(os.urandom(24<<20))" >"$S/a$H-data/blob"
for i in 1 2 3; do echo "small $i" >"$S/a$H-data/f$i"; done
echo "/nix/store/a$H-data" >"$T/closure.txt"

no_leftovers() {
	local left
	left=$(find "$T/out" -mindepth 1 | head -5)
	[ -z "$left" ] || t_fail "$1: left behind: $left"
}

ran=0
for mode in "" --store-image; do
	# 1. The output file system fills up: a file size limit makes every write
	#    past 8 MiB fail (EFBIG), as ENOSPC would.
	got=0
	(ulimit -f 8192; exec "$MKVMIMAGE" $mode --root "$T/root" -o "$T/out/img" "$T/closure.txt") \
		2>"$T/stderr" || got=$?
	ran=$((ran + 1))
	[ "$got" = 1 ] || t_fail "full disk ($mode): exit $got, wanted 1: $(cat "$T/stderr")"
	grep -qiE "too large|no space|File too large" "$T/stderr" ||
		t_fail "full disk ($mode): message does not say why: $(cat "$T/stderr")"
	no_leftovers "full disk ($mode)"

	# 2. An input that cannot be read (run as nobody; root reads anything).
	chmod 000 "$S/a$H-data/f2"
	chmod 777 "$T/out"
	got=0
	setpriv --reuid=65534 --regid=65534 --clear-groups \
		"$MKVMIMAGE" $mode --root "$T/root" -o "$T/out/img" "$T/closure.txt" 2>"$T/stderr" || got=$?
	chmod 644 "$S/a$H-data/f2"
	if [ "$got" = 126 ] || grep -q "Permission denied" "$T/stderr" && ! grep -q f2 "$T/stderr"; then
		echo "note: cannot run the tool as nobody here ($(head -c 200 "$T/stderr")); skipped"
	else
		[ "$got" = 1 ] || t_fail "unreadable input ($mode): exit $got: $(cat "$T/stderr")"
		grep -q "f2" "$T/stderr" || t_fail "unreadable input ($mode): message does not name it: $(cat "$T/stderr")"
		no_leftovers "unreadable input ($mode)"
	fi

	# 3. SIGTERM and SIGINT while the tool waits for its closure on a pipe.
	for sig in TERM INT; do
		rm -f "$T/fifo"
		mkfifo "$T/fifo"
		"$MKVMIMAGE" $mode --root "$T/root" -o "$T/out/img" - <"$T/fifo" 2>"$T/stderr" &
		pid=$!
		exec 9>"$T/fifo"
		echo "/nix/store/a$H-data" >&9
		sleep 0.5
		kill -s $sig $pid
		# It must stop promptly even though the pipe stays open.
		for _ in $(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
		if kill -0 $pid 2>/dev/null; then
			kill -9 $pid
			t_fail "SIG$sig ($mode): still running 5 s after the signal"
		fi
		got=0
		wait $pid || got=$?
		exec 9>&-
		[ "$got" != 0 ] || t_fail "SIG$sig ($mode): exit 0"
		no_leftovers "SIG$sig ($mode)"
	done
done
[ $ran -gt 0 ] || t_fail "no build ran"
t_pass
