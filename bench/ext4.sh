#!/usr/bin/env bash
# ext4.sh -- the ext4 root writer against the classic pipeline, side by side.
#
# Usage: bench/ext4.sh [--work DIR] [--runs N]
#
# Closure: bench/make-closure.sh (>= 500 MB of installed files, made once in
# DIR/closure). Both pipelines produce a qcow2 holding an ext4 of the same size
# with the same label, UUID, hash seed and times:
#   ours:    mkvmimage --root DIR/closure -o ours.qcow2 store-paths
#   classic: truncate; E2FSPROGS_FAKE_TIME=1 mkfs.ext4 -d ROOT -U … -E hash_seed=…;
#            qemu-img convert -O qcow2   (the createEmptyFilesystemImage /
#            make-ext4-fs steps, minus the copy into a staging directory that
#            make-ext4-fs also does, so the classic numbers are flattering)
# Page cache is warm for both (one untimed read first). The machine may be
# shared: CPU time (user+sys of every process) is reported beside wall clock. Prints a Markdown
# table for bench/RESULTS.md; every image is checked with e2fsck -fn.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${TMPDIR:-/tmp}/bench-ext4 runs=3
while [ $# -gt 0 ]; do
	case "$1" in
	--work) work=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	*) echo "ext4.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
MKVMIMAGE=${MKVMIMAGE:-$here/../build/mkvmimage}
PATH=$PATH:/usr/sbin:/sbin
mkdir -p "$work"
"$here/make-closure.sh" --root "$work/closure" >&2
C=$work/closure
tar -cf - -C "$C" nix >/dev/null # warm the page cache for both pipelines

ours() {
	SOURCE_DATE_EPOCH=1 "$MKVMIMAGE" -q --no-manifest --root "$C" -o "$work/ours.qcow2" \
		"$C/store-paths"
}
ours_raw() {
	SOURCE_DATE_EPOCH=1 "$MKVMIMAGE" -q --no-manifest --root "$C" -o "$work/ours.img" \
		"$C/store-paths"
}
rm -f "$work/ours.img"
ours_raw
size=$(stat -c %s "$work/ours.img")
uuid=$(dumpe2fs -h "$work/ours.img" 2>/dev/null | sed -n 's/^Filesystem UUID: *//p')
seed=$(dumpe2fs -h "$work/ours.img" 2>/dev/null | sed -n 's/^Directory Hash Seed: *//p')
# The classic pipeline gets the same tree as ours: the store plus the root
# layout mkvmimage adds (nix/var/nix/{db,gcroots,profiles}, boot, etc), as a
# hard-link farm made outside the clock (make-ext4-fs stages a copy instead).
R=$work/classic-root
rm -rf "$R"
mkdir -p "$R/nix/var/nix/db" "$R/nix/var/nix/gcroots" "$R/nix/var/nix/profiles" "$R/boot" "$R/etc"
cp -al "$C/nix/store" "$R/nix/store"
chmod 1775 "$R/nix/store"
classic() {
	truncate -s "$size" "$work/classic.img"
	E2FSPROGS_FAKE_TIME=1 mkfs.ext4 -q -F -L nixos -U "$uuid" \
		-E "hash_seed=$seed,root_owner=0:0" -d "$R" "$work/classic.img"
	qemu-img convert -O qcow2 "$work/classic.img" "$work/classic.qcow2"
	rm -f "$work/classic.img"
	sync "$work/classic.qcow2" # mkvmimage fsyncs its output: the same for both
}
best() { # FN OUTPUT...: "wall cpu" seconds, the best of $runs runs each
	local bw= bc= r u s c
	for _ in $(seq 1 "$runs"); do
		# Outside the clock: no output left, no dirty pages of the last run.
		rm -f "${@:2}"
		sync
		TIMEFORMAT='%R %U %S'
		{ time "$1"; } 2>"$work/time"
		read -r r u s <"$work/time"
		c=$(echo "$u + $s" | bc)
		if [ -z "$bw" ] || [ "$(echo "$r < $bw" | bc)" = 1 ]; then bw=$r; fi
		if [ -z "$bc" ] || [ "$(echo "$c < $bc" | bc)" = 1 ]; then bc=$c; fi
	done
	echo "$bw $bc"
}
read -r t_ours c_ours < <(best ours "$work/ours.qcow2")
read -r t_raw c_raw < <(best ours_raw "$work/ours.img")
read -r t_classic c_classic < <(best classic "$work/classic.img" "$work/classic.qcow2")
e2fsck -fn "$work/ours.img" >/dev/null 2>&1 || { echo "ext4.sh: ours.img not clean" >&2; exit 1; }
qemu-img convert -O raw "$work/classic.qcow2" "$work/classic.check.img"
e2fsck -fn "$work/classic.check.img" >/dev/null 2>&1 || { echo "ext4.sh: classic not clean" >&2; exit 1; }
rm -f "$work/classic.check.img"
clusters() {
	qemu-img map --output=json "$1" |
		python3 -c 'import json,sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["data"]) >> 16)'
}
kib() { echo "$(($(stat -c %s "$1") >> 10)) / $(du -k "$1" | cut -f1)"; }
mb=$(cat "$C/.complete")
cat <<EOT
Closure: $mb; file system size $((size >> 20)) MiB; best of $runs runs, warm page cache,
$(nproc) CPUs; $(date -u +%Y-%m-%d).

| pipeline | wall clock (s) | CPU user+sys (s) | output KiB (size / allocated) |
|---|---:|---:|---:|
| mkvmimage -> qcow2 | $t_ours | $c_ours | $(kib "$work/ours.qcow2") |
| mkvmimage -> raw (sparse) | $t_raw | $c_raw | $(kib "$work/ours.img") |
| mkfs.ext4 -d + qemu-img convert -O qcow2 | $t_classic | $c_classic | $(kib "$work/classic.qcow2") |

Speed-up, qcow2 end to end: $(echo "scale=1; $t_classic / $t_ours" | bc)x wall clock,
$(echo "scale=1; $c_classic / $c_ours" | bc)x CPU time. Data clusters (qemu-img map):
ours $(clusters "$work/ours.qcow2"), classic $(clusters "$work/classic.qcow2").
EOT
