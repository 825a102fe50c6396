"""``--check``: the written artifact against the original model's own runtime (and a
float64 evaluation of it), on random inputs drawn in memory-sized batches."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ._io import raise_if_terminated
from .comparison import Comparison, compare, merged
from .errors import CompileError, first_line_of
from .progress import Progress
from .references import reference_runner, softmax, truth_runner
from .result import CompileResult

#: --check's default: |got - ref| / max(1, |ref|) allowed, per precision
DEFAULT_TOLERANCE = {"float32": 1e-4, "float64": 1e-9}


class CheckFailed(CompileError):
    """The compiled MLP differs from the reference beyond the tolerance."""


def random_inputs(shape: tuple[int, ...], n: int, low: float = 0.0, high: float = 1.0,
                  seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, (n,) + tuple(shape)).astype(dtype)


#: memory one batch of --check is planned to take: its inputs and both runtimes' activations
#: (measured: onnxruntime's convolution buffers and the copies take about 3x as much again)
CHECK_BYTES = 64 * 2**20


def batch_size_for(per_sample_bytes: int, n: int, budget: int | None = None) -> int:
    """Samples per batch so that a batch stays within ``budget`` (default CHECK_BYTES;
    at least one sample)."""
    budget = CHECK_BYTES if budget is None else budget
    return max(1, min(n, budget // max(1, per_sample_bytes)))


def input_batches(shape: tuple[int, ...], n: int, batch: int, low: float = 0.0,
                  high: float = 1.0, seed: int = 0, dtype=np.float32):
    """``random_inputs(shape, n, ...)`` in batches of ``batch`` samples: the same values
    (one generator, drawn in order), never all in memory at once."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch):
        count = min(batch, n - start)
        yield rng.uniform(low, high, (count,) + tuple(shape)).astype(dtype)


def check_against_reference(result: CompileResult, artifact: Path, model: str | Path, n: int,
                            input_range: tuple[float, float] = (0.0, 1.0),
                            tolerance: float | None = None,
                            progress: Progress | None = None) -> Comparison:
    """The written ``artifact`` against the original ``model``'s own runtime on ``n``
    random inputs from ``input_range``, in batches sized to memory (a check of 1000 inputs
    on a wide model must not hold 1000 samples' activations at once). ``tolerance``
    (relative to max(1, |y|)) defaults by precision; given, it is also the bar against
    the float64 evaluation. ``progress`` shows the steps on a terminal (starting
    TensorFlow for a Keras reference takes tens of seconds)."""
    progress = progress or Progress(enabled=False)
    try:
        return compare_on_random_inputs(result, artifact, model, n, input_range, tolerance,
                                        progress)
    finally:
        progress.done()


def compare_on_random_inputs(result: CompileResult, artifact: Path, model: str | Path, n: int,
                             input_range: tuple[float, float], tolerance: float | None,
                             progress: Progress) -> Comparison:
    """The artifact runs first, on every batch, and is let go before the reference starts:
    the two never hold their weights and work at once (DenseNet121 at 224×224 with
    Keras: a peak of 2.1 GB so, 1.7 GB this way). The batches are drawn again, the same."""
    from .backends import get_target

    dtype = result.mlp.dtype  # a double model is checked in double
    bar = tolerance if tolerance is not None else DEFAULT_TOLERANCE[dtype.name]
    dropped = result.graph.meta.logits is not None
    widths = [layer.n_out for layer in result.mlp.layers]
    per_sample = dtype.itemsize * (math.prod(result.mlp.input_shape) + 4 * max(widths)
                                   + sum(widths))
    batch = batch_size_for(per_sample, n)
    batches = lambda: input_batches(result.mlp.input_shape, n, batch, *input_range,
                                    dtype=dtype)
    progress.say("check: running the artifact")
    predictor = get_target(result.target).load(result.mlp, Path(artifact))
    outputs = []
    for x in batches():
        outputs.append(predictor.predict(x))
        raise_if_terminated()
        progress.say(f"check: {sum(map(len, outputs))}/{n} inputs through the artifact")
    del predictor
    release_memory()
    progress.say("check: starting the reference")
    run_reference, gives_logits = original_runner(result, model)
    truth, truth_note = float64_truth(result, model, n)
    parts = []
    done = 0
    for x, got in zip(batches(), outputs):
        progress.say(f"check: {done}/{n} inputs")
        done += len(x)
        reference = run_reference(x)
        raise_if_terminated()
        if dropped and not gives_logits:  # compare probabilities: softmax of our logits
            got = softmax(got)
        reference = np.asarray(reference).reshape(got.shape)
        exact = None
        if truth is not None:
            try:
                exact = np.asarray(truth(x)).reshape(got.shape)
            except Exception as exc:  # judge against the float32 reference alone, and say so
                truth, truth_note = None, ("no float64 evaluation: it failed "
                                           f"({first_line_of(exc)})")
                parts = [without_truth(p) for p in parts]
        parts.append(compare(reference, got, bar, truth=exact, float32_slack=tolerance is None,
                             nan_agrees=False))
    comparison = merged(parts)
    comparison.reference = getattr(run_reference, "reference", "")
    comparison.truth_note = truth_note
    if dropped:
        comparison.compared = "logits" if gives_logits else "probabilities"
    comparison.float32_slack = tolerance is None
    comparison.input_range = (float(input_range[0]), float(input_range[1]))
    return comparison


def release_memory() -> None:
    """Collect what was let go and hand glibc's free pages back to the system, so that
    the next runtime (TensorFlow's) reuses them rather than adds to the peak."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to hand back this way
        pass


def reference_outputs(result: CompileResult, model: str | Path, n: int,
                      input_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, bool]:
    """``n`` inputs from ``input_range`` (--check's first ``n``), the original model's
    outputs for them from its own runtime (the logits where it gives them), and whether
    those are probabilities (a reference that keeps the softmax the MLP dropped)."""
    run_reference, gives_logits = original_runner(result, model)
    x = random_inputs(result.mlp.input_shape, n, *input_range, dtype=result.mlp.dtype)
    y = np.asarray(run_reference(x)).reshape((n,) + tuple(result.mlp.output_shape))
    return x, y, result.graph.meta.logits is not None and not gives_logits


def original_runner(result: CompileResult, model: str | Path):
    """The original model's own runtime as the compile left it to be read: the logits
    where a final softmax was dropped, the tensor --output-tensor named, one sample at a
    time for a model without a batch axis; and whether it gives the logits."""
    meta = result.graph.meta
    return reference_runner(model, meta.logits, meta.output_tensor, batchless=not meta.batched)


def without_truth(part: Comparison) -> Comparison:
    """A batch's comparison judged against the reference alone (the float64 evaluation
    failed on a later batch: every batch is judged alike)."""
    part.failures = part.truth_error = part.reference_truth_error = None
    return part


def float64_truth(result: CompileResult, model: str | Path, n: int):
    """(a float64 evaluation of the original ONNX model, or None; why not): what a float32
    MLP is judged against when the float32 reference is itself as far from the truth."""
    from .frontends import is_onnx_file

    if result.mlp.dtype != np.float32 or not is_onnx_file(model):
        return None, ""
    meta = result.graph.meta
    try:
        return truth_runner(model, meta.logits or meta.output_tensor, not meta.batched,
                            result.multiply_adds * n)
    except Exception as exc:  # judged against the float32 reference alone, and said so
        return None, f"no float64 evaluation: it failed ({first_line_of(exc)})"
