#!/usr/bin/env bash
# scale.sh -- cost per entry: time and peak memory against the entry count.
#
# Usage: bench/scale.sh [--work DIR] [--sizes "100 400 1000"] [--no-anchors]
#
# For each size N (thousands of files), bench/make-many.py makes a closure of
# N/1000 store paths x 1,000 small files (plus directories, 5 % symlinks,
# 1 % hard links and a stand-in NixOS toplevel), once, in DIR/many-N. Then,
# one run each, default options (so the manifest and its sha256 are written,
# as users run it), every output durable (mkvmimage fsyncs; the anchors end
# with sync):
#   store image   mkvmimage --store-image            mkfs.erofs 1.8.6 DIR (-T0, 0:0)
#   ext4 root     mkvmimage -o root.qcow2            mkfs.ext4 -d (raw, -N entries)
#   --efi disk    mkvmimage --efi -o disk.qcow2
# Wall clock and peak RSS come from /usr/bin/time. Bytes per entry are
# (peak RSS - base) / entries, the base being the same job's peak on a
# 100-file closure; the slope between the smallest and the largest size is
# the figure that says whether memory is bounded by metadata alone.
# Every output is validated (fsck.erofs, e2fsck -fn, qemu-img check) and then
# removed; the closures stay for the next run. --no-anchors skips the
# mkfs.* rows (mkfs.ext4 -d takes minutes at 400k entries).
# Prints a Markdown table for bench/RESULTS.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${TMPDIR:-/tmp}/bench-scale sizes="100 400 1000" anchors=1
while [ $# -gt 0 ]; do
	case "$1" in
	--work) work=$2; shift 2 ;;
	--sizes) sizes=$2; shift 2 ;;
	--no-anchors) anchors=; shift ;;
	*) echo "scale.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
MKVMIMAGE=${MKVMIMAGE:-$here/../build/mkvmimage}
PATH=$PATH:/usr/sbin:/sbin
BOOTLOADER=/usr/lib/systemd/boot/efi/systemd-bootx64.efi
mkdir -p "$work"
[ -z "$anchors" ] || MKFS_EROFS=$("$here/setup-erofs-utils.sh")
export SOURCE_DATE_EPOCH=1

# warm DIR: the closure's files in the page cache, as for every row. Right
# before each run: this host's proactive reclaim (DAMON) drops pages idle
# for a while, and a cold 1M-entry closure is 400k random reads. Piped
# through cat: GNU tar writing to /dev/null itself skips reading the files.
warm() { tar -cf - -C "$1" nix | cat >/dev/null; }

# measure NAME OUTPUT CMD...: one run; sets T (wall s), U (CPU s, user +
# system) and M (peak KiB) for the row. CPU time tells linearity apart from
# a busy disk or a page cache the host reclaimed (the wall clock has both).
measure() {
	local out=$2
	shift 2
	rm -f "$out" "$out.json"
	warm "$C"
	sync
	/usr/bin/time -f '%e %M %U %S' -o "$work/time" "$@" >/dev/null 2>"$work/err" ||
		{ echo "scale.sh: $* failed:" >&2; cat "$work/err" >&2; exit 1; }
	read -r T M u s <"$work/time"
	U=$(echo "$u + $s" | bc)
}
ours() { # JOB CLOSURE OUTPUT
	local job=$1 c=$2 o=$3
	case $job in
	store) measure "$job" "$o" "$MKVMIMAGE" -q --store-image --root "$c" -o "$o" "$c/store-paths" ;;
	ext4) measure "$job" "$o" "$MKVMIMAGE" -q --root "$c" -o "$o" "$c/store-paths" ;;
	efi) measure "$job" "$o" "$MKVMIMAGE" -q --efi --bootloader "$BOOTLOADER" --root "$c" \
		-o "$o" "$c/store-paths" ;;
	esac
}
check() { # JOB OUTPUT
	case $1 in
	store) fsck.erofs "$2" >/dev/null ;;
	ext4) qemu-img check -q "$2" && qemu-img convert -O raw "$2" "$work/check.img" &&
		e2fsck -fn "$work/check.img" >/dev/null && rm -f "$work/check.img" ;;
	efi) qemu-img check -q "$2" ;;
	esac || { echo "scale.sh: $1 output did not validate" >&2; exit 1; }
	rm -f "$2" "$2.json"
}
out_of() { case $1 in store) echo "$work/store.img" ;; *) echo "$work/$1.qcow2" ;; esac; }

# The base: each job on a closure of 100 files.
declare -A base
python3 "$here/make-many.py" --root "$work/many-base" --paths 1 --files 100 --system >&2
C=$work/many-base
for job in store ext4 efi; do
	ours "$job" "$work/many-base" "$(out_of "$job")"
	base[$job]=$M
	check "$job" "$(out_of "$job")"
done

