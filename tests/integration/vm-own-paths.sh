# vm-own-paths.sh -- vmlaunch never changes what it did not create (#11):
# TMPDIR, an existing --state-dir, the directories of NIX_DISK_IMAGE /
# NIX_EFI_VARS / NIX_SWTPM_DIR, the working directory and IMAGE keep their
# mode and owner (and, where vmlaunch puts nothing, their mtime), whether
# the VM ends normally, by SIGTERM or SIGKILL of vmlaunch, or the start
# fails. What vmlaunch makes is 0700/0600. An existing state dir that is
# readable by others is used with one warning; one that others can write,
# that another user owns, or that is a symbolic link is refused (exit 1),
# unchanged. QEMU is fixtures/vm/fake-qemu.sh: no guest is needed here.
. "$SRCDIR/tests/lib.sh"
t_begin vm-own-paths
t_need stat sha256sum
FAKE=$SRCDIR/fixtures/vm/fake-qemu.sh
export TMPDIR=$T/tmp
L=$T/log # what the test itself writes, so that $T keeps its mtime
mkdir -p "$TMPDIR" "$T/img" "$T/cwd" "$L"
chmod 1777 "$TMPDIR"
truncate -s 1M "$T/img/disk.raw"
chmod 0640 "$T/img/disk.raw"
IMG=$T/img/disk.raw
IMG_SUM=$(sha256sum <"$IMG")
PIDF=$L/qemu.pid
V=("$VMLAUNCH" --accel tcg --boot bios --qemu "$FAKE" --stop-timeout 1)

# Firmware for the EFI case: a descriptor naming two small files (fake QEMU
# does not run them).
mkdir -p "$T/fw"
truncate -s 1M "$T/fw/code.fd"
truncate -s 64K "$T/fw/vars.fd"
cat >"$T/fw/60-test.json" <<JSON
{ "interface-types": ["uefi"],
  "mapping": { "device": "flash", "mode": "split",
    "executable": { "filename": "$T/fw/code.fd", "format": "raw" },
    "nvram-template": { "filename": "$T/fw/vars.fd", "format": "raw" } },
  "targets": [ { "architecture": "x86_64", "machines": ["pc-q35-*"] } ],
  "features": [], "tags": [] }
JSON

# full P...: mode, owner and mtime (ns); modeown P...: mode and owner only
# (for a directory vmlaunch legitimately creates entries in).
full() { for p; do stat -c '%n %a %U:%G %y' -- "$p"; done; }
modeown() { for p; do stat -c '%n %a %U:%G' -- "$p"; done; }
alive() { [ -d /proc/"$1" ] && ! grep -q '^State:.*Z' /proc/"$1"/status 2>/dev/null; }

# Always compared: TMPDIR, IMAGE and its directory, the working directory, $T.
global() {
	modeown "$TMPDIR"
	full "$IMG" "$T/img" "$T/cwd"
	sha256sum <"$IMG"
}

# wait_up PID: until fake QEMU runs under vmlaunch PID.
wait_up() {
	for _ in $(seq 300); do
		[ -s "$PIDF" ] && alive "$(cat "$PIDF")" && return 0
		alive "$1" || return 1
		sleep 0.1
	done
	return 1
}

