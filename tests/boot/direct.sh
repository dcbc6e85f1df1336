#!/usr/bin/env bash
# direct.sh -- direct kernel boot: a bare ext4 root image (no partition table)
# + store image, vmlaunch --boot direct --kernel --initrd --append.
. "$SRCDIR/tests/lib.sh"
t_begin boot-direct
. "$SRCDIR/tests/boot/lib-boot.sh"
boot_fixture

boot_root_image "$T/root.qcow2"
boot_store_image "$T/store.img"

boot_vm "$T/console.log" --boot direct --kernel "$KERNEL" --initrd "$INITRD" --append "$APPEND" \
	--store-image "$T/store.img" --expect "$MARKER" --timeout 300 "$T/root.qcow2"
boot_check_marker "$T/console.log" no
# the command line we gave reached the kernel
grep -q 'root (LABEL=nixos) is /dev/vd' "$T/console.log" || t_fail "root not found by label"
boot_no_strays
t_pass
