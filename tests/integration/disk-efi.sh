#!/usr/bin/env bash
# disk-efi.sh -- mkvmimage --efi: GPT checked with sgdisk -v and sfdisk --json
# (types, names, GUIDs with version/variant bits, 1 MiB alignment, sizes as
# in the manifest), the ESP checked with fsck.fat -n and extracted with
# mtools (systemd-boot, kernel and initrd under their NixOS names, loader
# entry), the root checked with e2fsck -fn and debugfs, the manifest.
. "$SRCDIR/tests/lib.sh"
t_begin disk-efi
t_need sgdisk sfdisk fsck.fat mcopy mdir e2fsck debugfs python3
. "$SRCDIR/tests/integration/disk-lib.sh"
disk_store "$T"
R=$T/root

"$MKVMIMAGE" -q --efi --root "$R" --kernel-params "quiet" -o "$T/d.img" "$T/closure" ||
	t_fail "build"
M=$T/d.img.json
[ -s "$M" ] || t_fail "no manifest"

# partition table, by tools we did not write
sgdisk -v "$T/d.img" >"$T/sgdisk" 2>&1 || t_fail "sgdisk -v: $(cat "$T/sgdisk")"
grep -q "No problems found" "$T/sgdisk" || t_fail "sgdisk: $(cat "$T/sgdisk")"
sfdisk --json "$T/d.img" >"$T/sf.json" || t_fail "sfdisk --json"
python3 - "$T/sf.json" "$M" "$(stat -c %s "$T/d.img")" <<'PY' || t_fail "sfdisk vs plan"
import json, sys
sf = json.load(open(sys.argv[1]))["partitiontable"]
m = json.load(open(sys.argv[2]))
size = int(sys.argv[3])
def check(c, what):
    if not c:
        sys.exit("mismatch: " + what)
check(sf["label"] == "gpt", "label")
check(sf["id"].lower() == m["disk_guid"], "disk guid")
p = sf["partitions"]
check(len(p) == 2, "two partitions")
want = [("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "ESP", "esp"),
        ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "nixos", "root")]
for i, (t, n, role) in enumerate(want):
    mp = m["partitions"][i]
    check(p[i]["type"] == t and mp["type"] == t.lower(), "type %d" % i)
    check(p[i]["name"] == n and mp["name"] == n and mp["role"] == role, "name %d" % i)
    check(p[i]["uuid"].lower() == mp["uuid"], "uuid %d" % i)
    check(p[i]["start"] * 512 == mp["offset"] and p[i]["size"] * 512 == mp["size"], "extent %d" % i)
    check(p[i]["start"] % 2048 == 0 and p[i]["size"] % 2048 == 0, "1 MiB alignment %d" % i)
for g in [m["disk_guid"]] + [q["uuid"] for q in m["partitions"]]:
    check(g[14] in "45" and g[19] in "89ab", "version/variant bits of " + g)
check(p[0]["start"] == 2048, "ESP at 1 MiB")
check(p[0]["size"] * 512 == 256 << 20, "ESP 256 MiB by default")
check(p[1]["start"] == p[0]["start"] + p[0]["size"], "root follows the ESP")
check(m["virtual_size"] == size, "virtual size")
check(size - (p[1]["start"] + p[1]["size"]) * 512 >= 33 * 512, "room for the backup GPT")
check(m["mode"] == "efi" and m["boot"] == "efi" and m["partition_table"] == "gpt", "mode")
check(m["bootloader"] == "systemd-boot", "bootloader")
check(m["system"] == "/nix/store/3yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy-nixos-system-test-25.05", "system")
check(m["kernel_params"] == "console=ttyS0 loglevel=4 quiet", "kernel params")
check(m["format"] == "raw" and m["compression"] == "none" and m["epoch"] == 1, "format")
check(list(m.keys())[:3] == ["manifest_version", "generator", "image"], "key order")
PY
sha=$(sha256sum "$T/d.img" | cut -d' ' -f1)
[ "$(disk_json "$M" 'm["sha256"]')" = "$sha" ] || t_fail "manifest sha256"

# the ESP: fsck.fat, blkid's view, then its contents with mtools
disk_part "$T/d.img" 1 "$T/esp"
fsck.fat -n "$T/esp" >"$T/fsck" 2>&1 || t_fail "fsck.fat: $(cat "$T/fsck")"
grep -qi "differ\|wrong\|invalid" "$T/fsck" && t_fail "fsck.fat: $(cat "$T/fsck")"
if t_can "ESP UUID and label by blkid" cmd:blkid; then
	id=$(blkid -o value -s UUID "$T/esp")
	[ "$id" = "$(disk_json "$M" 'm["partitions"][0]["fs_uuid"]')" ] || t_fail "ESP fs_uuid $id"
	[ "$(blkid -o value -s LABEL "$T/esp")" = ESP ] || t_fail "ESP label"
