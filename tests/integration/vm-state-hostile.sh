# vm-state-hostile.sh -- vmlaunch on state it cannot trust (#17, points 1-4):
#  1. --fresh removes only files of ours that carry our mark (overlay
#     header or base-id record, UEFI variable store): never a device node, a
#     FIFO or a user's file named by NIX_DISK_IMAGE / NIX_EFI_VARS; --dry-run
#     warns about the same;
#  2. symbolic links (and other things) planted in the state dir are never
#     followed or removed: the start is refused, naming the path; a state dir
#     under a directory another user owns is refused;
#  3. a second start or a --fresh on a state dir whose VM runs is refused
#     naming the running vmlaunch's pid; the lock goes with the VM (also
#     after SIGKILL);
#  4. an existing overlay is checked on every start: backed by another file,
#     in another format, with an external data file, or corrupt -> refused
#     with a hint to use --fresh, which then works.
# And the removal of an --ephemeral state with links planted in it stays
# inside it.
# Victims of a followed link are files here and, under scripts/test.sh, the
# decoy tree ($IMG_DECOY); each must be unchanged. QEMU is fake-qemu.sh.
. "$SRCDIR/tests/lib.sh"
t_begin vm-state-hostile
t_need qemu-img stat sha256sum timeout
FAKE=$SRCDIR/fixtures/vm/fake-qemu.sh
export TMPDIR=$T/tmp
mkdir -p "$TMPDIR"
truncate -s 1M "$T/disk.raw"
IMG=$T/disk.raw
V=("$VMLAUNCH" --accel tcg --boot bios --qemu "$FAKE" --stop-timeout 1)
mkdir -p "$T/fw"
truncate -s 1M "$T/fw/code.fd"
truncate -s 64K "$T/fw/vars.fd"
cat >"$T/fw/60-test.json" <<JSON
{ "interface-types": ["uefi"],
  "mapping": { "device": "flash", "mode": "split",
    "executable": { "filename": "$T/fw/code.fd", "format": "raw" },
    "nvram-template": { "filename": "$T/fw/vars.fd", "format": "raw" } },
  "targets": [ { "architecture": "x86_64", "machines": ["pc-q35-*"] } ],
  "features": [], "tags": [] }
JSON
EFI=(--boot efi --firmware-dir "$T/fw")

# Victims: a file of the user's here, and the decoy when the suite has one.
echo "the user's own data" >"$T/victim"
chmod 0644 "$T/victim"
VICTIMS=("$T/victim")
[ -n "${IMG_DECOY:-}" ] && [ -f "$IMG_DECOY/file" ] && VICTIMS+=("$IMG_DECOY/file")
victims() { for v in "${VICTIMS[@]}"; do stat -c '%n %F %a %U %s %y' "$v"; sha256sum "$v"; done; }
VBEFORE=$(victims)
victims_intact() { [ "$(victims)" = "$VBEFORE" ] || t_fail "$1: a victim changed: $(victims)"; }
alive() { [ -d /proc/"$1" ] && ! grep -q '^State:.*Z' /proc/"$1"/status 2>/dev/null; }

# refused NEEDLE ARGS...: exit 1 within 30 s, NEEDLE in stderr, victims intact.
refused() {
	local needle=$1
	shift
	t_expect_exit 1 timeout 30 "$@"
	grep -qF -- "$needle" "$T/stderr" || t_fail "stderr lacks '$needle': $(cat "$T/stderr")"
	victims_intact "$needle"
	echo "ok: refused: $needle"
}
# fresh_state DIR [ARGS]: a state dir of a normal run.
fresh_state() {
	local st=$1
	shift
	rm -rf "$st"
	"${V[@]}" --state-dir "$st" "$@" --expect "FAKE QEMU UP" "$IMG" >"$T/out" 2>&1 ||
		t_fail "setting up $st: $(cat "$T/out")"
}

