#!/usr/bin/env bash
# disk.sh -- mkvmimage --efi against the classic pipeline, side by side.
#
# Usage: bench/disk.sh [--work DIR] [--runs N]
#
# Closure: bench/make-closure.sh (>= 500 MB of installed files, made once in
# DIR/closure) plus a system toplevel (this machine's kernel and initrd) and
# systemd-boot as extra store paths. Both pipelines produce a qcow2 holding
# the same GPT disk: a 256 MiB FAT32 ESP (systemd-boot, kernel, initrd,
# loader entries) and an ext4 root of the same size, label, UUID, hash seed
# and times:
#   ours:    mkvmimage --efi --root DIR/closure -o ours.qcow2 disk-paths (default
#            options, so the manifest and its sha256; --no-manifest a second row)
#   classic: truncate; sfdisk (a script with our GUIDs); mkfs.fat -F 32 + mcopy -s
#            of a prepared ESP directory; E2FSPROGS_FAKE_TIME=1 mkfs.ext4 -d with our
#            UUID and hash seed; dd both into place; qemu-img convert -O qcow2.
#            (the ESP directory is prepared before the clock starts, and mkfs.ext4 -d
#            reads the closure in place: the classic numbers are flattering)
# Page cache warm for both (one untimed read first). Prints a Markdown table
# for bench/RESULTS.md; both outputs are checked (sgdisk -v, fsck.fat -n,
# e2fsck -fn).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${TMPDIR:-/tmp}/bench-disk runs=3
while [ $# -gt 0 ]; do
	case "$1" in
	--work) work=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	*) echo "disk.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
MKVMIMAGE=${MKVMIMAGE:-$here/../build/mkvmimage}
PATH=$PATH:/usr/sbin:/sbin
export MTOOLS_SKIP_CHECK=1 LC_ALL=C
for p in sfdisk sgdisk mkfs.fat mcopy mmd mkfs.ext4 e2fsck fsck.fat qemu-img dumpe2fs bc python3; do
	command -v $p >/dev/null || { echo "disk.sh: $p not installed" >&2; exit 1; }
done
mkdir -p "$work"
"$here/make-closure.sh" --root "$work/closure" >&2
C=$work/closure
S=/nix/store
kver=$(ls /boot/vmlinuz-* | sort -V | tail -1 | sed 's|/boot/vmlinuz-||')
KP=$S/b1kkkkkkkkkkkkkkkkkkkkkkkkkkkkkk-linux-$kver
IP=$S/b2iiiiiiiiiiiiiiiiiiiiiiiiiiiiii-initrd-linux-$kver
BP=$S/b4bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-systemd-boot
YP=$S/b3yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy-nixos-system-bench-25.05
if [ ! -e "$C$YP/init" ]; then
	mkdir -p "$C$KP" "$C$IP" "$C$BP/lib/systemd/boot/efi" "$C$YP"
	cp "/boot/vmlinuz-$kver" "$C$KP/bzImage"
	cp "/boot/initrd.img-$kver" "$C$IP/initrd"
	cp /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$C$BP/lib/systemd/boot/efi/"
	ln -sfn "$KP/bzImage" "$C$YP/kernel"
	ln -sfn "$IP/initrd" "$C$YP/initrd"
	printf '#!/bin/sh\n' >"$C$YP/init"
	printf 'console=ttyS0' >"$C$YP/kernel-params"
fi
{ cat "$C/store-paths"; printf '%s\n' "$KP" "$IP" "$BP" "$YP"; } | sort >"$work/disk-paths"
tar -cf - -C "$C" nix >/dev/null # warm the page cache for both pipelines

