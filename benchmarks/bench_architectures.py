"""Real architectures, compiled and run: the MLP's size against the CNN's work, compile
time and memory, and the MLP's time against onnxruntime running the CNN.

Models: torchvision's architectures at 32×32 as the TorchScript exporter writes them
(``cnn2mlp.testing.zoo``), keras.applications' MobileNet, MobileNetV2, ResNet50 and
DenseNet121 at 32×32 or ``--size`` (random weights and BatchNorm statistics; needs the tensorflow extra;
onnxruntime runs tf2onnx's conversion of them), and with ``--onnx-dir`` every ``*.onnx`` of a
folder (real exports: ``torch.onnx.export(model, x, path, dynamic_axes={"input": {0:
"batch"}})``).

Per model, each step in a child process of its own:
- compile (seconds; then again under tracemalloc: the peak of what the compiler allocates
  against the final arrays);
- load the MLP (seconds: the c engine's build on the first thread count, a cache hit on
  the next);
- time onnxruntime on the CNN and the MLP on the same inputs, alternately, for each batch
  size and thread count, the minimum over rounds (the machine is shared; the ratio of two
  minima taken in the same minute is what is stable) and the error against onnxruntime.

Prints figures and the geometric means against the goals; asserts nothing.

    python benchmarks/bench_architectures.py [--quick] [--models a,b] [--onnx-dir DIR]
        [--no-keras] [--size 32] [--threads 1,2] [--batches 1,16,64] [--engine c|numba|scipy]
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KERAS_APPS = ["MobileNet", "MobileNetV2", "ResNet50", "DenseNet121"]

BUILD_KERAS = """
import os, sys, subprocess, numpy as np
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
name, path, onnx_path, side = sys.argv[1:5]
rng = np.random.default_rng(0)
model = getattr(keras.applications, name)(weights=None, input_shape=(int(side), int(side), 3),
                                           classes=10,
                                           classifier_activation=None)
for w in model.weights:
    if "moving_variance" in w.path or "gamma" in w.path:
        w.assign(rng.uniform(0.5, 1.5, tuple(w.shape)))
    elif "moving_mean" in w.path or "beta" in w.path or "bias" in w.path:
        w.assign(rng.uniform(-0.2, 0.2, tuple(w.shape)))
model.save(path)
model.export(path + ".saved", verbose=False)
subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", path + ".saved",
                "--output", onnx_path, "--opset", "17"], check=True, capture_output=True)
"""

COMPILE = """
import json, sys, time, tracemalloc
from cnn2mlp.compile import compile_model
from cnn2mlp.ir.weights import stored_bytes
model, out, report = sys.argv[1:4]
start = time.perf_counter()
result = compile_model(model, out)
seconds = time.perf_counter() - start
# again, tracing the heap: numpy reports its arrays to tracemalloc, so the peak is that of
# everything the compiler allocates (the interpreter's and libraries' own memory excluded)
tracemalloc.start()
compile_model(model, out)
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
layers = result.mlp.layers
arrays = sum(stored_bytes(l.weight) + l.bias.nbytes for l in layers)
json.dump({"seconds": seconds, "peak": peak, "arrays": arrays, "nnz": result.nnz,
           "multiply_adds": result.multiply_adds, "layers": len(layers),
           "carried": int(sum(l.carried for l in layers))}, open(report, "w"))
"""

TIME = """
import json, sys, time
import numpy as np
import onnxruntime as ort
import cnn2mlp
onnx_path, npz, threads, batches, rounds, budget, engine = sys.argv[1:8]
threads, rounds, budget = int(threads), int(rounds), float(budget)
engine = None if engine == "default" else engine
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.log_severity_level = 3
start = time.perf_counter()
session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
session.run(None, {name: np.zeros(shape, np.float32)})
ort_start = time.perf_counter() - start
start = time.perf_counter()
mlp = cnn2mlp.load(npz, threads=threads, engine=engine)  # the c engine: its build, or none
mlp.predict(np.zeros((1,) + tuple(mlp.input_shape), np.float32))
mlp_start = time.perf_counter() - start
nhwc = session.get_inputs()[0].shape[-1] in (1, 3) and mlp.input_shape[-1] not in (1, 3)

