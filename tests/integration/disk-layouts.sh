#!/usr/bin/env bash
# disk-layouts.sh -- --hybrid (GPT: BIOS boot + ESP + root) and --bios (MBR,
# one bootable root partition at 1 MiB), checked with sgdisk/sfdisk; IDs stay
# put when a partition is added; GRUB i386-pc installed from --grub DIR (a
# core.img made here with grub-mkimage) or from the closure (the same files
# in a store path's lib/grub/i386-pc, on disk or in a tar), or the disk says
# it has no loader. The planned qcow2 of each disk converts back to its raw
# build byte for byte.
. "$SRCDIR/tests/lib.sh"
t_begin disk-layouts
t_need sgdisk sfdisk e2fsck python3 fsck.fat
. "$SRCDIR/tests/integration/disk-lib.sh"
disk_store "$T"
R=$T/root

"$MKVMIMAGE" -q --efi --seed s1 --root "$R" -o "$T/e.img" "$T/closure" || t_fail "efi"
"$MKVMIMAGE" --hybrid --seed s1 --root "$R" -o "$T/h.img" "$T/closure" 2>"$T/h.err" ||
	t_fail "hybrid: $(cat "$T/h.err")"
sgdisk -v "$T/h.img" | grep -q "No problems found" || t_fail "sgdisk -v hybrid"
python3 - "$T/e.img.json" "$T/h.img.json" <<'PY' || t_fail "hybrid layout"
import json, sys, subprocess
e = json.load(open(sys.argv[1])); h = json.load(open(sys.argv[2]))
def check(c, what):
    if not c:
        sys.exit("mismatch: " + what)
roles = [p["role"] for p in h["partitions"]]
check(roles == ["bios-boot", "esp", "root"], "roles %s" % roles)
check(h["partitions"][0]["type"] == "21686148-6449-6e6f-744e-656564454649", "bios boot type")
check(h["partitions"][0]["offset"] == 1 << 20 and h["partitions"][0]["size"] == 1 << 20, "bios boot extent")
# adding the BIOS boot partition changes no other ID
check(e["disk_guid"] == h["disk_guid"], "disk guid")
for role in ("esp", "root"):
    pe = [p for p in e["partitions"] if p["role"] == role][0]
    ph = [p for p in h["partitions"] if p["role"] == role][0]
    check(pe["uuid"] == ph["uuid"], role + " guid")
    check(pe["fs_uuid"] == ph["fs_uuid"], role + " fs uuid")
check(h["mode"] == "hybrid" and h["partition_table"] == "gpt", "mode")
sf = json.loads(subprocess.check_output(["sfdisk", "--json", sys.argv[2][:-5]]))["partitiontable"]
check([p["uuid"].lower() for p in sf["partitions"]] == [p["uuid"] for p in h["partitions"]], "sfdisk guids")
PY
grep -qi "no BIOS boot loader" "$T/h.err" || t_fail "no warning without --grub: $(cat "$T/h.err")"
disk_part "$T/h.img" 2 "$T/hesp"
fsck.fat -n "$T/hesp" >/dev/null 2>&1 || t_fail "fsck.fat hybrid ESP"
disk_part "$T/h.img" 3 "$T/hroot"
e2fsck -fn "$T/hroot" >/dev/null 2>&1 || t_fail "e2fsck hybrid root"

# --bios: MBR, one bootable Linux partition at 1 MiB, no loader without --grub
"$MKVMIMAGE" -q --bios --root "$R" -o "$T/b.img" "$T/closure" 2>"$T/b.err" || t_fail "bios"
sfdisk --json "$T/b.img" >"$T/b.sf" || t_fail "sfdisk bios"
python3 - "$T/b.sf" "$T/b.img.json" <<'PY' || t_fail "bios layout"
import json, sys
sf = json.load(open(sys.argv[1]))["partitiontable"]; m = json.load(open(sys.argv[2]))
def check(c, what):
    if not c:
        sys.exit("mismatch: " + what)
check(sf["label"] == "dos" and len(sf["partitions"]) == 1, "one dos partition")
p = sf["partitions"][0]
check(p["start"] == 2048 and p["type"] == "83" and p.get("bootable") is True, "partition %s" % p)
check(int(sf["id"], 16) != 0, "disk signature")
mp = m["partitions"][0]
check(mp["type"] == "83" and mp["offset"] == 1 << 20 and mp["size"] == p["size"] * 512, "manifest partition")
check(m["partition_table"] == "mbr" and m["boot"] == "none" and m["bootloader"] == "none", "no loader")
check("disk_guid" not in m, "no disk guid on MBR")
check(m["system"].endswith("-nixos-system-test-25.05") and m["kernel_params"] == "console=ttyS0 loglevel=4", "system")
PY
disk_part "$T/b.img" 1 "$T/broot"
e2fsck -fn "$T/broot" >/dev/null 2>&1 || t_fail "e2fsck bios root"
t_expect_exit 1 "$MKVMIMAGE" -q --bios --uki --root "$R" -o "$T/x.img" "$T/closure"

