#!/usr/bin/env bash
# erofs.sh -- the EROFS store image writer against mkfs.erofs, side by side.
#
# Usage: bench/erofs.sh [--work DIR] [--out DIR] [--runs N]
#
# --out DIR puts the images elsewhere, e.g. on tmpfs (/dev/shm) to take the
# disk's write-back speed out of the comparison (then the CPU and the copies
# are what is measured). Each image is removed once checked.
#
# Closure: bench/make-closure.sh (>= 500 MB of installed files, made once in
# DIR/closure). mkfs.erofs 1.8 comes from bench/setup-erofs-utils.sh (Debian
# 13's source package built into bench/out/; Debian 12's 1.5 has no --tar).
# Rows (each image has the same label, UUID, times and owners):
#   (1) what NixOS runs today: tar --create … | mkfs.erofs --tar=f -T 0 -U …
#       --force-uid=0 --force-gid=0 -L nix-store, against
#       mkvmimage --store-image CLOSURE (from the closure on disk)
#   (2) mkfs.erofs 1.8 from the store directory (in-kernel copies: the floor)
#   (3) the same tar stream into both: a tar file on disk (mkfs.erofs reads it
#       from stdin, mkvmimage from the file) and the tar on a pipe
# Page cache is warm for all (one untimed read first); the best of N runs is
# reported with its CPU time (user + system, all processes of the pipeline)
# and peak RSS (/usr/bin/time). mkvmimage fsyncs its output before renaming
# it, so the mkfs.erofs rows end with `sync FILE` too. Every raw image is
# checked with fsck.erofs, the qcow2 with qemu-img compare. Prints a Markdown
# table for bench/RESULTS.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${TMPDIR:-/tmp}/bench-erofs runs=3 out=
while [ $# -gt 0 ]; do
	case "$1" in
	--work) work=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	*) echo "erofs.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
MKVMIMAGE=${MKVMIMAGE:-$here/../build/mkvmimage}
mkdir -p "$work"
"$here/make-closure.sh" --root "$work/closure" >&2
C=$work/closure
MKFS=$("$here/setup-erofs-utils.sh")
UUID=eb176051-bd15-49b7-9e6b-462e0b467019
names() { sed 's|.*/||' "$C/store-paths"; }
tar -cf - -C "$C" nix >/dev/null # warm the page cache
[ -s "$work/closure.tar" ] ||
	(cd "$C/nix/store" && names | tar --create --sort=name --files-from=- -f "$work/closure.tar")
[ -s "$work/closure.tar.gz" ] || gzip -1 -c "$work/closure.tar" >"$work/closure.tar.gz"
[ -s "$work/shuffled.tar" ] || (cd "$C/nix/store" && find $(names) | shuf --random-source=<(yes 1) |
	tar --create --no-recursion --files-from=- -f "$work/shuffled.tar")
img=${out:-$work}
mkdir -p "$img"
: >"$work/ours.sums"
export SOURCE_DATE_EPOCH=0