# the other CNN engines a user would pick, when installed (the bench and opencv extras)
from cnn2mlp.bench import opencv_dnn_runner, openvino_runner
others = {}
for key, make in (("openvino", openvino_runner), ("opencv", opencv_dnn_runner)):
    try:
        others[key] = make(onnx_path, threads)[1]
    except Exception:
        pass

def best(run, seconds):
    run()
    times, start = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < seconds:
        t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
    return min(times)

out = {"load": mlp_start, "ort_start": ort_start, "engine": mlp.engine}
for batch in map(int, batches.split(",")):
    x = np.random.default_rng(batch).uniform(0, 1, (batch,) + tuple(mlp.input_shape))
    x = x.astype(np.float32)
    fed = x.transpose(0, 2, 3, 1).copy() if nhwc else x
    feed = {name: fed}
    ref = np.asarray(session.run(None, feed)[0]).reshape(batch, -1)
    got = mlp.predict(x).reshape(batch, -1)
    error = float(np.max(np.abs(got - ref) / np.maximum(1, np.abs(ref))))
    runs = {"ort": lambda: session.run(None, feed), "mlp": lambda: mlp.predict(x)}
    for key, run in others.items():
        try:
            run(fed)
            runs[key] = lambda run=run: run(fed)
        except Exception:
            pass
    times = {key: [] for key in runs}
    for _ in range(rounds):    # alternate, so that all see the same machine
        for key, run in runs.items():
            times[key].append(best(run, budget))
    out[batch] = {key: min(t) for key, t in times.items()}
    out[batch]["error"] = error
print(json.dumps(out))
"""


#: a fresh process's cached load and first predict, and onnxruntime's session and first run
START = """
import json, sys, time
import numpy as np
import onnxruntime as ort
onnx_path, npz, engine = sys.argv[1:4]
start = time.perf_counter()
options = ort.SessionOptions()
options.log_severity_level = 3
session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
feed = session.get_inputs()[0]
session.run(None, {feed.name: np.zeros([d if isinstance(d, int) else 1 for d in feed.shape],
                                       np.float32)})
