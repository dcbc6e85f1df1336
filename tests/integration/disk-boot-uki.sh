#!/usr/bin/env bash
# disk-boot-uki.sh -- a --hybrid disk (BIOS boot + ESP + root) whose ESP holds a
# unified kernel image (--uki) boots under OVMF: the firmware starts
# EFI/BOOT/BOOTX64.EFI, systemd-stub hands the kernel its .initrd and .cmdline,
# and the guest prints the fixture's marker after mounting root and store.
. "$SRCDIR/tests/lib.sh"
t_begin disk-boot-uki
. "$SRCDIR/tests/boot/lib-boot.sh"
boot_fixture
[ -r /usr/lib/systemd/boot/efi/linuxx64.efi.stub ] || t_skip "no linuxx64.efi.stub (systemd-boot-efi)"

SOURCE_DATE_EPOCH=1 boot_tool "$MKVMIMAGE" --hybrid --uki --root "$ROOT" -o "$T/disk.qcow2" "$CLOSURE"
grep -q '"bootloader": "uki"' "$T/disk.qcow2.json" || t_fail "manifest: bootloader is not uki"
boot_store_image "$T/store.img"
boot_vm "$T/console.log" --boot efi --store-image "$T/store.img" --expect "$MARKER" --timeout 300 \
	"$T/disk.qcow2"
boot_check_marker "$T/console.log" no
grep -q 'LINUX_EFI_INITRD_MEDIA' "$T/console.log" ||
	t_fail "no EFI stub initrd message: did systemd-stub start the kernel?"
boot_no_strays
t_pass
