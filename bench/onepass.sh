#!/usr/bin/env bash
# onepass.sh -- the default build (manifest on, so its sha256) against
# --no-manifest and the classic store-image pipelines, interleaved: every
# round runs each job once, in the same order, so a busy machine slows all
# of them alike; the medians and their ratios are reported (issue 12).
#
# Usage: bench/onepass.sh [--work DIR] [--rounds N] [--min-mb N]
#   --min-mb N: a closure of at least N MB (DIR/closure-N; default the
#   500 MB one in DIR/closure), e.g. 2048 for the 2 GiB run of issue 12
#
# Jobs (all durable: mkvmimage fsyncs, the others end with sync FILE):
#   store default       mkvmimage --store-image CLOSURE (manifest, sha256)
#   store --no-manifest the same without the manifest
#   mkfs.erofs DIR      mkfs.erofs 1.8 from the store directory
#   tar | mkfs.erofs    tar --create | mkfs.erofs --tar=f (NixOS today)
#   root qcow2 default  mkvmimage CLOSURE -o root.qcow2 (ext4, manifest)
#   root qcow2 --no-manifest
#   mkfs.ext4 -d        truncate; mkfs.ext4 -d (same size, UUID, hash seed);
#                       qemu-img convert -O qcow2 (make-disk-image.nix's way)
# Closure: bench/make-closure.sh; mkfs.erofs: bench/setup-erofs-utils.sh.
# Peak RSS from /usr/bin/time; each output is checked (fsck.erofs, the
# manifest's sha256 against sha256sum) and removed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${TMPDIR:-/tmp}/bench-onepass rounds=5 min_mb=
while [ $# -gt 0 ]; do
	case "$1" in
	--work) work=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--min-mb) min_mb=$2; shift 2 ;;
	*) echo "onepass.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