ort_start = time.perf_counter() - start
start = time.perf_counter()
import cnn2mlp
mlp = cnn2mlp.load(npz, engine=None if engine == "default" else engine)
mlp.predict(np.zeros((1,) + tuple(mlp.input_shape), np.float32))
print(json.dumps({"mlp": time.perf_counter() - start, "ort": ort_start}))
"""


def child(code: str, *args, threads: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if threads is not None:  # before numpy loads BLAS in the child
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # modules byte-compiled once, as an installed package's are (pip compiles them): a
    # cached start is not a measure of Python compiling cnn2mlp's source each time
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed")
    return proc


def models(args, folder: Path) -> list[tuple[str, Path, Path]]:
    """(name, the model to compile, the ONNX file onnxruntime runs)."""
    from cnn2mlp.testing import zoo

    found = []
    wanted = set(args.models.split(",")) if args.models else None
    for name, build in zoo.ARCHITECTURES.items():
        if wanted is None or name in wanted:
            import onnx

            path = folder / f"{name}.onnx"
            onnx.save(build(), str(path))
            found.append((name, path, path))
    if not args.no_keras:
        import importlib.util

        if importlib.util.find_spec("keras") is None:
            print("(keras.applications skipped: install the tensorflow extra)")
        else:
            for name in KERAS_APPS:
                if wanted is None or f"keras:{name}" in wanted or name in wanted:
                    path, onnx_path = folder / f"{name}.keras", folder / f"{name}.tf2onnx.onnx"
                    child(BUILD_KERAS, name, path, onnx_path, str(args.size))
                    found.append((f"keras:{name}", path, onnx_path))
    if args.onnx_dir:
        for path in sorted(Path(args.onnx_dir).glob("*.onnx")):
            if wanted is None or path.stem in wanted:
                found.append((f"file:{path.stem}", path, path))
    return found


def geomean(values: list[float]) -> float:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated names (zoo, keras:Name, file stem)")
    parser.add_argument("--onnx-dir", help="also every *.onnx in this folder")
    parser.add_argument("--no-keras", action="store_true")
    parser.add_argument("--size", type=int, default=32,
                        help="keras.applications' input side (default 32; 224 as deployed)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter timing rounds")
    parser.add_argument("--engine", default="default",
                        help="the runtime's engine (default: what cnn2mlp.load picks: c where "
                             "a C compiler is found, else numba)")
    parser.add_argument("--against", choices=["fastest", "onnxruntime"], default="fastest",
                        help="the CNN time the ratios divide by: the fastest of onnxruntime, "
                             "OpenVINO and OpenCV's dnn (those installed), or onnxruntime")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    engine = args.engine
    rounds, budget = (2, 0.1) if args.quick else (4, 0.25)
    batches = [int(b) for b in args.batches.split(",")]
    columns = [(t, b) for t in threads for b in batches]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}; the MLP on the {engine} engine; ratios: "
          f"the MLP's time over {'the fastest CNN engine' if args.against == 'fastest' else 'onnxruntime'}"
          "; 'load s' is the first load (a build), 'start' the cached load and first predict "
          "over max(0.5 s, 3x onnxruntime's session and first run)")
    header = (f"{'model':<22} {'CNN MACs':>10} {'MLP nnz':>10} {'nnz/MAC':>7} {'carried':>9} "
              f"{'compile s':>9} {'load s':>6} {'start':>6} {'peak/arr':>8} {'error':>8} "
              + " ".join(f"{f'{t}t b{b}':>7}" for t, b in columns))
    print(header)
    ratios: dict[tuple[int, int], list[float]] = {c: [] for c in columns}
    fastest = {c: collections.Counter() for c in columns}
    sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, model, onnx_path in models(args, folder):
            npz, report = folder / f"{name}.npz", folder / f"{name}.json"
            try:
                child(COMPILE, model, npz, report)
            except RuntimeError as error:
                print(f"{name:<22} refused or failed: {error}")
                continue
            c = json.loads(report.read_text())
            timing, errors, loads, starts = {}, [], [], []
            for t in threads:
                got = json.loads(child(TIME, onnx_path, npz, t, ",".join(map(str, batches)),
                                       rounds, budget, engine, threads=t).stdout)
                loads.append(got["load"])
                for b in batches:
                    row = got[str(b)]
                    cnn = [v for k, v in row.items() if k not in ("mlp", "error")]
                    timing[t, b] = row["mlp"] / (min(cnn) if args.against == "fastest"
                                                 else row["ort"])
                    fastest[t, b][min((v, k) for k, v in row.items()
                                      if k not in ("mlp", "error"))[1]] += 1
                    ratios[t, b].append(timing[t, b])
                    errors.append(row["error"])
            again = json.loads(child(START, onnx_path, npz, engine).stdout)
            starts.append(again["mlp"] / max(0.5, 3 * again["ort"]))
            sizes.append(c["nnz"] / c["multiply_adds"])
            print(f"{name:<22} {c['multiply_adds'] / 1e6:>9.1f}M {c['nnz'] / 1e6:>9.1f}M "
                  f"{c['nnz'] / c['multiply_adds']:>7.2f} {c['carried']:>9,} "
                  f"{c['seconds']:>9.1f} {loads[0]:>6.1f} {starts[-1]:>6.2f} "
                  f"{c['peak'] / c['arrays']:>8.2f} "
                  f"{max(errors):>8.1e} "
                  + " ".join(f"{timing[col]:>7.2f}" for col in columns), flush=True)
    pad = f"{'':>10} {'':>10}"
    blank = f"{'':>9} {'':>9} {'':>6} {'':>6} {'':>8} {'':>8}"
    print(f"{'geometric mean':<22} {pad} {geomean(sizes):>7.2f} {blank} "
          + " ".join(f"{geomean(ratios[col]):>7.2f}" for col in columns))
    print(f"{'worst':<22} {pad} {max(sizes, default=0):>7.2f} {blank} "
          + " ".join(f"{max(ratios[col], default=0):>7.2f}" for col in columns))
    for col in columns:
        print(f"fastest CNN engine at {col[0]}t b{col[1]}: "
              + ", ".join(f"{k} {n}x" for k, n in fastest[col].most_common()))
    print("goals: nnz/MAC <= 1.25 for every model; 1 thread, against the fastest CNN engine: "
          "geometric mean <= 1.0 at batch 1 and <= 0.7 at batch 16, no model above 1.5; "
          "start <= 1 (a cached load and first predict within max(0.5 s, 3x onnxruntime's "
          "session and first run)); first load (build) <= 15 s.")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s)")
