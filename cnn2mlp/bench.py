"""``python -m cnn2mlp.bench MODEL``: the CNN against its MLP, before adopting the MLP.

Compiles MODEL (an .onnx, .keras or .h5 file; or takes a compiled .npz with ``--source``),
then times, on the same inputs and threads: the original model (onnxruntime; Keras for a
Keras file), the MLP with cnn2mlp's runtime (numba when installed) and with the scipy
engine, the standalone numpy module (``--kernel-py``), the C target built with ``-O3
-march=native`` when a C compiler is found, and OpenCV's ANN_MLP when the dense
weights fit. Prints median latency, throughput, the memory of the weights and the largest
difference from the original; ``--plot FILE.png`` draws latency bars and a spy plot of
each layer (matplotlib).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time

if __name__ == "__main__" and "--threads" in sys.argv[:-1]:
    # BLAS reads its thread count once, when numpy loads it: set it to --threads first
    _threads = sys.argv[sys.argv.index("--threads") + 1]
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _threads)
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import CompileError, install_hint


@dataclass
class Row:
    engine: str
    batch: int
    median_ms: float
    weights_bytes: int | None
    max_diff: float | None

    @property
    def per_second(self) -> float:
        return self.batch / (self.median_ms / 1e3)


def median_ms(run: Callable[[], object], repeats: int, budget: float = 2.0) -> float:
    run()  # warm up (JIT, caches)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - start < budget):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def original_runner(model: Path, threads: int) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    from .frontends import model_kind

    kind = model_kind(model)
    if kind == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return "onnxruntime (CNN)", lambda x: session.run(None, {name: x})[0]
    if kind == "keras":
        from .references import keras_runner

        return "keras (CNN)", keras_runner(model)
    raise CompileError(f"{model}: bench runs ONNX and Keras models")


def load_kernel_module(path: Path):
    spec = importlib.util.spec_from_file_location("cnn2mlp_bench_kernel", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench(model: Path, artifact: Path | None, batches: Sequence[int], threads: int,
          repeats: int, workdir: Path) -> tuple[list[Row], object]:
    import cnn2mlp

    from .backends.csr import write_kernel
    from .compile import compile_model

    if artifact is None:
        artifact = workdir / "model.npz"
        compile_model(model, artifact)
    runtime = cnn2mlp.load(artifact, threads=threads)
    scipy_runtime = cnn2mlp.load(artifact, threads=threads, engine="scipy")
    write_kernel(workdir / "kernel.py", artifact, runtime.mlp)
    kernel = load_kernel_module(workdir / "kernel.py").load(str(artifact))
    weights = sum(l.weight.data.nbytes + l.weight.indices.nbytes + l.weight.indptr.nbytes
                  + l.bias.nbytes for l in runtime.layers)
    label, original = original_runner(model, threads)
    engines: list[tuple[str, Callable, int | None]] = [
        (label, original, None), (f"cnn2mlp ({runtime.engine})", runtime.predict, weights),
        ("cnn2mlp (scipy)", scipy_runtime.predict, weights),
        ("kernel-py (numpy)", kernel.predict, weights)]
    engines += c_engine(model, workdir)
    engines += opencv_engine(model, workdir)
    rows = []
    rng = np.random.default_rng(0)
    # the MLP returns logits when the model's final Softmax was dropped: compare probabilities
    dropped = any("Softmax dropped" in note for note in runtime.mlp.notes)
    for batch in batches:
        x = rng.uniform(0, 1, (batch,) + runtime.input_shape).astype(np.float32)
        reference = np.asarray(original(x)).reshape(batch, -1)
        for name, run, size in engines:
            got = np.asarray(run(x)).reshape(batch, -1)
            if dropped and run is not original:
                from .references import softmax

                got = softmax(got)
            diff = None if run is original else float(np.abs(got - reference).max())
            rows.append(Row(name, batch, median_ms(lambda run=run, x=x: run(x), repeats), size, diff))
    return rows, runtime


def c_engine(model: Path, workdir: Path) -> list:
    """The C target built with -O3 -march=native (one thread), when a C compiler is found."""
    from .backends.c_build import CModel, find_compiler
    from .compile import compile_model

    if find_compiler() is None:
        print("note: the C target skipped: no C compiler (cc, gcc, clang or $CC)",
              file=sys.stderr)
        return []
    out = workdir / "model.c"
    result = compile_model(model, out, target="c")
    built = CModel(out, result.mlp, optimize="-O3", extra=["-march=native"])
    size = sum(p.stat().st_size for p in (out, out.with_suffix(".weights")) if p.exists())
    return [("C target (-O3 -march=native)", built.predict, size)]


def opencv_engine(model: Path, workdir: Path) -> list:
    """OpenCV's ANN_MLP, when cv2.ml is there and the dense weights fit in 256 MiB."""
    try:
        from .backends.opencv import OpenCvModel
        from .compile import compile_model

        out = workdir / "model.xml"
        from .backends import TargetOptions

        result = compile_model(model, out, target="opencv",
                               options=TargetOptions(max_dense_bytes=256 * 2**20))
        net = OpenCvModel(out, result.mlp.input_shape, result.mlp.output_shape)
    except (CompileError, ImportError, MemoryError) as exc:
        print(f"note: OpenCV's ANN_MLP skipped: {str(exc)[:160]}", file=sys.stderr)
        return []
    size = out.stat().st_size
    return [("OpenCV ANN_MLP (dense)", net.predict, size)]


