"""The passes on long chains: graph queries are indexed, so time grows linearly with the
number of nodes. Prints figures; asserts nothing.

    python benchmarks/bench_graph.py
"""
from __future__ import annotations

import time

import numpy as np

from cnn2mlp.ir import Graph
from cnn2mlp.backends import get_target
from cnn2mlp.passes import PassContext


def chain(n: int, kind: str) -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("x", (4,))
    for i in range(n):
        if kind == "activations":
            g.append("Relu" if i % 2 else "Identity")
        elif i % 4 == 0:
            g.append("Dense", {"weight": rng.normal(size=(4, 4)).astype(np.float32),
                               "bias": rng.normal(size=4).astype(np.float32)})
        else:
            g.append(("MulConst", "AddConst", "Relu")[i % 4 - 1],
                     {"const": np.full(4, 0.5)} if i % 4 < 3 else {})
    return g


def main() -> None:
    for kind in ("activations", "layers"):
        for n in (10_000, 50_000, 100_000):
            g = chain(n, kind)
            start = time.perf_counter()
            report = get_target("csr").pipeline().run(g, PassContext())
            seconds = time.perf_counter() - start
            slowest = max(report.records, key=lambda r: r.seconds)
            print(f"{kind:<12} {n:>7,} nodes: {seconds:6.2f} s for the csr pipeline "
                  f"({seconds / n * 1e6:5.1f} µs a node; slowest pass {slowest.name} "
                  f"{slowest.seconds:.2f} s)")


if __name__ == "__main__":
    main()
