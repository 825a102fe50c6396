"""``python -m cnn2mlp.compile MODEL -o OUT``: compile a CNN into an MLP file.

``main(argv) -> int`` is the importable entry; :func:`compile_model` the Python API.
Exit codes: 0 success, 2 bad usage or input (one line on stderr), 1 internal error.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import __version__
from ._io import (
    StagedOutputs,
    Terminated,
    check_writable,
    destination,
    raise_if_terminated,
    request_termination,
    termination_requested,
)
from .backends import target_for
from .check import (Comparison, batch_size_for, compare, input_batches, merged,
                    reference_runner, softmax)
from .errors import CompileError
from .frontends import load_model
from .ir import Graph
from .ir.mlp import Mlp, NotAnMlpError
from .ir.precision import working_precision
from .passes import PassContext, Pipeline, PipelineReport


@dataclass
class CompileResult:
    mlp: Mlp
    graph: Graph
    target: str
    pipeline: PipelineReport
    seconds: dict[str, float] = field(default_factory=dict)
    check: Comparison | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    #: the original network's multiply-adds for one sample: the yardstick of the MLP's
    #: non-zeros (ir.cost.multiply_adds)
    multiply_adds: int = 0

    @property
    def nnz(self) -> int:
        return sum(int(layer.weight.nnz) for layer in self.mlp.layers)

    @property
    def exact(self) -> bool:
        return not any(note.startswith("approximate") for note in self.mlp.notes)


def compile_model(model: str | Path, output: str | Path | None = None, *,
                  target: str | None = None, input_shape: Sequence[int] | None = None,
                  passes: Sequence[str] | Pipeline | None = None,
                  ctx: PassContext | None = None, print_ir: bool = False,
                  allow_non_finite: bool = False,
                  max_bytes: int | None = None,
                  output_tensor: str | None = None,
                  batch_axis: str = "auto",
                  show_progress: bool = False) -> CompileResult:
    """Compile ``model`` into an MLP; write it to ``output`` when given. ``output_tensor``
    names a tensor (ONNX) or layer (Keras) to compile up to instead of the model's output."""
    seconds: dict[str, float] = {}
    target = target_for(output, target) if output is not None else (target or "csr")
    if output is not None:
        check_writable(output)
    start = time.perf_counter()
    graph = load_model(model, input_shape, allow_non_finite, max_bytes, output_tensor,
                       batch_axis)
    seconds["frontend"] = time.perf_counter() - start
    if not allow_non_finite:
        refuse_non_finite(graph, model, "in the model")
    preflight(graph, model, max_bytes)
    multiply_adds = cnn_multiply_adds(graph)
    output_shape = graph.shape(graph.output)
    pipeline = passes if isinstance(passes, Pipeline) else (
        Pipeline(passes) if passes is not None else Pipeline.default(target))
    ctx = ctx or context_for(target)
    if ctx.max_bytes is None:
        from .ir.cost import default_max_bytes

        ctx.max_bytes = default_max_bytes() if max_bytes is None else max_bytes
    graph.meta.setdefault("io_names", io_names(graph, model))
    if target in ("opencv", "onnx", "nnet"):
        dense_preflight_from_shapes(graph, model, ctx.options.get("max_dense_bytes",
                                                                  DEFAULT_MAX_DENSE_BYTES),
                                    target)
    after_each = print_ir_after if print_ir else None
    progress = Progress(enabled=show_progress)
    report = pipeline.run(graph, ctx, after_each, progress.step)
    progress.done()
    if not allow_non_finite:
        refuse_non_finite(graph, model, "after compiling (an overflow)")
    try:
        with working_precision(graph.dtype):
            mlp = Mlp.from_graph(graph, output_shape)
    except NotAnMlpError as exc:
        raise CompileError(f"{model}: the pipeline left a graph that is not an MLP: {exc}; "
                           "check --passes") from exc
    result = CompileResult(mlp, graph, target, report, seconds, stats=ctx.stats,
                           multiply_adds=multiply_adds)
    if output is not None:
        start = time.perf_counter()
        write_target(result, output, {"source": str(model), "cnn2mlp": __version__})
        seconds["backend"] = time.perf_counter() - start
    return result