MKVMIMAGE=${MKVMIMAGE:-$here/../build/mkvmimage}
mkdir -p "$work"
C=$work/closure${min_mb:+-$min_mb}
"$here/make-closure.sh" --root "$C" ${min_mb:+--min-mb "$min_mb"} >&2
MKFS=$("$here/setup-erofs-utils.sh")
UUID=eb176051-bd15-49b7-9e6b-462e0b467019
export SOURCE_DATE_EPOCH=0
tar -cf - -C "$C" nix | cat >/dev/null # warm the page cache
M="$MKVMIMAGE -q --seed bench"
names=(store store-nm dir tar root root-nm ext4)
# The ext4 anchor: our raw root's size, UUID and hash seed, on the same tree
# (the store plus the root layout mkvmimage adds, a hard-link farm made here).
rm -f "$work/probe.img"
$M --no-manifest --root "$C" "$C/store-paths" -o "$work/probe.img"
size=$(stat -c %s "$work/probe.img")
fsuuid=$(dumpe2fs -h "$work/probe.img" 2>/dev/null | sed -n 's/^Filesystem UUID: *//p')
hseed=$(dumpe2fs -h "$work/probe.img" 2>/dev/null | sed -n 's/^Directory Hash Seed: *//p')
rm -f "$work/probe.img"
CR=$work/classic-root
rm -rf "$CR"
mkdir -p "$CR/nix/var/nix/db" "$CR/nix/var/nix/gcroots" "$CR/nix/var/nix/profiles" "$CR/boot" "$CR/etc"
cp -al "$C/nix/store" "$CR/nix/store"
declare -A cmd out
cmd[store]="$M --store-image --root '$C' '$C/store-paths' -o '$work/s.img'"
out[store]=$work/s.img
cmd[store-nm]="$M --no-manifest --store-image --root '$C' '$C/store-paths' -o '$work/snm.img'"
out[store-nm]=$work/snm.img
cmd[dir]="$MKFS --quiet --all-root -L nix-store -U $UUID -T 0 '$work/dir.img' '$C/nix/store' && sync '$work/dir.img'"
out[dir]=$work/dir.img
cmd[tar]="cd '$C/nix/store' && sed 's|.*/||' '$C/store-paths' | tar --create --files-from=- | $MKFS --quiet --force-uid=0 --force-gid=0 -L nix-store -U $UUID -T 0 --tar=f '$work/tar.img' && sync '$work/tar.img'"
out[tar]=$work/tar.img
cmd[root]="$M --root '$C' '$C/store-paths' -o '$work/r.qcow2'"
out[root]=$work/r.qcow2
cmd[root-nm]="$M --no-manifest --root '$C' '$C/store-paths' -o '$work/rnm.qcow2'"
out[root-nm]=$work/rnm.qcow2
cmd[ext4]="truncate -s $size '$work/c.img' && E2FSPROGS_FAKE_TIME=1 mkfs.ext4 -q -F -L nixos -U $fsuuid -E hash_seed=$hseed,root_owner=0:0 -d '$CR' '$work/c.img' && qemu-img convert -O qcow2 '$work/c.img' '$work/c.qcow2' && rm -f '$work/c.img' && sync '$work/c.qcow2'"
out[ext4]=$work/c.qcow2
for n in "${names[@]}"; do : >"$work/$n.t"; done
for i in $(seq 1 "$rounds"); do
	for n in "${names[@]}"; do
		rm -f "${out[$n]}" "${out[$n]}.json"
		tar -cf - -C "$C" nix | cat >/dev/null # warm (DAMON reclaims idle page cache)
		sync
		/usr/bin/time -f '%e %M' -o "$work/time" bash -c "${cmd[$n]}" >/dev/null 2>"$work/err" ||
			{ cat "$work/err" >&2; echo "onepass.sh: $n failed" >&2; exit 1; }
		cat "$work/time" >>"$work/$n.t"
		case "$n" in
		store | store-nm | dir | tar) fsck.erofs "${out[$n]}" >/dev/null ;;
		root | root-nm | ext4) qemu-img check -q "${out[$n]}" ;;
		esac
		if [ -f "${out[$n]}.json" ]; then
			want=$(sha256sum <"${out[$n]}" | cut -d' ' -f1)
			grep -q "\"sha256\": \"$want\"" "${out[$n]}.json" ||
				{ echo "onepass.sh: $n: manifest sha256 is not sha256sum's" >&2; exit 1; }
		fi
		rm -f "${out[$n]}" "${out[$n]}.json"
	done
done
med() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
declare -A t m
for n in "${names[@]}"; do
	t[$n]=$(cut -d' ' -f1 "$work/$n.t" | med)
	m[$n]=$(cut -d' ' -f2 "$work/$n.t" | sort -n | tail -1)
done
r() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2fx", a/b}'; }
echo "closure: $(du -sh --apparent-size "$C/nix/store" | cut -f1), $(find "$C/nix/store" | wc -l) entries; $rounds interleaved rounds, medians; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| job | default (manifest) | --no-manifest | default / --no-manifest | peak RSS |"
echo "|---|---:|---:|---:|---:|"
echo "| store image | ${t[store]} s | ${t[store-nm]} s | $(r "${t[store]}" "${t[store-nm]}") | $((m[store] / 1024)) MiB |"
echo "| ext4 root qcow2 | ${t[root]} s | ${t[root-nm]} s | $(r "${t[root]}" "${t[root-nm]}") | $((m[root] / 1024)) MiB |"
echo
echo "| anchor | time | store image default: speed-up |"
echo "|---|---:|---:|"
echo "| mkfs.erofs 1.8 DIR + sync | ${t[dir]} s | $(r "${t[dir]}" "${t[store]}") |"
echo "| tar \\| mkfs.erofs --tar=f + sync | ${t[tar]} s | $(r "${t[tar]}" "${t[store]}") |"
echo
echo "| anchor | time | ext4 root qcow2 default: speed-up |"
echo "|---|---:|---:|"
echo "| mkfs.ext4 -d + qemu-img convert -O qcow2 + sync | ${t[ext4]} s | $(r "${t[ext4]}" "${t[root]}") |"
