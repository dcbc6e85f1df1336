#!/usr/bin/env bash
# system.sh -- vmlaunch --system TOPLEVEL: the seed's `nixos-rebuild build-vm`
# boot. The fixture's seed-mode system (fixtures/boot: a Debian generic
# kernel, which has 9p) does in its initrd and init what qemu-vm.nix's guest
# side does, printing "LIBIMG-SEED ..." per step. The closure comes from a
# Nix database made by the real `nix-store --load-db` (nix-bin), read by
# vmlaunch read-only; the closure it found is checked against
# `nix-store -qR` on that database.
#
#   1. default mode: host store as 9p nix-store (cache=loose), an empty ext4
#      root disk made on first start (checked with e2fsck and its label), the
#      shares xchg (the guest writes there), shared (SHARED_DIR), certs
#      (--host-certs), regInfo read and every path in it present;
#   2. --store-image auto: the closure's EROFS image built (fsck.erofs,
#      label nix-store, the seed's UUID), mounted by label; the second start
#      says "cache hit" and stops as soon as stage 1 mounted it;
#   3. an mkvmimage --efi image of the same system, booted through OVMF:
#      the guest mounts xchg and shared there too.
. "$SRCDIR/tests/lib.sh"
t_begin boot-system
. "$SRCDIR/tests/boot/lib-boot.sh"
t_need nix-store e2fsck fsck.erofs
boot_fixture
[ -n "$SEED_SYSTEM" ] ||
	t_skip "no Debian generic kernel with 9p in /boot (install linux-image-amd64)"

# The Nix database, by Nix itself.
nix-store --store "local?root=$T/nix" --load-db <"$CLOSURE_ALL/registration" 2>"$T/nix.err" ||
	t_fail "nix-store --load-db: $(cat "$T/nix.err")"
DB=$T/nix/nix/var/nix/db/db.sqlite
nix-store --store "local?root=$T/nix" -qR "$SEED_SYSTEM" 2>/dev/null | sort >"$T/closure.want"
[ -s "$T/closure.want" ] || t_fail "nix-store -qR gave nothing"

mkdir -p "$T/shared"
echo "token-$$" >"$T/shared/from-host"
printf 'fixture CA bundle\n' >"$T/ca.pem"
CA_SHA=$(sha256sum "$T/ca.pem" | cut -d' ' -f1)
S=$T/state
V=("$VMLAUNCH" --accel tcg --system "$ROOT$SEED_SYSTEM" --root "$ROOT" --nix-db "$DB"
	--state-dir "$S" --nographic --timeout 300)

seed_marks() { # seed_marks LOG LINE...: every LINE must be on the console
	local log=$1 l
	shift
	for l in "$@"; do
		tr -d '\r' <"$log" | grep -qxF -- "$l" || {
			tail -40 "$log" >&2
			t_fail "not on the console: $l"
		}
	done
}
o9=trans=virtio,version=9p2000.L,msize=16384

# 1. default mode
SHARED_DIR=$T/shared NIX_SSL_CERT_FILE=$T/ca.pem boot_tool "${V[@]}" --host-certs \
	--serial-log "$T/c1.log" --expect "$MARKER"
grep -q "root disk: created $S/seed.qcow2" "$T/tool.err" || t_fail "no 'root disk: created': $(cat "$T/tool.err")"
npaths=$(wc -l <"$T/closure.want")
seed_marks "$T/c1.log" "LIBIMG-SEED store 9p nix-store $o9,cache=loose" \
	"LIBIMG-SEED 9p xchg /tmp/xchg $o9" "LIBIMG-SEED 9p shared /tmp/shared $o9" \
	"LIBIMG-SEED 9p certs /etc/ssl/certs $o9" \
	"LIBIMG-SEED regInfo /tmp/xchg/.vmlaunch-registration paths=$npaths missing=0 system=yes" \
	"LIBIMG-SEED xchg written" "LIBIMG-SEED shared says token-$$" "LIBIMG-SEED certs $CA_SHA" \
	"LIBIMG-BOOT-OK root=$ROOT_SHA store=$STORE_SHA tpm=no"
