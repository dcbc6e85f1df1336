#!/usr/bin/env bash
# disk-uki.sh -- mkvmimage --efi --uki: one unified kernel image at
# EFI/BOOT/BOOTX64.EFI built from Debian's linuxx64.efi.stub; objdump and
# objcopy (binutils) read its sections back: .osrel, .cmdline, .initrd and
# .linux hold exactly the inputs, aligned as the stub's headers say.
. "$SRCDIR/tests/lib.sh"
t_begin disk-uki
t_need mcopy objdump objcopy python3 fsck.fat
STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
[ -r "$STUB" ] || t_skip "$STUB missing (systemd-boot-efi)"
. "$SRCDIR/tests/integration/disk-lib.sh"
disk_store "$T"
R=$T/root

"$MKVMIMAGE" -q --efi --uki-stub "$STUB" --root "$R" -o "$T/u.img" "$T/closure" ||
	t_fail "build"
[ "$(disk_json "$T/u.img.json" 'm["bootloader"]')" = uki ] || t_fail "manifest bootloader"
off=$(disk_json "$T/u.img.json" 'm["partitions"][0]["offset"]')
export MTOOLS_SKIP_CHECK=1
mcopy -n -i "$T/u.img@@$off" ::/EFI/BOOT/BOOTX64.EFI "$T/uki.efi" || t_fail "mcopy"
[ -z "$(mdir -b -i "$T/u.img@@$off" ::/loader 2>/dev/null)" ] || t_fail "loader entries with --uki"
disk_part "$T/u.img" 1 "$T/esp"
fsck.fat -n "$T/esp" >/dev/null 2>&1 || t_fail "fsck.fat"

objdump -h "$T/uki.efi" >"$T/sections" 2>&1 || t_fail "objdump: $(cat "$T/sections")"
for s in .osrel .cmdline .initrd .linux; do
	grep -q " $s " "$T/sections" || t_fail "no $s section: $(cat "$T/sections")"
done
for s in osrel cmdline initrd linux; do
	objcopy -O binary --only-section=.$s "$T/uki.efi" "$T/$s" || t_fail "objcopy .$s"
done
cmp -s "$T/linux" "$R$K/bzImage" || t_fail ".linux is not the kernel"
cmp -s "$T/initrd" "$R$I/initrd" || t_fail ".initrd is not the initrd"
[ "$(cat "$T/cmdline")" = "init=$Y/init console=ttyS0 loglevel=4" ] ||
	t_fail ".cmdline: $(cat "$T/cmdline")"
grep -q '^ID=nixos' "$T/osrel" || t_fail ".osrel: $(cat "$T/osrel")"
python3 - "$T/uki.efi" "$STUB" <<'PY' || t_fail "PE layout"
import struct, sys
d = open(sys.argv[1], "rb").read(); s = open(sys.argv[2], "rb").read()
pe = struct.unpack_from("<I", d, 0x3C)[0]
n = struct.unpack_from("<H", d, pe + 6)[0]; optsz = struct.unpack_from("<H", d, pe + 20)[0]
opt = pe + 24
salign, falign = struct.unpack_from("<II", d, opt + 32)
spe = struct.unpack_from("<I", s, 0x3C)[0]
assert (salign, falign) == struct.unpack_from("<II", s, spe + 24 + 32), "alignment not the stub's"
soi = struct.unpack_from("<I", d, opt + 56)[0]
sn = struct.unpack_from("<H", s, spe + 6)[0]
assert n == sn + 4, "four sections added"
end = 0
for i in range(n):
    h = opt + optsz + 40 * i
    vs, va, rs, rp = struct.unpack_from("<IIII", d, h + 8)
    if i >= sn:  # ours (the stub's own need not be)
        assert va % salign == 0 and rp % falign == 0 and rs % falign == 0, "section %d alignment" % i
    assert rp + rs <= len(d), "section %d beyond the file" % i
    end = max(end, va + vs)
assert soi >= end and soi % salign == 0, "SizeOfImage"
PY
t_pass