def cnn_multiply_adds(graph: Graph) -> int:
    from .ir.cost import multiply_adds

    return multiply_adds(graph)


def context_for(target: str, **kwargs) -> PassContext:
    from .backends import FUSION

    ctx = PassContext(target=target, fusion=FUSION[target], **kwargs)
    # values carried past layers: identity neurons where the target has an activation per
    # neuron (one neuron a value), the layer's own activation elsewhere (ReLU pairs)
    ctx.options["linearize-dag.carry"] = "identity" if target == "csr" else "activation"
    if target == "opencv":
        ctx.options["precision"] = "opencv"
        ctx.options["linearize-dag.uniform"] = True  # ANN_MLP: one activation for all
    if target == "nnet":
        ctx.options["linearize-dag.uniform"] = True  # .nnet: ReLU hidden layers only
    return ctx


def write_target(result: CompileResult, output: str | Path, meta: dict[str, Any],
                 options: dict[str, Any] | None = None) -> None:
    """Write the compiled MLP for its target (atomically)."""
    options = options or {}
    if result.target == "csr":
        from .backends.csr import save_csr

        if "input_affine" in result.graph.meta or "uniform" in result.graph.meta:
            raise CompileError("extract-input-affine and unify-activation prepare a graph for "
                               "the opencv target; leave them out of --passes for csr")
        save_csr(result.mlp, output, meta)
    elif result.target == "opencv":
        from .backends import dense_preflight
        from .backends.opencv import save_opencv

        dense_preflight(result.mlp, "opencv",
                        options.get("max_dense_bytes", DEFAULT_MAX_DENSE_BYTES),
                        str(meta.get("source", "")))
        save_opencv(result.mlp, opencv_spec(result), output, options.get("encoding", "text"))
    elif result.target in ("onnx", "nnet"):
        write_verifier_target(result, output, meta, options)
    else:  # target_for only returns known targets
        raise CompileError(f"unknown target {result.target!r}")


def write_verifier_target(result: CompileResult, output: str | Path, meta: dict[str, Any],
                          options: dict[str, Any]) -> None:
    """ONNX (MatMul/Add/Relu) or .nnet for verifiers: never an approximate network unless
    the user said so, and never above --max-dense-bytes."""
    from .backends import dense_preflight

    source = str(meta.get("source", ""))
    if not result.exact and not options.get("allow_approximate"):
        raise CompileError(f"{source}: the MLP is approximate ({'; '.join(result.mlp.notes)}); "
                           "a verifier must not be given an approximate network silently: "
                           "pass --allow-approximate to write it anyway")
    dense_preflight(result.mlp, result.target,
                    options.get("max_dense_bytes", DEFAULT_MAX_DENSE_BYTES), source)
    input_name, output_name = result.graph.meta.get("io_names", ("input", "output"))
    if result.target == "onnx":
        from .backends.onnx_mlp import save_onnx_mlp

        save_onnx_mlp(result.mlp, output, input_name, output_name,
                      doc=f"cnn2mlp {__version__} from {source}")
    else:
        from .backends.nnet import save_nnet

        save_nnet(result.mlp, output, options.get("input_range", (0.0, 1.0)), [
            f"cnn2mlp {__version__}: an MLP equivalent to {source}",
            f"input: the source's input {tuple(result.mlp.input_shape)} flattened row-major "
            f"(X_0..X_{result.mlp.layers[0].n_in - 1}); output: "
            f"{tuple(result.mlp.output_shape)} flattened (Y_0..)",
            "hidden layers ReLU, last layer linear; means 0 and ranges 1: no normalization"])


DEFAULT_MAX_DENSE_BYTES = 2**30


def opencv_spec(result: CompileResult):
    from .backends.opencv import AnnSpec

    uniform = result.graph.meta.get("uniform")
    if uniform is None:
        raise CompileError("the opencv target needs the unify-activation pass in --passes")
    names = {"Relu": "relu", "LeakyRelu": "leaky_relu", "Tanh": "tanh", "Identity": "identity"}
    scale, shift = result.graph.meta.get("input_affine", (None, None))
    return AnnSpec(names[uniform["activation"]], uniform["alpha"], scale, shift,
                   uniform["output_scale"], uniform["output_shift"], result.mlp.notes)


