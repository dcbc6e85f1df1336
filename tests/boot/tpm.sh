#!/usr/bin/env bash
# tpm.sh -- vmlaunch --tpm: swtpm started and supervised, the guest sees
# /dev/tpm0 (the marker says tpm=yes), swtpm gone afterwards.
. "$SRCDIR/tests/lib.sh"
t_begin boot-tpm
. "$SRCDIR/tests/boot/lib-boot.sh"
t_need swtpm
boot_fixture

boot_root_image "$T/root.qcow2"
boot_store_image "$T/store.img"
boot_vm "$T/console.log" --tpm --boot direct --kernel "$KERNEL" --initrd "$INITRD" \
	--append "$APPEND" --store-image "$T/store.img" --expect "$MARKER" --timeout 300 "$T/root.qcow2"
boot_check_marker "$T/console.log" yes
boot_no_strays
t_pass