# ---- 1. --fresh and what NIX_DISK_IMAGE / NIX_EFI_VARS name ----
if [ "$(id -u)" = 0 ]; then
	mkdir "$T/dev"
	mknod "$T/dev/blk" b 7 250
	mknod "$T/dev/chr" c 1 3
	for n in blk chr; do
		before=$(stat -c '%F %t:%T %a %y' "$T/dev/$n")
		NIX_DISK_IMAGE=$T/dev/$n refused "$T/dev/$n is a" "${V[@]}" --fresh --state-dir "$T/st1" "$IMG"
		NIX_DISK_IMAGE=$T/dev/$n refused "$T/dev/$n is a" "${V[@]}" --state-dir "$T/st1" "$IMG"
		[ "$(stat -c '%F %t:%T %a %y' "$T/dev/$n")" = "$before" ] || t_fail "device node $n changed"
		# --dry-run says so too: a warning, and the plan names it.
		NIX_DISK_IMAGE=$T/dev/$n t_expect_exit 0 "${V[@]}" --dry-run --fresh --state-dir "$T/st1" "$IMG"
		grep -q "warning: a start would refuse: --fresh: $T/dev/$n is a" "$T/stderr" ||
			t_fail "--dry-run did not warn: $(cat "$T/stderr")"
		grep -q "overlay.*$T/dev/$n (exists, a .*device node: a start refuses it)" "$T/stdout" ||
			t_fail "--dry-run plan: $(cat "$T/stdout")"
	done
	echo "ok: device nodes as NIX_DISK_IMAGE kept, --dry-run warns"
else
	t_skip_env "device nodes as NIX_DISK_IMAGE" "mknod needs root"
fi
mkfifo "$T/fifo"
NIX_DISK_IMAGE=$T/fifo refused "$T/fifo is a FIFO" "${V[@]}" --fresh --state-dir "$T/st1" "$IMG"
NIX_EFI_VARS=$T/fifo refused "$T/fifo is a FIFO" "${V[@]}" "${EFI[@]}" --state-dir "$T/st1" "$IMG"
[ -p "$T/fifo" ] || t_fail "the FIFO went"
# A user's file as NIX_EFI_VARS / NIX_DISK_IMAGE: not ours, so --fresh keeps it.
NIX_EFI_VARS=$T/victim refused "--fresh: $T/victim is not an EFI variable store vmlaunch made" \
	"${V[@]}" "${EFI[@]}" --fresh --state-dir "$T/st1" "$IMG"
NIX_DISK_IMAGE=$T/victim refused "--fresh: $T/victim is not an overlay vmlaunch made" \
	"${V[@]}" --fresh --state-dir "$T/st1" "$IMG"
NIX_DISK_IMAGE=$T/victim refused "overlay $T/victim is not a qcow2 image" "${V[@]}" --state-dir "$T/st1" "$IMG"
NIX_DISK_IMAGE=$T/victim t_expect_exit 0 "${V[@]}" --dry-run --fresh --state-dir "$T/st1" "$IMG"
grep -q "warning: a start would refuse: --fresh: $T/victim is not an overlay" "$T/stderr" ||
	t_fail "--dry-run --fresh on a user's file: $(cat "$T/stderr")"
# --fresh on our own state: overlay, record and variables replaced.
fresh_state "$T/st1" "${EFI[@]}"
printf X | dd of="$T/st1/efi-vars.fd" bs=1 seek=100 conv=notrunc status=none
touch -d 2001-01-01 "$T/st1/disk.qcow2"
t_expect_exit 0 "${V[@]}" "${EFI[@]}" --fresh --state-dir "$T/st1" --expect "FAKE QEMU UP" "$IMG"
[ "$(stat -c %Y "$T/st1/disk.qcow2")" != "$(date -d 2001-01-01 +%s)" ] || t_fail "--fresh kept the overlay"
cmp -s "$T/st1/efi-vars.fd" "$T/fw/vars.fd" || t_fail "--fresh kept the EFI variables"
qemu-img check -q "$T/st1/disk.qcow2" || t_fail "qemu-img check after --fresh"
echo "ok: --fresh replaces what is ours"

