# vm-state.sh -- the state directory across runs: the overlay is a qcow2
# backed by IMAGE (checked with qemu-img), IMAGE is never written, state is
# reused, a replaced IMAGE is refused with a hint to use --fresh, --fresh
# starts over; XDG_STATE_HOME default location; modes 0700/0600; a disk a
# running QEMU has locked is neither replaced by --fresh nor used twice.
. "$SRCDIR/tests/lib.sh"
t_begin vm-state
t_need qemu-system-x86_64 qemu-img python3
QMP="$SRCDIR/fixtures/vm/qmp.py"
qemu-img create -q -f qcow2 "$T/base.qcow2" 64M
IMG=$T/base.qcow2

# run_once ARGS...: start paused, quit over QMP, expect exit 0.
run_once() {
	local st=$1
	shift
	XDG_STATE_HOME=$T/xdg "$VMLAUNCH" --accel tcg --boot efi --stop-timeout 1 -q "$@" -- -S \
		</dev/null >"$T/run.out" 2>&1 &
	local pid=$! rc=0
	for _ in $(seq 300); do
		[ -S "$st/qmp.sock" ] && break
		kill -0 $pid 2>/dev/null || break
		sleep 0.1
	done
	[ -S "$st/qmp.sock" ] && python3 "$QMP" "$st/qmp.sock" quit >/dev/null 2>&1
	wait $pid || rc=$?
	return $rc
}

before=$(sha256sum "$IMG")
ST=$T/xdg/vmlaunch/base
run_once "$ST" "$IMG" || t_fail "first run: $(cat "$T/run.out")"
[ "$(stat -c %a "$ST")" = 700 ] || t_fail "state dir not 0700"
for f in disk.qcow2 efi-vars.fd console.log disk.qcow2.base-id vmlaunch.lock; do
	[ "$(stat -c %a "$ST/$f")" = 600 ] || t_fail "$f not 0600"
done
info=$(qemu-img info --output=json -U "$ST/disk.qcow2")
[ "$(echo "$info" | jq -r '."backing-filename"')" = "$IMG" ] || t_fail "overlay backing: $info"
[ "$(echo "$info" | jq -r '."backing-filename-format"')" = qcow2 ] || t_fail "overlay backing format: $info"
[ "$(echo "$info" | jq -r '."virtual-size"')" = 67108864 ] || t_fail "overlay size: $info"
qemu-img check -q "$ST/disk.qcow2" || t_fail "qemu-img check of the overlay"
echo "ok: overlay backed by IMAGE"

# The VM writes into the overlay: the second run keeps the same files.
ino=$(stat -c %i "$ST/disk.qcow2")
run_once "$ST" "$IMG" || t_fail "second run: $(cat "$T/run.out")"
[ "$(stat -c %i "$ST/disk.qcow2")" = "$ino" ] || t_fail "overlay recreated on reuse"
echo "ok: state reused"

# IMAGE replaced (a new build): refused, with the way out named.
qemu-img create -q -f qcow2 "$T/new.qcow2" 64M
mv "$T/new.qcow2" "$IMG"
id_old=$(cat "$ST/disk.qcow2.base-id")
before=$(sha256sum "$IMG")
run_once "$ST" "$IMG" && t_fail "a replaced IMAGE was accepted"
grep -q "changed since the overlay .* --fresh" "$T/run.out" || t_fail "no --fresh hint: $(cat "$T/run.out")"
run_once "$ST" --fresh "$IMG" || t_fail "--fresh run: $(cat "$T/run.out")"
[ "$(cat "$ST/disk.qcow2.base-id")" != "$id_old" ] || t_fail "--fresh kept the old overlay's record"
grep -q "^ino=$(stat -c %i "$IMG")\$" "$ST/disk.qcow2.base-id" || t_fail "record does not name the new IMAGE"
echo "ok: replaced IMAGE refused, --fresh starts over"

[ "$(sha256sum "$IMG")" = "$before" ] || t_fail "IMAGE was written"
echo "ok: IMAGE never written"

# A disk a running QEMU of another state dir uses (a shared NIX_DISK_IMAGE):
# --fresh and a start on it are refused and it is kept. QEMU's own image
# lock tells, so this holds for a QEMU vmlaunch did not start too.
NIX_DISK_IMAGE=$T/shared.qcow2 "$VMLAUNCH" --accel tcg --boot efi --stop-timeout 1 -q \
	--state-dir "$T/A" "$IMG" -- -S </dev/null >"$T/a.out" 2>&1 &
APID=$!
for _ in $(seq 300); do [ -S "$T/A/qmp.sock" ] && break; sleep 0.1; done
[ -S "$T/A/qmp.sock" ] || t_fail "VM A did not start: $(cat "$T/a.out")"
disk=$(stat -c '%i %s %y' "$T/shared.qcow2")
for how in --fresh --quiet; do
	NIX_DISK_IMAGE=$T/shared.qcow2 t_expect_exit 1 "$VMLAUNCH" --accel tcg --boot efi $how \
		--state-dir "$T/B" "$IMG"
	grep -q "$T/shared.qcow2 is in use: a running QEMU holds a lock on it" "$T/stderr" ||
		t_fail "$how on a disk in use: $(cat "$T/stderr")"
done
[ "$(stat -c '%i %s %y' "$T/shared.qcow2")" = "$disk" ] || t_fail "a disk in use was replaced"
python3 "$QMP" "$T/A/qmp.sock" quit >/dev/null 2>&1
wait $APID || t_fail "VM A: $(cat "$T/a.out")"
echo "ok: a disk another QEMU uses is refused"
t_pass
