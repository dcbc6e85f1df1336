#!/usr/bin/env bash
# install.sh -- `cmake --install --prefix X` gives a usable library and tools
# for that prefix: headers, libimg.so, a libimg.pc naming X; a program built
# only from those (pkg-config) writes an image; the installed tools run and
# load the installed libimg.so (RUNPATH relative to them), not the build's.
# A staged install (DESTDIR) names the prefix, not the staging directory.
. "$SRCDIR/tests/lib.sh"
t_begin install
t_need cc pkg-config qemu-img readelf ldd

P="$T/prefix"
cmake --install "$BUILDDIR" --prefix "$P" >"$T/install.log" 2>&1 ||
	t_fail "cmake --install: $(tail -5 "$T/install.log")"
for f in include/img/image.h include/img/dev.h include/img/qcow2.h bin/mkvmimage bin/vmlaunch \
	share/man/man1/mkvmimage.1 share/man/man1/vmlaunch.1 \
	share/bash-completion/completions/mkvmimage share/bash-completion/completions/vmlaunch \
	share/zsh/site-functions/_mkvmimage share/zsh/site-functions/_vmlaunch; do
	[ -e "$P/$f" ] || t_fail "not installed: $f"
done
pc=$(find "$P" -name libimg.pc | head -1)
[ -n "$pc" ] || t_fail "libimg.pc not installed"
libdir=$(dirname "$(dirname "$pc")")
cat >"$T/use.c" <<'C'
#include <stdio.h>
#include <img/context.h>
#include <img/qcow2.h>
int main(int argc, char **argv)
{
	struct img_ctx *ctx;
	struct img_dev *dev;
	struct img_qcow2_opts o = { .size = 64 << 20 };
	static const char msg[] = "written through the installed libimg";
	(void)argc;
	if (img_ctx_new(&ctx) < 0)
		return 1;
	if (img_dev_qcow2_create(ctx, argv[1], &o, &dev) < 0 ||
	    img_dev_pwrite(dev, msg, sizeof(msg), 1 << 20) < 0 || img_dev_finish(dev) < 0) {
		fprintf(stderr, "%s\n", img_ctx_error(ctx));
		return 1;
	}
	img_dev_unref(dev);
	img_ctx_free(ctx);
	return 0;
}
C
# The installed .pc file, as it is: it must name the prefix installed to.
export PKG_CONFIG_PATH="$libdir/pkgconfig"
[ "$(pkg-config --variable=prefix libimg)" = "$P" ] ||
	t_fail "libimg.pc names prefix $(pkg-config --variable=prefix libimg), not $P"
[ "$(pkg-config --variable=libdir libimg)" = "$libdir" ] ||
	t_fail "libimg.pc names libdir $(pkg-config --variable=libdir libimg), not $libdir"
flags=$(pkg-config --cflags --libs libimg) || t_fail "pkg-config libimg"
# shellcheck disable=SC2086
cc -Werror -o "$T/use" "$T/use.c" $flags -Wl,-rpath,"$(pkg-config --variable=libdir libimg)" ||
	t_fail "cannot build against the installed headers"
ldd "$T/use" | grep -q "libimg.so.1 => $libdir/libimg.so.1" ||
	t_fail "the program does not load the installed libimg: $(ldd "$T/use" | grep libimg)"
out=$("$T/use" "$T/x.qcow2" 2>&1) || t_fail "program using the library failed: $out"
qemu-img check "$T/x.qcow2" >/dev/null || t_fail "qemu-img check"
qemu-img dd if="$T/x.qcow2" of="$T/x.raw" bs=1M count=2 >/dev/null 2>&1 || t_fail "qemu-img dd"
grep -q "written through the installed libimg" "$T/x.raw" || t_fail "data not found"

# The installed tools: they run, and load the installed library.
for tool in mkvmimage vmlaunch; do
	out=$(env -u LD_LIBRARY_PATH "$P/bin/$tool" --version 2>&1) || t_fail "installed $tool --version: $out"
	case $out in *"$(pkg-config --modversion libimg)"*) ;; *) t_fail "$tool --version: '$out'" ;; esac
	lib=$(env -u LD_LIBRARY_PATH ldd "$P/bin/$tool" | awk '$1 == "libimg.so.1" { print $3 }')
	[ "$(realpath "$lib")" = "$(realpath "$libdir/libimg.so.1")" ] ||
		t_fail "installed $tool loads libimg from '$lib', not $libdir"
	readelf -d "$P/bin/$tool" | grep -q "$BUILDDIR" && t_fail "installed $tool keeps the build dir in its RUNPATH"
done

# Staged (DESTDIR): the files name the final prefix, never the staging dir.
DESTDIR="$T/dest" cmake --install "$BUILDDIR" --prefix /opt/libimg >"$T/install.log" 2>&1 ||
	t_fail "cmake --install with DESTDIR: $(tail -5 "$T/install.log")"
spc=$(find "$T/dest" -name libimg.pc | head -1)
grep -qx "prefix=/opt/libimg" "$spc" || t_fail "staged libimg.pc: $(head -1 "$spc")"
grep -q "$T" "$spc" && t_fail "staged libimg.pc names the staging directory"
t_pass