# ---- 2. links and other things planted in the state dir ----
fresh_state "$T/st2" "${EFI[@]}"
# plant NAME: replace STATE/NAME by a symlink to the victim; expect a refusal.
plant() {
	local name=$1
	shift
	cp -a "$T/st2/$name" "$T/saved" 2>/dev/null || true
	rm -rf "${T:?}/st2/$name"
	ln -s "${VICTIMS[-1]}" "$T/st2/$name"
	refused "$T/st2/$name is a symbolic link" "${V[@]}" "${EFI[@]}" --state-dir "$T/st2" "$@" "$IMG"
	[ -L "$T/st2/$name" ] || t_fail "the planted link $name was removed"
	rm -f "$T/st2/$name"
	[ -e "$T/saved" ] && mv "$T/saved" "$T/st2/$name"
	return 0
}
plant disk.qcow2.base-id
plant console.log
plant efi-vars.fd
plant disk.qcow2
plant disk.qcow2 --fresh
plant disk.qcow2.base-id --fresh
plant efi-vars.fd --fresh
plant vmlaunch.lock
plant xchg
# Not a socket where QEMU makes one (it would unlink what is there).
cp "$T/victim" "$T/st2/qmp.sock"
refused "$T/st2/qmp.sock is a regular file, not a socket" "${V[@]}" "${EFI[@]}" --state-dir "$T/st2" "$IMG"
cmp -s "$T/victim" "$T/st2/qmp.sock" || t_fail "qmp.sock (a file) was touched"
rm "$T/st2/qmp.sock"
mkfifo "$T/st2/console.log.new" && rm "$T/st2/console.log" && mv "$T/st2/console.log.new" "$T/st2/console.log"
refused "$T/st2/console.log is a FIFO" "${V[@]}" "${EFI[@]}" --state-dir "$T/st2" "$IMG"
rm "$T/st2/console.log"
t_expect_exit 0 "${V[@]}" "${EFI[@]}" --state-dir "$T/st2" --expect "FAKE QEMU UP" "$IMG"
echo "ok: state usable again once the plants are gone"
if [ "$(id -u)" = 0 ]; then
	# The state of another user: refused before anything in it is read.
	fresh_state "$T/st3"
	ln -sf "${VICTIMS[-1]}" "$T/st3/console.log"
	chown -R nobody "$T/st3"
	refused "is owned by uid $(id -u nobody), not by you" "${V[@]}" --state-dir "$T/st3" "$IMG"
	# A state dir of ours inside a directory another user owns (they could swap it).
	mkdir -m 0755 "$T/theirs"
	mkdir -m 0700 "$T/theirs/st"
	chown nobody "$T/theirs"
	refused "the directory $T/theirs above it is owned by uid $(id -u nobody)" \
		"${V[@]}" --state-dir "$T/theirs/st" "$IMG"
else
	t_skip_env "state of another user" "chown needs root"
fi
mkdir -m 0777 "$T/open"
chmod 0777 "$T/open"
refused "the directory $T/open above it is writable by everyone and not sticky" \
	"${V[@]}" --state-dir "$T/open/st" "$IMG"
[ ! -e "$T/open/st" ] || t_fail "a state dir was made in a world-writable directory"

# ---- 3. the lock ----
fresh_state "$T/st4"
rm -f "$T/qemu.pid"
FAKE_QEMU_PIDFILE=$T/qemu.pid "${V[@]}" --state-dir "$T/st4" "$IMG" </dev/null >"$T/first.out" 2>&1 &
FIRST=$!
for _ in $(seq 300); do [ -s "$T/qemu.pid" ] && grep -q "FAKE QEMU UP" "$T/st4/console.log" && break; sleep 0.1; done
grep -q "FAKE QEMU UP" "$T/st4/console.log" || t_fail "first VM did not start: $(cat "$T/first.out")"
ovl=$(stat -c '%i %s %y' "$T/st4/disk.qcow2")
refused "state directory $T/st4 is in use by vmlaunch (pid $FIRST)" "${V[@]}" --state-dir "$T/st4" "$IMG"
refused "state directory $T/st4 is in use by vmlaunch (pid $FIRST)" "${V[@]}" --fresh --state-dir "$T/st4" "$IMG"
[ "$(stat -c '%i %s %y' "$T/st4/disk.qcow2")" = "$ovl" ] || t_fail "--fresh touched a running VM's overlay"
grep -q "FAKE QEMU UP" "$T/st4/console.log" || t_fail "the running VM's console log was replaced"
t_expect_exit 0 "${V[@]}" --dry-run --fresh --state-dir "$T/st4" "$IMG"
grep -q "warning: a start would refuse: state directory $T/st4 is in use by vmlaunch (pid $FIRST)" \
	"$T/stderr" || t_fail "--dry-run on a running VM: $(cat "$T/stderr")"
