#!/usr/bin/env bash
# manifest-sha256.sh -- the manifest's sha256 is sha256sum of the output, for
# every mode (root, --empty, --efi, --bios, --hybrid, both with --grub,
# --store-image from a closure, a tar file, a sorted tar pipe, a compressed
# tar; --verity on a store image and an --efi disk), raw, qcow2 and zstd
# qcow2, with and without --no-direct-io; and --efi (also with --verity),
# --hybrid --grub, root and --store-image (also with --verity) as VHD
# (fixed, dynamic), VDI and VMDK (sparse, stream). And the outputs written
# in file order are hashed as they are written, not read back (the log says
# which): a writer that loses its order is caught here, not only in the
# bench. For bare file systems the fs_uuid the plan gave the manifest is
# what blkid reads from the image. docs/manifest.md.
. "$SRCDIR/tests/lib.sh"
t_begin manifest-sha256
t_need sha256sum python3 tar zstd blkid qemu-img fsck.erofs
. "$SRCDIR/tests/integration/disk-lib.sh"
disk_store "$T"
R=$T/root
(cd "$R" && tar --sort=name -cf "$T/s.tar" nix/store/*)
zstd -q -c "$T/s.tar" >"$T/s.tar.zst"
# a stand-in GRUB (never booted: tests/boot boots the real one): boot.img
# ends in 55 AA, core.img is 20 KiB of noise for the gap or the BIOS boot
# partition
mkdir "$T/grub"
{ head -c 510 /dev/urandom; printf '\125\252'; } >"$T/grub/boot.img"
head -c 20480 /dev/urandom >"$T/grub/core.img"

# The outputs hashed as they are written (mode/format as named below); every
# other one is read back. Grows as the writers learn to write in order. A
# store qcow2 is planned (img_dev_plan), so its tables go in front and it is
# written in file order too; a pipe into qcow2 is staged, then emitted in
# order. --verity hashes the data blocks from the device's writes as they
# go by and writes superblock and tree after them, in file order (the store
# image's tree after the file system, the --efi disk's verity partition
# after the root, which a qcow2 disk plans too). Read back: the sorted
# pipe's raw output (data in place before the plan), a compressed tar (data
# replayed after the emit), zstd qcow2 (compressed sizes decide the tables
# in front of the data; its clusters are compressed as they are written).
# GRUB's stages go out in their places on the way (boot code with the head,
# core.img after it or in the BIOS boot partition), so the disks with GRUB
# are planned and streamed too. Dynamic VHD, VDI and sparse VMDK are
# planned as qcow2 is (below); a streamOptimized VMDK deflates its grains
# as the writes pass them, behind a head that never changes.
STREAMED=" store/raw store-tar/raw root/raw empty/raw bios/raw root-tar/raw root/qcow2 empty/qcow2 root-tar/qcow2 store/qcow2 store-tar/qcow2 store-pipe/qcow2 efi/raw hybrid/raw efi/qcow2 bios/qcow2 hybrid/qcow2 bios-grub/raw bios-grub/qcow2 hybrid-grub/raw hybrid-grub/qcow2 store-verity/raw store-verity/qcow2 efi-verity/raw efi-verity/qcow2 "
for f in vhd vhd-dyn vdi vmdk vmdk-stream; do STREAMED+="efi/$f efi-verity/$f hybrid-grub/$f root/$f store/$f store-verity/$f "; done

n=0
check() { # name format out args...
	local name=$1 fmt=$2 out=$T/$3 how
	shift 3
	"$MKVMIMAGE" -v "$@" -o "$out" <"${IN:-/dev/null}" 2>"$T/log" || t_fail "$name $fmt: $(tail -3 "$T/log")"
	want=$(sha256sum <"$out" | cut -d' ' -f1)
	got=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['sha256'])" "$out.json")
	[ "$want" = "$got" ] || t_fail "$name $fmt: manifest sha256 $got, sha256sum $want"
	if grep -q 'taken as it was written' "$T/log"; then how=streamed
	elif grep -q 'reading it back' "$T/log"; then how=read-back
	else t_fail "$name $fmt: the log does not say how the sha256 was taken"
	fi
	case "$STREAMED" in
	*" $name/$fmt "*)
		[ $how = streamed ] || t_fail "$name $fmt: read back, not hashed as written"
		# and the verity tree from the data as they were written, not read back
		case $name in *verity*)
			grep -q 'verity: the data were hashed as they were written' "$T/log" ||
				t_fail "$name $fmt: the verity data were read back: $(grep verity: "$T/log")"
			;;
		esac
		;;
	esac
	# zstd qcow2 is read back (its tables, in front, follow from the
	# compressed sizes), but where the writes come in order (the qcow2
	# builds hashed as written) its clusters are compressed as they are
	# written, never staged in the file and read back to pack them
	case "$fmt:$STREAMED" in
	zstd:*" $name/qcow2 "* | vmdk-stream:*)
		grep -q 'compressed as it was written' "$T/log" &&
			! grep -q 'written out of order' "$T/log" ||
			t_fail "$name $fmt: staged, not compressed as written"
		how+=", compressed as written"
		;;
	zstd:*)
		# a compressed tar's data come behind the emit: the clusters go
		# back to staging, and the image is still the file system
		if [ "$name" = store-zst ]; then
			grep -q 'written out of order' "$T/log" ||
				t_fail "$name zstd: the replayed data did not stage"
			qemu-img convert -O raw "$out" "$T/back.raw" && fsck.erofs "$T/back.raw" >/dev/null ||
				t_fail "$name zstd: qemu-img convert | fsck.erofs failed"
			rm -f "$T/back.raw"
			how+=", staged"
		fi
		;;
	esac
	case "$name/$fmt" in
	root*/raw | empty/raw | store*/raw)
		id=$(blkid -p -o value -s UUID "$out") || t_fail "$name: blkid"
		[ "$id" = "$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['partitions'][0]['fs_uuid'])" "$out.json")" ] ||
			t_fail "$name: manifest fs_uuid is not blkid's $id"
		;;
	esac
	echo "$name $fmt: $how"
	rm -f "$out" "$out.json"
	n=$((n + 1))
}
for fmt in raw qcow2 zstd; do
	case $fmt in
	raw) f=(--format raw) ;;
	qcow2) f=(--format qcow2) ;;
	zstd) f=(--format qcow2 --compress zstd) ;;
	esac
	check root $fmt root.img "${f[@]}" --root "$R" "$T/closure"
	check empty $fmt empty.img "${f[@]}" --empty --size 64M
	check efi $fmt efi.img "${f[@]}" --efi --root "$R" "$T/closure"
	check bios $fmt bios.img "${f[@]}" --bios --root "$R" "$T/closure"
	check hybrid $fmt hybrid.img "${f[@]}" --hybrid --root "$R" "$T/closure"
	check bios-grub $fmt bios.img "${f[@]}" --bios --grub "$T/grub" --root "$R" "$T/closure"
	check hybrid-grub $fmt hybrid.img "${f[@]}" --hybrid --grub "$T/grub" --root "$R" "$T/closure"
	check store $fmt store.img "${f[@]}" --store-image --root "$R" "$T/closure"
	check store-tar $fmt store-tar.img "${f[@]}" --store-image --tar "$T/s.tar"
	check store-zst $fmt store-zst.img "${f[@]}" --store-image --tar "$T/s.tar.zst"
	rm -f "$T/fifo" && mkfifo "$T/fifo" && { cat "$T/s.tar" >"$T/fifo" & }
	IN=$T/fifo check store-pipe $fmt store-pipe.img "${f[@]}" --store-image --tar -
	check root-tar $fmt root-tar.img "${f[@]}" --tar "$T/s.tar"
	check store-verity $fmt store-verity.img "${f[@]}" --store-image --verity --root "$R" "$T/closure"
	check efi-verity $fmt efi-verity.img "${f[@]}" --efi --verity --root "$R" "$T/closure"
