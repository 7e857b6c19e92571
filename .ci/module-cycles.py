#!/usr/bin/env python3
"""Module import cycles of wfe's library crates (`make cycles`).

For each crate, cargo-modules (its `dependencies` graph with functions, types, traits and
"owns" edges filtered out) gives which module `use`s which; a cycle is a strongly connected
component of more than one module (Tarjan). Prints every cycle and exits 1 if there is one.
(`cargo modules dependencies --acyclic` cannot say this: it checks the item graph, where a
type and its own `new` already form a cycle.)

Usage: module-cycles.py CARGO_MODULES CRATE...
"""

import collections
import re
import subprocess
import sys

EDGE = re.compile(r'"([^"]+)" -> "([^"]+)" \[label="uses"')
FILTERS = ["--no-externs", "--no-sysroot", "--no-fns", "--no-types", "--no-traits", "--no-owns"]


def uses(tool, crate, features):
    out = subprocess.run(
        [tool, "dependencies", "-p", crate, "--lib", *features, *FILTERS],
        capture_output=True, text=True, check=True,
    ).stdout
    graph = collections.defaultdict(set)
    for a, b in EDGE.findall(out):
        if a != b:
            graph[a].add(b)
    return graph


def cycles(graph):
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index, low, on, stack, found = {}, {}, set(), [], []
    nodes = sorted(set(graph) | {b for bs in graph.values() for b in bs})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on.discard(x)
                        comp.append(x)
                        if x == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
            elif w not in index:
                index[w] = low[w] = len(index)
                stack.append(w)
                on.add(w)
                work.append((w, iter(sorted(graph.get(w, ())))))
            elif w in on:
                low[v] = min(low[v], index[w])
    return found


def main():
    tool, crates = sys.argv[1], sys.argv[2:]
    total = 0
    for crate in crates:
        # The LSTM's modules exist only with libtorch: check them as `make test` builds them.
        features = ["--features", "torch"] if crate in ("wfe-neural",) else []
        found = cycles(uses(tool, crate, features))
        total += len(found)
        print(f"{crate}: {len(found)} cycle(s)")
        for comp in found:
            print("    " + " <-> ".join(comp))
    print(f"module import cycles: {total}")
    sys.exit(1 if total else 0)


if __name__ == "__main__":
    main()
