#!/usr/bin/env bash
# vm-accel.sh -- --accel auto picks KVM only when QEMU can really run a KVM
# guest here, says which and why; --accel kvm where KVM does not work is a
# clear error before anything starts.
. "$SRCDIR/tests/lib.sh"
t_begin vm-accel
t_need qemu-system-x86_64 qemu-img

qemu-img create -q -f raw "$T/d.img" 64M
export XDG_STATE_HOME="$T/state"
"$VMLAUNCH" --dry-run --boot bios --accel auto "$T/d.img" >"$T/auto.out" 2>&1 ||
	t_fail "dry run failed: $(cat "$T/auto.out")"
line=$(grep '^accelerator:' "$T/auto.out") || t_fail "no accelerator line: $(cat "$T/auto.out")"
# What QEMU itself says about KVM here: a paused guest that quits over QMP.
kvm_works=0
if printf '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n' |
	timeout 10 qemu-system-x86_64 -accel kvm -cpu host -machine q35 -m 32 -nodefaults \
		-display none -S -qmp stdio >/dev/null 2>&1; then
	kvm_works=1
fi
case "$line" in
"accelerator: kvm"*)
	[ $kvm_works = 1 ] || t_fail "auto chose KVM, but QEMU cannot run a KVM guest: $line"
	;;
"accelerator: tcg"*)
	[ $kvm_works = 0 ] || t_fail "auto chose TCG although KVM works: $line"
	grep -q "using TCG\|not usable\|asked for" <<<"$line" || t_fail "TCG without a reason: $line"
	if [ -e /dev/kvm ]; then
		t_expect_exit 1 "$VMLAUNCH" --dry-run --boot bios --accel kvm "$T/d.img"
		grep -q "accel kvm" "$T/stderr" || t_fail "--accel kvm error does not say why: $(cat "$T/stderr")"
		[ ! -e "$T/state/vmlaunch/d" ] || t_fail "state created although KVM was refused"
	fi
	;;
*) t_fail "unexpected: $line" ;;
esac
t_pass
