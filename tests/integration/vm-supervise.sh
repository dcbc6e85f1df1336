# vm-supervise.sh -- vmlaunch as the parent of QEMU and swtpm: --expect
# (found, timeout, VM stops first), SIGTERM and SIGKILL during a run (VM
# stopped, helpers reaped, ephemeral state gone), QEMU's exit status passed
# on, --print-cmdline and --dry-run creating nothing. No bootable image is
# needed: OVMF on an empty disk prints "BdsDxe" on the serial console.
. "$SRCDIR/tests/lib.sh"
t_begin vm-supervise
t_need qemu-system-x86_64 python3 swtpm
QMP="$SRCDIR/fixtures/vm/qmp.py"
export TMPDIR=$T/tmp
mkdir -p "$TMPDIR"
truncate -s 64M "$T/empty disk.raw"
IMG="$T/empty disk.raw"
V=("$VMLAUNCH" --accel tcg --boot efi --stop-timeout 2)

children() { cat /proc/"$1"/task/*/children 2>/dev/null; }
# Running (a zombie is dead; this container's PID 1 does not reap orphans).
alive() { [ -d /proc/"$1" ] && ! grep -q '^State:.*Z' /proc/"$1"/status 2>/dev/null; }
no_strays() {
	for p in $(pgrep -f "(qemu-system|swtpm).*$T"); do
		alive "$p" && t_fail "$1: left running: $(pgrep -af "$T")"
	done
	[ -z "$(ls -A "$TMPDIR")" ] || t_fail "$1: ephemeral state left: $(ls -A "$TMPDIR")"
	echo "ok: $1"
}

# 1. --expect: text found -> exit 0, VM stopped, state gone. Secure Boot
# firmware (SMM, enrolled keys) with a TPM, so those really run too; the
# TPM state in a directory with a comma (swtpm has no escape for it).
NIX_SWTPM_DIR="$T/sw,tpm" t_expect_exit 0 "${V[@]}" --ephemeral --secure-boot --enrolled-keys --tpm \
	--expect BdsDxe \
	--timeout 120 --serial-log "$T/found.log" "$IMG"
grep -q "firmware: .*secure-enrolled" "$T/stderr" || t_fail "not the enrolled-keys firmware: $(cat "$T/stderr")"
grep -q swtpm "$T/stderr" && t_fail "swtpm did not end cleanly: $(cat "$T/stderr")"
[ -S "$T/sw,tpm/swtpm.ctrl" ] || [ -e "$T/sw,tpm/tpm2-00.permall" ] ||
	t_fail "swtpm kept no state in a directory with a comma: $(ls -A "$T/sw,tpm")"
# plain --secure-boot: the reference's setup mode, firmware without keys
t_expect_exit 0 "${V[@]}" --ephemeral --secure-boot --dry-run "$IMG"
grep -q "chosen by: .*-secure.json" "$T/stdout" || t_fail "not the setup-mode firmware: $(cat "$T/stdout")"
grep -q BdsDxe "$T/found.log" || t_fail "--serial-log lacks the console output"
[ "$(stat -c %a "$T/found.log")" = 600 ] || t_fail "serial log is not 0600"
no_strays "expect found"

# 2. --expect + --timeout: exit 1 naming the log, which is kept in the state dir.
t_expect_exit 1 "${V[@]}" --state-dir "$T/st" --expect "TEXT THAT NEVER APPEARS" --timeout 3 "$IMG"
grep -q "did not appear within 3 s; console log: $T/st/console.log" "$T/stderr" ||
	t_fail "timeout message: $(cat "$T/stderr")"
[ -f "$T/st/console.log" ] || t_fail "console log missing"
no_strays "expect timeout"

# 3. The VM stops before the text appears (here: told to quit over QMP).
"${V[@]}" --state-dir "$T/st-first" --expect "LIBIMG NEVER" --timeout 120 "$IMG" -- -S \
	</dev/null >"$T/first.out" 2>&1 &
PID=$!
python3 "$QMP" "$T/st-first/qmp.sock" quit >/dev/null || t_fail "QMP quit"
RC=0
wait $PID || RC=$?
[ $RC = 1 ] || t_fail "exit $RC when the VM stopped first"
grep -q "the VM stopped (QEMU status 0) before 'LIBIMG NEVER' appeared; console log: $T/st-first/console.log" \
	"$T/first.out" || t_fail "stop-first message: $(cat "$T/first.out")"
no_strays "vm stops first"

# 4. SIGTERM during a run with a TPM: QEMU and swtpm stopped and reaped.
"${V[@]}" --ephemeral --tpm "$IMG" </dev/null >"$T/term.out" 2>&1 &
PID=$!
for _ in $(seq 300); do [ "$(children $PID | wc -w)" = 2 ] && break; sleep 0.1; done
KIDS=$(children $PID)
[ "$(echo $KIDS | wc -w)" = 2 ] || t_fail "wanted swtpm and QEMU as children, got: $KIDS $(cat "$T/term.out")"
sleep 1
kill -TERM $PID
RC=0
wait $PID || RC=$?
for k in $KIDS; do
	alive $k && t_fail "child $k ($(tr '\0' ' ' </proc/$k/cmdline)) survived SIGTERM"
done
grep -q swtpm "$T/term.out" && t_fail "swtpm did not end cleanly: $(cat "$T/term.out")"
echo "ok: SIGTERM (vmlaunch exit $RC)"
no_strays "sigterm"

# 5. SIGKILL of vmlaunch: the kernel kills its children (PR_SET_PDEATHSIG).
"${V[@]}" --state-dir "$T/st-kill" --tpm "$IMG" </dev/null >"$T/kill.out" 2>&1 &
PID=$!
for _ in $(seq 300); do [ "$(children $PID | wc -w)" = 2 ] && [ -S "$T/st-kill/qmp.sock" ] && break; sleep 0.1; done
KIDS=$(children $PID)
kill -KILL $PID
wait $PID 2>/dev/null
# The kernel sends them SIGKILL at once; one blocked in the disk (D state, a
# loaded CI host) dies when its I/O returns: up to 10 s, not 1.
for _ in $(seq 100); do
	left=
	for k in $KIDS; do alive $k && left="$left $k"; done
	[ -z "$left" ] && break
	sleep 0.1
done
for k in $KIDS; do
	alive $k && t_fail "child $k survived vmlaunch's SIGKILL ($(grep State /proc/$k/status 2>/dev/null))"
done
no_strays "sigkill"

# 6. QEMU's exit status is vmlaunch's: quit over QMP -> 0; a bad argument -> 1.
"${V[@]}" --state-dir "$T/st-quit" "$IMG" -- -S </dev/null >"$T/quit.out" 2>&1 &
PID=$!
python3 "$QMP" "$T/st-quit/qmp.sock" quit >/dev/null || t_fail "QMP quit"
RC=0
wait $PID || RC=$?
[ $RC = 0 ] || t_fail "exit $RC after QMP quit: $(cat "$T/quit.out")"
t_expect_exit 1 "${V[@]}" --state-dir "$T/st-bad" "$IMG" -- -no-such-option
no_strays "exit status"

# 7. --print-cmdline and --dry-run: say everything, create nothing.
t_expect_exit 0 "${V[@]}" --state-dir "$T/st-print" --print-cmdline --share "d:$T:/mnt" "$IMG"
[ ! -e "$T/st-print" ] || t_fail "--print-cmdline created the state directory"
grep -qF "file='$T/st-print/disk.qcow2'" "$T/stdout" && t_fail "quoting inside a word"
eval "set -- $(cat "$T/stdout")"
[ "$1" = qemu-system-x86_64 ] || t_fail "--print-cmdline does not start with QEMU: $1"
for a in "$@"; do [ "$a" = "-accel" ] && break; done
[ "$a" = -accel ] || t_fail "--print-cmdline lacks -accel"
t_expect_exit 0 "$VMLAUNCH" --accel auto --boot efi --state-dir "$T/st-dry" --dry-run --tpm "$IMG"
grep -q "^accelerator: \(kvm\|tcg\) (" "$T/stdout" || t_fail "--dry-run: no accelerator: $(cat "$T/stdout")"
grep -q "^firmware: /" "$T/stdout" || t_fail "--dry-run: no firmware: $(cat "$T/stdout")"
grep -q "overlay (qcow2) .*$T/st-dry/disk.qcow2 (new)" "$T/stdout" || t_fail "--dry-run: no overlay"
[ ! -e "$T/st-dry" ] || t_fail "--dry-run created the state directory"
echo "ok: print-cmdline, dry-run"

# 8. The guest-forward relay QEMU runs per connection (instead of nc): bytes
# both ways, and the command line names it.
python3 -c '
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
c, _ = s.accept(); d = c.recv(100); c.sendall(b"echo:" + d); c.close()' "$T/echo-port" &
EPID=$!
for _ in $(seq 100); do [ -s "$T/echo-port" ] && break; sleep 0.1; done
got=$(printf hello | "$VMLAUNCH" --relay 127.0.0.1 "$(cat "$T/echo-port")")
wait $EPID
[ "$got" = echo:hello ] || t_fail "--relay: got '$got'"
t_expect_exit 0 "${V[@]}" --state-dir "$T/st-g" --print-cmdline --guest-forward 10.0.2.100:80:127.0.0.1:8000 "$IMG"
grep -qF "guestfwd=tcp:10.0.2.100:80-cmd:$(readlink -f "$VMLAUNCH") --relay 127.0.0.1 8000" "$T/stdout" ||
	t_fail "guest forward does not use the relay: $(cat "$T/stdout")"
echo "ok: relay"
t_pass
