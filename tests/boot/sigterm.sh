#!/usr/bin/env bash
# sigterm.sh -- SIGTERM to vmlaunch while the guest boots: vmlaunch exits,
# QEMU and swtpm are gone (reaped, not orphaned), the ephemeral state
# directory is removed.
. "$SRCDIR/tests/lib.sh"
t_begin boot-sigterm
. "$SRCDIR/tests/boot/lib-boot.sh"
boot_fixture

boot_root_image "$T/root.qcow2"
tpm=()
t_can "--tpm (swtpm stopped too)" cmd:swtpm && tpm=(--tpm)
mkdir -p "$T/tmp"
# the guest never prints this and does not power off (libimg.hold), so only
# the signal ends the run
TMPDIR=$T/tmp "$VMLAUNCH" --ephemeral --accel tcg --serial-log "$T/console.log" "${tpm[@]}" \
	--boot direct --kernel "$KERNEL" --initrd "$INITRD" --append "$APPEND libimg.hold" \
	--expect NEVER-PRINTED --timeout 300 "$T/root.qcow2" >"$T/vm.out" 2>"$T/vm.err" &
vm=$!
# wait until the kernel runs (the initrd talks), i.e. "during boot"
for _ in $(seq 120); do
	grep -q 'fixture-initrd\|Linux version\|EFI stub' "$T/console.log" 2>/dev/null && break
	kill -0 $vm 2>/dev/null || break
	sleep 0.5
done
if ! kill -0 $vm 2>/dev/null; then
	rc=0
	wait $vm || rc=$?
	t_fail "vmlaunch ended before the signal (exit $rc): $(head -c 1000 "$T/vm.err")"
fi
grep -q 'fixture-initrd\|Linux version\|EFI stub' "$T/console.log" 2>/dev/null ||
	t_fail "the guest did not start booting within 60 s"
helpers=$(boot_strays)
[ -n "$helpers" ] || t_fail "no QEMU process found with the test's paths"
for p in $helpers; do
	grep -q qemu "/proc/$p/cmdline" 2>/dev/null && qemu=$p
done
[ -n "${qemu:-}" ] || t_fail "no QEMU process among $helpers"
if [ ${#tpm[@]} -gt 0 ]; then
	n=0
	for p in $helpers; do grep -q swtpm "/proc/$p/cmdline" 2>/dev/null && n=1; done
	[ $n = 1 ] || t_fail "--tpm but no swtpm process"
fi
kill -TERM $vm
rc=0
# graceful stop: powerdown, a wait, quit, kill; give it a minute
for _ in $(seq 120); do
	kill -0 $vm 2>/dev/null || break
	sleep 0.5
done
if kill -0 $vm 2>/dev/null; then
	kill -KILL $vm
	t_fail "vmlaunch still running 60 s after SIGTERM"
fi
wait $vm || rc=$?
for p in $helpers; do
	if [ -d "/proc/$p" ] && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ]; then
		t_fail "helper $p ($(tr '\0' ' ' <"/proc/$p/cmdline")) still running after vmlaunch exited"
	fi
done
echo "vmlaunch exited $rc after SIGTERM; helpers were: $helpers"
boot_state_gone
boot_no_strays
t_pass
