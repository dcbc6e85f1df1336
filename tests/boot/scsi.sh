#!/usr/bin/env bash
# scsi.sh -- vmlaunch --disk-interface scsi: the guest sees the root disk and
# the store image as SCSI disks (virtio-scsi, /dev/sd*) and boots to the
# marker. (ide cannot be booted here: q35's IDE is AHCI, which Debian's
# cloud kernel does not have.)
. "$SRCDIR/tests/lib.sh"
t_begin boot-scsi
. "$SRCDIR/tests/boot/lib-boot.sh"
boot_fixture

boot_root_image "$T/root.qcow2"
boot_store_image "$T/store.img"
boot_vm "$T/console.log" --disk-interface scsi --boot direct --kernel "$KERNEL" --initrd "$INITRD" \
	--append "$APPEND" --store-image "$T/store.img" --expect "$MARKER" --timeout 300 "$T/root.qcow2"
boot_check_marker "$T/console.log" no
grep -q 'root (LABEL=nixos) is /dev/sd' "$T/console.log" || t_fail "root is not a SCSI disk"
grep -q 'store image (LABEL=nix-store) is /dev/sd' "$T/console.log" || t_fail "store image is not a SCSI disk"
boot_no_strays
t_pass