kill -TERM $FIRST
wait $FIRST 2>/dev/null
t_expect_exit 0 "${V[@]}" --state-dir "$T/st4" --expect "FAKE QEMU UP" "$IMG"
echo "ok: lock released when the VM ended"
# SIGKILL: the lock goes once QEMU (which holds it too) is gone.
rm -f "$T/qemu.pid"
FAKE_QEMU_PIDFILE=$T/qemu.pid "${V[@]}" --state-dir "$T/st4" "$IMG" </dev/null >"$T/first.out" 2>&1 &
FIRST=$!
for _ in $(seq 300); do [ -s "$T/qemu.pid" ] && break; sleep 0.1; done
[ -s "$T/qemu.pid" ] || t_fail "second VM did not start: $(cat "$T/first.out")"
QPID=$(cat "$T/qemu.pid")
[ -n "$(ls -l /proc/"$QPID"/fd 2>/dev/null | grep vmlaunch.lock)" ] || t_fail "QEMU does not hold the lock"
kill -KILL $FIRST
wait $FIRST 2>/dev/null
for _ in $(seq 50); do alive "$QPID" || break; sleep 0.1; done
t_expect_exit 0 "${V[@]}" --state-dir "$T/st4" --expect "FAKE QEMU UP" "$IMG"
echo "ok: lock released after SIGKILL"

# ---- 4. the overlay is checked on every start ----
fresh_state "$T/st5"
O=$T/st5/disk.qcow2
cp "$O" "$T/good.qcow2"
cp "$O.base-id" "$T/good.base-id"
# Backed by another file (what qemu-img -u allows): refused, the victim unread by the guest.
qemu-img create -q -f qcow2 -u -b "$T/victim" -F raw "$O" 1M
refused "overlay $O is backed by '$T/victim', not by IMAGE $IMG; start with --fresh" \
	"${V[@]}" --state-dir "$T/st5" "$IMG"
rm "$T/st5/disk.qcow2.base-id" # the NixOS runner's case: no record
refused "is backed by '$T/victim'" "${V[@]}" --state-dir "$T/st5" "$IMG"
# The right file in another format.
qemu-img create -q -f qcow2 -u -b "$IMG" -F qcow2 "$O" 1M
refused "names its backing file's format as 'qcow2', but IMAGE $IMG is raw" \
	"${V[@]}" --state-dir "$T/st5" "$IMG"
