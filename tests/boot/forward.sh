#!/usr/bin/env bash
# forward.sh -- vmlaunch --forward: a TCP connection to 127.0.0.1:PORT on the
# host reaches a server in the guest (busybox nc, started by the fixture's
# init when the kernel command line has libimg.serve=GUESTPORT), which
# answers with a token holding the checksum it computed.
. "$SRCDIR/tests/lib.sh"
t_begin boot-forward
. "$SRCDIR/tests/boot/lib-boot.sh"
boot_fixture

boot_root_image "$T/root.qcow2"
boot_store_image "$T/store.img"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$T/tmp"
TMPDIR=$T/tmp "$VMLAUNCH" --ephemeral --accel tcg --serial-log "$T/console.log" \
	--forward "$port:8080" --boot direct --kernel "$KERNEL" --initrd "$INITRD" \
	--append "$APPEND libimg.serve=8080" --store-image "$T/store.img" \
	--expect LIBIMG-FORWARD-OK --timeout 300 "$T/root.qcow2" >"$T/vm.out" 2>"$T/vm.err" &
vm=$!
for _ in $(seq 300); do
	grep -q LIBIMG-SERVING "$T/console.log" 2>/dev/null && break
	kill -0 $vm 2>/dev/null || break
	sleep 1
done
if ! grep -q LIBIMG-SERVING "$T/console.log" 2>/dev/null; then
	rc=0
	wait $vm || rc=$?
	t_fail "guest never served (vmlaunch exit $rc): $(head -c 1000 "$T/vm.err"); log: $(tail -5 "$T/console.log" 2>/dev/null)"
fi
# The host side listens on 127.0.0.1 only: --forward PORT:GUESTPORT relies on
# the default HOSTADDR (127.0.0.1) and protocol (tcp); check /proc/net/tcp{,6}.
listeners=$(python3 - "$port" <<'PY'
import sys
port = int(sys.argv[1])
for f in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(f).read().splitlines()[1:]
    except OSError:
        continue
    for l in lines:
        local, state = l.split()[1], l.split()[3]
        addr, p = local.split(":")
        if state == "0A" and int(p, 16) == port:
            print(f.rsplit("/", 1)[1], addr)
PY
)
[ "$listeners" = "tcp 0100007F" ] ||
	{ kill $vm; wait $vm; t_fail "host port $port listened on: '${listeners:-nothing}' (wanted 127.0.0.1 only)"; }
# The guest may need a moment between printing and listening; user networking
# accepts on the host side and closes when the guest refuses, so retry.
got=$(python3 - "$port" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
deadline = time.time() + 60
while time.time() < deadline:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        data = b""
        while b"\n" not in data:
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
        s.close()
        if data:
            print(data.decode(errors="replace").strip())
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit(1)
PY
) || { kill $vm 2>/dev/null; wait $vm; t_fail "no answer through 127.0.0.1:$port"; }
[ "$got" = "LIBIMG-FORWARD-TOKEN $ROOT_SHA" ] || { kill $vm; wait $vm; t_fail "wrong answer: $got"; }
rc=0
wait $vm || rc=$?
[ $rc = 0 ] || t_fail "vmlaunch exit $rc after the forward: $(head -c 1000 "$T/vm.err")"
grep -q LIBIMG-FORWARD-OK "$T/console.log" || t_fail "guest did not see the connection"
boot_state_gone
boot_no_strays
t_pass
