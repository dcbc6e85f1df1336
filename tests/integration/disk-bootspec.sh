#!/usr/bin/env bash
# disk-bootspec.sh -- a system with a boot.json (bootspec v1) and two
# specialisations: the ESP (read back with mtools, checked with fsck.fat)
# holds exactly the files and loader entries NixOS's systemd-boot builder
# writes for that boot.json (fixtures/bootspec/golden, derived by hand from
# systemd-boot-builder.py: see fixtures/bootspec/README.md); --bios puts a
# grub.cfg with one menuentry per entry into the root (read with debugfs);
# the manifest lists the entries; --specialisation moves the default; a
# --kernel-params with a newline is refused.
. "$SRCDIR/tests/lib.sh"
t_begin disk-bootspec
t_need mcopy mdir fsck.fat debugfs e2fsck sfdisk python3
. "$SRCDIR/tests/integration/disk-lib.sh"
disk_store "$T"
R=$T/root
G=$SRCDIR/fixtures/bootspec/golden
A=$S/6sssssssssssssssssssssssssssssss-nixos-system-test-alpha-25.05
BT=$S/8sssssssssssssssssssssssssssssss-nixos-system-test-beta-25.05
KA=$S/7kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk-linux-6.1.0-alpha
IA=$S/9iiiiiiiiiiiiiiiiiiiiiiiiiiiiiii-initrd-alpha
mkdir -p "$R$A" "$R$BT" "$R$IA"
head -c 300000 /dev/urandom >"$R$KA" # a store path that is the kernel itself
head -c 200000 /dev/urandom >"$R$IA/initrd"
for t in "$A" "$BT"; do
	printf '#!/bin/sh\necho init\n' >"$R$t/init"
	chmod 755 "$R$t/init"
done
printf '25.05alpha' >"$R$A/nixos-version"
cp "$SRCDIR/fixtures/bootspec/boot.json" "$R$Y/boot.json"
printf '%s\n' "$A" "$BT" "$KA" "$IA" >>"$T/closure"
export MTOOLS_SKIP_CHECK=1

"$MKVMIMAGE" -q --efi --root "$R" -o "$T/d.img" "$T/closure" || t_fail "build"
M=$T/d.img.json
off=$(disk_json "$M" 'm["partitions"][0]["offset"]')
disk_part "$T/d.img" 1 "$T/esp"
fsck.fat -n "$T/esp" >"$T/fsck" 2>&1 || t_fail "fsck.fat: $(cat "$T/fsck")"
mkdir "$T/espout"
mcopy -s -n -i "$T/d.img@@$off" ::/EFI ::/loader "$T/espout/" || t_fail "mcopy -s"
(cd "$T/espout" && find . -type f | LC_ALL=C sort) >"$T/esp.lst"
diff "$G/esp-files" "$T/esp.lst" >&2 || t_fail "ESP files differ from the builder's"
for f in nixos-generation-1 nixos-generation-1-specialisation-alpha \
	nixos-generation-1-specialisation-beta; do
	diff "$G/$f.conf" "$T/espout/loader/entries/$f.conf" >&2 || t_fail "entry $f differs"
done
diff "$G/loader.conf" "$T/espout/loader/loader.conf" >&2 || t_fail "loader.conf differs"
cmp -s "$R$KA" "$T/espout/EFI/nixos/${KA#$S/}.efi" || t_fail "alpha's kernel"
cmp -s "$R$IA/initrd" "$T/espout/EFI/nixos/${IA#$S/}-initrd.efi" || t_fail "alpha's initrd"
cmp -s "$R$K/bzImage" "$T/espout/EFI/nixos/${K#$S/}-bzImage.efi" || t_fail "the shared kernel"
python3 - "$M" "$Y" "$A" "$BT" <<'PY' || t_fail "manifest entries"
import json, sys
m = json.load(open(sys.argv[1])); y, a, b = sys.argv[2:]
assert m["boot_source"] == "bootspec", m["boot_source"]
assert m["kernel_params"] == "console=ttyS0 loglevel=4", m["kernel_params"]
e = m["entries"]
assert [x["id"] for x in e] == ["nixos-generation-1", "nixos-generation-1-specialisation-alpha",
                               "nixos-generation-1-specialisation-beta"], e
assert [x["specialisation"] for x in e] == [None, "alpha", "beta"]
assert [x["title"] for x in e] == ["NixOS", "NixOS (alpha)", "NixOS (beta)"]
assert [x["default"] for x in e] == [True, False, False]
assert all(x["loader"] == "systemd-boot" for x in e)
assert e[1]["path"] == "loader/entries/nixos-generation-1-specialisation-alpha.conf"
assert e[1]["options"] == "init=%s/init console=ttyS0 loglevel=7 alpha=1" % a
assert e[2]["options"] == "init=%s/init " % b
assert e[1]["kernel"].endswith("-linux-6.1.0-alpha") and e[2]["initrd"] == e[0]["initrd"]
PY

# --specialisation: the default moves, nothing else
"$MKVMIMAGE" -q --efi --specialisation beta --root "$R" -o "$T/s.img" "$T/closure" ||
	t_fail "--specialisation beta"
mtype -i "$T/s.img@@$off" ::/loader/loader.conf | grep -qx 'default nixos-generation-1-specialisation-beta.conf' ||
	t_fail "loader.conf default with --specialisation"
t_expect_exit 1 "$MKVMIMAGE" -q --efi --specialisation gamma --root "$R" -o "$T/x.img" "$T/closure"
grep -q "gamma.*no such specialisation" "$T/stderr" || t_fail "unknown specialisation: $(cat "$T/stderr")"

