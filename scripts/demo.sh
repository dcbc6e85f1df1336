#!/usr/bin/env bash
# demo.sh -- the main job, end to end, on a fresh Debian 12:
#
#   1. scripts/setup.sh installs what is missing
#   2. build mkvmimage and vmlaunch (build/)
#   3. build the fixture closure from Debian packages (fixtures/boot/build.sh):
#      a NixOS-like system with Debian's cloud kernel and a busybox initrd
#   4. mkvmimage --efi          -> out/demo/disk.qcow2  (GPT: ESP + ext4 root)
#      mkvmimage --store-image  -> out/demo/store.img   (EROFS, label nix-store)
#   5. vmlaunch boots them headless (KVM when usable, else TCG) until the guest
#      prints the marker with checksums of a file read from the root file
#      system and one read from the store image; the script compares them
#      with the fixture's.
#
# Environment: SKIP_SETUP=1 skips step 1; JOBS (default nproc); BUILD (default
# build); OUT (default out/demo); ACCEL (default auto: KVM when a paused KVM
# guest starts, else TCG, which boots the fixture in about 20 s); TIMEOUT
# (default 300 s).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
JOBS=${JOBS:-$(nproc)}
OUT=${OUT:-$SRC/out/demo}
ACCEL=${ACCEL:-auto}
TIMEOUT=${TIMEOUT:-300}
BUILD=${BUILD:-$SRC/build}
case $BUILD in /*) ;; *) BUILD=$SRC/$BUILD ;; esac
step() { printf '\n== %s\n' "$*"; }
missing=()

step "1/5 setup"
if [ -n "${SKIP_SETUP:-}" ]; then echo "skipped (SKIP_SETUP)"; else bash scripts/setup.sh; fi

step "2/5 build"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$JOBS" --target mkvmimage vmlaunch
MKVMIMAGE=$BUILD/mkvmimage
VMLAUNCH=$BUILD/vmlaunch

step "3/5 fixture closure"
mkdir -p "$OUT"
bash fixtures/boot/build.sh "$BUILD/fixture-boot"
# shellcheck disable=SC1091
. "$BUILD/fixture-boot/expected"
echo "system:  $SYSTEM"
echo "kernel:  Linux $KVER"
echo "closure: $(wc -l <"$CLOSURE/store-paths") store paths ($(du -sh --apparent-size "$ROOT" | cut -f1) incl. the store image's data)"

# run CMD...: run one of our tools; returns 3 when it says it cannot do that yet
run() {
	local rc=0
	"$@" 2>"$OUT/stderr" || rc=$?
	cat "$OUT/stderr" >&2
	if [ $rc != 0 ] && grep -Eqi 'not (built|written|read|implemented|supported) yet' "$OUT/stderr"; then
		return 3
	fi
	return $rc
}

step "4/5 images"
export SOURCE_DATE_EPOCH=1
have_disk=0 have_store=0
t0=$(date +%s%N)
if run "$MKVMIMAGE" --efi --root "$ROOT" -o "$OUT/disk.qcow2" "$CLOSURE"; then
	have_disk=1
	echo "disk.qcow2: $(qemu-img info "$OUT/disk.qcow2" | grep -E 'virtual size|disk size' | tr '\n' ' ')"
	[ -f "$OUT/disk.qcow2.json" ] && grep -E '"(mode|boot|bootloader|system|kernel_params|sha256)"' "$OUT/disk.qcow2.json" | sed 's/^/  /'
else
	[ $? = 3 ] && missing+=("mkvmimage --efi") || { echo "demo: mkvmimage --efi failed" >&2; exit 1; }
fi
if run "$MKVMIMAGE" --store-image --root "$ROOT" -o "$OUT/store.img" "$CLOSURE_STORE"; then
	have_store=1
	echo "store.img: $(stat -c %s "$OUT/store.img") bytes"
else
	[ $? = 3 ] && missing+=("mkvmimage --store-image") || { echo "demo: mkvmimage --store-image failed" >&2; exit 1; }
fi
echo "images took $((($(date +%s%N) - t0) / 1000000)) ms"

step "5/5 boot"
status=0
if [ $have_disk = 1 ] && [ $have_store = 1 ]; then
	log=$OUT/console.log
	rm -f "$log"
	t0=$(date +%s)
	rc=0
	run "$VMLAUNCH" --ephemeral --accel "$ACCEL" --store-image "$OUT/store.img" \
		--serial-log "$log" --expect "$MARKER" --timeout "$TIMEOUT" "$OUT/disk.qcow2" || rc=$?
	if [ $rc = 3 ]; then
		missing+=("vmlaunch")
	elif [ $rc != 0 ]; then
		echo "demo: vmlaunch exit $rc; the console log's last lines:" >&2
		tail -20 "$log" >&2 || true
		status=1
	else
		line=$(tr -d '\r' <"$log" | grep -m1 "^$MARKER" || true)
		echo "guest said: $line"
		echo "expected:   $MARKER_FULL tpm=no"
		if [ "$line" = "$MARKER_FULL tpm=no" ]; then
			echo "booted in $(($(date +%s) - t0)) s: UEFI -> systemd-boot -> Linux -> initrd found root (LABEL=nixos)"
			echo "and the store image (LABEL=nix-store); both checksums match the fixture. Log: $log"
		else
			echo "demo: the guest's checksums do not match the fixture" >&2
			status=1
		fi
	fi
fi
if [ ${#missing[@]} -gt 0 ]; then
	echo
	echo "not done: ${missing[*]} cannot do this yet (being written); the fixture itself"
	echo "is proved by: ctest --test-dir $BUILD -R boot/fixture"
	[ $status = 0 ] && status=2
fi
exit $status