def refuse_non_finite(graph: Graph, model: str | Path, where: str) -> None:
    """NaN or Inf that the model's arithmetic creates (a negative variance, a division by
    zero) is refused like NaN weights, naming the node."""
    from .ir.analysis import non_finite_constants

    found = non_finite_constants(graph)
    if found:
        node, what = found[0]
        raise CompileError(f"{model}: node {node.name!r} ({node.op}) computes NaN/Inf in its "
                           f"{what} {where} (a negative variance? a division by zero?); fix "
                           "the model, or pass --allow-non-finite")


def io_names(graph: Graph, model: str | Path) -> tuple[str, str]:
    """The source model's input and output names (the ONNX tensors; Keras: input/output)."""
    from .frontends import model_kind

    try:
        if model_kind(model) == "onnx":
            return graph.input, graph.output
    except CompileError:
        pass
    return "input", "output"


def dense_preflight_from_shapes(graph: Graph, model: str | Path, limit: int,
                                target: str = "opencv") -> None:
    """Dense targets store every weight: refuse, before fusing anything, a network whose
    dense layers cannot fit (fusing N→1→N alone makes an N×N matrix)."""
    from .backends import DENSE_BYTES, check_format_limit
    from .ir.cost import dense_bytes_lower_bound

    need, widths = dense_bytes_lower_bound(graph)
    need = need // 8 * DENSE_BYTES[target]
    check_format_limit(target, need, str(model))
    if need > limit:
        shown = "-".join(map(str, widths[:8])) + ("-…" if len(widths) > 8 else "")
        what = "an OpenCV ANN_MLP" if target == "opencv" else f"a dense {target} network"
        raise CompileError(
            f"{model}: as {what} this network needs at least {need / 2**20:,.0f} MiB "
            f"of dense weights (layers {shown}), above --max-dense-bytes "
            f"{limit / 2**20:,.0f} MiB. The {target} format stores dense weights: use "
            "--target csr (sparse), or raise --max-dense-bytes")


def preflight(graph: Graph, model: str | Path, max_bytes: int | None) -> None:
    """Refuse, from the shapes alone, an MLP that would not fit."""
    from .ir.cost import default_max_bytes, estimate_size

    limit = default_max_bytes() if max_bytes is None else max_bytes
    size = estimate_size(graph)
    if size.bytes > limit:
        name, op, nnz = size.largest
        carried = (f" and up to {2 * size.carried:,} neurons carrying values past layers"
                   if size.carried else "")
        raise CompileError(
            f"{model}: the MLP would need about {size.nnz:,} non-zeros{carried} "
            f"({size.bytes / 2**30:.2g} GiB), above the limit of {limit / 2**30:.2g} GiB; "
            f"the largest layer is {name!r} ({op}, {nnz:,} non-zeros). Use a smaller "
            "--input-shape, or raise --max-bytes if the machine has the memory")


class Progress:
    """One status line on a terminal's stderr (``[ 5/17] conv-to-dense 3.1 s``), shown once
    a compile has run for ``after`` seconds and cleared at the end. Never on a pipe or a
    file, so that logs and error output stay one line."""

    def __init__(self, enabled: bool, after: float = 2.0) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.after = after
        self.start = time.perf_counter()
        self.shown = False

    def step(self, index: int, total: int, name: str) -> None:
        elapsed = time.perf_counter() - self.start
        if self.enabled and elapsed >= self.after:
            print(f"\r[{index + 1:>2}/{total}] {name:<24} {elapsed:6.1f} s", end="",
                  file=sys.stderr, flush=True)
            self.shown = True

    def done(self) -> None:
        if self.shown:
            print("\r" + " " * 44 + "\r", end="", file=sys.stderr, flush=True)


def print_ir_after(name: str, graph: Graph) -> None:
    print(f"=== IR after {name} ===\n{graph.dump()}", file=sys.stderr)


