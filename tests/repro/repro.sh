#!/usr/bin/env bash
# repro.sh -- every output kind built three times under different conditions
# must give byte-identical images (and manifests) (issue 7 item 1).
#
#   A: store = the fixture as built, closureInfo as written, umask 022, TZ=UTC,
#      LANG=C, real clock, cwd and TMPDIR under a/
#   B: store = a fresh copy elsewhere (new inodes, mtimes and atimes of now,
#      created in reverse order), store-paths lines shuffled,
#      umask 077, TZ=Pacific/Chatham, LANG/LC_ALL=de_DE.UTF-8/tr_TR.UTF-8, the
#      clock moved to 2038 (faketime), cwd and TMPDIR under b/
#   C: store = a `cp -a` copy with identical files hard-linked as
#      `nix store optimise` does, umask 027, TZ=America/St_Johns, LANG=C.UTF-8,
#      clock moved back to 2001, cwd and TMPDIR under c/, and --no-direct-io
#      (file data through the page cache instead of O_DIRECT writes)
# SOURCE_DATE_EPOCH is 1 in all three. The output is named by a relative path,
# so the working directory is part of what may not matter.
# Kind registration-order: a root image from a closureInfo whose registration
# records come in another order must equal the one from the original (the
# record order is not part of the closure's meaning).
#
# Kinds a tool does not support yet are reported as SKIP; the test passes
# when at least one kind ran and none differed. On a difference,
# tests/repro/diffimg.py says which partition and structure differ.
# REPRO_KINDS="root-raw efi-qcow2" limits the run to those kinds.
. "$SRCDIR/tests/lib.sh"
t_begin repro
# the store copies are read-only, as in a Nix store
trap 'chmod -R u+w "$T" 2>/dev/null; t_cleanup' EXIT
: "${VMLAUNCH:=/nonexistent}"
. "$SRCDIR/tests/boot/lib-boot.sh"
t_need python3 cmp qemu-img
boot_fixture
V=$SRCDIR/tests/repro/variants.py
DIFF=$SRCDIR/tests/repro/diffimg.py

# --- inputs --------------------------------------------------------------------
for x in a b c; do mkdir -p "$T/$x/work/sub" "$T/$x/tmp" "$T/$x/out"; done
python3 "$V" fresh-copy "$ROOT" "$T/b/store" || t_fail "fresh copy of the store"
cp -a "$ROOT" "$T/c/store" || t_fail "cp -a of the store"
python3 "$V" optimise "$T/c/store" >/dev/null || t_fail "optimise (hard links)"
for cl in closure closure-all; do
	python3 "$V" shuffle-closure "$FIXTURE/$cl" "$T/b/$cl" paths || t_fail "shuffle $cl"
	cp -a "$FIXTURE/$cl" "$T/c/$cl"
done
[ "$(cat "$T/b/closure/store-paths")" != "$(cat "$CLOSURE/store-paths")" ] || t_fail "shuffle did nothing"

FAKETIME=()
t_can "the moved clocks of conditions B and C" cmd:faketime && FAKETIME=(faketime)

# run_as X ARGS...: run mkvmimage under condition X, in X/work/sub
run_as() {
	local x=$1 store closure_dir
	shift
	case $x in
	a) store=$ROOT closure_dir=$FIXTURE ;;
	*) store=$T/$x/store closure_dir=$T/$x ;;
	esac
	local args=() arg
	for arg in "$@"; do
		case $arg in
		@ROOT@) arg=$store ;;
		@CLOSURE@) arg=$closure_dir/closure ;;
		@CLOSURE_ALL@) arg=$closure_dir/closure-all ;;
		esac
		args+=("$arg")
	done
	[ "$x" != c ] || args=(--no-direct-io "${args[@]}")
	local envs=(PATH="$PATH" HOME="$T/$x" SOURCE_DATE_EPOCH=1 TMPDIR="$T/$x/tmp")
	local pre=()
	case $x in
	a) envs+=(TZ=UTC LANG=C) ;;
	b)
		envs+=(TZ=Pacific/Chatham LANG=de_DE.UTF-8 LC_ALL=tr_TR.UTF-8)
		[ ${#FAKETIME[@]} = 0 ] || pre=(faketime '2038-01-01 00:00:00')
		;;
	c)
		envs+=(TZ=America/St_Johns LANG=C.UTF-8)
		[ ${#FAKETIME[@]} = 0 ] || pre=(faketime '2001-09-09 01:46:40')
		;;
	esac
	local um=022
	case $x in b) um=077 ;; c) um=027 ;; esac
	(cd "$T/$x/work/sub" && umask $um && env -i "${envs[@]}" "${pre[@]}" "$MKVMIMAGE" "${args[@]}")
}

