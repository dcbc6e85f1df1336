#!/usr/bin/env bash
# cli-docs.sh -- --help, the man pages and the shell completions list exactly
# the options getopt accepts. All come from tools/<tool>-opts.h; this fails
# when a tool grows an option outside its table, when a generated file is
# stale, when docs/cli.md (written by hand) does not name an option, or
# when a page does not pass `mandoc -T lint`.
. "$SRCDIR/tests/lib.sh"
t_begin cli-docs

names() { sed 's/^ *//' | LC_ALL=C sort -u; }

for tool in mkvmimage vmlaunch; do
	bin="$BUILDDIR/$tool"
	page="$BUILDDIR/man/$tool.1"
	bashc="$BUILDDIR/completions/bash/$tool"
	zshc="$BUILDDIR/completions/zsh/_$tool"
	for f in "$bin" "$page" "$bashc" "$zshc" "$BUILDDIR/man/$tool.options"; do
		[ -s "$f" ] || t_fail "$f missing"
	done
	names <"$BUILDDIR/man/$tool.options" >"$T/$tool.table"
	[ "$(wc -l <"$T/$tool.table")" -gt 10 ] || t_fail "$tool: option table too short"

	# No option table but the generated one: every getopt row comes from it.
	# (The tool's sources: tools/TOOL.c and tools/TOOL-*.c.)
	srcs=("$SRCDIR/tools/$tool.c")
	for f in "$SRCDIR/tools/$tool"-*.c; do [ -e "$f" ] && srcs+=("$f"); done
	if grep -nE '(no|required|optional)_argument|struct option [a-z_]+\[\]' \
		"${srcs[@]}" "$SRCDIR"/tools/tool-{util,output,signal}.c; then
		t_fail "$tool: a getopt table outside tools/$tool-opts.h"
	fi
	cat "${srcs[@]}" | grep -q 'tool_getopt(&tool_doc' ||
		t_fail "$tool: getopt's tables are not built from tool_doc"

	# getopt accepts every documented option (an unknown one says so).
	while read -r opt; do
		out=$(timeout 20 "$bin" "$opt" x </dev/null 2>&1 >/dev/null)
		case $out in
		*"unrecognized option"* | *"invalid option"* | *"unknown option"*)
			t_fail "$tool: getopt rejects $opt, which the table has: $out"
			;;
		esac
	done <"$T/$tool.table"
	out=$("$bin" --no-such-option 2>&1) && t_fail "$tool accepts --no-such-option"
	case $out in *"unrecognized option"* | *"unknown option"*) ;; *) t_fail "$tool: unknown options not refused: $out" ;; esac

	# --help: the same set, lines that fit a terminal.
	"$bin" --help >"$T/$tool.help" || t_fail "$tool --help failed"
	grep -oE '^ +(-[a-zA-Z], )?--[a-z0-9-]+' "$T/$tool.help" | sed 's/^ *\(-., \)\{0,1\}//' |
		names >"$T/$tool.help-opts"
	diff -u "$T/$tool.table" "$T/$tool.help-opts" >&2 ||
		t_fail "$tool --help and getopt's table differ (- table, + --help)"
	awk -v t="$tool" 'length > 80 { print t " --help line " NR " is " length " columns: " $0; bad=1 }
		END { exit bad }' "$T/$tool.help" >&2 || t_fail "$tool --help: lines over 80 columns"

	# The man page: one .TP entry per option.
	awk '/^\.TP/ { getline; print }' "$page" | grep -oE '\\fB\\-\\-[a-z0-9\\-]+' |
		sed 's/\\fB//; s/\\f$//; s/\\-/-/g' | names >"$T/$tool.man-opts"
	diff -u "$T/$tool.table" "$T/$tool.man-opts" >&2 ||
		t_fail "$tool.1 and getopt's table differ (- table, + man page)"
	grep -q "^\.SH EXIT STATUS" "$page" || t_fail "$tool.1: no EXIT STATUS"

	# docs/cli.md, the longer reference, names every option too (by hand:
	# a new option needs its line there as well)
	while read -r opt; do
		grep -qE -- "(^|[^a-z-])$opt([^a-z-]|\$)" "$SRCDIR/docs/cli.md" ||
			t_fail "$tool $opt is not in docs/cli.md"
	done <"$T/$tool.table"

	# bash: source the completion, complete "-" and an option's argument.
	got=$(bash -c '
		. "$1"
		COMP_WORDS=("$2" --); COMP_CWORD=1
		"_$2"
		printf "%s\n" "${COMPREPLY[@]}" | grep "^--"' _ "$bashc" "$tool") ||
		t_fail "$tool: sourcing the bash completion or completing failed"
	diff -u "$T/$tool.table" <(printf '%s\n' "$got" | names) >&2 ||
		t_fail "$tool: the bash completion of -- differs from getopt's table"
	got=$(bash -c '
		. "$1"
		COMP_WORDS=("$2" --st); COMP_CWORD=1
		"_$2"
		printf "%s\n" "${COMPREPLY[@]}"' _ "$bashc" "$tool")
	case $tool in
	mkvmimage)
		[ "$(printf '%s\n' "$got" | names | tr '\n' ' ')" = "--store-dir --store-image " ] ||
			t_fail "mkvmimage: --st completes to '$got'"
		got=$(bash -c '. "$1"; COMP_WORDS=(mkvmimage --format ""); COMP_CWORD=2
			_mkvmimage; printf "%s\n" "${COMPREPLY[@]}"' _ "$bashc")
		printf '%s\n' "$got" | grep -qx qcow2 || t_fail "mkvmimage --format completes to '$got'"
		;;
	vmlaunch)
		[ "$(printf '%s\n' "$got" | names | tr '\n' ' ')" = "--state-dir --stop-timeout --store-dir --store-image " ] ||
			t_fail "vmlaunch: --st completes to '$got'"
		got=$(bash -c '. "$1"; COMP_WORDS=(vmlaunch --accel ""); COMP_CWORD=2
			_vmlaunch; printf "%s\n" "${COMPREPLY[@]}"' _ "$bashc")
		[ "$(printf '%s\n' "$got" | names | tr '\n' ' ')" = "auto kvm tcg " ] ||
			t_fail "vmlaunch --accel completes to '$got'"
		;;
	esac

	# zsh: every option named; the file parses when zsh is here.
	sed -n "s/^\t'\*\(--[a-z0-9-]*\).*/\1/p; s/^\t'\*'{-.+\{0,1\},\(--[a-z0-9-]*\).*/\1/p" "$zshc" |
		names >"$T/$tool.zsh-opts"
	diff -u "$T/$tool.table" "$T/$tool.zsh-opts" >&2 ||
		t_fail "$tool: the zsh completion differs from getopt's table"
	head -1 "$zshc" | grep -qx "#compdef $tool" || t_fail "_$tool: no #compdef line"
	if t_can "zsh -n _$tool" cmd:zsh; then
		zsh -n "$zshc" || t_fail "_$tool: zsh cannot parse it"
	fi
done

# Last, so the checks above run everywhere: the pages pass mandoc's lint.
command -v mandoc >/dev/null || t_skip "mandoc not installed (scripts/setup.sh): lint not run"
for tool in mkvmimage vmlaunch; do
	out=$(mandoc -T lint -W warning "$BUILDDIR/man/$tool.1" 2>&1)
	[ -z "$out" ] || t_fail "mandoc -T lint $tool.1: $out"
done
t_pass
