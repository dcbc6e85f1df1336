#!/usr/bin/env bash
# fixture.sh -- the boot fixture itself, without our tools: it builds the same
# bytes twice (different umask, TZ, working directory), and disks made from it
# with mkfs.ext4 / mkfs.erofs / mkfs.fat + mtools / sgdisk (fixtures/boot/mkref.sh)
# boot under plain QEMU (TCG) to the marker, directly and through OVMF +
# systemd-boot. When a boot test of our tools fails but this passes, the fault
# is in the tools.
. "$SRCDIR/tests/lib.sh"
t_begin boot-fixture
. "$SRCDIR/tests/boot/lib-boot.sh"
t_need mkfs.ext4 mkfs.erofs mkfs.fat mcopy sgdisk
boot_fixture

# determinism: a second build elsewhere, under other conditions
(cd / && umask 077 && TZ=Pacific/Auckland LANG=de_DE.UTF-8 \
	bash "$SRCDIR/fixtures/boot/build.sh" "$T/fx2" >/dev/null) || t_fail "second fixture build"
sums() { (cd "$1" && find root closure closure-store closure-all -printf '%p %m %l\n' -type f -exec sha256sum {} + | sort); }
[ "$(sums "$FIXTURE")" = "$(sums "$T/fx2")" ] || {
	diff <(sums "$FIXTURE") <(sums "$T/fx2") | head -20 >&2
	t_fail "fixture not reproducible"
}
chmod -R u+w "$T/fx2" && rm -rf "$T/fx2"

bash "$SRCDIR/fixtures/boot/mkref.sh" "$FIXTURE" "$T/ref" >/dev/null 2>"$T/mkref.err" ||
	t_fail "mkref.sh: $(cat "$T/mkref.err")"
e2fsck -fn "$T/ref/root.ext4" >/dev/null 2>&1 || t_fail "e2fsck on the reference root"
fsck.erofs "$T/ref/store.erofs" >/dev/null 2>&1 || t_fail "fsck.erofs on the reference store (label patch broke the checksum?)"

q=(qemu-system-x86_64 -accel tcg -M q35 -m 512 -nodefaults -nographic -no-reboot -no-user-config)
# direct boot
timeout 240 "${q[@]}" -serial "file:$T/direct.log" -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" \
	-drive "file=$T/ref/root.ext4,format=raw,if=virtio" \
	-drive "file=$T/ref/store.erofs,format=raw,if=virtio,readonly=on" </dev/null >/dev/null 2>&1 ||
	t_fail "QEMU direct boot failed or timed out"
boot_check_marker "$T/direct.log" no

# UEFI: OVMF -> systemd-boot -> loader entry -> kernel + initrd
code=/usr/share/OVMF/OVMF_CODE_4M.fd
vars=/usr/share/OVMF/OVMF_VARS_4M.fd
t_can "the UEFI boot" file:$code || t_pass
cp $vars "$T/vars.fd"
timeout 240 "${q[@]}" -serial "file:$T/efi.log" \
	-drive "if=pflash,format=raw,unit=0,readonly=on,file=$code" \
	-drive "if=pflash,format=raw,unit=1,file=$T/vars.fd" \
	-drive "file=$T/ref/efi.img,format=raw,if=virtio" \
	-drive "file=$T/ref/store.erofs,format=raw,if=virtio,readonly=on" </dev/null >/dev/null 2>&1 ||
	t_fail "QEMU UEFI boot failed or timed out"
boot_check_marker "$T/efi.log" no
grep -q 'root (LABEL=nixos) is /dev/vda2' "$T/efi.log" || t_fail "root not on the GPT's second partition"
t_pass
