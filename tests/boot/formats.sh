#!/usr/bin/env bash
# formats.sh -- the disk formats mkvmimage writes besides raw and qcow2,
# booted by vmlaunch under TCG, in three boots to keep it cheap: the
# fixture's --efi disk as fixed VHD, VDI and streamOptimized VMDK (each a
# read-only base under a qcow2 overlay naming the base's format), with the
# store image as dynamic VHD, monolithicSparse VMDK and dynamic VHD again
# (attached read-only in its own format). The guest prints the sha256 of a
# file from root and store, which must match the fixture's.
. "$SRCDIR/tests/lib.sh"
t_begin boot-formats
. "$SRCDIR/tests/boot/lib-boot.sh"
boot_fixture

SOURCE_DATE_EPOCH=1 boot_tool "$MKVMIMAGE" --store-image --root "$ROOT" \
	--vmdk-subformat monolithicSparse -o "$T/store.vmdk" "$CLOSURE_STORE"
SOURCE_DATE_EPOCH=1 boot_tool "$MKVMIMAGE" --store-image --root "$ROOT" \
	--vpc-subformat dynamic -o "$T/store.vhd" "$CLOSURE_STORE"
stores=(store.vhd store.vmdk store.vhd)
i=0
for c in "fixed.vhd:--vpc-subformat fixed" "disk.vdi:" "stream.vmdk:--vmdk-subformat streamOptimized"; do
	name=${c%%:*}
	# shellcheck disable=SC2086
	SOURCE_DATE_EPOCH=1 boot_tool "$MKVMIMAGE" --efi --root "$ROOT" ${c#*:} -o "$T/$name" "$CLOSURE"
	store=${stores[$i]}
	before=$(sha256sum "$T/$name" "$T/$store")
	boot_vm "$T/$name.log" --store-image "$T/$store" --expect "$MARKER" --timeout 300 "$T/$name"
	boot_check_marker "$T/$name.log" no
	[ "$(sha256sum "$T/$name" "$T/$store")" = "$before" ] || t_fail "vmlaunch wrote to $name or $store"
	rm -f "$T/$name"
	i=$((i + 1))
done
boot_no_strays
t_pass
