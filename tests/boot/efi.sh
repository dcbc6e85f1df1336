#!/usr/bin/env bash
# efi.sh -- the boot test: mkvmimage --efi (qcow2) + --store-image, booted by
# vmlaunch under TCG through OVMF and systemd-boot; the guest mounts root by
# label nixos and the store image by label nix-store and prints the sha256
# of a file from each, which must match the fixture's.
. "$SRCDIR/tests/lib.sh"
t_begin boot-efi
. "$SRCDIR/tests/boot/lib-boot.sh"
boot_fixture

boot_efi_image "$T/disk.qcow2"
qemu-img check -q "$T/disk.qcow2" || t_fail "qemu-img check disk.qcow2"
boot_store_image "$T/store.img"
before=$(sha256sum "$T/disk.qcow2" "$T/store.img")

boot_vm "$T/console.log" --store-image "$T/store.img" --expect "$MARKER" --timeout 300 \
	"$T/disk.qcow2"
boot_check_marker "$T/console.log" no
# the default entry is the system itself, not one of its specialisations
tr -d '\r' <"$T/console.log" | grep -q "^fixture-system: specialisation none, " ||
	t_fail "the default entry did not boot the system's own init"
# systemd-boot really ran (not a direct kernel boot behind our back)
grep -q 'LINUX_EFI_INITRD_MEDIA\|EFI stub' "$T/console.log" ||
	t_fail "no EFI stub message on the console: was the kernel started by UEFI?"
[ "$(sha256sum "$T/disk.qcow2" "$T/store.img")" = "$before" ] || t_fail "vmlaunch wrote to IMAGE or the store image"
boot_no_strays
t_pass
