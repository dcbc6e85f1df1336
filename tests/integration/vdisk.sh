#!/usr/bin/env bash
# vdisk.sh -- VHD (fixed, dynamic), VDI and VMDK (monolithicSparse,
# streamOptimized) written directly by mkvmimage, checked by qemu-img: it
# detects the format and the virtual size (a fixed VHD has its footer only at
# the end, which qemu's probe does not look at: there `-f vpc`), `check`
# finds no errors where qemu can check the format, and `compare` against the
# raw build of the same inputs finds them identical. Also: the default from
# the output's suffix, the VHD's 1 MiB rounding, our own reader (vmlaunch's
# probe and overlay on each), and usage errors.
. "$SRCDIR/tests/lib.sh"
t_begin vdisk
t_need qemu-img python3
. "$SRCDIR/tests/integration/disk-lib.sh"
disk_store "$T"
R=$T/root

build() { # build OUT ARGS...: an --efi disk of the test closure
	local out=$1
	shift
	SOURCE_DATE_EPOCH=1 "$MKVMIMAGE" -q --efi --root "$R" "$@" -o "$out" "$T/closure" ||
		t_fail "mkvmimage $* -o $out"
}
info() { # info FILE [FMT]: "format virtual-size create-type"
	qemu-img info --output=json ${2:+-f "$2"} "$1" | python3 -c '
import json, sys
j = json.load(sys.stdin)
ct = j.get("format-specific", {}).get("data", {}).get("create-type", "-")
print(j["format"], j["virtual-size"], ct)'
}

build "$T/ref.img"
size=$(stat -c %s "$T/ref.img")
[ $((size % 1048576)) = 0 ] || t_fail "the raw --efi disk is not whole MiB ($size)"

# name : mkvmimage options : qemu -f for info ("" = its own probe) : format : create type : checkable
cases=(
	"fixed.vhd::vpc:vpc:-:no"
	"fixed2.vpc:--vpc-subformat fixed:vpc:vpc:-:no"
	"dyn.vhd:--vpc-subformat dynamic::vpc:-:no"
	"d.vdi:::vdi:-:yes"
	"sparse.vmdk:::vmdk:monolithicSparse:yes"
	"stream.vmdk:--vmdk-subformat streamOptimized::vmdk:streamOptimized:yes"
	"fmt.img:--format vdi::vdi:-:yes"
)
for c in "${cases[@]}"; do
	IFS=: read -r name opts qf fmt ct chk <<<"$c"
	# shellcheck disable=SC2086
	build "$T/$name" $opts
	got=$(info "$T/$name" "$qf") || t_fail "qemu-img info $name"
	[ "$got" = "$fmt $size $ct" ] || t_fail "$name: qemu-img info says '$got', wanted '$fmt $size $ct'"
	if [ "$chk" = yes ]; then
		qemu-img check -f "$fmt" "$T/$name" >"$T/check.out" 2>&1 ||
			t_fail "qemu-img check $name: $(cat "$T/check.out")"
		grep -q "No errors were found" "$T/check.out" || t_fail "qemu-img check $name: $(cat "$T/check.out")"
	fi
	out=$(qemu-img compare -f raw -F "$fmt" "$T/ref.img" "$T/$name" 2>&1) ||
		t_fail "qemu-img compare ref.img $name: $out"
	[ "$(disk_json "$T/$name.json" 'm["format"]')" = "$fmt" ] || t_fail "$name: manifest format"
	# our reader (vmlaunch's probe and the overlay's backing format)
	d=$("$VMLAUNCH" --state-dir "$T/st-$name" --dry-run "$T/$name" 2>&1) || t_fail "vmlaunch --dry-run $name: $d"
	grep -q "($fmt, never written)" <<<"$d" || t_fail "vmlaunch sees $name as: $(grep image: <<<"$d")"
