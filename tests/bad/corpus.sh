#!/usr/bin/env bash
# corpus.sh -- the bad-input corpus (issue 7): every fixtures/bad/*.case runs
# one tool on one hostile input and must fail cleanly: the expected exit
# status, a message on stderr matching the case's pattern (which names the
# input), no raw control byte on stderr (input bytes come back escaped), no
# output file, no temporary left behind, no sanitizer report.
#
# A case file holds `key: value` lines:
#   tool:   mkvmimage | vmlaunch
#   args:   the arguments; @GEN@ = generated inputs (fixtures/bad/gen.py),
#           @OUT@ = the output path the tool must not leave behind, @CR@ = a
#           carriage return (a control byte word splitting keeps)
#   expect: an extended regular expression stderr must match (empty: stderr
#           must be empty)
#   reject: an extended regular expression stderr must NOT match (what must
#           never be quoted, such as a secret a symlinked input points at)
#   exit:   the expected status (default 1)
#   stdin:  a file (under @GEN@) fed on standard input
# Run with CASES="name ..." to run a subset.
. "$SRCDIR/tests/lib.sh"
t_begin bad-corpus

GEN="$T/gen"
python3 "$SRCDIR/fixtures/bad/gen.py" "$GEN" || t_fail "gen.py failed"
failed=0
ran=0
skipped=0
for case in "$SRCDIR"/fixtures/bad/*.case; do
	name=$(basename "$case" .case)
	if [ -n "${CASES:-}" ] && ! grep -qw "$name" <<<"$CASES"; then
		continue
	fi
	tool=$(sed -n 's/^tool: *//p' "$case")
	args=$(sed -n 's/^args: *//p' "$case")
	expect=$(sed -n 's/^expect: *//p' "$case")
	reject=$(sed -n 's/^reject: *//p' "$case")
	want=$(sed -n 's/^exit: *//p' "$case")
	stdin=$(sed -n 's/^stdin: *//p' "$case")
	want=${want:-1}
	out="$T/out/$name/image.img"
	rm -rf "$T/out/$name"
	mkdir -p "$T/out/$name"
	args=${args//@GEN@/$GEN}
	args=${args//@OUT@/$out}
	args=${args//@CR@/$'\r'}
	stdin=${stdin//@GEN@/$GEN}
	case $tool in
	mkvmimage) bin=$MKVMIMAGE ;;
	vmlaunch) bin=$VMLAUNCH ;;
	*) t_fail "$name: unknown tool '$tool'" ;;
	esac
	# Word splitting of args is intended: case files hold no spaces in paths.
	got=0
	# shellcheck disable=SC2086
	if [ -n "$stdin" ]; then
		timeout 120 "$bin" $args <"$stdin" >"$T/out/$name/stdout" 2>"$T/out/$name/stderr" || got=$?
	else
		timeout 120 "$bin" $args </dev/null >"$T/out/$name/stdout" 2>"$T/out/$name/stderr" || got=$?
	fi
	err=$(head -c 2000 "$T/out/$name/stderr")
	ran=$((ran + 1))
	problem=
	[ "$got" = "$want" ] || problem="exit $got, wanted $want"
	if [ -n "$expect" ]; then
		grep -qE -- "$expect" "$T/out/$name/stderr" || problem="${problem:+$problem; }stderr does not match /$expect/"
	elif [ -s "$T/out/$name/stderr" ]; then
		problem="${problem:+$problem; }unexpected message"
	fi
	grep -qE 'Sanitizer|runtime error:' "$T/out/$name/stderr" && problem="${problem:+$problem; }sanitizer report"
	if [ -n "$reject" ] && grep -qE -- "$reject" "$T/out/$name/stderr"; then
		problem="${problem:+$problem; }stderr matches /$reject/, which must not be shown"
	fi
	# every byte a terminal would act on (C0 but newline, DEL) must be escaped
	LC_ALL=C grep -q $'[\x01-\x09\x0b-\x1f\x7f]' "$T/out/$name/stderr" &&
		problem="${problem:+$problem; }raw control byte on stderr"
	if [ "$want" != 0 ]; then
		[ ! -e "$out" ] || problem="${problem:+$problem; }output left behind"
		[ ! -e "$out.json" ] || problem="${problem:+$problem; }manifest left behind"
	fi
	leftovers=$(find "$T/out/$name" -name '.*.tmp-*' | head -3)
	[ -z "$leftovers" ] || problem="${problem:+$problem; }temporary left: $leftovers"
	if [ -n "$problem" ]; then
		echo "FAIL $name: $problem"
		echo "     stderr: $err"
		failed=$((failed + 1))
	else
		echo "ok   $name: ${err%%$'\n'*}"
	fi
done
echo "$((ran - failed - skipped)) passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ] || t_fail "$failed bad-input cases misbehaved"
[ "$ran" -gt 0 ] || t_fail "no case ran"
t_pass
