"""The compiled MLP's runtime against onnxruntime running the original CNN, on real-sized
models (the verification community's CIFAR nets, a LeNet with max pooling, a dense MLP):
median latency per engine at batch 1 and 64, one thread (and all cores with --all-cores),
ratios to onnxruntime and their geometric mean. Prints figures; asserts nothing.

    python benchmarks/bench_runtime.py [--all-cores] [--no-opencv]
"""
from __future__ import annotations

import os
import sys

THREADS = os.cpu_count() if "--all-cores" in sys.argv else 1
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(THREADS)  # before numpy loads BLAS

import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from cnn2mlp.bench import bench  # noqa: E402
from cnn2mlp.testing import OnnxBuilder  # noqa: E402


def conv(k, s, p, out):
    return {"kernel_shape": (k, k), "strides": (s, s), "dilations": (1, 1),
            "pads": (p, p, p, p), "group": 1, "out_channels": out}


def cifar(c1, c2, dense, pad=1, seed=1):
    """Two 4×4 stride-2 ReLU convolutions, then Dense ReLU layers and 10 logits."""
    b = OnnxBuilder((3, 32, 32), batch="N", opset=13, seed=seed)
    for channels in (c1, c2):
        b.conv(conv(4, 2, pad, channels))
        b.activation("Relu")
    b.flatten("flatten")
    for units in dense:
        b.dense(units)
        b.activation("Relu")
    b.dense(10)
    return b.build()


def lenet():
    b = OnnxBuilder((1, 28, 28), batch="N", opset=13, seed=3)
    b.conv(conv(5, 1, 2, 6))
    b.activation("Relu")
    b.pool("MaxPool", {"kernel_shape": (2, 2), "strides": (2, 2), "dilations": (1, 1),
                       "pads": (0, 0, 0, 0), "ceil_mode": False})
    b.conv(conv(5, 1, 0, 16))
    b.activation("Relu")
    b.pool("MaxPool", {"kernel_shape": (2, 2), "strides": (2, 2), "dilations": (1, 1),
                       "pads": (0, 0, 0, 0), "ceil_mode": False})
    b.flatten("flatten")
    for units in (120, 84):
        b.dense(units)
        b.activation("Relu")
    b.dense(10)
    return b.build()


def dense_mlp():
    b = OnnxBuilder((784,), batch="N", opset=13, seed=4)
    for _ in range(6):
        b.dense(256)
        b.activation("Relu")
    b.dense(10)
    return b.build()


MODELS = {"cifar 8/16 (cifar_base_kw-like)": lambda: cifar(8, 16, [100]),
          "cifar 16/32 (cifar_wide_kw-like)": lambda: cifar(16, 32, [100]),
          "cifar 32/64 unpadded": lambda: cifar(32, 64, [128, 64], pad=0, seed=2),
          "LeNet + max pooling (MNIST)": lenet,
          "dense 784-256x6-10": dense_mlp}


def plain_scipy_times(runtime) -> dict[int, float]:
    """The baseline the issue names: each layer as scipy's CSR product on (features × batch),
    then bias and activation in numpy; median ms per batch size."""
    from cnn2mlp.bench import median_ms
    from cnn2mlp.ir.mlp import activate_layer

    layers = runtime.layers

    def run(x):
        h = x.reshape(len(x), -1).T
        for layer in layers:
            z = layer.weight @ h + layer.bias[:, None]
            h = activate_layer(layer, z.T).T
        return h

    times = {}
    for batch in (1, 64):
        x = np.random.default_rng(0).uniform(0, 1, (batch,) + runtime.input_shape).astype(
            np.float32)
        times[batch] = median_ms(lambda: run(x), 100)
    return times


def multiply_adds(runtime) -> int:
    """Multiply-adds per sample the runtime does: its row groups' GEMMs, its CSR rows'
    non-zeros, its dense layers' entries (after equal columns are merged)."""
    total = 0
    for layer in runtime._engine.layers(np.float32):
        if layer.dense is not None:
            total += layer.dense.size
        elif layer.structure is not None:
            total += sum(g.kernels.size * len(g.bases) for g in layer.structure.groups)
            total += layer.structure.rest.nnz
        else:
            total += layer.csr.nnz
    return total


