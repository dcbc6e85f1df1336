#!/usr/bin/env bash
# uki.sh -- mkvmimage --efi --uki --compress zstd: systemd-boot finds the
# unified kernel image (stub + .osrel/.cmdline/.initrd/.linux sections built
# by libimg) in /EFI/Linux and the stub starts the kernel with the embedded
# initrd and command line, all read from zstd-compressed qcow2 clusters; the
# guest then reaches the same marker as efi.sh.
. "$SRCDIR/tests/lib.sh"
t_begin boot-uki
. "$SRCDIR/tests/boot/lib-boot.sh"
boot_fixture
ls "$ROOT"/nix/store/*-systemd-boot-*/lib/systemd/boot/efi/linuxx64.efi.stub >/dev/null 2>&1 ||
	t_skip "no linuxx64.efi.stub in the fixture (systemd-boot-efi too old?)"

# zstd-compressed clusters too: QEMU must decode every cluster it boots from
SOURCE_DATE_EPOCH=1 boot_tool "$MKVMIMAGE" --efi --uki --compress zstd --root "$ROOT" \
	-o "$T/disk.qcow2" "$CLOSURE"
qemu-img check -q "$T/disk.qcow2" || t_fail "qemu-img check"
grep -q '"bootloader": *"uki"' "$T/disk.qcow2.json" || t_fail "manifest does not say uki"
boot_store_image "$T/store.img"
boot_vm "$T/console.log" --store-image "$T/store.img" --expect "$MARKER" --timeout 300 \
	"$T/disk.qcow2"
boot_check_marker "$T/console.log" no
# the command line came from the UKI's .cmdline: init= reached the initrd
grep -q "switching to $SYSTEM/init" "$T/console.log" || t_fail "init= from the UKI's .cmdline not seen"
boot_no_strays
t_pass
