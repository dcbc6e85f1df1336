# vm-system-kernel.sh -- vmlaunch --system honours the reference's kernel
# override NIXPKGS_QEMU_KERNEL_<system.name, non-alphanumerics made _>
# through the real tool's environment, and --kernel FILE as the same
# override; -initrd and -append stay TOPLEVEL's; --initrd/--append are
# still refused with --system.
. "$SRCDIR/tests/lib.sh"
t_begin vm-system-kernel

SYS=2ccccccccccccccccccccccccccccccc-nixos-system-my-host.lan-25.05
TOP=$T/root/nix/store/$SYS
mkdir -p "$TOP" "$T/ci" "$T/state"
head -c 512 /dev/zero >"$TOP/kernel"
head -c 512 /dev/zero >"$TOP/initrd"
printf '#!/bin/sh\n' >"$TOP/init"
printf 'loglevel=4\n' >"$TOP/kernel-params"
printf '/nix/store/%s\n' "$SYS" >"$T/ci/store-paths"
printf '/nix/store/%s\nsha256:%064d\n100\n\n0\n' "$SYS" 0 >"$T/ci/registration"
head -c 512 /dev/zero >"$T/alt-kernel"
head -c 512 /dev/zero >"$T/flag-kernel"

run() {
	env -u NIXPKGS_QEMU_KERNEL_my_host_lan XDG_STATE_HOME="$T/state" "$@" "$VMLAUNCH" \
		--accel tcg --root "$T/root" --closure-info "$T/ci" --system "$TOP" --print-cmdline
}
# The argv as one word per line (the command line is shell-quoted).
words() { eval "set -- $1"; printf '%s\n' "$@"; }
after() { words "$1" | sed -n "/^$2\$/{n;p;q}"; }

want_append="loglevel=4 init=/nix/store/$SYS/init regInfo=/tmp/xchg/.vmlaunch-registration console=tty0 console=ttyS0,115200n8 "

def=$(run) || t_fail "no override: $def"
[ "$(after "$def" -kernel)" = "$TOP/kernel" ] || t_fail "default -kernel: $def"

for v in NIXPKGS_QEMU_KERNEL_my-host.lan NIXPKGS_QEMU_KERNEL_my_host.lan NIXPKGS_QEMU_KERNEL_web; do
	out=$(run env "$v=$T/alt-kernel" 2>&1) || t_fail "$v: $out"
	[ "$out" = "$def" ] || t_fail "$v is not the reference's variable, yet changed the argv"
done

out=$(run env NIXPKGS_QEMU_KERNEL_my_host_lan="$T/alt-kernel") || t_fail "override: $out"
[ "$(after "$out" -kernel)" = "$T/alt-kernel" ] || t_fail "-kernel not replaced: $out"
[ "$(after "$out" -initrd)" = "$TOP/initrd" ] || t_fail "-initrd changed: $out"
[ "$(after "$out" -append)" = "$want_append" ] || t_fail "-append changed: $out"
# only -kernel differs from the default argv
[ "$(diff <(words "$def") <(words "$out") | grep -c '^[<>]')" = 2 ] ||
	t_fail "more than -kernel changed: $(diff <(words "$def") <(words "$out"))"

# empty is unset (the module's ${VAR:-default})
out=$(run env NIXPKGS_QEMU_KERNEL_my_host_lan=) || t_fail "empty: $out"
[ "$out" = "$def" ] || t_fail "an empty variable changed the argv: $out"

# --dry-run names the variable
out=$(env XDG_STATE_HOME="$T/state" "$VMLAUNCH" --accel tcg --root "$T/root" \
	--closure-info "$T/ci" --system "$TOP" --dry-run 2>&1) || t_fail "dry-run: $out"
grep -q 'NIXPKGS_QEMU_KERNEL_my_host_lan' <<<"$out" || t_fail "--dry-run does not name the variable: $out"

# --kernel FILE: the same override, before the variable
out=$(env XDG_STATE_HOME="$T/state" NIXPKGS_QEMU_KERNEL_my_host_lan="$T/alt-kernel" "$VMLAUNCH" \
	--accel tcg --root "$T/root" --closure-info "$T/ci" --system "$TOP" \
	--kernel "$T/flag-kernel" --print-cmdline) || t_fail "--kernel: $out"
[ "$(after "$out" -kernel)" = "$T/flag-kernel" ] || t_fail "--kernel not first: $out"
[ "$(after "$out" -initrd)" = "$TOP/initrd" ] || t_fail "--kernel changed -initrd: $out"

# a missing override: exit 1 naming the variable, nothing created
out=$(run env NIXPKGS_QEMU_KERNEL_my_host_lan="$T/nope" 2>&1)
rc=$?
[ $rc = 1 ] || t_fail "missing override file: exit $rc: $out"
grep -q "NIXPKGS_QEMU_KERNEL_my_host_lan=$T/nope" <<<"$out" || t_fail "error does not name the variable: $out"

# --initrd/--append stay refused with --system
for o in --initrd --append; do
		out=$(env XDG_STATE_HOME="$T/state" "$VMLAUNCH" --accel tcg --root "$T/root" \
		--closure-info "$T/ci" --system "$TOP" --kernel "$T/flag-kernel" $o "$T/alt-kernel" \
		--print-cmdline 2>&1)
	rc=$?
		[ $rc != 0 ] || t_fail "$o accepted with --system: $out"
	grep -q -- "--initrd/--append are for IMAGE" <<<"$out" || t_fail "$o: unclear refusal: $out"
done
[ -z "$(ls -A "$T/state")" ] || t_fail "--print-cmdline created state: $(ls -R "$T/state")"
t_pass
