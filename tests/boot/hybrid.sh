#!/usr/bin/env bash
# hybrid.sh -- mkvmimage --hybrid --grub: one GPT disk (BIOS boot partition +
# ESP + root) boots both ways: OVMF -> systemd-boot, and SeaBIOS -> GRUB
# (core.img in the BIOS boot partition, finding root on gpt3).
. "$SRCDIR/tests/lib.sh"
t_begin boot-hybrid
. "$SRCDIR/tests/boot/lib-boot.sh"
boot_fixture
[ -n "$GRUB_DIR" ] || t_skip "GRUB for BIOS not installed (grub-pc-bin with grub-mkimage)"

SOURCE_DATE_EPOCH=1 boot_tool "$MKVMIMAGE" --hybrid --grub "$GRUB_DIR" --root "$ROOT" \
	-o "$T/disk.qcow2" "$CLOSURE"
boot_store_image "$T/store.img"
for b in efi bios; do
	boot_vm "$T/console-$b.log" --boot $b --store-image "$T/store.img" --expect "$MARKER" \
		--timeout 300 "$T/disk.qcow2"
	boot_check_marker "$T/console-$b.log" no
done
grep -q 'EFI stub' "$T/console-efi.log" || t_fail "EFI boot did not go through the EFI stub"
grep -q 'fixture-grub: root is hd0,gpt' "$T/console-bios.log" || t_fail "BIOS boot did not go through GRUB"
boot_no_strays
t_pass