done
# random writes through the device (partial blocks, rewrites, zeroes,
# write_zeroes) on each format and on raw: qemu-img and our reader agree
TOOL=$BUILDDIR/qcow2-tool
for f in vpc:vpc vpc-dynamic:vpc vdi:vdi vmdk:vmdk vmdk-stream:vmdk; do
	tf=${f%%:*} qf=${f#*:}
	"$TOOL" write "$T/p.raw" --format raw --size 50331648 pattern 7 300 400000 data 0 70000 3 ||
		t_fail "pattern raw"
	"$TOOL" write "$T/p.$tf" --format "$tf" --size 50331648 pattern 7 300 400000 data 0 70000 3 ||
		t_fail "pattern $tf"
	out=$(qemu-img compare -f raw -F "$qf" "$T/p.raw" "$T/p.$tf" 2>&1) || t_fail "pattern $tf: $out"
	"$TOOL" dump "$T/p.$tf" "$T/p.back" || t_fail "pattern $tf: our reader"
	cmp -s "$T/p.raw" "$T/p.back" || t_fail "pattern $tf: our reader differs"
	rm -f "$T/p.$tf" "$T/p.back"
done

# sparse formats hold only what was written; the stream is compressed
for n in dyn.vhd d.vdi sparse.vmdk stream.vmdk; do
	[ "$(stat -c %s "$T/$n")" -lt $((size / 4)) ] || t_fail "$n is not sparse: $(stat -c %s "$T/$n") bytes"
done
[ "$(stat -c %s "$T/stream.vmdk")" -lt "$(stat -c %s "$T/sparse.vmdk")" ] || t_fail "stream.vmdk is not compressed"
# what VMware reads first: the descriptor names the final file, not the temporary
grep -aq 'RW [0-9]* SPARSE "sparse.vmdk"' "$T/sparse.vmdk" || t_fail "descriptor names another file"
# the fixed VHD is the raw disk and a footer: cut the footer off and it is raw
head -c "$size" "$T/fixed.vhd" | cmp -s - "$T/ref.img" || t_fail "fixed.vhd is not raw + footer"
[ "$(stat -c %s "$T/fixed.vhd")" = $((size + 512)) ] || t_fail "fixed.vhd: not size + 512"

# a bare file system of a size not in whole MiB: the VHD is rounded up to
# 1 MiB (Azure) and the file system fills it: as a raw build of that size
SOURCE_DATE_EPOCH=1 "$MKVMIMAGE" -q --seed s --empty --size 20000K -o "$T/e.vhd" ||
	t_fail "--empty --size 20000K -o e.vhd"
[ "$(info "$T/e.vhd" vpc)" = "vpc 20971520 -" ] || t_fail "e.vhd: $(info "$T/e.vhd" vpc)"
[ "$(disk_json "$T/e.vhd.json" 'm["virtual_size"], m["partitions"][0]["size"]')" = "20971520 20971520" ] ||
	t_fail "e.vhd manifest sizes: $(disk_json "$T/e.vhd.json" 'm["virtual_size"], m["partitions"][0]["size"]')"
SOURCE_DATE_EPOCH=1 "$MKVMIMAGE" -q --seed s --empty --size 20M -o "$T/e.img" || t_fail "--empty e.img"
qemu-img compare -f raw -F vpc "$T/e.img" "$T/e.vhd" >/dev/null || t_fail "e.vhd differs from e.img"
# a partitioned disk must already be whole MiB: refused, nothing left behind
t_expect_exit 1 "$MKVMIMAGE" -q --efi --root "$R" --size 400000K -o "$T/odd.vhd" "$T/closure"
grep -q "whole MiB" "$T/stderr" || t_fail "odd size: $(cat "$T/stderr")"
[ ! -e "$T/odd.vhd" ] || t_fail "odd.vhd left behind"

# the VHD's timestamp is SOURCE_DATE_EPOCH (seconds since 2000 in the footer)
SOURCE_DATE_EPOCH=1700000000 "$MKVMIMAGE" -q --empty --size 20M -o "$T/t.vhd" || t_fail "t.vhd"
ts=$(tail -c 512 "$T/t.vhd" | od -An -tx1 -j24 -N4 | tr -d ' \n')
[ "$ts" = "$(printf %08x $((1700000000 - 946684800)))" ] || t_fail "VHD timestamp $ts"

# hostile images: our reader (vmlaunch) refuses them with a message naming
# the file, never crashes. poke FILE OFFSET HEX: overwrite bytes.
poke() { printf "$(sed 's/../\\x&/g' <<<"$3")" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
bad_image() { # bad_image NAME WHAT: vmlaunch must fail with "not a valid"
	local rc=0
	"$VMLAUNCH" --state-dir "$T/st-bad" --boot efi --dry-run "$T/$1" >"$T/bad.out" 2>&1 || rc=$?
	[ $rc = 1 ] || t_fail "$2: vmlaunch exit $rc: $(cat "$T/bad.out")"
	grep -q "$1: not a valid" "$T/bad.out" || t_fail "$2: $(cat "$T/bad.out")"
}
cp "$T/d.vdi" "$T/b1.vdi" && poke "$T/b1.vdi" 512 00000010 && bad_image b1.vdi "VDI block map entry past the end"
cp "$T/d.vdi" "$T/b2.vdi" && poke "$T/b2.vdi" $((0x178)) 00000000 && bad_image b2.vdi "VDI block size 0"
cp "$T/d.vdi" "$T/b3.vdi" && poke "$T/b3.vdi" $((0x170)) ffffffffffffffff && bad_image b3.vdi "VDI disk size"
cp "$T/dyn.vhd" "$T/b4.vhd" && poke "$T/b4.vhd" 1536 7fffffff && bad_image b4.vhd "VHD checksum fine, BAT wrong"
cp "$T/fixed.vhd" "$T/b5.vhd" && poke "$T/b5.vhd" $((size + 28)) 5858 && bad_image b5.vhd "VHD footer checksum"
cp "$T/sparse.vmdk" "$T/b6.vmdk" && poke "$T/b6.vmdk" 12 ffffffffffffff7f && bad_image b6.vmdk "VMDK capacity"
cp "$T/sparse.vmdk" "$T/b7.vmdk" && poke "$T/b7.vmdk" 56 ffffff7f00000000 && bad_image b7.vmdk "VMDK GD offset"
head -c 4096 "$T/stream.vmdk" >"$T/b8.vmdk" && bad_image b8.vmdk "VMDK stream cut short"
head -c 600 "$T/dyn.vhd" >"$T/b9.vhd" && bad_image b9.vhd "VHD cut short"

# usage errors
t_expect_exit 2 "$MKVMIMAGE" --format vhdx -o "$T/x.vhd" "$T/closure"
t_expect_exit 2 "$MKVMIMAGE" --vpc-subformat dynamic -o "$T/x.qcow2" "$T/closure"
t_expect_exit 2 "$MKVMIMAGE" --vmdk-subformat streamoptimized -o "$T/x.vmdk" "$T/closure"
t_expect_exit 2 "$MKVMIMAGE" --compress zstd -o "$T/x.vdi" "$T/closure"
ls "$T" | grep -q '^x\.' && t_fail "a refused build left a file"
t_pass
