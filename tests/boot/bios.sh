#!/usr/bin/env bash
# bios.sh -- mkvmimage --bios (MBR, GRUB) + store image, booted by SeaBIOS.
. "$SRCDIR/tests/lib.sh"
t_begin boot-bios
. "$SRCDIR/tests/boot/lib-boot.sh"
[ -d /usr/lib/grub/i386-pc ] || t_skip "GRUB for BIOS not installed (grub-pc-bin)"
boot_fixture

SOURCE_DATE_EPOCH=1 boot_tool "$MKVMIMAGE" --bios --root "$ROOT" -o "$T/disk.qcow2" "$CLOSURE"
boot_store_image "$T/store.img"
if [ -f "$T/disk.qcow2.json" ] && grep -q '"bootloader": *"none"' "$T/disk.qcow2.json"; then
	t_skip "mkvmimage --bios wrote no boot loader (manifest says bootloader none)"
fi
boot_vm "$T/console.log" --boot bios --store-image "$T/store.img" --expect "$MARKER" --timeout 300 \
	"$T/disk.qcow2"
boot_check_marker "$T/console.log" no
boot_no_strays
t_pass
