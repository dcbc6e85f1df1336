#!/usr/bin/env bash
# qcow2-write.sh -- images libimg writes pass `qemu-img check` (no errors, no
# leaks) and `qemu-img compare` finds them equal to the same writes made on
# the raw backend: random patterns, sparse, full, zstd, zlib, cluster sizes,
# copy_from_fd of a raw disk; and the same writes give the same bytes.
. "$SRCDIR/tests/lib.sh"
t_begin qcow2-write
t_need qemu-img
TOOL="$BUILDDIR/qcow2-tool"
[ -x "$TOOL" ] || t_fail "$TOOL not built"

# check_same NAME SIZE [qcow2 options] -- OPS...: write raw + qcow2, validate.
check_same() {
	local name=$1 size=$2 opts=() out
	shift 2
	while [ "$1" != -- ]; do opts+=("$1"); shift; done
	shift
	"$TOOL" write "$T/$name.raw" --format raw --size "$size" "$@" || t_fail "$name: raw write"
	"$TOOL" write "$T/$name.qcow2" --size "$size" "${opts[@]}" "$@" || t_fail "$name: qcow2 write"
	out=$(qemu-img check "$T/$name.qcow2" 2>&1) || t_fail "$name: qemu-img check: $out"
	case $out in *"No errors were found"*) ;; *) t_fail "$name: qemu-img check said: $out" ;; esac
	case $out in *eak*) t_fail "$name: leaks: $out" ;; esac
	out=$(qemu-img compare -f raw -F qcow2 "$T/$name.raw" "$T/$name.qcow2" 2>&1) ||
		t_fail "$name: qemu-img compare: $out"
	qemu-img info "$T/$name.qcow2" | grep -q "virtual size: .*($size bytes)" ||
		t_fail "$name: virtual size"
	# Our own reader agrees too (where reading every byte is quick).
	[ "$size" -le $((1 << 30)) ] || { echo "ok $name"; return; }
	"$TOOL" dump "$T/$name.qcow2" "$T/$name.back" || t_fail "$name: our reader"
	cmp -s "$T/$name.raw" "$T/$name.back" || t_fail "$name: our reader differs"
	rm -f "$T/$name.back"
	echo "ok $name: $(stat -c %s "$T/$name.qcow2") bytes"
}

check_same random 67108864 -- pattern 1 400 300000
check_same random-512 16777216 --cluster-bits 9 -- pattern 2 300 20000
check_same random-2m 67108864 --cluster-bits 21 -- pattern 3 200 3000000
check_same sparse $((1 << 34)) -- data 0 70000 1 data $(((1 << 33) + 123)) 5000 2 \
	data $(((1 << 34) - 65536)) 65536 3 zero 100 200
check_same full 33554432 -- data 0 33554432 4 text 1000000 5000000 pattern 5 50 100000
check_same zstd 67108864 --compress zstd -- pattern 6 400 300000 text 0 8000000
check_same zlib 67108864 --compress zlib -- pattern 7 400 300000 text 0 8000000
check_same zstd-512 8388608 --compress zstd --cluster-bits 9 -- pattern 8 300 20000
check_same zlib-2m 33554432 --compress zlib --cluster-bits 21 --threads 3 -- pattern 9 100 3000000

qemu-img info "$T/zstd.qcow2" | grep -q "compression type: zstd" || t_fail "zstd: not marked zstd"
qemu-img info "$T/zlib.qcow2" | grep -q "compression type: zlib" || t_fail "zlib: not marked zlib"
qemu-img check "$T/zstd.qcow2" | grep -q "compressed clusters" || t_fail "zstd: no statistics"

# copy_from_fd (the file data path) from a raw disk with holes.
"$TOOL" write "$T/src.raw" --format raw --size 50331648 data 0 10000000 10 \
	data 20000000 5000000 11 text 30000000 9000000 || t_fail "src"
check_same copy 50331648 -- convert "$T/src.raw"
check_same copy-zstd 50331648 --compress zstd -- convert "$T/src.raw"
cmp -s "$T/src.raw" "$T/copy.raw" || t_fail "copy: raw backend differs from the source"

# The hot path: an aligned 96 MiB copy moves in large pieces, not one system
# call per cluster (the clusters are allocated contiguously): big O_DIRECT
# writes of 4 MiB gathered by pread where the file system takes O_DIRECT,
# else a few big copy_file_range calls.
if t_can "write-behind system calls (strace)" cmd:strace; then
	"$TOOL" write "$T/big.raw" --format raw --size 100663296 data 0 100663296 12 || t_fail big
	strace -f -qq -e trace=openat,copy_file_range,pread64,pwrite64 -o "$T/strace" \
		"$TOOL" write "$T/big.qcow2" --size 134217728 copy "$T/big.raw" 0 || t_fail "big copy"
	if grep -q 'big.qcow2.*O_DIRECT\|fd/[0-9]*", O_WRONLY|O_DIRECT' "$T/strace"; then
		how="O_DIRECT"
		calls=$(grep -c 'pwrite64(.*, 4194304, [0-9]*' "$T/strace" || true)
		[ "$calls" -eq 24 ] || t_fail "96 MiB copy took $calls 4 MiB writes, not 24"
		writes=$(grep -c 'pwrite64(' "$T/strace" || true)
		[ "$writes" -le 40 ] || t_fail "96 MiB copy took $writes writes"
	else
		how="copy_file_range"
		calls=$(grep -c 'copy_file_range(' "$T/strace")
		[ "$calls" -ge 1 ] && [ "$calls" -le 2 ] ||
			t_fail "96 MiB copy took $calls copy_file_range calls"
	fi
	# (compare treats the qcow2's extra 32 MiB as zeros to check)
	qemu-img compare -q "$T/big.raw" "$T/big.qcow2" || t_fail "big copy differs"
	"$TOOL" dump "$T/big.qcow2" "$T/big.back" && cmp -s -n 100663296 "$T/big.raw" "$T/big.back" ||
		t_fail "big copy reads back wrong"
	echo "ok big copy: $calls $how call(s)"
	rm -f "$T/big.raw" "$T/big.qcow2" "$T/big.back"
fi

# Determinism: the same writes twice give the same bytes (zstd with 1 and 2 threads).
"$TOOL" write "$T/d1.qcow2" --size 67108864 pattern 1 400 300000 || t_fail d1
cmp -s "$T/d1.qcow2" "$T/random.qcow2" || t_fail "plain output not deterministic"
"$TOOL" write "$T/d2.qcow2" --size 67108864 --compress zstd --threads 1 pattern 6 400 300000 \
	text 0 8000000 || t_fail d2
cmp -s "$T/d2.qcow2" "$T/zstd.qcow2" || t_fail "zstd output depends on the thread count"
t_pass
