#!/usr/bin/env bash
# vdisk.sh -- libimg's VHD, VDI and VMDK writers against qemu-img convert
# from raw, side by side, in one run.
#
# Usage: bench/vdisk.sh [--work DIR] [--build DIR] [--runs N] [--size MiB]
#
# Input: the raw disk of bench/qcow2.sh (--size MiB, default 2304, the first
# 7/8 the contents of /usr/lib concatenated in sorted path order, the rest a
# hole), made once in DIR. For each format, best of --runs (default 2), warm
# page cache, outputs removed and `sync` run outside the clock:
#   ours:  qcow2-tool write OUT --format F --size S convert RAW
#          (img_dev_copy_from_fd of each data extent into the format's
#          device: the same path mkvmimage's writers take; fsync at finish)
#   qemu:  qemu-img convert -t writeback -f raw -O F [-o subformat=...] RAW OUT
#          (-t writeback: it flushes at the end, as ours does)
# Every output is checked with `qemu-img compare` against the raw input (and
# `qemu-img check` where qemu checks the format). Prints a Markdown table
# for bench/RESULTS.md; CPU time is user+sys (the machine may be shared).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$here/out/vdisk build=$here/../build runs=2 size_mib=2304
while [ $# -gt 0 ]; do
	case "$1" in
	--work) work=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--size) size_mib=$2; shift 2 ;;
	*) echo "vdisk.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
TOOL=$build/qcow2-tool
[ -x "$TOOL" ] || { echo "vdisk.sh: $TOOL not built (cmake --build $build)" >&2; exit 1; }
mkdir -p "$work"
raw=$work/input.raw
data_bytes=$(((size_mib * 7 / 8) << 20))
if [ ! -f "$raw" ] || [ "$(stat -c %s "$raw")" != $((size_mib << 20)) ]; then
	echo "making $raw ..." >&2
	find /usr/lib -type f -size +1k -print0 | LC_ALL=C sort -z |
		xargs -0 cat 2>/dev/null | head -c $data_bytes >"$raw" || true
	truncate -s $((size_mib << 20)) "$raw"
fi
cat "$raw" >/dev/null # warm the page cache

# run NAME OUT QFMT CHECK CMD...: best wall time of $runs; sets W_ C_ S_<NAME>
run() {
	local name=$1 out=$2 qfmt=$3 check=$4 best="" cpu=""
	shift 4
	for _ in $(seq "$runs"); do
		rm -f "$out"
		sync
		/usr/bin/time -f "%e %U %S" -o "$work/time" "$@" >/dev/null
		read -r w u s <"$work/time"
		if [ -z "$best" ] || [ "$(echo "$w < $best" | bc)" = 1 ]; then
			best=$w
			cpu=$(echo "$u + $s" | bc)
		fi
	done
	if [ "$check" = yes ]; then
		qemu-img check -q -f "$qfmt" "$out" || { echo "vdisk.sh: $out fails qemu-img check" >&2; exit 1; }
	fi
	qemu-img compare -q -f raw -F "$qfmt" "$raw" "$out" ||
		{ echo "vdisk.sh: $out differs from the input" >&2; exit 1; }
	printf -v "W_$name" %s "$best"
	printf -v "C_$name" %s "$cpu"
	printf -v "S_$name" %s "$(du -k "$out" | cut -f1)"
	rm -f "$out"
}

S=$((size_mib << 20))
# name : qcow2-tool format : qemu format : qemu -o : qemu-img check?
cases=(
	"vhd:vpc:vpc:subformat=fixed,force_size=on:no"
	"vhdd:vpc-dynamic:vpc:subformat=dynamic,force_size=on:no"
	"vdi:vdi:vdi::yes"
	"vmdk:vmdk:vmdk:subformat=monolithicSparse:yes"
	"vmdks:vmdk-stream:vmdk:subformat=streamOptimized:yes"
)
for c in "${cases[@]}"; do
	IFS=: read -r name tf qf qo chk <<<"$c"
	run "o_$name" "$work/ours.$name" "$qf" "$chk" "$TOOL" write "$work/ours.$name" --format "$tf" \
		--size $S convert "$raw"
	run "q_$name" "$work/qemu.$name" "$qf" "$chk" qemu-img convert -t writeback -f raw -O "$qf" \
		${qo:+-o "$qo"} "$raw" "$work/qemu.$name"
done

ratio() { echo "scale=2; $1 / $2" | bc; }
echo "Input: $size_mib MiB raw disk, $((data_bytes >> 20)) MiB of /usr/lib file data then a hole;"
echo "best of $runs runs, warm page cache, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%F)."
echo
echo "| output | ours: wall s / CPU s | qemu-img convert -t writeback: wall s / CPU s | speed-up (wall / CPU) | on disk KiB ours / qemu-img |"
echo "|---|---:|---:|---:|---:|"
for c in "${cases[@]}"; do
	IFS=: read -r name tf qf qo chk <<<"$c"
	w_o=W_o_$name c_o=C_o_$name s_o=S_o_$name w_q=W_q_$name c_q=C_q_$name s_q=S_q_$name
	echo "| $qf ${qo:-(default)} | ${!w_o} / ${!c_o} | ${!w_q} / ${!c_q} | $(ratio "${!w_q}" "${!w_o}")x / $(ratio "${!c_q}" "${!c_o}")x | ${!s_o} / ${!s_q} |"
done
