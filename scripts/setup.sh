#!/usr/bin/env bash
# setup.sh -- install every Debian 12 package that building, testing, the
# benchmarks and the demo need. One `apt-get update`, then only what is
# missing; non-interactive; safe to run twice.
set -euo pipefail

PKGS=(
  # build
  build-essential cmake pkg-config clang llvm libclang-rt-14-dev clang-format
  libarchive-dev libext2fs-dev libfdisk-dev libzstd-dev uuid-dev zlib1g-dev
  libjson-c-dev libssl-dev libsqlite3-dev liblz4-dev check
  # oracles: programs we did not write
  qemu-utils qemu-system-x86 e2fsprogs erofs-utils dosfstools mtools gdisk fdisk
  cryptsetup-bin
  # boot fixtures and the demo
  ovmf systemd-boot-efi linux-image-cloud-amd64 busybox-static swtpm swtpm-tools
  # the generic kernel has 9p (the cloud one does not): the --system boot test
  linux-image-amd64
  cpio grub-pc-bin kmod
  # tests, benchmarks
  zstd xz-utils gzip tar python3 time hyperfine faketime jq procps strace util-linux bsdutils
  # a test oracle only: the real nix-store --load-db makes the Nix databases
  # vmlaunch --system reads in the tests (never a build dependency)
  nix-bin sqlite3
  # man page lint, completion syntax check
  mandoc zsh
  # bench/setup-erofs-utils.sh builds erofs-utils 1.8 (mkfs.erofs --tar) from source
  autoconf automake libtool dpkg-dev
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages present"
  exit 0
fi

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