fi
export MTOOLS_SKIP_CHECK=1
off=$(disk_json "$M" 'm["partitions"][0]["offset"]')
mkdir "$T/espout"
mcopy -s -n -i "$T/d.img@@$off" ::/EFI ::/loader "$T/espout/" || t_fail "mcopy -s"
(cd "$T/espout" && find . -type f | LC_ALL=C sort) >"$T/esp.lst"
cat >"$T/esp.want" <<LST
./EFI/BOOT/BOOTX64.EFI
./EFI/nixos/1kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk-linux-6.1.0-bzImage.efi
./EFI/nixos/2iiiiiiiiiiiiiiiiiiiiiiiiiiiiiii-initrd-linux-6.1.0-initrd.efi
./EFI/systemd/systemd-bootx64.efi
./loader/entries/nixos-generation-1.conf
./loader/loader.conf
LST
cmp -s "$T/esp.lst" "$T/esp.want" || t_fail "ESP files: $(diff "$T/esp.want" "$T/esp.lst")"
sb=$R$B/lib/systemd/boot/efi/systemd-bootx64.efi
cmp -s "$sb" "$T/espout/EFI/BOOT/BOOTX64.EFI" || t_fail "BOOTX64.EFI is not systemd-boot"
cmp -s "$sb" "$T/espout/EFI/systemd/systemd-bootx64.efi" || t_fail "systemd-bootx64.efi"
cmp -s "$R$K/bzImage" "$T/espout/EFI/nixos/1kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk-linux-6.1.0-bzImage.efi" ||
	t_fail "kernel"
cmp -s "$R$I/initrd" "$T/espout/EFI/nixos/2iiiiiiiiiiiiiiiiiiiiiiiiiiiiiii-initrd-linux-6.1.0-initrd.efi" ||
	t_fail "initrd"
cat >"$T/entry.want" <<ENT
title NixOS
sort-key nixos
version Generation 1 25.05test, built on 1970-01-01
linux /EFI/nixos/1kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk-linux-6.1.0-bzImage.efi
initrd /EFI/nixos/2iiiiiiiiiiiiiiiiiiiiiiiiiiiiiii-initrd-linux-6.1.0-initrd.efi
options init=$Y/init console=ttyS0 loglevel=4 quiet
ENT
cmp -s "$T/entry.want" "$T/espout/loader/entries/nixos-generation-1.conf" ||
	t_fail "entry: $(diff "$T/entry.want" "$T/espout/loader/entries/nixos-generation-1.conf")"
grep -qx 'default nixos-generation-1.conf' "$T/espout/loader/loader.conf" || t_fail "loader.conf"
mdir -i "$T/d.img@@$off" ::/ | grep -q "Volume in drive : is ESP" || t_fail "volume label"

# the root: e2fsck, label, a file read back
disk_part "$T/d.img" 2 "$T/root.img"
e2fsck -fn "$T/root.img" >"$T/e2fsck" 2>&1 || t_fail "e2fsck: $(cat "$T/e2fsck")"
debugfs -R "cat $D/a-file-with-a-rather-long-name-for-fat.txt" "$T/root.img" 2>/dev/null |
	grep -qx hello || t_fail "root content"
debugfs -R "ls -l $D/many" "$T/root.img" 2>/dev/null | grep -c entry- | grep -qx 1000 ||
	t_fail "root: 1000 entries"
if t_can "root UUID and label by blkid" cmd:blkid; then
	[ "$(blkid -o value -s LABEL "$T/root.img")" = nixos ] || t_fail "root label"
	[ "$(blkid -o value -s UUID "$T/root.img")" = "$(disk_json "$M" 'm["partitions"][1]["fs_uuid"]')" ] ||
		t_fail "root fs_uuid"
fi

# errors: an ESP too small for FAT32 / for the content, a --size too small
t_expect_exit 1 "$MKVMIMAGE" -q --efi --root "$R" --boot-size 20M -o "$T/x.img" "$T/closure"
grep -q -- "--boot-size" "$T/stderr" || t_fail "--boot-size message: $(cat "$T/stderr")"
head -c 40000000 /dev/zero >"$R$K/big"
t_expect_exit 1 "$MKVMIMAGE" -q --efi --root "$R" --boot-size 40M --bootloader "$R$K/big" \
	-o "$T/x.img" "$T/closure"
grep -q -- "--boot-size" "$T/stderr" || t_fail "content message: $(cat "$T/stderr")"
rm "$R$K/big"
t_expect_exit 1 "$MKVMIMAGE" -q --efi --root "$R" --size 100M -o "$T/x.img" "$T/closure"
grep -q "too small" "$T/stderr" || t_fail "--size message: $(cat "$T/stderr")"
[ ! -e "$T/x.img" ] || t_fail "output left after an error"
# --size: the root partition takes the rest
"$MKVMIMAGE" -q --efi --root "$R" --size 600M -o "$T/s.img" "$T/closure" || t_fail "--size"
[ "$(stat -c %s "$T/s.img")" = $((600 << 20)) ] || t_fail "--size not exact"
sgdisk -v "$T/s.img" | grep -q "No problems found" || t_fail "sgdisk on --size"
disk_part "$T/s.img" 2 "$T/root2.img"
e2fsck -fn "$T/root2.img" >"$T/e2fsck" 2>&1 || t_fail "e2fsck (--size): $(cat "$T/e2fsck")"
t_pass
