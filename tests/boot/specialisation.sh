#!/usr/bin/env bash
# specialisation.sh -- the fixture system's boot.json has two
# specialisations (fixtures/boot/build.sh): alpha with its own kernel store
# path and initrd, beta with the system's kernel and its own initrd, each
# with its own init and kernel parameters. Through systemd-boot (OVMF), one
# boot per specialisation with --specialisation NAME (loader.conf's
# default), and through GRUB (SeaBIOS, the grub.cfg mkvmimage writes) one
# boot of alpha: the guest's initrd and init say which specialisation they
# belong to and /proc/cmdline carries that entry's init= and parameters, so
# the entry's kernel, initrd and options are the ones that ran.
. "$SRCDIR/tests/lib.sh"
t_begin boot-specialisation
. "$SRCDIR/tests/boot/lib-boot.sh"
boot_fixture

# check_entry LOG NAME SYSTEM: the initrd, the init and the command line of NAME
check_entry() {
	local log=$1 name=$2 sys=$3
	boot_check_marker "$log" no
	tr -d '\r' <"$log" | grep -qx "fixture-initrd: initrd of specialisation $name" ||
		t_fail "$name: not its initrd ($(grep -a 'initrd of' "$log"))"
	tr -d '\r' <"$log" | grep -a "^fixture-system: specialisation $name, cmdline " >"$T/cmdline" ||
		t_fail "$name: not its init ($(grep -a 'fixture-system: spec' "$log"))"
	grep -qw -- "init=$sys/init" "$T/cmdline" || t_fail "$name: init= is not $sys/init: $(cat "$T/cmdline")"
	grep -qw -- "libimg.spec=$name" "$T/cmdline" || t_fail "$name: not its kernelParams: $(cat "$T/cmdline")"
}

boot_store_image "$T/store.img"
for spec in alpha beta; do
	SOURCE_DATE_EPOCH=1 boot_tool "$MKVMIMAGE" --efi --specialisation $spec --root "$ROOT" \
		-o "$T/$spec.qcow2" "$CLOSURE"
	python3 - "$T/$spec.qcow2.json" $spec <<'PY' || t_fail "$spec: manifest"
import json, sys
m = json.load(open(sys.argv[1]))
assert m["boot_source"] == "bootspec"
d = [e for e in m["entries"] if e["default"]]
assert len(d) == 1 and d[0]["specialisation"] == sys.argv[2], d
assert [e["specialisation"] for e in m["entries"]] == [None, "alpha", "beta"]
PY
	boot_vm "$T/efi-$spec.log" --store-image "$T/store.img" --expect "$MARKER" --timeout 300 \
		"$T/$spec.qcow2"
	grep -q 'EFI stub' "$T/efi-$spec.log" || t_fail "$spec: not started by systemd-boot"
done
check_entry "$T/efi-alpha.log" alpha "$SYSTEM_ALPHA"
check_entry "$T/efi-beta.log" beta "$SYSTEM_BETA"

if [ -n "$GRUB_DIR" ]; then
	SOURCE_DATE_EPOCH=1 boot_tool "$MKVMIMAGE" --bios --grub "$GRUB_DIR" --specialisation alpha \
		--root "$ROOT" -o "$T/bios.qcow2" "$CLOSURE"
	boot_vm "$T/bios-alpha.log" --boot bios --store-image "$T/store.img" --expect "$MARKER" \
		--timeout 300 "$T/bios.qcow2"
	grep -q 'fixture-grub: reading' "$T/bios-alpha.log" || t_fail "GRUB did not read grub.cfg"
	check_entry "$T/bios-alpha.log" alpha "$SYSTEM_ALPHA"
else
	echo "GRUB for BIOS not installed (grub-pc-bin with grub-mkimage): GRUB part SKIPPED" >&2
fi
boot_no_strays
t_pass
