"""Equivalence: compile a model and assert that two sides compute the same function
(:func:`assert_equivalent`), and run the standalone kernel module as a user would."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from ..check import random_inputs
from ..comparison import Comparison, compare
from ..references import onnx_runner
from ..ir import Graph, run


def compile_to_model(model: onnx.ModelProto | str | Path, **options):
    """Compile an ONNX model (proto or file) through the default pipeline; return the
    loaded CSR runtime, and keep the compile result on it as ``.result``."""
    from ..backends.csr import load
    from ..compile import compile_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(model) if not isinstance(model, onnx.ModelProto) else Path(tmp, "m.onnx")
        if isinstance(model, onnx.ModelProto):
            onnx.save(model, str(path))
        out = Path(tmp, "m.npz")
        result = compile_model(path, out, **options)
        runtime = load(out)
    runtime.result = result
    return runtime


def _runner(obj: Any, logits: str | None = None) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                          tuple[int, ...] | None]:
    """A function x → y for whatever stands on either side, and its input shape if known."""
    from ..ir.mlp import Mlp

    if isinstance(obj, Graph):
        return (lambda x: run(obj, x)), obj.shape(obj.input)
    if isinstance(obj, Mlp):
        return obj.forward, tuple(obj.input_shape)
    if isinstance(obj, (onnx.ModelProto, str, Path)) and (
            isinstance(obj, onnx.ModelProto) or str(obj).endswith(".onnx")):
        return onnx_runner(obj, logits), None
    if isinstance(obj, (str, Path)):
        from ..backends.csr import load

        obj = load(obj)
    if hasattr(obj, "predict"):
        return obj.predict, tuple(getattr(obj, "input_shape", ()) or ()) or None
    if callable(obj):
        return obj, None
    raise TypeError(f"cannot run {type(obj).__name__}")


def assert_equivalent(original: Any, compiled: Any, inputs: np.ndarray | None = None, *,
                      n: int = 16, input_range: tuple[float, float] = (-1.0, 1.0),
                      rtol: float = 1e-4, atol: float | None = None) -> Comparison:
    """Run both sides on the same inputs and fail with the worst element if they differ.

    Either side may be an ONNX model (proto or path: onnxruntime), an IR :class:`Graph`
    (the interpreter), an :class:`~cnn2mlp.ir.mlp.Mlp`, a compiled artifact (path or loaded
    model), or a function. The error is measured as ``|got - ref| / max(1, |ref|)``; it must
    stay within ``rtol`` (and ``|got - ref| <= atol`` if given). When the compiler dropped a
    final Softmax, the ONNX side is read at the logits.
    """
    logits = None
    result = getattr(compiled, "result", None)
    if result is not None and isinstance(original, (onnx.ModelProto, str, Path)):
        logits = result.graph.meta.logits
    run_ref, ref_shape = _runner(original, logits)
    run_got, got_shape = _runner(compiled)
    if inputs is None:
        shape = got_shape or ref_shape
        if shape is None:
            raise ValueError("pass inputs=...: neither side tells its input shape")
        inputs = random_inputs(shape, n, *input_range, seed=n)
    ref = np.asarray(run_ref(inputs))
    got = np.asarray(run_got(inputs))
    comparison = compare(ref.reshape(got.shape) if ref.size == got.size else ref, got, rtol)
    if not comparison.passed or (atol is not None and comparison.max_abs_error > atol):
        raise AssertionError("not equivalent: " + comparison.describe())
    return comparison


def run_kernel_module(mlp, x: np.ndarray, folder: str | Path) -> np.ndarray:
    """Save ``mlp`` as CSR with its standalone ``--kernel-py`` module in ``folder``, and run
    the module on ``x`` (float64) in a fresh interpreter where scipy cannot be imported:
    what a user with numpy alone gets."""
    import subprocess
    import sys

    from ..backends.csr import save_csr, write_kernel

    folder = Path(folder)
    save_csr(mlp, folder / "kernel_model.npz")
    write_kernel(folder / "kernel_module.py", folder / "kernel_model.npz", mlp)
    np.save(folder / "kernel_x.npy", x)
    script = ("import sys, numpy as np; sys.modules['scipy'] = None\nimport kernel_module\n"
              "np.save('kernel_y.npy', kernel_module.load().predict(np.load('kernel_x.npy'), "
              "dtype=np.float64))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise AssertionError(f"the kernel module failed: {proc.stderr[-2000:]}")
    return np.load(folder / "kernel_y.npy")