# ----------------------------------------------------------------------------- reporting
def layer_rows(mlp: Mlp) -> list[dict[str, Any]]:
    rows = []
    for i, layer in enumerate(mlp.layers):
        w = layer.weight
        nbytes = w.data.nbytes + w.indices.nbytes + w.indptr.nbytes + layer.bias.nbytes
        rows.append({"layer": i, "inputs": layer.n_in, "neurons": layer.n_out,
                     "carried": layer.carried, "nnz": int(w.nnz),
                     "density": w.nnz / max(1, layer.n_in * layer.n_out),
                     "bytes": int(nbytes), "activation": describe_activation(layer)})
    return rows


def describe_activation(layer) -> str:
    if layer.segments is None:
        return layer.activation
    return "mixed"


def activation_detail(layer) -> str:
    """``mixed (relu 144, identity 64)`` for a layer with per-neuron activations."""
    if layer.segments is None:
        return layer.activation
    counts: dict[str, int] = {}
    for start, stop, name, _ in layer.segments:
        counts[name] = counts.get(name, 0) + stop - start
    return "mixed (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")"


def format_table(result: CompileResult) -> str:
    rows = layer_rows(result.mlp)
    lines = [f"{'layer':>5} {'inputs':>9} {'neurons':>9} {'carried':>8} {'non-zeros':>12} "
             f"{'density':>9} {'bytes':>12}  activation"]
    for r, layer in zip(rows, result.mlp.layers):
        lines.append(f"{r['layer']:>5} {r['inputs']:>9} {r['neurons']:>9} {r['carried']:>8} "
                     f"{r['nnz']:>12} {r['density']:>9.2%} {r['bytes']:>12}  "
                     f"{activation_detail(layer)}")
    lines.append(f"{'total':>5} {'':>9} {sum(r['neurons'] for r in rows):>9} "
                 f"{sum(r['carried'] for r in rows):>8} {sum(r['nnz'] for r in rows):>12} "
                 f"{'':>9} {sum(r['bytes'] for r in rows):>12}")
    if result.multiply_adds:
        lines.append(f"the CNN does {result.multiply_adds:,} multiply-adds a sample; the MLP "
                     f"has {result.nnz:,} non-zeros ({result.nnz / result.multiply_adds:.2f}x)")
    lines.append("passes: " + ", ".join(f"{p.name} {p.seconds * 1e3:.1f} ms ({p.rewrites})"
                                        for p in result.pipeline.records))
    if result.mlp.dtype != np.float32:
        lines.append(f"precision: {result.mlp.dtype.name} (the model's own; weights, the "
                     "artifact and predict keep it)")
    pruned = result.stats.get("prune-neurons")
    if pruned:
        lines.append(f"prune-neurons removed {pruned['neurons']} neurons nothing read")
    pools = result.stats.get("maxpool-to-relu")
    if pools:
        lines.append(f"maxpool-to-relu added {pools['neurons']} neurons in "
                     f"{pools['relu_layers']} ReLU layers")
    for entry in result.graph.meta.get("approximations", []):
        lines.append(f"APPROXIMATE: {entry['node']} linearized under {entry['activation']} "
                     f"(eps {entry['epsilon']:.3g}): error bound {entry['bound_at_output']:.3g} "
                     "at the output")
    return "\n".join(lines)


def report_dict(result: CompileResult, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cnn2mlp": __version__, "model": str(args.model), "output": str(args.output),
        "target": result.target, "input_shape": list(result.mlp.input_shape),
        "output_shape": list(result.mlp.output_shape), "exact": result.exact,
        "dtype": result.mlp.dtype.name,
        "notes": result.mlp.notes, "layers": layer_rows(result.mlp),
        "totals": {"neurons": sum(l.n_out for l in result.mlp.layers), "nnz": result.nnz,
                   "cnn_multiply_adds": result.multiply_adds,
                   "nnz_per_multiply_add": (result.nnz / result.multiply_adds
                                            if result.multiply_adds else None)},
        "passes": [{"name": p.name, "seconds": p.seconds, "rewrites": p.rewrites}
                   for p in result.pipeline.records],
        "seconds": result.seconds,
        "check": result.check.as_dict() if result.check else None,
        "stats": result.stats,
        "approximations": result.graph.meta.get("approximations", []),
        "contract": contract(result),
    }