def format_rows(rows: list[Row]) -> str:
    lines = [f"{'engine':<26} {'batch':>5} {'median ms':>10} {'samples/s':>11} "
             f"{'weights MiB':>12} {'max |diff|':>11} {'vs original':>12}"]
    base = {r.batch: r.median_ms for r in rows if r.max_diff is None}
    for r in rows:
        size = "" if r.weights_bytes is None else f"{r.weights_bytes / 2**20:.2f}"
        diff = "" if r.max_diff is None else f"{r.max_diff:.2g}"
        lines.append(f"{r.engine:<26} {r.batch:>5} {r.median_ms:>10.3f} {r.per_second:>11,.0f} "
                     f"{size:>12} {diff:>11} {r.median_ms / base[r.batch]:>11.2f}x")
    return "\n".join(lines)


def plot(rows: list[Row], runtime, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise CompileError(f"--plot needs matplotlib: {install_hint('plot')}") from exc
    layers = runtime.layers
    fig, axes = plt.subplots(1, 1 + len(layers), figsize=(4 + 3 * len(layers), 4))
    batches = sorted({r.batch for r in rows})
    names = list(dict.fromkeys(r.engine for r in rows))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [next((r.median_ms for r in rows if r.engine == name and r.batch == b),
                       np.nan) for b in batches]
        axes[0].bar(np.arange(len(batches)) + i * width, values, width, label=name)
    axes[0].set_xticks(np.arange(len(batches)) + 0.4 - width / 2, [f"batch {b}" for b in batches])
    axes[0].set_yscale("log")
    axes[0].set_ylabel("median latency (ms)")
    axes[0].legend(fontsize=6)
    for ax, (i, layer) in zip(axes[1:], enumerate(layers)):
        w = layer.weight
        step = max(1, max(w.shape) // 400)  # downsample big layers to about 400×400
        coo = w.tocoo()
        ax.scatter(coo.col[::max(1, w.nnz // 200000)] // step,
                   coo.row[::max(1, w.nnz // 200000)] // step, s=0.1, marker=".")
        ax.set_xlim(0, w.shape[1] / step)
        ax.set_ylim(w.shape[0] / step, 0)
        ax.set_title(f"layer {i}: {w.shape[0]}×{w.shape[1]}\n{w.nnz:,} nnz, {layer.activation}",
                     fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnn2mlp.bench", description=__doc__.split("\n")[0])
    p.add_argument("model", type=Path, help="the original model (.onnx, .keras, .h5)")
    p.add_argument("--artifact", type=Path, help="a compiled .npz of MODEL (default: compile)")
    p.add_argument("--batch", default="1,64", help="batch sizes, e.g. 1,64")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for every engine (default 1; BLAS too when given)")
    p.add_argument("--repeats", type=int, default=50, help="timed runs per engine and batch")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="latency bars and spy plots")
    args = p.parse_args(argv)
    try:
        batches = [int(b) for b in args.batch.split(",") if b.strip()]
        if not batches or min(batches) < 1 or args.threads < 1:
            raise CompileError("--batch takes positive sizes like 1,64; --threads >= 1")
        with tempfile.TemporaryDirectory() as tmp:
            rows, runtime = bench(args.model, args.artifact, batches, args.threads,
                                  args.repeats, Path(tmp))
        print(f"{args.model}: {len(runtime.layers)} layers, "
              f"{sum(l.weight.nnz for l in runtime.layers):,} non-zeros, "
              f"{args.threads} thread(s)")
        print(format_rows(rows))
        if args.plot:
            plot(rows, runtime, args.plot)
            print(f"wrote {args.plot}")
    except CompileError as exc:
        print(f"cnn2mlp.bench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
