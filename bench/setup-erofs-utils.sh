#!/usr/bin/env bash
# setup-erofs-utils.sh -- build erofs-utils 1.8.x (mkfs.erofs with --tar) for
# the benchmark, from Debian 13 (trixie)'s source package, into bench/out/.
#
# Debian 12 ships erofs-utils 1.5, which has no --tar: the pipeline NixOS runs
# (tar --create | mkfs.erofs --tar=f) needs >= 1.7. A private apt directory
# holds a trixie deb-src line, so the host's apt configuration is untouched.
# Needs autoconf, automake, libtool (scripts/setup.sh). Nothing here is
# committed: bench/out/ is a build output. Prints the mkfs.erofs path.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=$here/out/erofs-utils
work=$here/out/erofs-utils-src
if [ -x "$out/bin/mkfs.erofs" ]; then
	echo "$out/bin/mkfs.erofs"
	exit 0
fi
rm -rf "$work"
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$out"
cat >"$work/apt/sources.list" <<'LIST'
deb-src [trusted=yes] http://deb.debian.org/debian trixie main
LIST
apt_opts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
	-o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
	-o "APT::Sandbox::User=root" -q)
apt-get "${apt_opts[@]}" update >&2
(cd "$work" && apt-get "${apt_opts[@]}" source --download-only erofs-utils >&2)
dsc=$(ls "$work"/erofs-utils_*.dsc | head -1)
(cd "$work" && dpkg-source --no-check -x "$dsc" src >&2)
cd "$work/src"
[ -x configure ] || ./autogen.sh >&2
./configure --prefix="$out" --disable-fuse --without-selinux --without-lz4 --without-lzma \
	--without-libdeflate --without-qpl --without-xxhash >&2
make -j2 >&2
make install >&2
"$out/bin/mkfs.erofs" --version >&2 || true
echo "$out/bin/mkfs.erofs"
