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
t_skip() {
	echo "SKIP: $*" >&2
	exit 77
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
