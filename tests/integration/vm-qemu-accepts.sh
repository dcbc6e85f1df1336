# vm-qemu-accepts.sh -- QEMU accepts every command line vmlaunch generates:
# for a list of option combinations, vmlaunch starts QEMU paused (-S) under
# TCG; the test asks QEMU over QMP what it built (status, block devices, TPM,
# SMM, forwards listening), then SIGTERMs vmlaunch, which must stop QEMU
# through QMP, reap every helper and exit 0.
. "$SRCDIR/tests/lib.sh"
t_begin vm-qemu-accepts
t_need qemu-system-x86_64 qemu-img python3 swtpm jq
QMP="$SRCDIR/fixtures/vm/qmp.py"

truncate -s 64M "$T/disk.raw"
qemu-img create -q -f qcow2 "$T/disk.qcow2" 64M
truncate -s 16M "$T/store.img"
mkdir -p "$T/share" "$T/shared" "$T/d,ir"
truncate -s 64M "$T/d,ir/disk,1.raw"
echo "-----BEGIN CERTIFICATE-----" >"$T/ca.pem"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

EXTRA=()
# run_case NAME QMP-CHECK-COMMAND... -- VMLAUNCH-ARGS... IMAGE
run_case() {
	local name=$1 st=${STATE:-$T/s-$1} pid rc out
	shift
	local checks=()
	while [ "$1" != -- ]; do checks+=("$1"); shift; done
	shift
	"$VMLAUNCH" --accel tcg --state-dir "$st" --stop-timeout 1 -q "$@" -- -S "${EXTRA[@]}" \
		</dev/null >"$T/$name.out" 2>&1 &
	pid=$!
	for _ in $(seq 300); do
		[ -S "$st/qmp.sock" ] && break
		kill -0 $pid 2>/dev/null || { wait $pid; t_fail "$name: vmlaunch exited $?: $(cat "$T/$name.out")"; }
		sleep 0.1
	done
	out=$(python3 "$QMP" "$st/qmp.sock" query-status query-block "${checks[@]}") ||
		{ kill -TERM $pid; t_fail "$name: QMP failed: $out $(cat "$T/$name.out")"; }
	echo "$out" >"$T/$name.qmp"
	[ "$(echo "$out" | head -1 | jq -r .status)" = prelaunch ] || t_fail "$name: not paused: $out"
	[ "$(echo "$out" | sed -n 2p | jq -r '.[] | select(.device=="root") | .inserted.ro')" = false ] ||
		t_fail "$name: no writable root drive: $(echo "$out" | sed -n 2p)"
	CHECK_OUT=$(echo "$out" | tail -n +3)
	"${CASE_CHECK:-true}" || { kill -TERM $pid; t_fail "$name: check failed: $CHECK_OUT"; }
	kill -TERM $pid
	rc=0
	wait $pid || rc=$?
	[ $rc = 0 ] || t_fail "$name: vmlaunch exited $rc after SIGTERM: $(cat "$T/$name.out")"
	pgrep -f "$st" >/dev/null && t_fail "$name: processes left: $(pgrep -af "$st")"
	[ -S "$st/qmp.sock" ] && t_fail "$name: QMP socket left behind"
	echo "ok: $name"
	CASE_CHECK=
	STATE=
	EXTRA=()
}

# 1. UEFI from the system's firmware descriptors, raw image.
run_case efi -- --boot efi "$T/disk.raw"
# 2. qcow2 image, BIOS, and an alternative BIOS file.
run_case bios -- --boot bios "$T/disk.qcow2"
run_case bios-file -- --boot bios --bios-file /usr/share/seabios/bios-256k.bin "$T/disk.qcow2"
# 3. Secure Boot: q35 with SMM on.
check_smm() { [ "$(echo "$CHECK_OUT" | jq -r .)" = on ]; }
CASE_CHECK=check_smm
run_case secure-boot '{"execute":"qom-get","arguments":{"path":"/machine","property":"smm"}}' \
	-- --boot efi --secure-boot "$T/disk.raw"
