"""What the compiler stores and spends at the resolutions networks are used at (#33): each
keras.applications model (random weights, 10 classes) at ``--size`` compiled to ``.npz`` and
to ``.c`` by the command line in a child process, with ``--check``. Prints per model and
target: seconds, the child's peak memory, the bytes written against the CNN's parameters in
float32, and the check's verdict (or the refusal). Figures, no assertions.

    python benchmarks/bench_structured.py [--size 224] [--models MobileNetV2,ResNet50]

Run it against another checkout with ``PYTHONPATH=that/checkout``: only the command line is
called, so the same script measures before and after.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("MobileNetV2", "ResNet50", "DenseNet121")
SUFFIXES = (".npz", ".c")


def save_model(name: str, size: int, folder: Path) -> tuple[Path, int]:
    """The keras.applications model as a .keras file, and its parameters' float32 bytes."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    model = getattr(keras.applications, name)(weights=None, classes=10,
                                              input_shape=(size, size, 3))
    path = folder / f"{name}_{size}.keras"
    model.save(path)
    return path, model.count_params() * 4


def compile_child(model: Path, out: Path, check: int) -> tuple[float, int, str]:
    """(seconds, peak RSS in bytes, verdict) of one compile in a child process. Called in a
    process of its own (``--one``): ru_maxrss of the children is then this compile's."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cnn2mlp.compile", str(model), "-o", str(out),
                           "--check", str(check), "--quiet"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    lines = (proc.stderr.strip() or proc.stdout.strip() or "ok").splitlines()
    verdict = "check passed" if proc.returncode == 0 else lines[-1][:160]
    return seconds, peak, verdict


def written_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in (out, out.with_suffix(".h"), out.with_suffix(".weights"))
               if p.exists())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--check", type=int, default=3, help="--check inputs per compile")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # model, out, check
    args = parser.parse_args()
    if args.one:
        seconds, peak, verdict = compile_child(Path(args.one[0]), Path(args.one[1]),
                                               int(args.one[2]))
        print(f"{seconds}\t{peak}\t{verdict}")
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"keras.applications at {args.size}x{args.size}, random weights, 10 classes; "
          f"cnn2mlp from {os.environ.get('PYTHONPATH') or 'this checkout'}")
    print(f"{'model':<12} {'params MB':>9} {'target':>6} {'seconds':>8} {'peak GB':>8} "
          f"{'written MB':>10} {'/ params':>8}  verdict")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.models.split(","):
            model, params = save_model(name, args.size, folder)
            for suffix in SUFFIXES:
                out = folder / f"{name}{suffix}"
                proc = subprocess.run([sys.executable, __file__, "--one", str(model), str(out),
                                       str(args.check)], capture_output=True, text=True)
                seconds, peak, verdict = proc.stdout.strip().split("\t", 2)
                written = written_bytes(out)
                print(f"{name:<12} {params / 1e6:>9.1f} {suffix:>6} {float(seconds):>8.1f} "
                      f"{int(peak) / 1e9:>8.2f} {written / 1e6:>10.1f} "
                      f"{written / params:>8.1f}  {verdict}", flush=True)
                for path in (out, out.with_suffix(".h"), out.with_suffix(".weights")):
                    path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