def blas_peak() -> float:
    """numpy's BLAS (float32 GEMM, square 512) in G multiply-adds/s: a yardstick for the
    machine's arithmetic rate (onnxruntime's MLAS and cnn2mlp's blocked kernel both reach
    a little more)."""
    from cnn2mlp.bench import median_ms

    a = np.random.default_rng(0).normal(size=(512, 512)).astype(np.float32)
    return 512**3 / median_ms(lambda: a @ a, 50) / 1e6


def main() -> None:
    ratios: dict[tuple[str, int], list[float]] = {}
    speedups: dict[int, list[float]] = {}
    import numba

    from cnn2mlp.runtime import numba_kernels  # noqa: F401  (sets the threading layer)

    print(f"threads: {THREADS}, numba threading layer: {numba.config.THREADING_LAYER} "
          f"(priority {numba.config.THREADING_LAYER_PRIORITY})")
    peak = blas_peak() * THREADS
    floors = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in MODELS.items():
            path = Path(tmp, "model.onnx")
            onnx.save(build(), str(path))
            work = Path(tmp, "work")
            work.mkdir(exist_ok=True)
            if "--no-opencv" in sys.argv:
                import cnn2mlp.bench as module

                module.opencv_engine = lambda model, workdir: []
            rows, runtime = bench(path, None, [1, 64], THREADS, 100, work)
            nnz = sum(layer.weight.nnz for layer in runtime.layers)
            plain = plain_scipy_times(runtime)
            fastest = {r.batch: r.median_ms for r in rows if r.engine == "cnn2mlp (numba)"}
            for batch, ms in plain.items():
                print(f"{name:<34} batch {batch:>2}: scipy CSR product, layer by layer "
                      f"{ms:.3f} ms; cnn2mlp (numba) is {ms / fastest[batch]:.2f}x faster")
                speedups.setdefault(batch, []).append(ms / fastest[batch])
            base = {r.batch: r.median_ms for r in rows if r.max_diff is None}
            for batch in (1, 64):
                cells = "  ".join(f"{r.engine.split(' (')[0] if 'CNN' in r.engine else r.engine}"
                                  f" {r.median_ms:.3f} ms ({r.median_ms / base[batch]:.2f}x)"
                                  for r in rows if r.batch == batch)
                print(f"{name:<34} nnz {nnz / 1e6:5.2f} M  batch {batch:>2}: {cells}")
                for r in rows:
                    if r.batch == batch and r.max_diff is not None:
                        ratios.setdefault((r.engine, batch), []).append(r.median_ms / base[batch])
            work = multiply_adds(runtime) * 64
            floor = work / peak / 1e6  # ms at numpy's GEMM rate, nothing else
            floors.append(floor / base[64])
            print(f"{name:<34} batch 64: {work / 64 / 1e6:.2f} M multiply-adds a sample; "
                  f"onnxruntime {work / base[64] / 1e6:.1f} G/s, cnn2mlp (numba) "
                  f"{work / fastest[64] / 1e6:.1f} G/s; at numpy's GEMM rate "
                  f"({peak:.1f} G/s) the work alone takes {floor:.3f} ms "
                  f"({floor / base[64]:.2f}x onnxruntime)")
    print("\ngeometric mean of time / onnxruntime-on-the-CNN:")
    for (engine, batch), values in sorted(ratios.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"  batch {batch:>2}  {engine:<26} {np.exp(np.mean(np.log(values))):7.2f}x")
    print(f"  batch 64  the work alone at numpy's GEMM rate  "
          f"{np.exp(np.mean(np.log(floors))):7.2f}x  (the multiply-adds, no copies, no "
          f"overhead)")
    print("geometric mean of cnn2mlp (numba)'s speed-up over scipy's CSR product:")
    for batch, values in sorted(speedups.items()):
        print(f"  batch {batch:>2}  {np.exp(np.mean(np.log(values))):7.2f}x faster")


if __name__ == "__main__":
    main()