# run NAME OUTPUT CMD: best wall time and its peak RSS over $runs runs.
best_t= best_m= best_c=
run() {
	local name=$1 out=$2 i t m u s
	shift 2
	best_t= best_m= best_c=
	for i in $(seq 1 "$runs"); do
		rm -f "$out" "$out.json"
		sync
		/usr/bin/time -f '%e %M %U %S' -o "$work/time" bash -c "$1" >/dev/null 2>"$work/err" ||
			{ cat "$work/err" >&2; echo "erofs.sh: $name failed" >&2; exit 1; }
		read -r t m u s <"$work/time"
		if [ -z "$best_t" ] || awk -v a="$t" -v b="$best_t" 'BEGIN{exit !(a<b)}'; then
			best_t=$t best_m=$m best_c=$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}')
		fi
	done
	case "$out" in
	*.qcow2) qemu-img compare -q "$img/ours.img" "$out" || { echo "erofs.sh: $out differs" >&2; exit 1; } ;;
	*) fsck.erofs "$out" >/dev/null || { echo "erofs.sh: fsck.erofs failed on $out ($name)" >&2; exit 1; } ;;
	esac
	case "$out" in */our*.img) sha256sum <"$out" >>"$work/ours.sums" ;; esac
	printf '| %s | %s s | %s s | %d MiB | %d MiB |\n' "$name" "$best_t" "$best_c" $((best_m / 1024)) \
		$(($(stat -c %s "$out") >> 20))
	case "$out" in */ours.img) ;; *) rm -f "$out" ;; esac
}
M="$MKVMIMAGE -q --no-manifest --store-image --seed bench"
echo "mkfs.erofs: $($MKFS --version 2>&1 | head -1); closure: $(du -sh --apparent-size "$C/nix/store" | cut -f1), $(find "$C/nix/store" | wc -l) entries"
echo
echo "| pipeline | wall (best of $runs) | CPU | peak RSS | file |"
echo "|---|---|---|---|---|"
run "(1) tar --create \\| mkfs.erofs --tar=f (NixOS today)" "$img/nixos.img" \
	"cd '$C/nix/store' && sed 's|.*/||' '$C/store-paths' | tar --create --files-from=- | $MKFS --quiet --force-uid=0 --force-gid=0 -L nix-store -U $UUID -T 0 --tar=f '$img/nixos.img' && sync '$img/nixos.img'"
run "(1) mkvmimage --store-image CLOSURE" "$img/ours.img" \
	"$M --root '$C' '$C/store-paths' -o '$img/ours.img'"
run "(2) mkfs.erofs DIR (1.8, copy_file_range)" "$img/dir.img" \
	"$MKFS --quiet --all-root -L nix-store -U $UUID -T 0 '$img/dir.img' '$C/nix/store' && sync '$img/dir.img'"
run "(2) mkvmimage --store-image CLOSURE, qcow2" "$img/ours.qcow2" \
	"$M --root '$C' '$C/store-paths' -o '$img/ours.qcow2'"
run "(3) tar file \\| mkfs.erofs --tar=f" "$img/tarf.img" \
	"$MKFS --quiet --force-uid=0 --force-gid=0 -L nix-store -U $UUID -T 0 --tar=f '$img/tarf.img' <'$work/closure.tar' && sync '$img/tarf.img'"
run "(3) mkvmimage --store-image --tar FILE" "$img/ourtar.img" \
	"$M --tar '$work/closure.tar' -o '$img/ourtar.img'"
run "(3) cat tar \\| mkfs.erofs --tar=f" "$img/tarp.img" \
	"cat '$work/closure.tar' | $MKFS --quiet --force-uid=0 --force-gid=0 -L nix-store -U $UUID -T 0 --tar=f '$img/tarp.img' && sync '$img/tarp.img'"
run "(3) cat tar \\| mkvmimage --store-image --tar - (sorted: in place)" "$img/ourpipe.img" \
	"cat '$work/closure.tar' | $M --tar - -o '$img/ourpipe.img'"
run "(3) cat tar.gz \\| mkvmimage --store-image --tar - (gzip, sorted: in place)" "$img/ourgz.img" \
	"cat '$work/closure.tar.gz' | $M --tar - -o '$img/ourgz.img'"
run "(3) cat tar.gz \\| mkfs.erofs --tar=f (gzip)" "$img/tgz.img" \
	"cat '$work/closure.tar.gz' | $MKFS --quiet --force-uid=0 --force-gid=0 -L nix-store -U $UUID -T 0 --tar=f --ungzip '$img/tgz.img' && sync '$img/tgz.img'"
run "(3) cat shuffled tar \\| mkvmimage --store-image --tar - (staged beside the output)" "$img/ourshuf.img" \
	"cat '$work/shuffled.tar' | $M --tar - -o '$img/ourshuf.img'"
rm -f "$img/ours.img"
[ "$(sort -u "$work/ours.sums" | wc -l)" = 1 ] && echo &&
	echo "mkvmimage: closure, tar file, sorted, gzip and shuffled pipes gave identical images."
