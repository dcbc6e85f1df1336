#!/usr/bin/env bash
# bios.sh -- mkvmimage --bios --grub (MBR, GRUB in the gap before 1 MiB) +
# store image, booted by SeaBIOS -> GRUB -> Linux.
. "$SRCDIR/tests/lib.sh"
t_begin boot-bios
. "$SRCDIR/tests/boot/lib-boot.sh"
boot_fixture
[ -n "$GRUB_DIR" ] || t_skip "GRUB for BIOS not installed (grub-pc-bin with grub-mkimage)"

# GRUB_DIR: boot.img + a core.img whose embedded config searches LABEL=nixos
# and reads the /boot/grub/grub.cfg mkvmimage writes (fixtures/boot/build.sh)
SOURCE_DATE_EPOCH=1 boot_tool "$MKVMIMAGE" --bios --grub "$GRUB_DIR" --root "$ROOT" \
	-o "$T/disk.qcow2" "$CLOSURE"
boot_store_image "$T/store.img"
if [ -f "$T/disk.qcow2.json" ] && grep -q '"bootloader": *"none"' "$T/disk.qcow2.json"; then
	t_fail "mkvmimage --bios --grub wrote no boot loader (manifest says bootloader none)"
fi
boot_vm "$T/console.log" --boot bios --store-image "$T/store.img" --expect "$MARKER" --timeout 300 \
	"$T/disk.qcow2"
boot_check_marker "$T/console.log" no
grep -q 'fixture-grub: root is' "$T/console.log" || t_fail "GRUB did not run (no fixture-grub line)"
# GRUB's menu is the grub.cfg mkvmimage wrote; its default is the system itself
grep -q 'fixture-grub: reading' "$T/console.log" || t_fail "GRUB did not read /boot/grub/grub.cfg"
tr -d '\r' <"$T/console.log" | grep -q "^fixture-system: specialisation none, " ||
	t_fail "GRUB's default entry did not boot the system's own init"
boot_no_strays
t_pass