tr -d '\r' <"$T/c1.log" | grep -q '^LIBIMG-SEED root ext4 LABEL=nixos /dev/vda' || t_fail "root not the ext4 disk"
# what the guest got: the closure nix-store -qR gives, in the registration
grep '^/nix/store/' "$S/xchg/.vmlaunch-registration" | sort -u >"$T/reg.paths"
comm -23 "$T/closure.want" "$T/reg.paths" | grep -q . && t_fail "registration lacks paths of nix-store -qR"
[ "$(cat "$S/xchg/from-guest" 2>/dev/null)" = "guest was here" ] || t_fail "the guest's xchg file is not on the host"
# the root disk: an ext4 labelled nixos, made by the EMPTY recipe
qemu-img convert -O raw "$S/seed.qcow2" "$T/root.raw" || t_fail "qemu-img convert"
e2fsck -fn "$T/root.raw" >/dev/null 2>&1 || t_fail "e2fsck on the root disk"
[ "$(dumpe2fs -h "$T/root.raw" 2>/dev/null | sed -n 's/^Filesystem volume name: *//p')" = nixos ] ||
	t_fail "root disk label is not nixos"
rm -f "$T/root.raw"

# 2. --store-image auto: built, then a cache hit
boot_tool "${V[@]}" --store-image auto --serial-log "$T/c2.log" --expect "$MARKER"
grep -q "store image: built $S/store-" "$T/tool.err" || t_fail "no 'store image: built': $(cat "$T/tool.err")"
img=$(ls "$S"/store-*.img)
seed_marks "$T/c2.log" "LIBIMG-BOOT-OK root=$ROOT_SHA store=none tpm=no" \
	"LIBIMG-SEED regInfo /tmp/xchg/.vmlaunch-registration paths=$npaths missing=0 system=yes"
tr -d '\r' <"$T/c2.log" | grep -q '^LIBIMG-SEED store erofs LABEL=nix-store /dev/vdb' ||
	t_fail "store image not mounted by label as the second disk"
grep -q 'nix-store' "$T/c2.log" && tr -d '\r' <"$T/c2.log" | grep -q 'LIBIMG-SEED store 9p' &&
	t_fail "host store shared although the store image is used"
fsck.erofs "$img" >/dev/null 2>&1 || t_fail "fsck.erofs $img"
[ "$(blkid -p -o value -s UUID "$img")" = eb176051-bd15-49b7-9e6b-462e0b467019 ] ||
	t_fail "store image UUID is not the seed's: $(blkid -p "$img")"
[ "$(blkid -p -o value -s LABEL "$img")" = nix-store ] || t_fail "store image label"
before=$(stat -c %Y.%s "$img")
boot_tool "${V[@]}" --store-image auto --serial-log "$T/c3.log" --expect "LIBIMG-SEED store erofs"
grep -q "store image: cache hit, reusing $img" "$T/tool.err" || t_fail "no cache hit: $(cat "$T/tool.err")"
[ "$(stat -c %Y.%s "$img")" = "$before" ] || t_fail "the cached store image was rewritten"

# 3. an mkvmimage --efi image of the system, with the shares
if [ -r /usr/share/OVMF/OVMF_CODE_4M.fd ]; then
	SOURCE_DATE_EPOCH=1 boot_tool "$MKVMIMAGE" --efi --root "$ROOT" -o "$T/efi.qcow2" "$CLOSURE_SEED"
	SHARED_DIR=$T/shared boot_vm "$T/c4.log" --expect "$MARKER" --timeout 300 "$T/efi.qcow2"
	seed_marks "$T/c4.log" "LIBIMG-SEED 9p xchg /tmp/xchg $o9" \
		"LIBIMG-SEED 9p shared /tmp/shared $o9" "LIBIMG-SEED xchg written" \
		"LIBIMG-SEED shared says token-$$" "LIBIMG-BOOT-OK root=$ROOT_SHA store=none tpm=no"
fi
boot_no_strays
t_pass
