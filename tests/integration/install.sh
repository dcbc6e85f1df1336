#!/usr/bin/env bash
# install.sh -- `cmake --install` gives a usable library: headers, libimg.so,
# libimg.pc; a program built only from those (pkg-config) writes an image.
. "$SRCDIR/tests/lib.sh"
t_begin install
t_need cc pkg-config qemu-img

DESTDIR="$T/dest" cmake --install "$BUILDDIR" --prefix /usr/local >"$T/install.log" 2>&1 ||
	t_fail "cmake --install: $(tail -5 "$T/install.log")"
P="$T/dest/usr/local"
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
# The .pc file says where the prefix is; point pkg-config at the staged copy.
sed "s|^prefix=.*|prefix=$P|;s|^libdir=.*|libdir=$libdir|;s|^includedir=.*|includedir=$P/include|" \
	"$pc" >"$T/libimg.pc"
flags=$(PKG_CONFIG_PATH="$T" pkg-config --cflags --libs libimg) || t_fail "pkg-config libimg"
# shellcheck disable=SC2086
cc -o "$T/use" "$T/use.c" $flags -Wl,-rpath,"$libdir" || t_fail "cannot build against the installed headers"
out=$("$T/use" "$T/x.qcow2" 2>&1) || t_fail "program using the library failed: $out"
qemu-img check "$T/x.qcow2" >/dev/null || t_fail "qemu-img check"
qemu-img dd if="$T/x.qcow2" of="$T/x.raw" bs=1M count=2 >/dev/null 2>&1 || t_fail "qemu-img dd"
grep -q "written through the installed libimg" "$T/x.raw" || t_fail "data not found"
t_pass
