#!/usr/bin/env bash
# exports.sh -- libimg.so exports exactly the functions its public headers
# declare with IMG_EXPORT: every exported symbol has the img_ prefix and a
# declaration in libimg/include/img/*.h, every declaration is exported, and
# no top-level prototype in a public header lacks IMG_EXPORT.
. "$SRCDIR/tests/lib.sh"
t_begin exports
t_need nm awk
lib=$BUILDDIR/libimg.so
[ -e "$lib" ] || t_fail "no $lib"
H=("$SRCDIR"/libimg/include/img/*.h)

nm -D --defined-only "$lib" | awk '{ print $NF }' | sort -u >"$T/exported"
[ -s "$T/exported" ] || t_fail "nm -D found no symbols in $lib"
# Declarations: a line at column 0 starting with IMG_EXPORT, the name the
# first identifier followed by '(' (prototypes are one per declaration).
awk '/^IMG_EXPORT / { if (match($0, /[A-Za-z_][A-Za-z0-9_]*[ \t]*\(/)) {
	s = substr($0, RSTART, RLENGTH); sub(/[ \t]*\($/, "", s); print s } }' "${H[@]}" |
	sort -u >"$T/declared"
[ -s "$T/declared" ] || t_fail "no IMG_EXPORT declaration found in the public headers"

bad=0
unprefixed=$(grep -v '^img_' "$T/exported" || true)
if [ -n "$unprefixed" ]; then
	echo "exported without the img_ prefix:" $unprefixed >&2
	bad=1
fi
undeclared=$(comm -23 "$T/exported" "$T/declared" | grep '^img_' || true)
if [ -n "$undeclared" ]; then
	echo "exported but declared in no public header:" $undeclared >&2
	bad=1
fi
missing=$(comm -13 "$T/exported" "$T/declared")
if [ -n "$missing" ]; then
	echo "declared IMG_EXPORT but not exported (no definition?):" $missing >&2
	bad=1
fi
# A function prototype at column 0 without IMG_EXPORT would silently stay hidden.
unmarked=$(grep -Hn '^[A-Za-z_].*\<img_[A-Za-z0-9_]*[ \t]*(' "${H[@]}" |
	grep -Ev ':[0-9]+:(IMG_EXPORT |static |typedef |#)' || true)
if [ -n "$unmarked" ]; then
	echo "public prototypes without IMG_EXPORT:" >&2
	echo "$unmarked" >&2
	bad=1
fi
[ $bad = 0 ] || t_fail "libimg.so's exports do not match the public headers"
echo "$(wc -l <"$T/exported") symbols exported, all declared"
t_pass
