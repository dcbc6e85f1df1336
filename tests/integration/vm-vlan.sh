# vm-vlan.sh -- VLANs without root: a VM on --vlan 1 and --vlan 7 with
# --vlan-index 5 sends Ethernet frames (iPXE's DHCP, from SeaBIOS on an empty
# disk) into the loopback multicast group of each VLAN, from the MACs
# 52:54:00:12:01:05 and 52:54:00:12:07:05. Any other VM on the same VLAN joins
# the same group, so they share one Ethernet segment.
. "$SRCDIR/tests/lib.sh"
t_begin vm-vlan
t_need qemu-system-x86_64 python3
export TMPDIR=$T/tmp
mkdir -p "$TMPDIR"
truncate -s 16M "$T/disk.raw"
python3 "$SRCDIR/fixtures/vm/vlan-listen.py" 20001 90 >"$T/vlan1" &
L1=$!
python3 "$SRCDIR/fixtures/vm/vlan-listen.py" 20007 90 >"$T/vlan7" &
L7=$!
sleep 0.5
"$VMLAUNCH" --accel tcg --boot bios --ephemeral --vlan 1 --vlan 7 --vlan-index 5 --stop-timeout 1 -q \
	"$T/disk.raw" </dev/null >"$T/vm.out" 2>&1 &
V=$!
for _ in $(seq 900); do
	grep -q 52:54:00:12:01:05 "$T/vlan1" && grep -q 52:54:00:12:07:05 "$T/vlan7" && break
	kill -0 $V 2>/dev/null || t_fail "vmlaunch exited: $(cat "$T/vm.out")"
	sleep 0.1
done
kill -TERM $V
wait $V
kill $L1 $L7 2>/dev/null
wait $L1 $L7 2>/dev/null
grep -qx 52:54:00:12:01:05 "$T/vlan1" || t_fail "no frame from 52:54:00:12:01:05 on VLAN 1: $(cat "$T/vlan1")"
grep -qx 52:54:00:12:07:05 "$T/vlan7" || t_fail "no frame from 52:54:00:12:07:05 on VLAN 7: $(cat "$T/vlan7")"
grep -v 52:54:00:12:01:05 "$T/vlan1" | grep -q . && t_fail "VLAN 1 carries frames of another NIC: $(cat "$T/vlan1")"
[ -z "$(ls -A "$TMPDIR")" ] || t_fail "ephemeral state left"
t_pass