now() { date +%s.%N; }
ours() { # default options: the manifest and its sha256 too
	rm -f "$work/ours.qcow2" "$work/ours.qcow2.json"
	SOURCE_DATE_EPOCH=1 "$MKVMIMAGE" -q --efi --root "$C" -o "$work/ours.qcow2" \
		"$work/disk-paths"
}
ours_nm() {
	rm -f "$work/ours-nm.qcow2"
	SOURCE_DATE_EPOCH=1 "$MKVMIMAGE" -q --efi --no-manifest --root "$C" -o "$work/ours-nm.qcow2" \
		"$work/disk-paths"
}
ours_raw() {
	rm -f "$work/ours.img"
	SOURCE_DATE_EPOCH=1 "$MKVMIMAGE" -q --efi --manifest "$work/ours.json" --root "$C" \
		-o "$work/ours.img" "$work/disk-paths"
}
ours_raw
j() { python3 -c "import json,sys; m=json.load(open('$work/ours.json')); print($1)"; }
size=$(j 'm["virtual_size"]')
disk_guid=$(j 'm["disk_guid"]')
esp_off=$(j 'm["partitions"][0]["offset"]') esp_size=$(j 'm["partitions"][0]["size"]')
esp_uuid=$(j 'm["partitions"][0]["uuid"]') volid=$(j 'm["partitions"][0]["fs_uuid"]')
root_off=$(j 'm["partitions"][1]["offset"]') root_size=$(j 'm["partitions"][1]["size"]')
root_uuid=$(j 'm["partitions"][1]["uuid"]') fs_uuid=$(j 'm["partitions"][1]["fs_uuid"]')
dd if="$work/ours.img" of="$work/ours-root.img" bs=1M skip=$((root_off >> 20)) \
	count=$((root_size >> 20)) status=none
seed=$(dumpe2fs -h "$work/ours-root.img" 2>/dev/null | sed -n 's/^Directory Hash Seed: *//p')
rm -f "$work/ours-root.img"

