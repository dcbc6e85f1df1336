# shellcheck shell=bash
# lib-boot.sh -- shared by the boot tests (tests/boot/*.sh). Source it after
# tests/lib.sh and t_begin.
#
# boot_fixture           build (once per build directory) and load the fixture:
#                        sets the variables of fixtures/boot/build.sh's
#                        `expected` file (ROOT, CLOSURE, SYSTEM, KERNEL, ...)
# boot_tool CMD...       run one of our tools (output in $T/tool.out and
#                        $T/tool.err); a failure fails the test with its
#                        exit status and stderr
# boot_efi_image OUT     mkvmimage --efi of the system closure
# boot_store_image OUT   mkvmimage --store-image of the store closure
# boot_root_image OUT    mkvmimage (ext4 root, no partition table)
# boot_vm LOG ARGS...    vmlaunch --ephemeral --accel tcg --serial-log LOG ARGS,
#                        TMPDIR inside the test directory; checks that the
#                        ephemeral state is gone afterwards (boot_state_gone)
# boot_check_marker LOG TPM
#                        the marker line with the fixture's checksums (and
#                        tpm=yes|no) must be in LOG
# boot_no_strays         no process left whose command line names the test
#                        dir (boot_strays lists them)
PATH="$PATH:/usr/sbin:/sbin"
: "${VMLAUNCH:?}" "${BUILDDIR:?}"

boot_fixture() {
	t_need qemu-system-x86_64 cpio busybox python3 flock
	ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 ||
		t_skip "no /boot/vmlinuz-*-cloud-amd64 (linux-image-cloud-amd64 not installed)"
	local fx=$BUILDDIR/fixture-boot
	flock "$BUILDDIR/fixture-boot.lock" bash "$SRCDIR/fixtures/boot/build.sh" "$fx" >/dev/null ||
		t_fail "building the boot fixture"
	# shellcheck disable=SC1091
	. "$fx/expected"
}

boot_tool() {
	local rc=0
	"$@" >"$T/tool.out" 2>"$T/tool.err" || rc=$?
	[ $rc = 0 ] && return 0
	t_fail "exit $rc: $* :: $(head -c 2000 "$T/tool.err")"
}

boot_efi_image() {
	SOURCE_DATE_EPOCH=1 boot_tool "$MKVMIMAGE" --efi --root "$ROOT" -o "$1" "$CLOSURE"
}
boot_store_image() {
	SOURCE_DATE_EPOCH=1 boot_tool "$MKVMIMAGE" --store-image --root "$ROOT" -o "$1" "$CLOSURE_STORE"
}
boot_root_image() {
	SOURCE_DATE_EPOCH=1 boot_tool "$MKVMIMAGE" --root "$ROOT" -o "$1" "$CLOSURE"
}

boot_vm() {
	local log=$1
	shift
	mkdir -p "$T/tmp"
	TMPDIR=$T/tmp boot_tool "$VMLAUNCH" --ephemeral --accel tcg --serial-log "$log" "$@"
	boot_state_gone
}

boot_state_gone() {
	[ -z "$(ls -A "$T/tmp" 2>/dev/null)" ] ||
		t_fail "ephemeral state left behind in TMPDIR: $(ls -A "$T/tmp")"
}

boot_check_marker() {
	local log=$1 tpm=$2
	[ -f "$log" ] || t_fail "no serial log $log"
	local want="LIBIMG-BOOT-OK root=$ROOT_SHA store=$STORE_SHA tpm=$tpm"
	if ! tr -d '\r' <"$log" | grep -qxF "$want"; then
		echo "---- serial log (tail)" >&2
		tail -40 "$log" >&2
		t_fail "marker with the fixture's checksums not found (wanted: $want)"
	fi
}

# boot_strays: PIDs of processes whose command line mentions the test dir
boot_strays() {
	local p
	for p in /proc/[0-9]*; do
		[ "${p#/proc/}" = $$ ] && continue
		{ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF "$T/" && echo "${p#/proc/}"
	done
	return 0
}
boot_no_strays() {
	local s
	s=$(boot_strays)
	[ -z "$s" ] || t_fail "processes left behind: $(for p in $s; do tr '\0' ' ' <"/proc/$p/cmdline"; echo; done)"
}