rows=
declare -A first_m first_e last_m last_e first_t last_t ourt prev_t prev_e prev_m first_u last_u prev_u
ratios=
for n in $sizes; do
	C=$work/many-$n
	python3 "$here/make-many.py" --root "$C" --paths "$n" --files 1000 --system >&2
	entries=$(sed -n 's/^\([0-9]*\) entries.*/\1/p' "$C/.complete")
	for job in store ext4 efi; do
		o=$(out_of "$job")
		ours "$job" "$C" "$o"
		check "$job" "$o"
		per=$(( (M - base[$job]) * 1024 / entries ))
		rows+="| $job | $entries | mkvmimage (default) | $T | $U | $((M >> 10)) | $per |"$'\n'
		ourt[$job]=$T
		prev_t[$job]=${last_t[$job]:-} prev_e[$job]=${last_e[$job]:-} prev_m[$job]=${last_m[$job]:-}
		prev_u[$job]=${last_u[$job]:-}
		[ -n "${first_m[$job]:-}" ] || { first_m[$job]=$M; first_e[$job]=$entries; first_t[$job]=$T; first_u[$job]=$U; }
		last_m[$job]=$M last_e[$job]=$entries last_t[$job]=$T last_u[$job]=$U
	done
	if [ -n "$anchors" ]; then
		o=$work/anchor.img
		measure erofs "$o" sh -c '"$0" -T0 --force-uid=0 --force-gid=0 -L nix-store "$1" "$2/nix/store" && sync "$1"' \
			"$MKFS_EROFS" "$o" "$C"
		fsck.erofs "$o" >/dev/null
		rows+="| store | $entries | mkfs.erofs 1.8.6 DIR | $T | $U | $((M >> 10)) | |"$'\n'
		ratios+="- $entries entries: store image $(echo "scale=2; $T / ${ourt[store]}" | bc)x faster than mkfs.erofs 1.8.6"
		rm -f "$o"
		size=$(( $(du -s --apparent-size -B1 "$C/nix" | cut -f1) * 2 + (entries * 4096) + (64 << 20) ))
		measure ext4 "$o" sh -c 'truncate -s "$2" "$1" && E2FSPROGS_FAKE_TIME=1 mkfs.ext4 -q -F -L nixos -N "$3" -d "$0" "$1" && sync "$1"' \
			"$C" "$o" "$size" "$((entries + 1000))"
		e2fsck -fn "$o" >/dev/null
		rows+="| ext4 | $entries | mkfs.ext4 -d (raw) | $T | $U | $((M >> 10)) | |"$'\n'
		ratios+=", ext4 root (qcow2) $(echo "scale=2; $T / ${ourt[ext4]}" | bc)x faster than mkfs.ext4 -d (raw)."$'\n'
		rm -f "$o"
	fi
done

cat <<EOT
Closures from bench/make-many.py (1,000 small files a store path, sizes
"small"); one run each, default options, durable; $(nproc) CPUs; $(date -u +%Y-%m-%d).
Base peak RSS (a 100-file closure): store ${base[store]} KiB, ext4 ${base[ext4]} KiB,
--efi ${base[efi]} KiB.

| job | entries | tool | wall (s) | CPU (s) | peak RSS (MiB) | bytes per entry above the base |
|---|---:|---|---:|---:|---:|---:|
$rows
EOT
for job in store ext4 efi; do
	[ "${last_e[$job]}" != "${first_e[$job]}" ] || continue
	slope=$(( (last_m[$job] - first_m[$job]) * 1024 / (last_e[$job] - first_e[$job]) ))
	tr=$(echo "scale=2; ${last_t[$job]} / ${first_t[$job]}" | bc)
	ur=$(echo "scale=2; ${last_u[$job]} / ${first_u[$job]}" | bc)
	er=$(echo "scale=2; ${last_e[$job]} / ${first_e[$job]}" | bc)
	echo "- $job: memory slope $slope bytes per entry from ${first_e[$job]} to ${last_e[$job]} entries; time x$tr (CPU x$ur) for x$er entries."
	if [ -n "${prev_e[$job]}" ] && [ "${prev_e[$job]}" != "${first_e[$job]}" ]; then
		slope=$(( (last_m[$job] - prev_m[$job]) * 1024 / (last_e[$job] - prev_e[$job]) ))
		tr=$(echo "scale=2; ${last_t[$job]} / ${prev_t[$job]}" | bc)
		ur=$(echo "scale=2; ${last_u[$job]} / ${prev_u[$job]}" | bc)
		er=$(echo "scale=2; ${last_e[$job]} / ${prev_e[$job]}" | bc)
		echo "  from ${prev_e[$job]} to ${last_e[$job]} entries: slope $slope bytes per entry; time x$tr (CPU x$ur) for x$er entries."
	fi
done
printf '%s' "$ratios"
