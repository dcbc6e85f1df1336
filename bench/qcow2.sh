#!/usr/bin/env bash
# qcow2.sh -- libimg's qcow2 writer against qemu-img, side by side.
#
# Usage: bench/qcow2.sh [--work DIR] [--build DIR] [--runs N] [--size MiB]
#
# Input: a raw disk image of --size MiB (default 2304) whose first 7/8 are
# file data (the contents of /usr/lib, concatenated in sorted path order:
# binaries, libraries, text - a closure-like mix), the rest a hole. Made
# once in DIR. Then, each best of --runs (default 2), warm page cache:
#   plain: qcow2-tool write --size S convert raw   (img_dev_copy_from_fd of
#          each data extent -> copy_file_range into allocated clusters)
#          vs  qemu-img convert -O qcow2 raw out
#   zstd:  the same with --compress zstd (both cores)
#          vs  qemu-img convert -c -o compression_type=zstd raw out
# qemu-img plain is also timed with -t writeback (it then flushes at the
# end as our finish does). Every output is checked with `qemu-img check` and `qemu-img compare` against
# the raw input. Prints a Markdown table for bench/RESULTS.md; CPU time is
# user+sys of the process (the machine may be shared).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$here/out/qcow2 build=$here/../build runs=2 size_mib=2304
while [ $# -gt 0 ]; do
	case "$1" in
	--work) work=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--size) size_mib=$2; shift 2 ;;
	*) echo "qcow2.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
TOOL=$build/qcow2-tool
[ -x "$TOOL" ] || { echo "qcow2.sh: $TOOL not built (cmake --build $build)" >&2; exit 1; }
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

# run NAME OUT CMD...: best wall time of $runs; sets W_<NAME> C_<NAME> S_<NAME>
run() {
	local name=$1 out=$2 best="" cpu=""
	shift 2
	for _ in $(seq "$runs"); do
		rm -f "$out"
		sync # outside the clock: no dirty pages left by the last run
		/usr/bin/time -f "%e %U %S" -o "$work/time" "$@" >/dev/null
		read -r w u s <"$work/time"
		if [ -z "$best" ] || [ "$(echo "$w < $best" | bc)" = 1 ]; then
			best=$w
			cpu=$(echo "$u + $s" | bc)
		fi
	done
	qemu-img check -q "$out" || { echo "qcow2.sh: $out fails qemu-img check" >&2; exit 1; }
	qemu-img compare -q -f raw "$raw" "$out" ||
		{ echo "qcow2.sh: $out differs from the input" >&2; exit 1; }
	printf -v "W_$name" %s "$best"
	printf -v "C_$name" %s "$cpu"
	printf -v "S_$name" %s "$(stat -c %s "$out")"
}

S=$((size_mib << 20))
run ours "$work/ours.qcow2" "$TOOL" write "$work/ours.qcow2" --size $S convert "$raw"
run qemu "$work/qemu.qcow2" qemu-img convert -O qcow2 "$raw" "$work/qemu.qcow2"
# qemu-img's default cache mode for convert is "unsafe" (never flushes); ours
# fsyncs at finish, so also time qemu-img with the same guarantee.
run qemuwb "$work/qemu.qcow2" qemu-img convert -t writeback -O qcow2 "$raw" "$work/qemu.qcow2"
run ourz "$work/ourz.qcow2" "$TOOL" write "$work/ourz.qcow2" --size $S --compress zstd \
	convert "$raw"
run qemuz "$work/qemuz.qcow2" qemu-img convert -c -o compression_type=zstd -O qcow2 "$raw" "$work/qemuz.qcow2"

ratio() { echo "scale=2; $1 / $2" | bc; }
kib() { echo $(($1 / 1024)); }
echo "Input: $size_mib MiB raw disk, $((data_bytes >> 20)) MiB of /usr/lib file data then a hole;"
echo "best of $runs runs, warm page cache, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%F)."
echo
echo "| output | ours: wall s / CPU s | qemu-img: wall s / CPU s | speed-up (wall) | size KiB ours / qemu-img |"
echo "|---|---:|---:|---:|---:|"
echo "| qcow2 | $W_ours / $C_ours | $W_qemu / $C_qemu | $(ratio "$W_qemu" "$W_ours")x | $(kib "$S_ours") / $(kib "$S_qemu") |"
echo "| qcow2, qemu-img -t writeback (fsync, as ours) | $W_ours / $C_ours | $W_qemuwb / $C_qemuwb | $(ratio "$W_qemuwb" "$W_ours")x | $(kib "$S_ours") / $(kib "$S_qemuwb") |"
echo "| qcow2 zstd | $W_ourz / $C_ourz | $W_qemuz / $C_qemuz | $(ratio "$W_qemuz" "$W_ourz")x | $(kib "$S_ourz") / $(kib "$S_qemuz") |"
