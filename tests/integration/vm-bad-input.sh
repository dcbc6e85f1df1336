# vm-bad-input.sh -- vmlaunch refuses bad input with a clear message naming
# it, exits 1 (2 for usage errors), and starts and creates nothing: no QEMU,
# no swtpm, no state directory.
. "$SRCDIR/tests/lib.sh"
t_begin vm-bad-input
t_need qemu-img python3
export TMPDIR=$T/tmp
mkdir -p "$TMPDIR"
ST=$T/state

truncate -s 64M "$T/disk.raw"
# refuse CODE NEEDLE ARGS...: exit CODE, stderr has NEEDLE, nothing made or run.
refuse() {
	local code=$1 needle=$2
	shift 2
	t_expect_exit "$code" "$VMLAUNCH" --accel tcg --state-dir "$ST" "$@"
	grep -qF -- "$needle" "$T/stderr" || t_fail "stderr lacks '$needle': $(cat "$T/stderr")"
	grep -q '^vmlaunch: ' "$T/stderr" || t_fail "message not prefixed: $(cat "$T/stderr")"
	[ ! -e "$ST" ] || t_fail "state created for a refused run ($*)"
	[ -z "$(ls -A "$TMPDIR")" ] || t_fail "files left in TMPDIR ($*)"
	pgrep -f "(qemu-system|swtpm).*$T" >/dev/null && t_fail "a process was started ($*): $(pgrep -af "$T")"
	echo "ok: $needle"
}

refuse 1 "$T/missing.qcow2: No such file" "$T/missing.qcow2"
echo "this is a text file, not a disk" >"$T/notes.txt"
refuse 1 "not a disk image" --boot efi "$T/notes.txt"
qemu-img create -q -f qcow2 "$T/base.qcow2" 64M
qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$T/backed.qcow2"
refuse 1 "backing file" --boot efi "$T/backed.qcow2"
mkdir "$T/no-firmware"
refuse 1 "no usable UEFI firmware" --boot efi --firmware-dir "$T/no-firmware" "$T/disk.raw"
refuse 1 "--secure-boot" --boot efi --secure-boot --firmware-dir "$T/no-firmware" "$T/disk.raw"
refuse 1 "cannot tell how it boots" "$T/disk.raw"
refuse 1 "--accel kvm: /nonexistent/kvm is not usable" --boot efi --accel kvm \
	--kvm-device /nonexistent/kvm "$T/disk.raw"
refuse 1 "--store-image $T/missing.img" --boot efi --store-image "$T/missing.img" "$T/disk.raw"
refuse 1 "not a directory" --boot efi --share "t:$T/nowhere:/mnt" "$T/disk.raw"
refuse 2 "--disk-interface" --disk-interface sata "$T/disk.raw"
refuse 2 "no IMAGE" --boot efi
refuse 2 "--memory" -m lots "$T/disk.raw"
refuse 2 "QEMU arguments go after --" "$T/disk.raw" -S
refuse 1 "--forward" --boot efi --forward "nonsense" "$T/disk.raw"

# A forwarded host port that is in use: refused before anything starts.
python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
time.sleep(60)' "$T/port" &
LPID=$!
for _ in $(seq 100); do [ -s "$T/port" ] && break; sleep 0.1; done
refuse 1 "host port $(cat "$T/port")" --boot efi --forward "$(cat "$T/port"):22" "$T/disk.raw"
kill $LPID
wait $LPID 2>/dev/null

# Ephemeral runs refused after prepare starts leave nothing in TMPDIR either.
ST=$T/unused
refuse 1 "no usable UEFI firmware" --ephemeral --boot efi --firmware-dir "$T/no-firmware" "$T/disk.raw"
t_pass