def contract(result: CompileResult) -> dict[str, Any]:
    """What a verifier user needs: how inputs and outputs are indexed, and whether a
    property of the source model carries over."""
    n_in = int(np.prod(result.mlp.input_shape))
    n_out = int(np.prod(result.mlp.output_shape))
    return {
        "input": f"X_0..X_{n_in - 1}: the model's input without the batch axis, shape "
                 f"{list(result.mlp.input_shape)}, flattened row-major in its own layout",
        "output": f"Y_0..Y_{n_out - 1}: the model's output (logits if a final Softmax was "
                  f"dropped), shape {list(result.mlp.output_shape)}, flattened row-major",
        "vnnlib": "a VNN-LIB property written for the source model applies to the MLP "
                  "unchanged" if result.exact else "the MLP is approximate: see approximations",
        "exact": result.exact,
    }


# ------------------------------------------------------------------------------------ CLI
def parse_dims(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of integers like 3,32,32") from None
    if not dims or min(dims) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: dims must be positive integers")
    return dims


def parse_bytes(text: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    value = text.strip().lower().removesuffix("b").removesuffix("i")
    scale = 1
    if value and value[-1] in units:
        value, scale = value[:-1], units[value[-1]]
    try:
        number = float(value) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 512M or 8G") from None
    if not math.isfinite(number) or number <= 0 or number >= 2**63:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive, finite size like 8G")
    return int(number)


def parse_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LO,HI (e.g. 0,1 or -1,1)") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise argparse.ArgumentTypeError(f"{text!r}: LO and HI must be finite numbers")
    if not low < high:
        raise argparse.ArgumentTypeError(f"{text!r}: LO must be below HI")
    return low, high


#: options whose value may start with "-" (a negative number): argparse would take it for
#: an option, so "--input-range -1,1" becomes "--input-range=-1,1" before parsing
SIGNED_OPTIONS = ("--input-range", "--max-bytes", "--max-dense-bytes", "--tolerance",
                  "--epsilon", "--check")


def join_signed_values(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in SIGNED_OPTIONS and i + 1 < len(argv) and argv[i + 1][:1] == "-" and \
                argv[i + 1][1:2] in tuple("0123456789.i"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cnn2mlp.compile",
        description="Compile a trained CNN into an equivalent MLP.",
        epilog="Trust: .onnx, .keras and .h5 files are read as data (no code in them runs; a "
               "Keras Lambda is refused). SavedModel folders, frozen .pb and .tflite files are "
               "converted and, with --check, run by TensorFlow itself: use them only from a "
               "trusted source. Compiled .npz files are loaded without unpickling.")
    p.add_argument("model", type=Path,
                   help="model file: .onnx, .keras, .h5, .tflite, a SavedModel folder or .pb")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output file; its suffix picks the target (.npz: csr, .xml: opencv, "
                        ".onnx: onnx, .nnet: nnet)")
    p.add_argument("--target", choices=["csr", "opencv", "onnx", "nnet"],
                   help="backend (default: from the suffix: .npz csr, .xml opencv, .onnx onnx "
                        "(MatMul/Add/Relu, for verifiers), .nnet nnet)")
    p.add_argument("--allow-approximate", action="store_true",
                   help="onnx/nnet: write a network that a linearization made approximate")
    p.add_argument("--xml-encoding", choices=["text", "base64"], default="text",
                   help="opencv target: decimal text (17 digits) or base64 binary doubles")
    p.add_argument("--max-dense-bytes", type=parse_bytes, metavar="SIZE",
                   default=DEFAULT_MAX_DENSE_BYTES,
                   help="opencv target: refuse dense weights above SIZE (default 1G)")
    p.add_argument("--output-tensor", metavar="TENSOR",
                   help="compile up to this tensor (ONNX) or layer (Keras) instead of the "
                        "model's output, e.g. the logits before an ArgMax")
    p.add_argument("--batch-axis", choices=["auto", "0", "none"], default="auto",
                   help="ONNX: whether the input's first axis is the batch (0) or the whole "
                        "input is one sample (none, as in W @ x models); auto: a symbolic or "
                        "size-1 first axis is the batch, a fixed vector or fixed first axis "
                        "above 1 is one sample")
    p.add_argument("--carry", choices=["auto", "activation", "identity"], default="auto",
                   help="DAGs: carry skipped values with the layer's own activation (ReLU: "
                        "1 or 2 neurons) or with identity neurons (1, per-neuron activation); "
                        "auto (default): identity for csr, activation for the others")
    p.add_argument("--input-shape", type=parse_dims, metavar="D1,D2,...",
                   help="input dims after the batch axis, where the model leaves them open")
    p.add_argument("--input-range", type=parse_range, default=(0.0, 1.0), metavar="LO,HI",
                   help="input domain for --check and bound analyses (default 0,1)")
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="compare with the reference runtime on N random inputs")
    p.add_argument("--tolerance", type=float, default=None,
                   help="--check fails above this error relative to max(1, |y|) (default "
                        "1e-4, or 1e-9 for a float64 model)")
    p.add_argument("--epsilon", type=float, metavar="EPS",
                   help="scale of avgpool-linearize (default: chosen to minimise the error)")
    p.add_argument("--report", type=Path, metavar="FILE.json", help="write a JSON report")
    p.add_argument("--passes", metavar="P1,P2,...",
                   help="pass pipeline to run instead of the target's default")
    p.add_argument("--kernel-py", type=Path, metavar="FILE.py",
                   help="also write a standalone numpy module that runs the .npz")
    p.add_argument("--print-ir-after-all", action="store_true",
                   help="print the IR after every pass (stderr)")
    p.add_argument("--max-bytes", type=parse_bytes, metavar="SIZE",
                   help="refuse MLPs estimated above SIZE (e.g. 8G; default: a quarter of RAM)")
    p.add_argument("--allow-non-finite", action="store_true",
                   help="accept NaN/Inf weights")
    p.add_argument("--quiet", action="store_true", help="print only errors and warnings")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"cnn2mlp {__version__}")
    return p


def run_cli(args: argparse.Namespace) -> int:
    passes = [s.strip() for s in args.passes.split(",") if s.strip()] if args.passes else None
    target = target_for(args.output, args.target)
    if args.kernel_py and target != "csr":
        raise CompileError("--kernel-py runs a .npz: it goes with the csr target")
    check_options(args)
    plan_outputs(args, target)
    ctx = context_for(target, input_range=args.input_range)
    ctx.options["max_dense_bytes"] = args.max_dense_bytes
    if args.epsilon is not None:
        ctx.options["avgpool-linearize.epsilon"] = args.epsilon
    if args.carry != "auto":
        ctx.options["linearize-dag.carry"] = args.carry
    result = compile_model(args.model, None, target=target, input_shape=args.input_shape,
                           passes=passes, ctx=ctx, print_ir=args.print_ir_after_all,
                           allow_non_finite=args.allow_non_finite, max_bytes=args.max_bytes,
                           output_tensor=args.output_tensor, batch_axis=args.batch_axis,
                           show_progress=not args.quiet)
    meta = {"source": str(args.model), "cnn2mlp": __version__}
    options = {"encoding": args.xml_encoding, "max_dense_bytes": args.max_dense_bytes,
               "allow_approximate": args.allow_approximate, "input_range": args.input_range}
    # Every output is staged; they replace their destinations together, or none does.
    with StagedOutputs() as outputs:
        staged = outputs.stage(args.output)
        write_target(result, staged, meta, options)
        if args.check:  # check the file as written, before it replaces anything
            result.check = check_against_reference(result, args, staged)
        if args.kernel_py:
            from .backends.csr import write_kernel

            write_kernel(outputs.stage(args.kernel_py), args.output, result.mlp,
                         module_path=args.kernel_py)
        if args.report:
            with open(outputs.stage(args.report), "w") as handle:
                json.dump(report_dict(result, args), handle, indent=2)
    for note in result.mlp.notes:
        print(f"note: {note}", file=sys.stderr)
    if not args.quiet:
        print(format_table(result))
        if result.check:
            print(("check passed: " if result.check.passed else "check FAILED: ")
                  + result.check.describe())
        print(f"wrote {args.output}")
    return 0


def check_options(args: argparse.Namespace) -> None:
    """Numbers argparse accepts but the compiler cannot use."""
    if args.check < 0:
        raise CompileError(f"--check {args.check}: the number of inputs cannot be negative")
    if args.tolerance is not None and not (math.isfinite(args.tolerance)
                                           and args.tolerance >= 0):
        raise CompileError(f"--tolerance {args.tolerance}: give a finite number >= 0")
    if args.epsilon is not None and not (math.isfinite(args.epsilon) and args.epsilon > 0):
        raise CompileError(f"--epsilon {args.epsilon}: give a finite number > 0")


#: suffixes that name a format: an output may not carry one that its content is not
FORMAT_SUFFIXES = {".npz": "a CSR artifact", ".xml": "an OpenCV XML", ".onnx": "an ONNX model",
                   ".nnet": "an NNet file", ".keras": "a Keras model", ".h5": "a Keras model",
                   ".hdf5": "an HDF5 file", ".pb": "a TensorFlow graph",
                   ".tflite": "a TFLite model", ".json": "a JSON report",
                   ".py": "a Python module"}


def plan_outputs(args: argparse.Namespace, target: str) -> None:
    """Before any work: no output may overwrite the model or another output (also through
    ``./``, ``..`` or a link), and no output may carry a suffix that names another format."""
    from .backends import TARGETS

    outputs = [("-o", args.output, TARGETS[target]), ("--report", args.report, ".json"),
               ("--kernel-py", args.kernel_py, ".py")]
    outputs = [(flag, Path(path), suffix) for flag, path, suffix in outputs if path is not None]
    model = Path(args.model).resolve()
    seen: dict[Path, str] = {}
    for flag, path, _ in outputs:
        dest = destination(path).resolve()
        if dest == model or (dest.exists() and model.exists() and os.path.samefile(dest, model)):
            raise CompileError(f"{flag} {path} is the model file itself; writing it would "
                               "destroy the model: choose another name")
        if dest in seen:
            raise CompileError(f"{flag} {path} and {seen[dest]} are the same file; give each "
                               "output its own name")
        seen[dest] = f"{flag} {path}"
    for flag, path, suffix in outputs:
        actual = path.suffix.lower()
        if actual in FORMAT_SUFFIXES and actual != suffix:
            raise CompileError(f"{flag} {path}: the suffix {actual} names "
                               f"{FORMAT_SUFFIXES[actual]}, but this output is "
                               f"{FORMAT_SUFFIXES[suffix]}; name it *{suffix}")
        check_writable(path)


def check_against_reference(result: CompileResult, args: argparse.Namespace,
                            artifact: Path) -> Comparison:
    """The written artifact against the original model's own runtime on ``--check`` random
    inputs, in batches sized to memory (a check of 1000 inputs on a wide model must not
    hold 1000 samples' activations at once)."""
    dtype = result.mlp.dtype  # a double model is checked in double
    tolerance = args.tolerance if args.tolerance is not None else DEFAULT_TOLERANCE[dtype.name]
    meta = result.graph.meta
    dropped = "logits" in meta
    run_reference, gives_logits = reference_runner(args.model, meta.get("logits"),
                                                   meta.get("output_tensor"),
                                                   batchless=meta.get("batch_axis", 0) is None)
    model = load_artifact(result, artifact)
    widths = [layer.n_out for layer in result.mlp.layers]
    per_sample = dtype.itemsize * (math.prod(result.mlp.input_shape) + 4 * max(widths)
                                   + sum(widths))
    batch = batch_size_for(per_sample, args.check)
    truth, truth_note = float64_truth(result, args)
    parts, truth_parts, reference_parts = [], [], []
    for x in input_batches(result.mlp.input_shape, args.check, batch, *args.input_range,
                           dtype=dtype):
        reference = run_reference(x)
        raise_if_terminated()
        got = model.predict(x)
        if dropped and not gives_logits:  # compare probabilities: softmax of our logits
            got = softmax(got)
        reference = np.asarray(reference).reshape(got.shape)
        parts.append(compare(reference, got, tolerance))
        if truth is not None:
            exact = np.asarray(truth(x)).reshape(got.shape)
            truth_parts.append(compare(exact, got, tolerance))
            reference_parts.append(compare(exact, reference, tolerance))
    comparison = merged(parts)
    comparison.reference = getattr(run_reference, "reference", "")
    comparison.truth_note = truth_note
    comparison.float32_slack = args.tolerance is None
    if truth_parts:
        comparison.truth_error = merged(truth_parts).max_rel_error
        comparison.reference_truth_error = merged(reference_parts).max_rel_error
    if not comparison.passed:
        raise CheckFailed(f"{args.model}: --check failed: {comparison.describe()}; "
                          f"{args.output} was not written")
    return comparison


def float64_truth(result: CompileResult, args: argparse.Namespace):
    """(a float64 evaluation of the original ONNX model, or None; why not): what a float32
    MLP is judged against when the float32 reference is itself as far from the truth."""
    from .check import truth_runner
    from .frontends import model_kind

    if result.mlp.dtype != np.float32 or model_kind(args.model) != "onnx":
        return None, ""
    meta = result.graph.meta
    return truth_runner(args.model, meta.get("logits") or meta.get("output_tensor"),
                        meta.get("batch_axis", 0) is None, result.multiply_adds * args.check)


def load_artifact(result: CompileResult, path: Path):
    if result.target == "opencv":
        from .backends.opencv import OpenCvModel

        return OpenCvModel(path, result.mlp.input_shape, result.mlp.output_shape)
    if result.target == "onnx":  # the emitted file, run by onnxruntime
        from .check import onnx_runner

        run = onnx_runner(path)

        class Emitted:
            predict = staticmethod(run)
        return Emitted()
    if result.target == "nnet":
        from .backends.nnet import NNetModel

        return NNetModel(path, result.mlp.input_shape, result.mlp.output_shape)
    from .backends.csr import load

    return load(path)


#: --check's default: |got - ref| / max(1, |ref|) allowed, per precision
DEFAULT_TOLERANCE = {"float32": 1e-4, "float64": 1e-9}


class CheckFailed(CompileError):
    """The compiled MLP differs from the reference beyond the tolerance."""


def on_sigterm(signum, frame) -> None:
    request_termination()  # in case the exception is swallowed where it lands
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = join_signed_values(sys.argv[1:] if argv is None else list(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0)
    previous = install_signal_handlers()
    try:
        return run_cli(args)
    except BaseException as exc:  # noqa: BLE001 — every failure becomes an exit code
        if args.debug and not isinstance(exc, (KeyboardInterrupt, Terminated, CheckFailed)):
            raise
        return report_failure(exc)
    finally:
        restore_signal_handlers(previous)


def report_failure(exc: BaseException) -> int:
    """One line on stderr and the exit code for a failed run. After SIGTERM every failure
    is the termination: the signal's exception can surface as another one (an import it
    interrupted fails as an ImportError, which a caller may turn into a CompileError)."""
    if isinstance(exc, Terminated) or termination_requested():
        print("cnn2mlp: terminated; nothing was written", file=sys.stderr)
        return 143
    if isinstance(exc, KeyboardInterrupt):
        print("cnn2mlp: interrupted; nothing was written", file=sys.stderr)
        return 130
    if isinstance(exc, CheckFailed):
        print(f"cnn2mlp: error: {exc}", file=sys.stderr)
        return 1
    if isinstance(exc, CompileError):
        print(f"cnn2mlp: error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, OSError):  # the disk is full, a file-size limit: the OS's words
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"cnn2mlp: error: {where}{exc.strerror or exc}; nothing was written",
              file=sys.stderr)
        return 2
    if not isinstance(exc, Exception):  # SystemExit and the like: not ours to translate
        raise exc
    print(f"cnn2mlp: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
    print("cnn2mlp: this is a bug in cnn2mlp; please report it with the model and "
          "command (run again with --debug for the traceback)", file=sys.stderr)
    return 1


def install_signal_handlers() -> dict:
    """SIGTERM unwinds like Ctrl-C (staged files are removed); exceeding a file-size limit
    is an OSError (EFBIG) rather than a silent kill by SIGXFSZ. Only in the main thread."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm)}
    # A blocked signal mask is inherited across exec (a parent's thread pool may block it):
    # unblock SIGTERM, or it would wait, pending, until the compile had finished.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    if hasattr(signal, "SIGXFSZ"):
        previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return previous


def restore_signal_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
