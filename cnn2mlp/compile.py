"""The Python API: :func:`compile_model` compiles a CNN into an MLP and writes it.

The driver of frontend → IR → passes → backend: it reads the model, refuses up front what
would not fit, runs the target's pipeline and writes the target's file. The command line
is ``cli.py`` (``python -m cnn2mlp.compile`` runs it), the report ``report.py``, the check
``check.py``; targets live in ``backends``.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Sequence

from . import __version__
from ._io import check_writable
from .backends import TargetOptions, target_for
from .errors import CompileError
from .frontends import load_model
from .ir import Graph
from .ir.domain import DEFAULT_DOMAIN, resolve_input_domain
from .ir.mlp import Mlp, NotAnMlpError
from .ir.precision import working_precision
from .passes import PassContext, Pipeline
from .progress import Progress
from .result import CompileResult

__all__ = ["CompileResult", "compile_model"]


def compile_model(model: str | Path, output: str | Path | None = None, *,
                  target: str | None = None, input_shape: Sequence[int] | None = None,
                  passes: Sequence[str] | Pipeline | None = None,
                  ctx: PassContext | None = None, print_ir: bool = False,
                  allow_non_finite: bool = False,
                  max_bytes: int | None = None,
                  output_tensor: str | None = None,
                  batch_axis: str = "auto",
                  show_progress: bool = False,
                  options: TargetOptions | None = None,
                  input_range: tuple[float, float] | None = None) -> CompileResult:
    """Compile ``model`` into an MLP; write it to ``output`` when given. ``target`` names
    the backend (default: from ``output``'s suffix, else "csr"); ``options`` are what its
    writer needs. ``output_tensor`` names a tensor (ONNX) or layer (Keras) to compile up
    to instead of the model's output. ``input_range`` is the input domain (default: what
    the model's leading scaling implies, else [0, 1]; see ``ir/domain.py``), also taken
    from ``ctx.input_range`` when that is not the default."""
    seconds: dict[str, float] = {}
    backend = target_for(output, target)
    options = options or TargetOptions()
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
        Pipeline(passes) if passes is not None else backend.pipeline())
    ctx = ctx or backend.context()
    for stated in (ctx.input_range, options.input_range):  # an API caller's own range
        if input_range is None and stated != DEFAULT_DOMAIN.range:
            input_range = stated
    domain = resolve_input_domain(graph, input_range)
    ctx.input_range = domain.range
    options = dataclasses.replace(options, input_range=domain.range)
    if ctx.max_bytes is None:
        from .ir.cost import default_max_bytes

        ctx.max_bytes = default_max_bytes() if max_bytes is None else max_bytes
    backend.check_shapes(graph, str(model), options)
    after_each = print_ir_after if print_ir else None
    progress = Progress(enabled=show_progress)
    try:
        report = pipeline.run(graph, ctx, after_each, progress.step)
    finally:  # an error's message starts a line of its own
        progress.done()
    if not allow_non_finite:
        refuse_non_finite(graph, model, "after compiling (an overflow)")
    try:
        with working_precision(graph.dtype):
            mlp = Mlp.from_graph(graph, output_shape)
    except NotAnMlpError as exc:
        raise CompileError(f"{model}: the pipeline left a graph that is not an MLP: {exc}; "
                           "check --passes") from exc
    result = CompileResult(mlp, graph, backend.name, report, seconds, stats=ctx.stats,
                           multiply_adds=multiply_adds, input_domain=domain)
    if output is not None:
        start = time.perf_counter()
        backend.write(mlp, graph.meta, output, options,
                      {"source": str(model), "cnn2mlp": __version__, "output": str(output)})
        seconds["backend"] = time.perf_counter() - start
    return result


def cnn_multiply_adds(graph: Graph) -> int:
    from .ir.cost import multiply_adds

    return multiply_adds(graph)


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


def preflight(graph: Graph, model: str | Path, max_bytes: int | None) -> None:
    """Refuse, from the shapes alone, an MLP that would not fit."""
    from .ir.cost import default_max_bytes, estimate_size

    limit = default_max_bytes() if max_bytes is None else max_bytes
    size = estimate_size(graph)
    if size.bytes > limit:
        name, op, nbytes = size.largest
        carried = (f" and up to {2 * size.carried:,} neurons carrying values past layers"
                   if size.carried else "")
        raise CompileError(
            f"{model}: the MLP would need about {size.nnz:,} non-zeros{carried} "
            f"({size.bytes / 2**30:.2g} GiB stored), above the limit of "
            f"{limit / 2**30:.2g} GiB; the largest layer is {name!r} ({op}, "
            f"{nbytes / 2**20:,.0f} MiB). Use a smaller --input-shape, or raise --max-bytes "
            "if the machine has the memory")


def print_ir_after(name: str, graph: Graph) -> None:
    print(f"=== IR after {name} ===\n{graph.dump()}", file=sys.stderr)


if __name__ == "__main__":  # python -m cnn2mlp.compile: the command line (cli.py)
    from .cli import main

    sys.exit(main())
