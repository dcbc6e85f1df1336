#!/usr/bin/env python3
"""variants.py -- make the input variants the reproducibility suite builds from.

  variants.py fresh-copy SRC DST       copy the tree SRC to DST as a fresh copy:
                                       new inode numbers, mtimes/atimes of now,
                                       created in reverse name order (so a
                                       readdir-order-dependent tool sees another
                                       order); modes and contents kept
  variants.py optimise DIR             hard-link identical regular files under
                                       DIR/nix/store as `nix store optimise`
                                       does (through DIR/nix/store/.links/<hash>)
  variants.py shuffle-closure SRC DST [paths|registration|both]
                                       closureInfo dir SRC -> DST with the
                                       store-paths lines and/or the registration
                                       records in another (fixed) order
"""
import hashlib
import os
import random
import shutil
import stat
import sys


def fresh_copy(src, dst):
    os.makedirs(dst)
    names = sorted(os.listdir(src), reverse=True)
    for n in names:
        s = os.path.join(src, n)
        d = os.path.join(dst, n)
        st = os.lstat(s)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISDIR(st.st_mode):
            fresh_copy(s, d)
            os.chmod(d, stat.S_IMODE(st.st_mode))
        else:
            shutil.copyfile(s, d)
            os.chmod(d, stat.S_IMODE(st.st_mode))


def optimise(root):
    store = os.path.join(root, "nix", "store")
    links = os.path.join(store, ".links")
    os.makedirs(links, exist_ok=True)
    os.chmod(store, 0o755)
    n = 0
    for dirpath, dirnames, filenames in os.walk(store):
        dirnames[:] = sorted(d for d in dirnames if os.path.join(dirpath, d) != links)
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            st = os.lstat(p)
            if not stat.S_ISREG(st.st_mode):
                continue
            with open(p, "rb") as fh:
                h = hashlib.sha256(fh.read()).hexdigest()
            key = os.path.join(links, f"{h}-{stat.S_IMODE(st.st_mode):o}")
            if not os.path.exists(key):
                os.link(p, key)
                continue
            # replace p by a link to key (the directory may be read-only)
            mode = os.lstat(dirpath).st_mode
            os.chmod(dirpath, 0o755)
            tmp = p + ".optimise-tmp"
            os.link(key, tmp)
            os.rename(tmp, p)
            os.chmod(dirpath, stat.S_IMODE(mode))
            n += 1
    os.chmod(store, 0o555)
    print(f"optimise: {n} files hard-linked")


def shuffle_closure(src, dst, what="both"):
    os.makedirs(dst, exist_ok=True)
    rnd = random.Random(7)
    with open(os.path.join(src, "store-paths")) as f:
        paths = f.read().splitlines()
    shuffled = paths[:]
    while what != "registration" and len(paths) > 1 and shuffled == paths:
        rnd.shuffle(shuffled)
    with open(os.path.join(dst, "store-paths"), "w") as f:
        f.write("".join(p + "\n" for p in shuffled))
    reg = os.path.join(src, "registration")
    if os.path.exists(reg):
        with open(reg) as f:
            lines = f.read().splitlines()
        recs = []
        i = 0
        while i < len(lines):
            nrefs = int(lines[i + 4])
            recs.append(lines[i:i + 5 + nrefs])
            i += 5 + nrefs
        if what != "paths":
            recs.reverse()
        with open(os.path.join(dst, "registration"), "w") as f:
            f.write("\n".join(l for r in recs for l in r) + "\n")


def main(argv):
    if len(argv) == 4 and argv[1] == "fresh-copy":
        fresh_copy(argv[2], argv[3])
    elif len(argv) == 3 and argv[1] == "optimise":
        optimise(argv[2])
    elif len(argv) in (4, 5) and argv[1] == "shuffle-closure":
        shuffle_closure(argv[2], argv[3], argv[4] if len(argv) == 5 else "both")
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
