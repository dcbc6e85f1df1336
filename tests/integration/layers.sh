#!/usr/bin/env bash
# layers.sh -- libimg's files depend on each other in one direction only: the
# calls between the library's object files (a symbol one file leaves
# undefined and another defines, as nm shows them) form no circle. A front
# door (dev-qcow2.c, image.c, vm.c, fs.c) sits above its helpers, never
# beside them (docs/architecture.md).
#
# KNOWN lists the circles that were there when this test was written and
# are being taken apart (issue 19); any other circle, or a known one that
# grew, fails. When a known circle is gone the test says so: delete its line.
. "$SRCDIR/tests/lib.sh"
t_begin layers
t_need nm python3
# The static library holds exactly the objects of this build (a stale .o
# of a removed file is not in it).
LIB=$BUILDDIR/libimg_static.a
[ -f "$LIB" ] || t_fail "no $LIB"

KNOWN='
'
python3 - "$LIB" "$KNOWN" <<'PY' || t_fail "libimg's files call each other in a circle"
import collections, subprocess, sys

lib, known = sys.argv[1], sys.argv[2]
known = {frozenset(l.split()) for l in known.splitlines() if l.strip()}
defined, undefined = {}, collections.defaultdict(set)
out = subprocess.run(["nm", "-A", lib], capture_output=True, text=True, check=True).stdout
for line in out.splitlines():
    # "<lib>:<member>.o: <value> <type> <name>", or "... U <name>"
    _, member, rest = line.rsplit(":", 2) if line.count(":") >= 2 else (None, None, None)
    if not member or not member.endswith(".o"):
        continue
    f = member[:-2]
    p = rest.split()
    if len(p) == 2 and p[0] == "U":
        undefined[f].add(p[1])
    elif len(p) == 3 and p[1] in "TDBRCV":
        defined[p[2]] = f
files = sorted(set(defined.values()) | set(undefined))
uses = {f: {} for f in files}  # f -> {g: [symbols f takes from g]}
for f in files:
    for s in sorted(undefined[f]):
        g = defined.get(s)
        if g and g != f:
            uses[f].setdefault(g, []).append(s)

# Tarjan's strongly connected components, iteratively.
index, low, on, stack, comps, n = {}, {}, set(), [], [], 0
for root in files:
    if root in index:
        continue
    work = [(root, iter(sorted(uses[root])))]
    index[root] = low[root] = n; n += 1
    stack.append(root); on.add(root)
    while work:
        v, it = work[-1]
        w = next(it, None)
        if w is not None:
            if w not in index:
                index[w] = low[w] = n; n += 1
                stack.append(w); on.add(w)
                work.append((w, iter(sorted(uses[w]))))
            elif w in on:
                low[v] = min(low[v], index[w])
            continue
        work.pop()
        if work:
            low[work[-1][0]] = min(low[work[-1][0]], low[v])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop(); on.discard(w); comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(frozenset(comp))

bad = 0
for c in comps:
    if c in known:
        print("known circle (issue 19):", " ".join(sorted(c)))
        continue
    bad = 1
    print("CIRCLE:", " ".join(sorted(c)), file=sys.stderr)
    for f in sorted(c):
        for g in sorted(uses[f]):
            if g in c:
                print(f"  {f} -> {g}: {', '.join(uses[f][g][:6])}", file=sys.stderr)
for k in known - set(comps):
    print("gone, delete it from KNOWN:", " ".join(sorted(k)))
print(f"{len(files)} files, {sum(len(u) for u in uses.values())} file-to-file dependencies")
sys.exit(bad)
PY
t_pass
