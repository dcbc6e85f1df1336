# disk-lib.sh -- shared by the disk-*.sh tests (source after tests/lib.sh and
# t_begin). disk_store DIR makes a small NixOS-like closure under DIR/root:
#   $K  kernel package (bzImage)      $I  initrd package (initrd)
#   $Y  system toplevel (kernel, initrd -> absolute store symlinks; init;
#       kernel-params; nixos-version; etc/os-release)
#   $B  systemd-boot package (lib/systemd/boot/efi/systemd-bootx64.efi)
#   $D  data package (long names, a 1,000-entry directory)
# and DIR/closure (store-paths). disk_esp_extract IMG OUT: the ESP (partition
# by role from the manifest) copied out with mtools. disk_part IMG ROLE OUT:
# a partition's bytes via dd, offsets from sfdisk (not from our manifest).
S=/nix/store
K=$S/1kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk-linux-6.1.0
I=$S/2iiiiiiiiiiiiiiiiiiiiiiiiiiiiiii-initrd-linux-6.1.0
Y=$S/3yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy-nixos-system-test-25.05
B=$S/4bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-systemd-boot-252
D=$S/5ddddddddddddddddddddddddddddddd-data

disk_store() {
	local r=$1/root
	mkdir -p "$r$K" "$r$I" "$r$Y/etc" "$r$B/lib/systemd/boot/efi" "$r$D/many"
	head -c 1500000 /dev/urandom >"$r$K/bzImage"
	head -c 700000 /dev/urandom >"$r$I/initrd"
	ln -s "$K/bzImage" "$r$Y/kernel"
	ln -s "$I/initrd" "$r$Y/initrd"
	printf '#!/bin/sh\necho init\n' >"$r$Y/init"
	chmod 755 "$r$Y/init"
	printf 'console=ttyS0 loglevel=4' >"$r$Y/kernel-params"
	printf '25.05test\n' >"$r$Y/nixos-version"
	printf 'NAME=NixOS\nID=nixos\nVERSION_ID="25.05"\n' >"$r$Y/etc/os-release"
	if [ -r /usr/lib/systemd/boot/efi/systemd-bootx64.efi ]; then
		cp /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$r$B/lib/systemd/boot/efi/"
	else
		head -c 100000 /dev/urandom >"$r$B/lib/systemd/boot/efi/systemd-bootx64.efi"
	fi
	echo hello >"$r$D/a-file-with-a-rather-long-name-for-fat.txt"
	for i in $(seq -w 1 1000); do echo "$i" >"$r$D/many/entry-$i"; done
	printf '%s\n' "$K" "$I" "$Y" "$B" "$D" >"$1/closure"
}

# disk_part IMG N OUT: copy partition N (1-based) out with dd, sfdisk's numbers.
disk_part() {
	local start size
	start=$(sfdisk --json "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['partitiontable']['partitions'][$2-1]['start'])")
	size=$(sfdisk --json "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['partitiontable']['partitions'][$2-1]['size'])")
	dd if="$1" of="$3" bs=512 skip="$start" count="$size" status=none || t_fail "dd partition $2"
}

# disk_json FILE EXPR: evaluate a python expression on the manifest (as m).
disk_json() {
	python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print($2)" "$1"
}