# --uki: one UKI per entry in EFI/Linux, systemd-boot chooses
STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
if [ -r "$STUB" ] && command -v objcopy >/dev/null; then
	"$MKVMIMAGE" -q --efi --uki --uki-stub "$STUB" --specialisation alpha --root "$R" \
		-o "$T/u.img" "$T/closure" || t_fail "--uki"
	mdir -b -i "$T/u.img@@$off" ::/EFI/Linux | sed 's|.*/||' | LC_ALL=C sort >"$T/ukis"
	printf '%s\n' nixos-generation-1-specialisation-alpha.efi \
		nixos-generation-1-specialisation-beta.efi nixos-generation-1.efi >"$T/ukis.want"
	diff "$T/ukis.want" "$T/ukis" >&2 || t_fail "UKIs in EFI/Linux"
	mtype -i "$T/u.img@@$off" ::/loader/loader.conf | grep -qx 'default nixos-generation-1-specialisation-alpha.efi' ||
		t_fail "--uki loader.conf default"
	mcopy -n -i "$T/u.img@@$off" ::/EFI/Linux/nixos-generation-1-specialisation-beta.efi "$T/beta.efi"
	objcopy -O binary --only-section=.cmdline "$T/beta.efi" "$T/beta.cmdline" || t_fail "objcopy"
	[ "$(cat "$T/beta.cmdline")" = "init=$BT/init " ] || t_fail "beta's .cmdline: $(cat "$T/beta.cmdline")"
	objcopy -O binary --only-section=.linux "$T/beta.efi" "$T/beta.linux"
	cmp -s "$T/beta.linux" "$R$K/bzImage" || t_fail "beta's .linux"
	mcopy -n -i "$T/u.img@@$off" ::/EFI/BOOT/BOOTX64.EFI "$T/u-boot.efi"
	cmp -s "$T/u-boot.efi" "$R$B/lib/systemd/boot/efi/systemd-bootx64.efi" ||
		t_fail "--uki with specialisations: BOOTX64.EFI is not systemd-boot"
else
	echo "no $STUB or objcopy: the --uki part SKIPPED" >&2
fi

# GRUB: one menuentry per entry, in install-grub.pl's order, in the root's /boot/grub
"$MKVMIMAGE" -q --bios --specialisation alpha --root "$R" -o "$T/b.img" "$T/closure" 2>/dev/null ||
	t_fail "--bios"
disk_part "$T/b.img" 1 "$T/broot"
e2fsck -fn "$T/broot" >/dev/null 2>&1 || t_fail "e2fsck on the --bios root"
debugfs -R "cat /boot/grub/grub.cfg" "$T/broot" 2>/dev/null >"$T/grub.cfg"
grep '^menuentry' "$T/grub.cfg" >"$T/menu"
cat >"$T/menu.want" <<'W'
menuentry "NixOS - Default" --class nixos --unrestricted {
menuentry "NixOS (alpha - 1970-01-01 - 25.05alpha)"  {
menuentry "NixOS (beta - 1970-01-01 - NixOS 25.05test (Linux 6.1.0))"  {
menuentry "NixOS - Default - Configuration 1 (1970-01-01 - 25.05test)" --class nixos {
menuentry "NixOS (alpha - 1970-01-01 - 25.05alpha)"  {
menuentry "NixOS (beta - 1970-01-01 - NixOS 25.05test (Linux 6.1.0))"  {
W
diff "$T/menu.want" "$T/menu" >&2 || t_fail "GRUB menu entries"
grep -qx '  set default=1' "$T/grub.cfg" || t_fail "GRUB default with --specialisation alpha"
grep -qxF "  linux (\$drive2)$KA init=$A/init console=ttyS0 loglevel=7 alpha=1" "$T/grub.cfg" ||
	t_fail "alpha's linux line: $(grep -n linux "$T/grub.cfg")"
grep -qxF "  initrd (\$drive2)$IA/initrd" "$T/grub.cfg" || t_fail "alpha's initrd line"
grep -qxF "  linux (\$drive2)$K/bzImage init=$BT/init" "$T/grub.cfg" || t_fail "beta's linux line"

# a newline in any text for an entry is refused, never written
t_expect_exit 2 "$MKVMIMAGE" -q --efi --root "$R" --kernel-params $'quiet\nlinux /EFI/evil' \
	-o "$T/x.img" "$T/closure"
grep -q -- "--kernel-params: holds a control character" "$T/stderr" || t_fail "$(cat "$T/stderr")"
[ ! -e "$T/x.img" ] || t_fail "output left behind"
python3 - "$R$Y/boot.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["org.nixos.specialisation.v1"]["alpha"]["org.nixos.bootspec.v1"]["label"] = "x\nlinux /EFI/evil"
json.dump(d, open(sys.argv[1], "w"))
PY
t_expect_exit 1 "$MKVMIMAGE" -q --efi --root "$R" -o "$T/x.img" "$T/closure"
grep -q "boot.json: org.nixos.specialisation.v1.alpha.org.nixos.bootspec.v1.label: holds a control" \
	"$T/stderr" || t_fail "label with a newline: $(cat "$T/stderr")"
[ ! -e "$T/x.img" ] || t_fail "output left behind"

# without boot.json: the toplevel's files, and the manifest says so
rm "$R$Y/boot.json"
"$MKVMIMAGE" -q --efi --root "$R" -o "$T/f.img" "$T/closure" || t_fail "build without boot.json"
[ "$(disk_json "$T/f.img.json" 'm["boot_source"]')" = files ] || t_fail "boot_source files"
[ "$(disk_json "$T/f.img.json" 'len(m["entries"])')" = 1 ] || t_fail "one entry without boot.json"
t_pass
