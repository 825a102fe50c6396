"""python -m cnn2mlp.bench MODEL: the CNN against its MLP, before adopting the MLP.

Compiles MODEL (an .onnx, .keras or .h5 file; or takes a compiled .npz with ``--source``),
then times, on the same inputs and threads: the original model (onnxruntime; Keras for a
Keras file, called through a tf.function as a deployment would, not ``predict``), the MLP with cnn2mlp's runtime (numba when installed) and with the scipy
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
from typing import Callable, Sequence

BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def threads_in(argv: Sequence[str]) -> str:
    """The --threads value on a command line (default 1), before argparse runs."""
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


if __name__ == "__main__":
    # BLAS reads its thread count once, when numpy loads it: --threads (default 1) first, so
    # that the scipy engine and the reference use the threads the header says
    for _var in BLAS_VARIABLES:
        os.environ[_var] = threads_in(sys.argv[1:])
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._io import check_writable, destination, staged_path
from .errors import CompileError, first_line_of, install_hint
from .ir.weights import sample_entries, stored_bytes
from .runtime import engine as runtime_engine


@dataclass
class Row:
    engine: str
    batch: int
    median_ms: float
    weights_bytes: int | None
    max_diff: float | None
    #: an engine running the original CNN (onnxruntime, OpenVINO, OpenCV's dnn, Keras)
    cnn: bool = False

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


#: how a row that runs the original CNN is labelled
CNN_MARK = " (CNN)"


def other_cnn_engines(model: Path, threads: int) -> list[tuple[str, Callable, None]]:
    """The CNN engines a user would pick instead of onnxruntime, when installed (the
    ``bench`` extra: OpenVINO; the ``opencv`` extra: OpenCV's dnn module), on an ONNX
    model, with ``threads`` threads."""
    from .frontends import model_kind

    if model_kind(model) != "onnx":
        return []
    engines = []
    for name, make in (("OpenVINO", openvino_runner), ("OpenCV's dnn", opencv_dnn_runner)):
        try:
            engines.append((*make(model, threads), None))
        except ImportError:
            continue
        except Exception as exc:  # noqa: BLE001 — an engine that cannot run it is a note
            print(f"note: {name} skipped: {first_line_of(exc, 200)}", file=sys.stderr)
    return engines


def openvino_runner(model: Path, threads: int) -> tuple[str, Callable]:
    """OpenVINO on the CNN: f32, the latency hint, ``threads`` threads; compiled once per
    batch size (a model with a fixed batch is reshaped to it)."""
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
              "INFERENCE_PRECISION_HINT": "f32"}
    compiled: dict[tuple[int, ...], object] = {}

    def run(x: np.ndarray) -> np.ndarray:
        if x.shape not in compiled:
            network = core.read_model(str(model))
            network.reshape({network.inputs[0].any_name: ov.PartialShape(list(x.shape))})
            compiled[x.shape] = core.compile_model(network, "CPU", config)
        net = compiled[x.shape]
        return np.asarray(net(x)[net.output(0)])

    return f"OpenVINO {ov.__version__.split('-')[0]}" + CNN_MARK, run


def opencv_dnn_runner(model: Path, threads: int) -> tuple[str, Callable]:
    """OpenCV's dnn module on the CNN: its default backend on the CPU, ``threads``
    threads."""
    import cv2

    if not hasattr(cv2, "dnn"):
        raise ImportError("cv2 without dnn")
    cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromONNX(str(model))

    def run(x: np.ndarray) -> np.ndarray:
        net.setInput(np.ascontiguousarray(x))
        return np.asarray(net.forward())

    return f"OpenCV {cv2.__version__} dnn" + CNN_MARK, run


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
        return "onnxruntime" + CNN_MARK, lambda x: session.run(None, {name: x})[0]
    if kind == "keras":
        return keras_call(model, threads)
    raise CompileError(f"{model}: bench runs ONNX and Keras models")


def keras_call(model: Path, threads: int) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """Keras on the CNN the fast way: ``model(x, training=False)`` in a tf.function (what a
    deployment runs; ``predict`` adds milliseconds of overhead a call)."""
    from .references import load_keras_model

    keras_model = load_keras_model(model)
    import tensorflow as tf

    try:  # only possible before TensorFlow has run anything
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    call = tf.function(lambda x: keras_model(x, training=False), reduce_retracing=True)
    return "keras, tf.function" + CNN_MARK, lambda x: call(tf.constant(x)).numpy()


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
    weights = sum(stored_bytes(l.weight) + l.bias.nbytes for l in runtime.layers)
    label, original = original_runner(model, threads)
    engines: list[tuple[str, Callable, int | None]] = [
        (label, original, None), *other_cnn_engines(model, threads),
        (f"cnn2mlp ({runtime.engine}, default)", runtime.predict, weights)]
    if runtime.engine != "numba" and "numba" in runtime_engine.available_engines():
        numba_runtime = cnn2mlp.load(artifact, threads=threads, engine="numba")
        engines.append(("cnn2mlp (numba)", numba_runtime.predict, weights))
    if runtime.engine != "scipy":  # without numba the first row is the scipy engine already
        engines.append(("cnn2mlp (scipy)", scipy_runtime.predict, weights))
    engines.append(("kernel-py (numpy)", kernel.predict, weights))
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
            if dropped and not name.endswith(CNN_MARK):
                from .references import softmax

                got = softmax(got)
            diff = None if run is original else float(np.abs(got - reference).max())
            rows.append(Row(name, batch, median_ms(lambda run=run, x=x: run(x), repeats), size,
                            diff, cnn=name.endswith(CNN_MARK)))
    return rows, runtime


def c_engine(model: Path, workdir: Path) -> list:
    """The C target built as the c engine builds it (-O3 -march=native -ffp-contract=fast;
    one thread), when a C compiler is found."""
    from .backends.c import CModel
    from .runtime.c_build import find_compiler
    from .runtime.c_engine import FLAGS
    from .compile import compile_model

    if find_compiler() is None:
        print("note: the C target skipped: no C compiler (cc, gcc, clang or $CC)",
              file=sys.stderr)
        return []
    out = workdir / "model.c"
    result = compile_model(model, out, target="c")
    built = CModel(out, result.mlp, optimize=FLAGS[0], extra=FLAGS[1:])
    size = sum(p.stat().st_size for p in (out, out.with_suffix(".weights")) if p.exists())
    return [("C target (" + " ".join(FLAGS[:2]) + ")", built.predict, size)]


#: the dense weights the bench lets OpenCV's row have (it times them in memory)
OPENCV_BENCH_BYTES = 256 * 2**20


def opencv_skip_reason(exc: BaseException) -> str:
    """Why the OpenCV row is left out, whole (the compiler's own words name options of
    the compiler, which the bench does not have)."""
    text = first_line_of(exc, 10_000)
    if "--max-dense-bytes" in text:
        return (f"its dense weights are above the {OPENCV_BENCH_BYTES // 2**20} MiB the bench "
                "gives OpenCV's row (ANN_MLP stores every weight; the other rows run the "
                "sparse MLP)")
    if isinstance(exc, ImportError):
        return f"cv2 is not installed ({install_hint('opencv')})"
    return text


def opencv_engine(model: Path, workdir: Path) -> list:
    """OpenCV's ANN_MLP, when cv2.ml is there and the dense weights fit in 256 MiB."""
    try:
        from .backends.opencv import OpenCvModel
        from .compile import compile_model

        out = workdir / "model.xml"
        from .backends import TargetOptions

        result = compile_model(model, out, target="opencv",
                               options=TargetOptions(max_dense_bytes=OPENCV_BENCH_BYTES))
        net = OpenCvModel(out, result.mlp.input_shape, result.mlp.output_shape)
    except (CompileError, ImportError, MemoryError) as exc:
        print(f"note: OpenCV's ANN_MLP skipped: {opencv_skip_reason(exc)}", file=sys.stderr)
        return []
    size = out.stat().st_size
    return [("OpenCV ANN_MLP (dense)", net.predict, size)]


def format_rows(rows: list[Row]) -> str:
    """The table: each row's time against the original's runtime and against the fastest
    engine running the CNN at that batch (the one a user would pick instead)."""
    lines = [f"{'engine':<30} {'batch':>5} {'median ms':>10} {'samples/s':>11} "
             f"{'weights MiB':>12} {'max |diff|':>11} {'vs original':>12} "
             f"{'vs fastest CNN':>15}"]
    base = {r.batch: r.median_ms for r in rows if r.max_diff is None}
    fastest = fastest_cnn(rows)
    for r in rows:
        size = "" if r.weights_bytes is None else f"{r.weights_bytes / 2**20:.2f}"
        diff = "" if r.max_diff is None else f"{r.max_diff:.2g}"
        lines.append(f"{r.engine:<30} {r.batch:>5} {r.median_ms:>10.3f} {r.per_second:>11,.0f} "
                     f"{size:>12} {diff:>11} {ratio(r.median_ms / base[r.batch]):>12} "
                     f"{ratio(r.median_ms / fastest[r.batch].median_ms):>15}")
    for batch, row in fastest.items():
        lines.append(f"fastest CNN engine at batch {batch}: {row.engine}")
    return "\n".join(lines)


def fastest_cnn(rows: list[Row]) -> dict[int, Row]:
    """The fastest row running the CNN, per batch."""
    best: dict[int, Row] = {}
    for r in rows:
        if r.cnn and (r.batch not in best or r.median_ms < best[r.batch].median_ms):
            best[r.batch] = r
    return best


def ratio(value: float) -> str:
    """3 significant digits: 0.00421x, 1.23x, 412x."""
    return f"{value:.3g}x"


def require_matplotlib():
    """pyplot with a file-only backend, or a CompileError said before any timing runs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise CompileError(f"--plot needs matplotlib: {install_hint('plot')}") from exc
    return plt


def machine() -> str:
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores"


def check_plot_path(path: Path, inputs: list[Path | None]) -> None:
    """Before any timing: the plot can be written, and is not (through a link) one of the
    files the bench reads."""
    if path.suffix.lower() != ".png":
        raise CompileError(f"--plot {path}: name the picture *.png")
    check_writable(path)
    target = destination(path)
    for given in inputs:
        if given is not None and Path(given).exists() and target.exists() and \
                os.path.samefile(target, given):
            raise CompileError(f"--plot {path} is {given} itself; writing it would destroy "
                               "it: choose another name")


def plot(rows: list[Row], runtime, path: Path, title: str) -> None:
    """One figure read at a glance, whatever the depth: latency bars with the ratio to the
    original written on them, each layer's density (and non-zeros), and the pattern of the
    four layers with the most non-zeros, shaded by the true density of each cell."""
    plt = require_matplotlib()
    fig = plt.figure(figsize=(14, 8.5))
    grid = fig.add_gridspec(2, 4, height_ratios=[1.1, 1])
    fig.suptitle(title, fontsize=12)
    latency_bars(fig.add_subplot(grid[0, :2]), rows)
    layer_density(fig.add_subplot(grid[0, 2:]), runtime.layers)
    largest = sorted(sorted(range(len(runtime.layers)),
                            key=lambda i: -runtime.layers[i].weight.nnz)[:4])
    for slot, i in enumerate(largest):
        cell_density(fig.add_subplot(grid[1, slot]), runtime.layers[i], i)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def latency_bars(ax, rows: list[Row]) -> None:
    batches = sorted({r.batch for r in rows})
    names = list(dict.fromkeys(r.engine for r in rows))
    base = {r.batch: r.median_ms for r in rows if r.max_diff is None}
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        found = [next((r for r in rows if r.engine == name and r.batch == b), None)
                 for b in batches]
        x = np.arange(len(batches)) + i * width
        values = [r.median_ms if r else np.nan for r in found]
        bars = ax.bar(x, values, width, label=name)
        for bar, r in zip(bars, found):
            if r is not None:
                ax.annotate(ratio(r.median_ms / base[r.batch]), (bar.get_x() + width / 2,
                            bar.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(np.arange(len(batches)) + 0.4 - width / 2, [f"batch {b}" for b in batches])
    ax.set_yscale("log")
    ax.set_ylabel("median latency per call (ms, log)")
    ax.set_title("latency; on each bar: time against the original")
    ax.legend(fontsize=8, loc="upper left")


def layer_density(ax, layers) -> None:
    index = np.arange(len(layers))
    density = [100 * l.weight.nnz / max(1, l.weight.shape[0] * l.weight.shape[1])
               for l in layers]
    ax.bar(index, density, color="tab:blue", label="density (%)")
    ax.set_ylim(0, 105)
    ax.set_xlabel("layer")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("density (%)", color="tab:blue")
    nnz = ax.twinx()
    nnz.plot(index, [max(1, l.weight.nnz) for l in layers], "o-", color="tab:red",
             markersize=3)
    nnz.set_yscale("log")
    nnz.set_ylabel("non-zeros (log)", color="tab:red")
    ax.set_title(f"{len(layers)} layers: density (bars) and non-zeros (line)")


def cell_density(ax, layer, index: int, cells: int = 200) -> None:
    """The layer's matrix in at most cells×cells blocks, each shaded by the share of its
    entries that are non-zero: a dense layer is black, not a sprinkle of dots."""
    w = layer.weight
    n_out, n_in = w.shape
    rows_per, cols_per = max(1, -(-n_out // cells)), max(1, -(-n_in // cells))
    # sample big layers: 2 M entries give the picture
    rows, cols, count = sample_entries(w, 2_000_000)
    counts = np.zeros((-(-n_out // rows_per), -(-n_in // cols_per)))
    np.add.at(counts, (rows // rows_per, cols // cols_per), count)
    # shaded by the square root, so that a 3 % conv band shows as well as a dense block
    ax.imshow(np.sqrt(np.minimum(counts / (rows_per * cols_per), 1)), cmap="Greys", vmin=0,
              vmax=1, aspect="auto", interpolation="nearest")
    ax.set_title(f"layer {index}: {n_out}×{n_in}, {w.nnz:,} nnz\n"
                 f"{layer.activation}; shade: √density", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnn2mlp.bench",
                                description=__doc__.split("\n")[0].split(": ", 1)[1],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", type=Path, help="the original model (.onnx, .keras, .h5)")
    p.add_argument("--artifact", type=Path, help="a compiled .npz of MODEL (default: compile it)")
    p.add_argument("--batch", default="1,64", help="batch sizes")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for every engine and for BLAS")
    p.add_argument("--repeats", type=int, default=50, help="timed runs per engine and batch")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="draw latency bars, layer densities and the largest layers")
    args = p.parse_args(argv)
    try:
        batches = [int(b) for b in args.batch.split(",") if b.strip()]
        if not batches or min(batches) < 1 or args.threads < 1:
            raise CompileError("--batch takes positive sizes like 1,64; --threads >= 1")
        if args.repeats < 1:
            raise CompileError(f"--repeats {args.repeats}: give at least 1 timed run")
        if args.plot:
            require_matplotlib()  # before minutes of timing, not after
            check_plot_path(args.plot, [args.model, args.artifact])
        with tempfile.TemporaryDirectory() as tmp:
            rows, runtime = bench(args.model, args.artifact, batches, args.threads,
                                  args.repeats, Path(tmp))
        blas = {os.environ.get(v) for v in BLAS_VARIABLES} == {str(args.threads)}
        header = (f"{args.model}: {len(runtime.layers)} layers, "
                  f"{sum(l.weight.nnz for l in runtime.layers):,} non-zeros; "
                  f"{args.threads} thread(s) for every engine"
                  + (" and BLAS" if blas else " (BLAS not limited: run as "
                     "python -m cnn2mlp.bench to limit it)") + f"; {machine()}")
        print(header)
        print(format_rows(rows))
        if args.plot:
            with staged_path(args.plot) as staged:  # replaces the plot only when drawn
                plot(rows, runtime, staged, f"{Path(args.model).name}: "
                     f"{len(runtime.layers)} layers, {args.threads} thread(s), {machine()}")
            print(f"wrote {args.plot}")
    except CompileError as exc:
        print(f"cnn2mlp.bench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