# scenarios LABEL SNAPFN [ENV=VAL...] -- VMLAUNCH-ARGS...: run vmlaunch
# five ways; after each, SNAPFN's output and the global one must not differ.
scenarios() {
	local label=$1 snapfn=$2 before after rc pid
	shift 2
	local envs=()
	while [ "$1" != -- ]; do envs+=("$1"); shift; done
	shift
	before="$($snapfn; global)"
	check() {
		after="$($snapfn; global)"
		[ "$after" = "$before" ] || t_fail "$label/$1 changed:
$(diff <(echo "$before") <(echo "$after"))"
		[ "$IMG_SUM" = "$(sha256sum <"$IMG")" ] || t_fail "$label/$1: IMAGE written"
		if [ "$1" != sigkill ]; then
			[ -z "$(ls -A "$TMPDIR")" ] || t_fail "$label/$1: left in TMPDIR: $(ls -la "$TMPDIR")"
		else
			# A killed vmlaunch cannot clean up: what it left is private.
			for d in "$TMPDIR"/*; do
				[ -e "$d" ] || continue
				[ "$(stat -c %a "$d")" = 700 ] || t_fail "$label/sigkill: $d is not 0700"
			done
			rm -rf "${TMPDIR:?}"/*
		fi
		echo "ok: $label/$1 (${SECONDS}s)"
	}
	(cd "$T/cwd" && env "${envs[@]}" "${V[@]}" --expect "FAKE QEMU UP" --timeout 60 "$@") \
		>"$L/out" 2>&1 || t_fail "$label/expect: exit $? $(cat "$L/out")"
	check expect
	rc=0
	(cd "$T/cwd" && env "${envs[@]}" FAKE_QEMU_EXIT=3 "${V[@]}" --expect NEVER "$@") \
		>"$L/out" 2>&1 || rc=$?
	[ $rc = 1 ] || t_fail "$label/qemu-fails: exit $rc $(cat "$L/out")"
	grep -q "QEMU status 3" "$L/out" || t_fail "$label/qemu-fails: $(cat "$L/out")"
	check qemu-fails
	rc=0
	(cd "$T/cwd" && env "${envs[@]}" "${V[@]}" --qemu "$T/no-such-qemu" "$@") \
		>"$L/out" 2>&1 || rc=$?
	[ $rc = 1 ] && grep -q "cannot run" "$L/out" || t_fail "$label/no-qemu: exit $rc $(cat "$L/out")"
	check no-qemu
	for sig in TERM KILL; do
		rm -f "$PIDF"
		(cd "$T/cwd" && exec env "${envs[@]}" FAKE_QEMU_PIDFILE="$PIDF" "${V[@]}" "$@") \
			>"$L/out" 2>&1 </dev/null &
		pid=$!
		wait_up $pid || t_fail "$label/sig$sig: fake QEMU did not start: $(cat "$L/out")"
		kill -$sig $pid
		wait $pid 2>/dev/null
		for _ in $(seq 50); do alive "$(cat "$PIDF")" || break; sleep 0.1; done
		alive "$(cat "$PIDF")" && t_fail "$label/sig$sig: QEMU left running"
		check "sig${sig,,}"
	done
}

# 1. TMPDIR (1777) for --ephemeral; its parent untouched.
A() { full "$T"; }
scenarios tmpdir A -- --ephemeral "$IMG"

# 2. An existing --state-dir of ours, readable by others: one warning, used,
# its mode kept; its parent untouched.
mkdir -p "$T/b/state"
chmod 0750 "$T/b/state"
B() { full "$T/b"; modeown "$T/b/state"; }
scenarios state-dir B -- --state-dir "$T/b/state" "$IMG"
"${V[@]}" --state-dir "$T/b/state" --expect "FAKE QEMU UP" "$IMG" >"$L/out" 2>&1 ||
	t_fail "state-dir warning run: $(cat "$L/out")"
[ "$(grep -c "readable by others" "$L/out")" = 1 ] || t_fail "no single warning: $(cat "$L/out")"
for f in disk.qcow2 disk.qcow2.base-id console.log; do
	[ "$(stat -c %a "$T/b/state/$f")" = 600 ] || t_fail "$f is not 0600"
done
echo "ok: readable state dir: one warning"

# 3. The directory of NIX_DISK_IMAGE (1777, a shared place).
mkdir -p "$T/c/nd"
chmod 1777 "$T/c/nd"
C() { full "$T/c"; modeown "$T/c/nd"; }
scenarios nix-disk-image C NIX_DISK_IMAGE="$T/c/nd/x.qcow2" -- --state-dir "$T/c-state" "$IMG"
[ "$(stat -c %a "$T/c/nd/x.qcow2")" = 600 ] || t_fail "NIX_DISK_IMAGE overlay is not 0600"

# 4. The directory of NIX_EFI_VARS.
mkdir -p "$T/e/ne"
chmod 1777 "$T/e/ne"
E() { full "$T/e"; modeown "$T/e/ne"; }
scenarios nix-efi-vars E NIX_EFI_VARS="$T/e/ne/vars.fd" -- --boot efi --firmware-dir "$T/fw" \
	--state-dir "$T/e-state" "$IMG"
[ "$(stat -c %a "$T/e/ne/vars.fd")" = 600 ] || t_fail "NIX_EFI_VARS copy is not 0600"

# 5. The directory of NIX_SWTPM_DIR (needs swtpm: it must make its socket).
if t_can "NIX_SWTPM_DIR" cmd:swtpm; then
	mkdir -p "$T/s/nsp"
	chmod 1777 "$T/s/nsp"
	S() { full "$T/s"; modeown "$T/s/nsp"; }
	scenarios nix-swtpm-dir S NIX_SWTPM_DIR="$T/s/nsp/tpm" -- --tpm --state-dir "$T/s-state" "$IMG"
	[ "$(stat -c %a "$T/s/nsp/tpm")" = 700 ] || t_fail "NIX_SWTPM_DIR is not 0700"
fi

# 6. The working directory: nothing is made there (vmlaunch runs in $T/cwd,
# compared by global with its mtime), nor beside it.
mkdir "$T/f"
F() { full "$T"; }
scenarios cwd F -- --state-dir "$T/f/state" "$IMG"

# 7. State dirs vmlaunch must refuse, left as they were: writable by the
# group or by others, owned by another user, a symbolic link.
refuse() {
	local dir=$1 needle=$2 before
	before=$(full "$dir"; global)
	t_expect_exit 1 "${V[@]}" --state-dir "$dir" "$IMG"
	grep -qF -- "$needle" "$T/stderr" || t_fail "$dir: stderr lacks '$needle': $(cat "$T/stderr")"
	[ "$(full "$dir"; global)" = "$before" ] || t_fail "$dir changed by a refused start"
	[ -z "$(ls -A "$dir/")" ] || t_fail "$dir: files made by a refused start: $(ls -A "$dir/")"
	echo "ok: refused: $needle"
}
mkdir -m 0777 "$T/ww" "$T/gw"
chmod 0777 "$T/ww"
chmod 0770 "$T/gw"
refuse "$T/ww" "is writable by others (mode 0777)"
refuse "$T/gw" "is writable by its group (mode 0770)"
if [ "$(id -u)" = 0 ]; then
	mkdir -m 0700 "$T/foreign"
	chown nobody "$T/foreign"
	refuse "$T/foreign" "is owned by uid $(id -u nobody), not by you"
else
	t_skip_env "a state dir of another user" "chown needs root"
fi
mkdir -m 0700 "$T/real"
ln -s "$T/real" "$T/link"
refuse "$T/link" "is a symbolic link"
[ -z "$(ls -A "$T/real")" ] || t_fail "a symlinked state dir was filled"
t_pass
