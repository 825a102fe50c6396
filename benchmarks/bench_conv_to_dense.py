"""conv→dense throughput and peak memory, and the whole CLI time, on a 64→64 3×3 conv over a
32×32 map (36 M non-zeros). Prints figures; asserts nothing.

    python benchmarks/bench_conv_to_dense.py
"""
from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import onnx

from cnn2mlp.cli import main
from cnn2mlp.ir.conv_matrix import conv_matrix
from cnn2mlp.testing import OnnxBuilder

C, HW, K = 64, 32, 3


def bench_conv_matrix(repeats: int = 3) -> None:
    kernel = np.random.default_rng(0).normal(size=(C, C, K, K)).astype(np.float32)
    bias = np.zeros(C, np.float32)
    args = (kernel, bias, (C, HW, HW), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        weight, _, _ = conv_matrix(*args)
        best = min(best, time.perf_counter() - start)
        del weight
    tracemalloc.start()
    weight, _, _ = conv_matrix(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    final = weight.data.nbytes + weight.indices.nbytes + weight.indptr.nbytes
    print(f"conv->dense {C}->{C} {K}x{K} on {HW}x{HW}: {weight.nnz / 1e6:.1f} M non-zeros, "
          f"shape {weight.shape}, index dtype {weight.indices.dtype}")
    print(f"  time {best * 1e3:.0f} ms (best of {repeats}) = {weight.nnz / best / 1e6:.0f} M nnz/s"
          f"  [target >= 150]")
    print(f"  peak memory {peak / 2**20:.0f} MiB, final CSR arrays {final / 2**20:.0f} MiB, "
          f"ratio {peak / final:.2f}  [target <= 2]")


def bench_cli() -> None:
    b = OnnxBuilder((C, HW, HW), opset=13, seed=0)
    b.conv({"kernel_shape": (K, K), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": C})
    b.activation("Relu")
    with tempfile.TemporaryDirectory() as tmp:
        model, out = Path(tmp, "conv.onnx"), Path(tmp, "conv.npz")
        onnx.save(b.build(), str(model))
        start = time.perf_counter()
        code = main([str(model), "-o", str(out), "--quiet"])
        elapsed = time.perf_counter() - start
        print(f"CLI compile of that model (load, passes, write .npz): {elapsed:.2f} s, "
              f"exit {code}, artifact {out.stat().st_size / 2**20:.0f} MiB")
        start = time.perf_counter()
        code = main([str(model), "-o", str(out), "--quiet", "--check", "4"])
        print(f"  with --check 4: {time.perf_counter() - start:.2f} s, exit {code}")


if __name__ == "__main__":
    bench_conv_matrix()
    if "--no-cli" not in sys.argv:
        bench_cli()