# An external data file: a second file the guest would write.
rm -f "$O"
qemu-img create -q -f qcow2 -o data_file="$T/victim2" -b "$IMG" -F raw "$O" 1M
refused "external data file" "${V[@]}" --state-dir "$T/st5" "$IMG"
# Corrupt: the L1 table offset moved past the end of the file.
cp "$T/good.qcow2" "$O"
printf '\x7f\xff\xff\xff\xff\xff\x00\x00' | dd of="$O" bs=1 seek=40 conv=notrunc status=none
qemu-img check -q "$O" 2>/dev/null && t_fail "the corrupted overlay passes qemu-img check"
refused "corrupt qcow2" "${V[@]}" --state-dir "$T/st5" "$IMG"
grep -q -- "--fresh" "$T/stderr" || t_fail "no --fresh hint: $(cat "$T/stderr")"
# Hard-linked elsewhere: the VM would write into the other name too.
cp "$T/good.qcow2" "$O"
ln "$O" "$T/other-name.qcow2"
refused "has 2 hard links" "${V[@]}" --state-dir "$T/st5" "$IMG"
rm "$T/other-name.qcow2"
# --fresh then makes a sound overlay of IMAGE; a corrupt file with neither
# a readable overlay header nor our record beside it is not provably ours.
printf '\x7f\xff\xff\xff\xff\xff\x00\x00' | dd of="$O" bs=1 seek=40 conv=notrunc status=none
refused "--fresh: $O is not an overlay vmlaunch made" "${V[@]}" --fresh --state-dir "$T/st5" "$IMG"
cp "$T/good.base-id" "$O.base-id"
t_expect_exit 0 "${V[@]}" --fresh --state-dir "$T/st5" --expect "FAKE QEMU UP" "$IMG"
qemu-img check -q "$O" || t_fail "qemu-img check after --fresh"
[ "$(qemu-img info --output=json "$O" | grep -c "\"backing-filename\": \"$IMG\"")" = 1 ] ||
	t_fail "new overlay not backed by IMAGE: $(qemu-img info "$O")"
t_expect_exit 0 "${V[@]}" --state-dir "$T/st5" --expect "FAKE QEMU UP" "$IMG"
echo "ok: --fresh after a refused overlay"
# ---- the ephemeral state's removal follows no link and stays inside ----
mkdir -p "$T/outside/sub"
echo keep >"$T/outside/sub/file"
echo keep >"$T/outside/file"
OUT_BEFORE=$(find "$T/outside" -printf '%p %y %m %s %T@\n' | sort)
rm -f "$T/qemu.pid"
FAKE_QEMU_PIDFILE=$T/qemu.pid "${V[@]}" --ephemeral "$IMG" </dev/null >"$T/eph.out" 2>&1 &
EPH=$!
for _ in $(seq 300); do [ -s "$T/qemu.pid" ] && break; sleep 0.1; done
ST=$(ls -d "$TMPDIR"/vmlaunch-disk.* 2>/dev/null)
[ -d "$ST" ] || t_fail "no ephemeral state: $(cat "$T/eph.out")"
# What the guest (through xchg) or anyone with the user's rights could leave.
ln -s "$T/outside" "$ST/xchg/dirlink"
ln -s "$T/outside/file" "$ST/xchg/filelink"
ln -s "${VICTIMS[-1]}" "$ST/victimlink"
mkdir -p "$ST/xchg/deep/er"
ln -s ../../../../outside "$ST/xchg/deep/er/up"
mkfifo "$ST/xchg/deep/fifo"
# A bind mount of the same filesystem (root only): not entered either.
MNT=
if [ "$(id -u)" = 0 ] && mkdir "$ST/xchg/mnt" && mount --bind "$T/outside" "$ST/xchg/mnt" 2>/dev/null; then
	MNT=$ST/xchg/mnt
	trap 'umount "$MNT" 2>/dev/null; t_cleanup' EXIT
else
	t_skip_env "a bind mount in the ephemeral state" "mount --bind needs root"
fi
kill -TERM $EPH
wait $EPH 2>/dev/null
[ "$(find "$T/outside" -printf '%p %y %m %s %T@\n' | sort)" = "$OUT_BEFORE" ] ||
	t_fail "removing the ephemeral state reached outside it"
if [ -n "$MNT" ]; then
	# Only the way to the mount point is left.
	[ -f "$MNT/file" ] && [ -f "$MNT/sub/file" ] || t_fail "the bind mount was emptied"
	[ "$(cd "$ST" && find . -path ./xchg/mnt -prune -o -print | sort | tr '\n' ' ')" = ". ./xchg " ] ||
		t_fail "around the bind mount: $(cd "$ST" && find . -path ./xchg/mnt -prune -o -print)"
	umount "$MNT"
	rm -rf "$ST"
	echo "ok: a bind mount in the ephemeral state was not entered"
fi
[ ! -e "$ST" ] || t_fail "ephemeral state left: $(ls -laR "$ST")"
echo "ok: ephemeral state removed without following its links"
victims_intact end
t_pass