# GRUB from --grub DIR: boot.img in LBA 0 pointing at core.img in the MBR gap
if t_can "GRUB from --grub DIR" cmd:grub-mkimage file:/usr/lib/grub/i386-pc/boot.img; then
	mkdir "$T/grub"
	cp /usr/lib/grub/i386-pc/boot.img "$T/grub/"
	grub-mkimage -O i386-pc -o "$T/grub/core.img" -p '(hd0,msdos1)/boot/grub' \
		biosdisk part_msdos ext2 || t_fail "grub-mkimage"
	"$MKVMIMAGE" -q --bios --grub "$T/grub" --root "$R" -o "$T/g.img" "$T/closure" ||
		t_fail "bios --grub"
	[ "$(disk_json "$T/g.img.json" 'm["bootloader"] + " " + m["boot"]')" = "grub bios" ] ||
		t_fail "manifest grub"
	sfdisk --json "$T/g.img" | grep -q '"bootable": true' || t_fail "table lost by boot.img"
	python3 - "$T/g.img" "$T/grub" <<'PY' || t_fail "grub placement"
import sys, struct
d = open(sys.argv[1], "rb").read(1 << 20)
boot = open(sys.argv[2] + "/boot.img", "rb").read()
core = open(sys.argv[2] + "/core.img", "rb").read()
assert d[0x5A:0x5C] == boot[0x5A:0x5C] and d[0x66:0x1B8] == boot[0x66:0x1B8], "boot code"
assert struct.unpack_from("<Q", d, 0x5C)[0] == 1, "kernel sector"
n = (len(core) + 511) // 512
start, count = struct.unpack_from("<QH", d, 512 + 0x1F4)
assert start == 2 and count == n - 1, "blocklist %d %d" % (start, count)
assert d[512:512 + 0x1F4] == core[:0x1F4] and d[1024:512 + len(core)] == core[512:], "core.img"
assert d[510:512] == b"\x55\xaa"
PY
	# The same files in a closure path (lib/grub/i386-pc) are found without
	# --grub, on disk and in a tar stream: the same disk as with --grub.
	gp=$(head -n1 "$T/closure")
	mkdir -p "$R$gp/lib/grub/i386-pc"
	cp "$T/grub/boot.img" "$T/grub/core.img" "$R$gp/lib/grub/i386-pc/"
	"$MKVMIMAGE" -q --bios --grub "$T/grub" --root "$R" -o "$T/g2.img" "$T/closure" ||
		t_fail "bios --grub (store with grub)"
	"$MKVMIMAGE" -q --bios --root "$R" -o "$T/g3.img" "$T/closure" 2>"$T/g3.err" ||
		t_fail "bios, grub from the closure"
	cmp "$T/g2.img" "$T/g3.img" || t_fail "GRUB from the closure differs from --grub"
	[ ! -s "$T/g3.err" ] || t_fail "warned although the closure has GRUB: $(cat "$T/g3.err")"
	(cd "$R" && tar -cf - nix) | "$MKVMIMAGE" -q --bios --tar - -o "$T/g4.img" "$T/closure" ||
		t_fail "bios --tar, grub from the stream"
	cmp "$T/g2.img" "$T/g4.img" || t_fail "GRUB from the tar stream differs from --grub"
	[ "$(disk_json "$T/g4.img.json" 'm["bootloader"]')" = grub ] || t_fail "manifest: grub"

	# The planned qcow2 disks (tables in front, GRUB's stages in their
	# places as the disk goes out) hold the raw disks' bytes: qemu-img
	# converts each back to the raw build, byte for byte, GRUB included.
	if t_can "planned qcow2 disks against raw" cmd:qemu-img; then
		for m in bios hybrid efi; do
			g=(--grub "$T/grub")
			[ $m != efi ] || g=()
			for f in raw qcow2; do
				"$MKVMIMAGE" -q --$m "${g[@]}" --seed s1 --format $f --root "$R" \
					-o "$T/p.$f" "$T/closure" || t_fail "$m $f"
			done
			qemu-img check -q "$T/p.qcow2" || t_fail "$m: qemu-img check"
			qemu-img convert -O raw "$T/p.qcow2" "$T/p.back" || t_fail "$m: qemu-img convert"
			cmp "$T/p.raw" "$T/p.back" || t_fail "$m: the qcow2 is not the raw disk"
			rm -f "$T/p.raw" "$T/p.qcow2" "$T/p.back" "$T"/p.*.json
		done
	fi
fi
t_pass