# kind NAME OUTFILE ARGS... (ARGS may use @ROOT@ @CLOSURE@ @CLOSURE_ALL@)
KINDS_RUN=0
FAILED=()
SKIPPED=()
kind() {
	local name=$1 out=$2
	shift 2
	if [ -n "${REPRO_KINDS:-}" ] && ! [[ " $REPRO_KINDS " == *" $name "* ]]; then
		return 0
	fi
	local rc=0
	run_as a "$@" -o "../../out/$out" >"$T/a.log" 2>&1 || rc=$?
	if [ $rc != 0 ]; then
		FAILED+=("$name")
		echo "FAIL $name: build A failed (exit $rc): $(head -c 600 "$T/a.log")"
		return 0
	fi
	local x ok=1
	for x in b c; do
		rc=0
		run_as $x "$@" -o "../../out/$out" >"$T/$x.log" 2>&1 || rc=$?
		if [ $rc != 0 ]; then
			echo "FAIL $name: build $x failed (exit $rc): $(head -c 600 "$T/$x.log")"
			ok=0
			continue
		fi
		if ! cmp -s "$T/a/out/$out" "$T/$x/out/$out"; then
			echo "FAIL $name: A and ${x^^} differ"
			DIFFIMG_TMP=$T python3 "$DIFF" "$T/a/out/$out" "$T/$x/out/$out" | head -60
			ok=0
		fi
		if [ -f "$T/a/out/$out.json" ] && ! cmp -s "$T/a/out/$out.json" "$T/$x/out/$out.json"; then
			echo "FAIL $name: manifests of A and ${x^^} differ:"
			diff "$T/a/out/$out.json" "$T/$x/out/$out.json" | head -20
			ok=0
		fi
	done
	KINDS_RUN=$((KINDS_RUN + 1))
	if [ $ok = 1 ]; then
		echo "PASS $name ($(stat -c %s "$T/a/out/$out") bytes, sha256 $(sha256sum "$T/a/out/$out" | cut -c1-16))"
	else
		FAILED+=("$name")
	fi
	# keep the disk usage bounded
	rm -f "$T"/[abc]/out/"$out" "$T"/[abc]/out/"$out".json
}

kind empty-raw e.img --empty --size 64M
kind empty-qcow2 e.qcow2 --empty --size 64M
kind root-raw r.img --root @ROOT@ @CLOSURE@
kind root-qcow2 r.qcow2 --root @ROOT@ @CLOSURE@
kind root-zstd rz.qcow2 --compress zstd --root @ROOT@ @CLOSURE@
kind efi-raw efi.img --efi --root @ROOT@ @CLOSURE@
kind efi-qcow2 efi.qcow2 --efi --root @ROOT@ @CLOSURE@
kind efi-zstd efiz.qcow2 --efi --compress zstd --root @ROOT@ @CLOSURE@
kind efi-verity efiv.img --efi --verity --root @ROOT@ @CLOSURE@
kind efi-verity-qcow2 efiv.qcow2 --efi --verity --root @ROOT@ @CLOSURE@
# VHD, VDI, VMDK: their timestamps and UUIDs come from the epoch and the seed
kind efi-vhd efi.vhd --efi --root @ROOT@ @CLOSURE@
kind efi-vhd-dynamic efid.vhd --efi --vpc-subformat dynamic --root @ROOT@ @CLOSURE@
kind efi-vdi efi.vdi --efi --root @ROOT@ @CLOSURE@
kind efi-vmdk efi.vmdk --efi --root @ROOT@ @CLOSURE@
kind efi-vmdk-stream efis.vmdk --efi --vmdk-subformat streamOptimized --root @ROOT@ @CLOSURE@
GRUB=()
if [ -n "$GRUB_DIR" ]; then
	GRUB=(--grub "$GRUB_DIR")
else
	t_skip_record "bios and hybrid kinds with --grub: the fixture has no GRUB (grub-pc-bin)"