# The ESP directory the classic pipeline copies (prepared untimed).
esp=$work/esp-dir
rm -rf "$esp"
mkdir -p "$esp/EFI/BOOT" "$esp/EFI/systemd" "$esp/EFI/nixos" "$esp/loader/entries"
cp "$C$BP/lib/systemd/boot/efi/systemd-bootx64.efi" "$esp/EFI/BOOT/BOOTX64.EFI"
cp "$C$BP/lib/systemd/boot/efi/systemd-bootx64.efi" "$esp/EFI/systemd/"
kn=${KP#$S/}-bzImage.efi in=${IP#$S/}-initrd.efi
cp "$C$KP/bzImage" "$esp/EFI/nixos/$kn"
cp "$C$IP/initrd" "$esp/EFI/nixos/$in"
printf 'timeout 0\ndefault nixos-generation-1.conf\nconsole-mode keep\n' >"$esp/loader/loader.conf"
printf 'title NixOS\nlinux /EFI/nixos/%s\ninitrd /EFI/nixos/%s\noptions init=%s/init console=ttyS0\n' \
	"$kn" "$in" "$YP" >"$esp/loader/entries/nixos-generation-1.conf"

classic() {
	local d=$work/classic.img
	rm -f "$d" "$work/classic.qcow2" "$work/esp.img" "$work/root.img"
	truncate -s "$size" "$d"
	sfdisk -q "$d" <<EOT
label: gpt
label-id: $disk_guid
start=$((esp_off / 512)), size=$((esp_size / 512)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$esp_uuid, name=ESP
start=$((root_off / 512)), size=$((root_size / 512)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$root_uuid, name=nixos
EOT
	truncate -s "$esp_size" "$work/esp.img"
	mkfs.fat -F 32 -n ESP -i "${volid/-/}" "$work/esp.img" >/dev/null
	mcopy -s -i "$work/esp.img" "$esp/EFI" "$esp/loader" ::/
	truncate -s "$root_size" "$work/root.img"
	E2FSPROGS_FAKE_TIME=1 mkfs.ext4 -q -F -L nixos -U "$fs_uuid" \
		-E "hash_seed=$seed,root_owner=0:0" -d "$C" "$work/root.img"
	dd if="$work/esp.img" of="$d" bs=1M seek=$((esp_off >> 20)) conv=notrunc,sparse status=none
	dd if="$work/root.img" of="$d" bs=1M seek=$((root_off >> 20)) conv=notrunc,sparse status=none
	qemu-img convert -O qcow2 "$d" "$work/classic.qcow2"
	sync "$work/classic.qcow2" # mkvmimage fsyncs its output: the same for both
	rm -f "$d" "$work/esp.img" "$work/root.img"
}
cpu() { # CPU=user + sys seconds of this shell's finished children (no subshell)
	local a
	times >"$work/times"
	a=($(tail -1 "$work/times" | sed 's/[ms]/ /g'))
	CPU=$(echo "${a[0]} * 60 + ${a[1]} + ${a[2]} * 60 + ${a[3]}" | bc)
}
best() { # fn: WALL and CPU of the run with the best wall clock (children included)
	local b= bc= t0 t1 t c0
	for _ in $(seq 1 "$runs"); do
		cpu; c0=$CPU; t0=$(now); "$1"; t1=$(now); cpu
		t=$(echo "$t1 - $t0" | bc)
		if [ -z "$b" ] || [ "$(echo "$t < $b" | bc)" = 1 ]; then
			b=$t
			bc=$(echo "$CPU - $c0" | bc)
		fi
	done
	WALL=$(printf '%.2f' "$b") CPU=$(printf '%.2f' "$bc")
}
best ours; t_ours=$WALL c_ours=$CPU
best ours_nm; t_nm=$WALL c_nm=$CPU
best ours_raw; t_raw=$WALL c_raw=$CPU
best classic; t_classic=$WALL c_classic=$CPU

check() { # raw image: GPT, ESP, root
	sgdisk -v "$1" | grep -q "No problems found" || { echo "disk.sh: $1: GPT" >&2; exit 1; }
	dd if="$1" of="$work/chk.part" bs=1M skip=$((esp_off >> 20)) count=$((esp_size >> 20)) status=none
	fsck.fat -n "$work/chk.part" >/dev/null || { echo "disk.sh: $1: ESP not clean" >&2; exit 1; }
	dd if="$1" of="$work/chk.part" bs=1M skip=$((root_off >> 20)) count=$((root_size >> 20)) status=none
	e2fsck -fn "$work/chk.part" >/dev/null 2>&1 || { echo "disk.sh: $1: root not clean" >&2; exit 1; }
	rm -f "$work/chk.part"
}
check "$work/ours.img"
qemu-img convert -O raw "$work/classic.qcow2" "$work/classic.check.img"
check "$work/classic.check.img"
rm -f "$work/classic.check.img"
kib() { du -k "$1" | cut -f1; }
mb=$(cat "$C/.complete")
cat <<EOT
Closure: $mb plus kernel, initrd and systemd-boot; disk $((size >> 20)) MiB (ESP
$((esp_size >> 20)) MiB + root $((root_size >> 20)) MiB); best of $runs runs, warm page cache,
$(nproc) CPUs; $(date -u +%Y-%m-%d).

| pipeline | wall clock (s) | CPU user+sys (s) | output file (KiB allocated) |
|---|---:|---:|---:|
| mkvmimage --efi -> qcow2 (default: + manifest sha256) | $t_ours | $c_ours | $(kib "$work/ours.qcow2") |
| mkvmimage --efi --no-manifest -> qcow2 | $t_nm | $c_nm | $(kib "$work/ours-nm.qcow2") |
| mkvmimage --efi -> raw (sparse, + manifest sha256) | $t_raw | $c_raw | $(kib "$work/ours.img") |
| truncate + sfdisk + mkfs.fat/mcopy + mkfs.ext4 -d + dd + qemu-img convert + sync | $t_classic | $c_classic | $(kib "$work/classic.qcow2") |

Speed-up (qcow2 end to end, default options): $(echo "scale=1; $t_classic / $t_ours" | bc)x wall clock,
$(echo "scale=1; $c_classic / $c_ours" | bc)x CPU time.
EOT