# 4. TPM through swtpm: QEMU has the tpm-tis device on the emulator backend.
check_tpm() { echo "$CHECK_OUT" | jq -e '.[0].model == "tpm-tis" and .[0].options.type == "emulator"' >/dev/null; }
CASE_CHECK=check_tpm
run_case tpm query-tpm -- --boot efi --tpm "$T/disk.raw"
# 5. Disks on each interface: root, store (read-only), two empty disks.
check_disks() {
	local b
	b=$(sed -n 2p "$T/$1.qmp")
	[ "$(echo "$b" | jq -r '.[] | select(.device=="store") | .inserted.ro')" = true ] &&
		[ "$(echo "$b" | jq -r '.[] | select(.device=="empty1") | .inserted.drv')" = qcow2 ]
}
for i in virtio scsi ide; do
	CASE_CHECK="check_disks_$i"
	eval "check_disks_$i() { check_disks disks-$i; }"
	run_case disks-$i -- --boot efi --disk-interface $i --store-image "$T/store.img" \
		--empty-disk 32M --empty-disk 1G "$T/disk.raw"
done
# 6. Networking: forwards (host ports really listen), guest forward, restrict, QEMU_NET_OPTS.
P1=$(free_port)
P2=$(free_port)
check_fwd() { python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$P1),5)"; }
CASE_CHECK=check_fwd
QEMU_NET_OPTS="hostname=vm" run_case network -- --boot efi --forward "$P1:22" --forward "udp:$P2:53" \
	--guest-forward 10.0.2.100:80:127.0.0.1:8000 --restrict-network "$T/disk.raw"
# 7. VLANs without root.
run_case vlans -- --boot efi --vlan 1 --vlan 7 --vlan-index 2 "$T/disk.raw"
# 8. 9p shares, SHARED_DIR, host certs (and the xchg share every VM gets).
SHARED_DIR=$T/shared NIX_SSL_CERT_FILE=$T/ca.pem run_case shares -- --boot efi \
	--share "data:$T/share:/mnt/data" --share "ro:$T/share:/mnt/ro:none" --host-certs \
	"$T/disk.raw"
# 9. Guest agent, graphics devices (no display here: -display none after --).
EXTRA=(-display none)
run_case agent-graphics -- --boot efi --guest-agent --graphics "$T/disk.raw"
# 10. Commas in every path; QEMU_OPTS split on spaces.
STATE="$T/s-commas/st,ate"
QEMU_OPTS="-device virtio-balloon-pci -name x,,y" run_case commas -- --boot efi \
	--store-image "$T/d,ir/disk,1.raw" --state-dir "$STATE" "$T/d,ir/disk,1.raw"
# 11. The NixOS runner's path variables.
NIX_DISK_IMAGE=$T/nix/root.qcow2 NIX_EFI_VARS=$T/nix/vars.fd NIX_SWTPM_DIR=$T/nix/tpm \
	run_case nix-env -- --boot efi --tpm "$T/disk.raw"
[ -f "$T/nix/root.qcow2" ] && [ -f "$T/nix/vars.fd" ] && [ -d "$T/nix/tpm" ] ||
	t_fail "NIX_DISK_IMAGE / NIX_EFI_VARS / NIX_SWTPM_DIR not used"
# 12. Direct kernel boot (a kernel readable here: linux-image-cloud-amd64).
K=$(ls /boot/vmlinuz-* 2>/dev/null | head -1)
if t_can "direct kernel boot" "file:${K:-/boot/vmlinuz-*}"; then
	QEMU_KERNEL_PARAMS="quiet" run_case direct -- --kernel "$K" --append "root=LABEL=nixos" "$T/disk.raw"
fi
# 13. The interactive console (a terminal: serial + monitor muxed on stdio, logged).
if t_can "the interactive console" cmd:script; then
	st=$T/s-stdio
	script -qec "'$VMLAUNCH' --accel tcg --boot efi --state-dir '$st' --stop-timeout 1 '$T/disk.raw' -- -S" \
		/dev/null >"$T/stdio.out" 2>&1 </dev/null &
	SPID=$!
	out=$(python3 "$QMP" "$st/qmp.sock" query-chardev) || t_fail "stdio: QMP: $(cat "$T/stdio.out")"
	echo "$out" | jq -e '[.[] | select(.label == "con0-base" and .filename == "stdio")] | length == 1' \
		>/dev/null || t_fail "stdio: no stdio console: $out"
	python3 "$QMP" "$st/qmp.sock" quit >/dev/null
	wait $SPID
	pgrep -f "qemu-system.*$st" >/dev/null && t_fail "stdio: QEMU left running"
	[ -f "$st/console.log" ] || t_fail "stdio: no console log"
	echo "ok: stdio console"
fi
t_pass