fi
kind bios-raw bios.img --bios "${GRUB[@]}" --root @ROOT@ @CLOSURE@
kind bios-qcow2 bios.qcow2 --bios "${GRUB[@]}" --root @ROOT@ @CLOSURE@
kind hybrid-raw hybrid.img --hybrid "${GRUB[@]}" --root @ROOT@ @CLOSURE@
kind hybrid-qcow2 hybrid.qcow2 --hybrid "${GRUB[@]}" --root @ROOT@ @CLOSURE@
kind store-raw store.img --store-image --root @ROOT@ @CLOSURE_ALL@
kind store-qcow2 store.qcow2 --store-image --root @ROOT@ @CLOSURE_ALL@
kind store-zstd storez.qcow2 --store-image --compress zstd --root @ROOT@ @CLOSURE_ALL@
kind store-verity storev.img --store-image --verity --root @ROOT@ @CLOSURE_ALL@
kind store-verity-qcow2 storev.qcow2 --store-image --verity --root @ROOT@ @CLOSURE_ALL@
kind store-lz4hc storez.img --store-image --compress-fs lz4hc --verity --root @ROOT@ @CLOSURE_ALL@
kind store-lz4 storel.img --store-image --compress-fs lz4 --root @ROOT@ @CLOSURE_ALL@

# registration-order: conditions A, only the registration records reversed
if [ -z "${REPRO_KINDS:-}" ] || [[ " $REPRO_KINDS " == *" registration-order "* ]]; then
	python3 "$V" shuffle-closure "$CLOSURE" "$T/reg-closure" registration
	if run_as a --root @ROOT@ @CLOSURE@ -o ../../out/reg-a.img >"$T/a.log" 2>&1 &&
		run_as a --root @ROOT@ "$T/reg-closure" -o ../../out/reg-b.img >"$T/b.log" 2>&1; then
		KINDS_RUN=$((KINDS_RUN + 1))
		if cmp -s "$T/a/out/reg-a.img" "$T/a/out/reg-b.img"; then
			echo "PASS registration-order"
		else
			echo "FAIL registration-order: the order of the registration records reaches the image"
			DIFFIMG_TMP=$T python3 "$DIFF" "$T/a/out/reg-a.img" "$T/a/out/reg-b.img" | head -20
			FAILED+=(registration-order)
		fi
	else
		FAILED+=(registration-order)
		echo "FAIL registration-order: build failed: $(head -c 600 "$T/a.log" "$T/b.log")"
	fi
	rm -f "$T"/a/out/reg-*
fi

# diffimg.py itself: one flipped field per structure must be named
selftest() { # selftest IMAGE OFFSET WANT: flip the byte at OFFSET, expect WANT in the report
	cp --sparse=always "$1" "$T/flip.img"
	printf '\xa5' | dd of="$T/flip.img" bs=1 seek="$2" conv=notrunc status=none
	local rep rc=0
	rep=$(DIFFIMG_TMP=$T python3 "$DIFF" "$1" "$T/flip.img") || rc=$?
	if [ $rc != 1 ] || ! grep -qF "$3" <<<"$rep"; then
		echo "FAIL diffimg-selftest: byte $2 of $(basename "$1"): wanted '$3', got (exit $rc): $rep"
		FAILED+=(diffimg-selftest)
	fi
}
if [ -z "${REPRO_KINDS:-}" ] && run_as a --efi --root @ROOT@ @CLOSURE@ -o ../../out/st.img >/dev/null 2>&1; then
	img=$T/a/out/st.img
	esp=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(*[p["offset"] for p in m["partitions"] if p["role"] in ("esp","root")])' "$img.json")
	set -- $esp
	selftest "$img" $((512 + 0x38)) "GPT primary header: disk_guid"
	selftest "$img" $(($1 + 0x43)) "FAT boot sector: BS_VolID"
	selftest "$img" $(($2 + 1024 + 0x68)) "ext4 superblock: s_uuid"
	if run_as a --store-image --root @ROOT@ @CLOSURE_ALL@ -o ../../out/st.erofs >/dev/null 2>&1; then
		selftest "$T/a/out/st.erofs" $((1024 + 0x30)) "EROFS superblock: uuid"
	fi
	[[ " ${FAILED[*]} " == *" diffimg-selftest "* ]] || echo "PASS diffimg-selftest"
	rm -f "$T"/a/out/st.* "$T/flip.img"
fi

echo "repro: ${KINDS_RUN} kinds built three ways; failed: ${FAILED[*]:-none}; skipped: ${SKIPPED[*]:-none}"
[ ${#FAILED[@]} = 0 ] || t_fail "not reproducible: ${FAILED[*]}"
[ $KINDS_RUN -gt 0 ] || t_fail "no output kind was built"
t_pass
