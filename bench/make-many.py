#!/usr/bin/env python3
"""make-many.py -- generate a closure of many small entries, deterministically.

Usage: bench/make-many.py --root DIR [--paths N] [--files N] [--depth N]
                          [--sizes DIST] [--symlinks F] [--hardlinks F] [--seed S]
                          [--system]

Writes DIR/nix/store/<hash>-many-<i>/... for i in 0..N-1, each path holding
--files regular files spread over directories up to --depth levels deep,
plus symlinks (a fraction --symlinks of the files: relative links to a file
of the same path, so none dangles) and hard links (a fraction --hardlinks:
a second name for a file of the same path). DIR/store-paths lists the paths
(sorted), DIR/registration is a closureInfo-style stub (placeholder hashes:
the image only stores it). The entry count (files, directories, links, the
store paths themselves) is printed and kept in DIR/.complete.

--system adds one more store path, a NixOS-shaped toplevel
(<hash>-nixos-system-many: kernel, initrd, init, kernel-params; the kernel
and initrd are stand-ins of 8 and 4 MiB, not bootable) so that the disk
modes (--efi, --bios) have a system to write boot entries for.

--sizes: the file size distribution, one of
  small            4/5 of the files 0-2 KiB, the rest 2-24 KiB (a NixOS
                   desktop's share of .desktop files, headers, scripts, icons)
  fixed:BYTES      every file BYTES long
  uniform:LO:HI    uniform in [LO, HI]
The bytes of each file are a hash of its name, so no two files are equal
(nothing a writer could deduplicate) and nothing is compressible by zeros.

The same arguments give the same tree on every machine: names, sizes,
contents and links come from one seeded generator (Python's random.Random
with --seed, default 1), never from the clock or the file system. Re-running
on a finished DIR with the same arguments does nothing; with other
arguments, or on a half-made DIR, it is removed and rebuilt.
"""
import argparse
import hashlib
import os
import random
import shutil
import sys

ALPHA = "0123456789abcdfghijklmnpqrsvwxyz"  # nix-base32


def store_hash(name, n=32):
    d = hashlib.sha512(name.encode()).digest()
    return "".join(ALPHA[b % 32] for b in d[:n])


def size_of(rng, dist):
    if dist == "small":
        if rng.random() < 0.8:
            return rng.randint(0, 2048)
        return rng.randint(2049, 24576)
    kind, _, rest = dist.partition(":")
    if kind == "fixed":
        return int(rest)
    if kind == "uniform":
        lo, hi = (int(x) for x in rest.split(":"))
        return rng.randint(lo, hi)
    sys.exit(f"make-many.py: unknown --sizes {dist!r}")


def content(name, size):
    out = bytearray()
    block = hashlib.sha256(name.encode()).digest()
    while len(out) < size:
        out += block
        block = hashlib.sha256(block).digest()
    return bytes(out[:size])


def make_path(top, store_path, rng, files, depth, dist, symlinks, hardlinks):
    """One store path at top (= root + store_path); returns the number of
    entries below it (itself excluded). Contents hash the store path, never
    top: the same tree wherever --root is."""
    entries = 0
    dirs = [""]
    made = []
    for i in range(files):
        # A new directory now and then, nested up to depth levels.
        if rng.random() < 0.05 or len(dirs) == 1:
            parent = rng.choice(dirs)
            if parent.count("/") + 1 < depth or parent == "":
                d = f"{parent}/d{len(dirs)}" if parent else f"d{len(dirs)}"
                os.mkdir(os.path.join(top, d))
                dirs.append(d)
                entries += 1
        d = rng.choice(dirs)
        rel = f"{d}/f{i}" if d else f"f{i}"
        with open(os.path.join(top, rel), "wb") as f:
            f.write(content(store_path + "/" + rel, size_of(rng, dist)))
        if rng.random() < 0.1:
            os.chmod(os.path.join(top, rel), 0o755)
        made.append(rel)
        entries += 1
    for j in range(int(files * symlinks)):
        src = rng.choice(made)
        d = rng.choice(dirs)
        link = f"{d}/l{j}" if d else f"l{j}"
        target = os.path.relpath(src, d or ".")
        os.symlink(target, os.path.join(top, link))
        entries += 1
    for j in range(int(files * hardlinks)):
        src = rng.choice(made)
        d = rng.choice(dirs)
        link = f"{d}/h{j}" if d else f"h{j}"
        os.link(os.path.join(top, src), os.path.join(top, link))
        entries += 1
    return entries


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--paths", type=int, default=400)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--sizes", default="small")
    ap.add_argument("--symlinks", type=float, default=0.05)
    ap.add_argument("--hardlinks", type=float, default=0.01)
    ap.add_argument("--seed", default="1")
    ap.add_argument("--system", action="store_true")
    a = ap.parse_args()
    if a.paths < 1 or a.files < 0 or a.depth < 1:
        sys.exit("make-many.py: --paths >= 1, --files >= 0, --depth >= 1")
    args = (f"paths={a.paths} files={a.files} depth={a.depth} sizes={a.sizes} "
            f"symlinks={a.symlinks} hardlinks={a.hardlinks} seed={a.seed} system={a.system}")
    done = os.path.join(a.root, ".complete")
    if os.path.exists(done):
        with open(done) as f:
            have = f.read()
        if have.startswith(args + "\n"):
            print(f"make-many.py: {a.root} is already complete: {have.strip()}")
            return
    if os.path.lexists(a.root):
        shutil.rmtree(a.root)
    store = os.path.join(a.root, "nix", "store")
    os.makedirs(store)
    rng = random.Random(a.seed)
    paths = []
    entries = 0
    for i in range(a.paths):
        name = f"many-{i}"
        p = f"/nix/store/{store_hash(a.seed + name)}-{name}"
        os.mkdir(a.root + p)
        entries += 1 + make_path(a.root + p, p, rng, a.files, a.depth, a.sizes,
                                 a.symlinks, a.hardlinks)
        paths.append(p)
    if a.system:
        name = "nixos-system-many"
        p = f"/nix/store/{store_hash(a.seed + name)}-{name}"
        top = a.root + p
        os.mkdir(top)
        for f, size in (("kernel", 8 << 20), ("initrd", 4 << 20)):
            with open(os.path.join(top, f), "wb") as out:
                out.write(content(p + f, size))
        with open(os.path.join(top, "init"), "w") as out:
            out.write("#!/bin/sh\nexec /bin/sh\n")
        os.chmod(os.path.join(top, "init"), 0o555)
        with open(os.path.join(top, "kernel-params"), "w") as out:
            out.write("loglevel=4")
        entries += 5
        paths.append(p)
    paths.sort()
    with open(os.path.join(a.root, "store-paths"), "w") as f:
        f.writelines(p + "\n" for p in paths)
    with open(os.path.join(a.root, "registration"), "w") as f:
        for p in paths:
            f.write(f"{p}\nsha256:{store_hash(p + p, 52)}\n0\n\n0\n")
    with open(done, "w") as f:
        f.write(f"{args}\n{entries} entries in {len(paths)} store paths\n")
    print(f"make-many.py: {a.root}: {entries} entries in {len(paths)} store paths")


if __name__ == "__main__":
    main()
