#!/usr/bin/env bash
# erofs-compress.sh -- compressed store images: mkvmimage --compress-fs against
# mkfs.erofs -z (erofs-utils 1.8.6), side by side on the same closure.
#
# Usage: bench/erofs-compress.sh [--work DIR] [--out DIR] [--runs N]
#
# Closure: bench/make-closure.sh (DIR/closure, as bench/erofs.sh). mkfs.erofs
# 1.8.6 from bench/setup-erofs-utils.sh. Rows, each pair with the same label,
# UUID, owners and times:
#   lz4hc (level 9, both defaults): mkfs.erofs -zlz4hc DIR  vs  mkvmimage --compress-fs lz4hc CLOSURE
#   lz4:                            mkfs.erofs -zlz4 DIR    vs  mkvmimage --compress-fs lz4 CLOSURE
#   the NixOS pipeline compressed:  tar | mkfs.erofs --tar=f -zlz4hc  vs  mkvmimage --tar FILE --compress-fs lz4hc
# Page cache warm; best wall time of N runs with its CPU time (user + system)
# and peak RSS; the file size in bytes (the goal: ours no larger). Both
# outputs are synced before the clock stops. Every image passes fsck.erofs
# (1.5 and 1.8.6); ours are extracted once and compared with the closure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${TMPDIR:-/tmp}/bench-erofs runs=3 out=
while [ $# -gt 0 ]; do
	case "$1" in
	--work) work=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	*) echo "erofs-compress.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
MKVMIMAGE=${MKVMIMAGE:-$here/../build/mkvmimage}
mkdir -p "$work"
"$here/make-closure.sh" --root "$work/closure" >&2
C=$work/closure
MKFS=$("$here/setup-erofs-utils.sh")
FSCK18=$(dirname "$MKFS")/fsck.erofs
UUID=eb176051-bd15-49b7-9e6b-462e0b467019
img=${out:-$work}
mkdir -p "$img"
tar -cf - -C "$C" nix >/dev/null # warm the page cache
[ -s "$work/closure.tar" ] ||
	(cd "$C/nix/store" && sed 's|.*/||' "$C/store-paths" | tar --create --sort=name --files-from=- -f "$work/closure.tar")
export SOURCE_DATE_EPOCH=0

run() { # run NAME OUTPUT CMD
	local name=$1 o=$2 i t m u s best_t= best_m= best_c=
	for i in $(seq 1 "$runs"); do
		rm -f "$o" "$o.json"
		sync
		/usr/bin/time -f '%e %M %U %S' -o "$work/time" bash -c "$3" >/dev/null 2>"$work/err" ||
			{ cat "$work/err" >&2; echo "erofs-compress.sh: $name failed" >&2; exit 1; }
		read -r t m u s <"$work/time"
		if [ -z "$best_t" ] || awk -v a="$t" -v b="$best_t" 'BEGIN{exit !(a<b)}'; then
			best_t=$t best_m=$m best_c=$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}')
		fi
	done
	fsck.erofs "$o" >/dev/null || { echo "erofs-compress.sh: fsck.erofs 1.5 failed on $o" >&2; exit 1; }
	"$FSCK18" "$o" >/dev/null || { echo "erofs-compress.sh: fsck.erofs 1.8 failed on $o" >&2; exit 1; }
	printf '| %s | %s s | %s s | %d MiB | %d |\n' "$name" "$best_t" "$best_c" $((best_m / 1024)) "$(stat -c %s "$o")"
}
extract_check() { # the image gives back the closure
	rm -rf "$work/x"
	fsck.erofs --extract="$work/x" "$1" >/dev/null || { echo "erofs-compress.sh: extract $1" >&2; exit 1; }
	(cd "$C/nix/store" && diff -r --no-dereference . "$work/x") >/dev/null || { echo "erofs-compress.sh: $1 differs" >&2; exit 1; }
	rm -rf "$work/x"
}
M="$MKVMIMAGE -q --no-manifest --store-image --seed bench"
echo "mkfs.erofs: $($MKFS --version 2>&1 | head -1); closure: $(du -sh --apparent-size "$C/nix/store" | cut -f1), $(find "$C/nix/store" | wc -l) entries; $(nproc) CPUs"
echo
echo "| pipeline | wall (best of $runs) | CPU | peak RSS | bytes |"
echo "|---|---|---|---|---|"
for alg in lz4hc lz4; do
	run "mkfs.erofs -z$alg DIR" "$img/m-$alg.img" \
		"$MKFS --quiet -z$alg --all-root -L nix-store -U $UUID -T 0 '$img/m-$alg.img' '$C/nix/store' && sync '$img/m-$alg.img'"
	run "mkvmimage --store-image --compress-fs $alg CLOSURE" "$img/o-$alg.img" \
		"$M --compress-fs $alg --root '$C' '$C/store-paths' -o '$img/o-$alg.img'"
	extract_check "$img/o-$alg.img"
	rm -f "$img/m-$alg.img" "$img/o-$alg.img"
done
run "tar --create \\| mkfs.erofs --tar=f -zlz4hc" "$img/mt.img" \
	"cd '$C/nix/store' && sed 's|.*/||' '$C/store-paths' | tar --create --files-from=- | $MKFS --quiet -zlz4hc --force-uid=0 --force-gid=0 -L nix-store -U $UUID -T 0 --tar=f '$img/mt.img' && sync '$img/mt.img'"
run "mkvmimage --store-image --tar FILE --compress-fs lz4hc" "$img/ot.img" \
	"$M --compress-fs lz4hc --tar '$work/closure.tar' -o '$img/ot.img'"
rm -f "$img/mt.img" "$img/ot.img"
