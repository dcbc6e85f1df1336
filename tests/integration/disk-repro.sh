#!/usr/bin/env bash
# disk-repro.sh -- partitioned disks are reproducible: rebuilt under another
# working directory, umask and TZ they are byte-identical (raw and qcow2); the
# qcow2 holds the same disk as the raw (qemu-img compare); another seed
# changes every ID.
. "$SRCDIR/tests/lib.sh"
t_begin disk-repro
t_need qemu-img cmp python3
. "$SRCDIR/tests/integration/disk-lib.sh"
disk_store "$T"
R=$T/root

build() { # mode out [args]
	local m=$1 o=$2
	shift 2
	"$MKVMIMAGE" -q "$m" --root "$R" -o "$o" "$@" "$T/closure" || t_fail "build $m $o"
}
mkdir "$T/w1" "$T/w2"
for m in efi hybrid bios; do
	(cd "$T/w1" && umask 022 && TZ=UTC build --$m "$T/$m-1.img")
	(cd "$T/w2" && umask 077 && TZ=Asia/Tokyo build --$m "$T/$m-2.img")
	cmp "$T/$m-1.img" "$T/$m-2.img" || t_fail "--$m raw differs between builds"
	diff <(grep -v '"image"' "$T/$m-1.img.json") <(grep -v '"image"' "$T/$m-2.img.json") ||
		t_fail "--$m manifest differs"
done
(cd "$T/w1" && build --efi "$T/q1.qcow2")
(cd "$T/w2" && umask 077 && build --efi "$T/q2.qcow2")
cmp "$T/q1.qcow2" "$T/q2.qcow2" || t_fail "qcow2 differs between builds"
qemu-img check -q "$T/q1.qcow2" || t_fail "qemu-img check"
qemu-img compare -q "$T/efi-1.img" "$T/q1.qcow2" || t_fail "qcow2 and raw hold different disks"
[ "$(stat -c %s "$T/efi-1.img")" = "$(disk_json "$T/q1.qcow2.json" 'm["virtual_size"]')" ] ||
	t_fail "virtual size"
build --efi "$T/other.img" --seed other
python3 - "$T/efi-1.img.json" "$T/other.img.json" <<'PY' || t_fail "seed"
import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
assert a["disk_guid"] != b["disk_guid"]
for x, y in zip(a["partitions"], b["partitions"]):
    assert x["uuid"] != y["uuid"] and x["fs_uuid"] != y["fs_uuid"], x["role"]
PY
t_pass