done
# The virtual disk formats: a fixed VHD is written in order as raw is; a
# dynamic VHD, a VDI and a monolithicSparse VMDK are planned as qcow2 is
# (blocks in virtual order, their tables in front, a VHD's footer last); a
# streamOptimized VMDK ("GD at end") deflates each grain once the writes
# pass it, its tables after the grains: all of these are hashed as written.
for fmt in vhd vhd-dyn vdi vmdk vmdk-stream; do
	case $fmt in
	vhd-dyn) f=(--vpc-subformat dynamic) x=vhd ;;
	vmdk-stream) f=(--vmdk-subformat streamOptimized) x=vmdk ;;
	*) f=() x=$fmt ;;
	esac
	check efi $fmt efi.$x "${f[@]}" --efi --root "$R" "$T/closure"
	check efi-verity $fmt efiv.$x "${f[@]}" --efi --verity --root "$R" "$T/closure"
	check hybrid-grub $fmt hybrid.$x "${f[@]}" --hybrid --grub "$T/grub" --root "$R" "$T/closure"
	check root $fmt root.$x "${f[@]}" --root "$R" "$T/closure"
	check store $fmt store.$x "${f[@]}" --store-image --root "$R" "$T/closure"
	check store-verity $fmt storev.$x "${f[@]}" --store-image --verity --root "$R" "$T/closure"
done
# The page-cache path (no writer thread): read back, still right.
check store-nodio raw store.img --no-direct-io --store-image --root "$R" "$T/closure"
check root-nodio qcow2 root.qcow2 --no-direct-io --format qcow2 --root "$R" "$T/closure"
[ $n = 74 ] || t_fail "$n builds checked"
t_pass
