# lib.sh -- shared by the shell tests. Source it, then call t_begin NAME.
set -u
: "${MKVMIMAGE:?}" "${SRCDIR:?}"
PATH="$PATH:/usr/sbin:/sbin"

t_begin() {
	T="${TEST_TMP:-/tmp}/$1.$$"
	rm -rf "$T"
	mkdir -p "$T"
	trap 't_cleanup' EXIT
}
t_cleanup() {
	[ -n "${T_KEEP:-}" ] || rm -rf "$T"
}
t_fail() {
	echo "FAIL: $*" >&2
	T_KEEP=1
	exit 1
}
# Skips are never silent: each says "SKIPPED: <test>: <reason>" on stderr and
# is recorded in $BUILDDIR/skipped.log, which scripts/test.sh reads (it fails
# on any skip: CI's scripts/setup.sh installs everything the tests need).
T_NAME=$(basename "$0" .sh)
t_skip_record() {
	echo "SKIPPED: $T_NAME: $*" >&2
	[ -z "${BUILDDIR:-}" ] || echo "$T_NAME: $*" >>"$BUILDDIR/skipped.log"
}
# t_skip_env WHAT REASON: the check WHAT needs what no package gives (root, a
# device): said and recorded in $BUILDDIR/skipped-env.log, which
# scripts/test.sh lists without failing.
t_skip_env() {
	echo "SKIPPED: $T_NAME: $1: $2 (not a package: allowed)" >&2
	[ -z "${BUILDDIR:-}" ] || echo "$T_NAME: $1: $2" >>"$BUILDDIR/skipped-env.log"
}
# t_skip REASON: the whole test cannot run here (exit 77: CTest says skipped).
t_skip() {
	t_skip_record "$*"
	exit 77
}
# t_can WHAT NEED...: can the check WHAT run here? NEED is cmd:PROGRAM or
# file:PATH (readable). If not, say SKIPPED for that check (the test goes on)
# and return 1: `if t_can "label by blkid" cmd:blkid; then ...; fi`.
t_can() {
	local what=$1 n
	shift
	for n in "$@"; do
		case $n in
		cmd:*) command -v "${n#cmd:}" >/dev/null 2>&1 || {
			t_skip_record "$what: ${n#cmd:} not installed"
			return 1
		} ;;
		file:*) [ -r "${n#file:}" ] || {
			t_skip_record "$what: ${n#file:} missing or unreadable"
			return 1
		} ;;
		*) t_fail "t_can: bad need '$n'" ;;
		esac
	done
}
t_pass() {
	echo "PASS"
	exit 0
}
t_need() {
	for p in "$@"; do
		command -v "$p" >/dev/null 2>&1 || t_skip "$p not installed"
	done
}
# t_expect_exit CODE CMD...: run CMD, stderr to $T/stderr, check its exit code.
t_expect_exit() {
	local want=$1 got=0
	shift
	"$@" 2>"$T/stderr" >"$T/stdout" || got=$?
	[ "$got" = "$want" ] || t_fail "exit $got, wanted $want: $* ($(head -c 500 "$T/stderr"))"
}
