"""Ops that move or copy values without arithmetic: Identity/Dropout/Cast, Flatten,
Reshape, Squeeze/Unsqueeze, Transpose, Pad, and (for DAGs) Concat, Split and Slice."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ...ir.precision import real
from .batch_moves import convert_batch_move
from .measure import measure_linear
from .registry import BATCH, as_str, attr, converter, inferred_output_shape

if TYPE_CHECKING:
    from .importer import OnnxImporter


@converter("Identity", "Dropout", "Cast", "CastLike")
def convert_identity(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
        training = imp.const(node, 2)
        if bool(np.asarray(training)):
            imp.fail(node, "training_mode=1; export the model in inference mode")
    if node.op_type == "Cast":
        to = attr(node, "to")
        if to not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
            imp.fail(node, "casts the data to a non-float type")
    imp.alias(node, imp.data(node))


@converter("Flatten")
def convert_flatten(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    full_rank = imp.sample_rank(x) + 1
    axis = attr(node, "axis", 1)
    if (axis + full_rank if axis < 0 else axis) != 1:
        imp.fail(node, f"axis {axis} mixes the batch axis with others; only axis 1 is supported")
    size = int(np.prod(imp.graph.shape(x), dtype=np.int64))
    imp.emit(node, "Reshape", [x], {"shape": (size,)}, output=node.output[0])


@converter("Reshape")
def convert_reshape(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    if imp.opset < 5:
        target = list(attr(node, "shape"))
    else:
        target = [int(d) for d in imp.const(node, 1).ravel()]
    sample = imp.graph.shape(x)
    full = (BATCH,) + sample
    allowzero = attr(node, "allowzero", 0)
    resolved = [full[i] if d == 0 and not allowzero else d for i, d in enumerate(target)]
    if imp.batch_is_one and resolved and resolved[0] == 1:
        resolved[0] = BATCH  # a model exported with batch 1 hard-codes it
    if resolved.count(-1) == 1:
        known = math.prod(d for d in resolved if d != -1)
        total = math.prod(full)
        if known <= 0 or total % known:
            imp.fail(node, f"cannot reshape (N,{sample}) to {target} keeping the batch axis "
                           "first")
        resolved[resolved.index(-1)] = total // known
    if not resolved or resolved[0] != BATCH or math.prod(resolved[1:]) != math.prod(sample):
        imp.fail(node, f"target {target} does not keep the batch axis first; "
                       "only per-sample reshapes can become an MLP")
    imp.emit(node, "Reshape", [x], {"shape": tuple(resolved[1:])}, output=node.output[0])


@converter("Squeeze", "Unsqueeze")
def convert_squeeze(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    sample = list(imp.graph.shape(x))
    if imp.opset >= 13 and len(node.input) > 1 and node.input[1]:
        axes = [int(a) for a in imp.const(node, 1).ravel()]
    else:
        axes = attr(node, "axes", None)
    if node.op_type == "Squeeze":
        if axes is None:
            shape = [d for d in sample if d != 1]
        else:
            drop = {imp.sample_axis(node, a, len(sample) + 1) for a in axes}
            if any(sample[a] != 1 for a in drop):
                imp.fail(node, "squeezes an axis whose size is not 1")
            shape = [d for i, d in enumerate(sample) if i not in drop]
    else:
        out_rank = len(sample) + 1 + len(axes)
        add = sorted(imp.sample_axis(node, a, out_rank) for a in axes)
        shape = sample
        for a in add:
            shape.insert(a, 1)
    imp.emit(node, "Reshape", [x], {"shape": tuple(shape)}, output=node.output[0])


@converter("Transpose")
def convert_transpose(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    rank = imp.sample_rank(x) + 1
    perm = attr(node, "perm", list(reversed(range(rank))))
    if perm[0] != 0:
        convert_batch_move(imp, node, x, f"perm {list(perm)} moves the batch axis")
        return
    imp.emit(node, "Transpose", [x], {"perm": tuple(p - 1 for p in perm[1:])},
             output=node.output[0])


@converter("Pad")
def convert_pad(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    mode = as_str(attr(node, "mode", "constant"))
    if mode != "constant":  # edge, reflect, wrap: every output copies an input
        select_by_reference(imp, node, x)
        return
    rank = imp.sample_rank(x) + 1
    if imp.opset < 11:
        pads, value = list(attr(node, "pads")), float(attr(node, "value", 0.0))
    else:
        pads = [int(p) for p in imp.const(node, 1).ravel()]
        cv = imp.const(node, 2, optional=True)
        value = float(np.asarray(cv).ravel()[0]) if cv is not None and np.size(cv) else 0.0
        axes = imp.const(node, 3, optional=True)
        if axes is not None:
            full = [0] * (2 * rank)
            axes = [int(a) + rank if a < 0 else int(a) for a in np.ravel(axes)]
            for i, a in enumerate(axes):
                full[a], full[rank + a] = pads[i], pads[len(axes) + i]
            pads = full
    if len(pads) != 2 * rank:
        imp.fail(node, f"pads {pads} do not fit rank {rank}")
    if pads[0] or pads[rank]:
        imp.fail(node, "pads the batch axis")
    sample_pads = tuple(pads[1:rank]) + tuple(pads[rank + 1:])
    imp.emit(node, "Pad", [x], {"pads": sample_pads, "value": value}, output=node.output[0])


@converter("Concat")
def convert_concat(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    names = [i for i in node.input if i]
    computed = [i for i in names if not imp.is_const(i)]
    values = [imp.data_by_name(node, i) if not imp.is_const(i) else
              constant_value_of(imp, node, i, imp.data_by_name(node, computed[0]))
              for i in names]
    rank = imp.sample_rank(values[0]) + 1
    axis = imp.sample_axis(node, attr(node, "axis", 1 if imp.opset < 4 else None), rank)
    imp.emit(node, "Concat", values, {"axis": axis}, output=node.output[0])


def constant_value_of(imp: OnnxImporter, node: onnx.NodeProto, name: str, x: str) -> str:
    """A constant that is the same in every sample (a ViT's class token, expanded to the
    batch) as a value of the graph: a layer with no weights whose bias is the constant."""
    import scipy.sparse as sp

    value = np.asarray(imp.consts[name], np.float64)
    if name not in imp.batch_consts and not (imp.batch_is_one and value.shape[:1] == (1,)):
        imp.fail(node, f"concatenates the constant {name!r} of shape {value.shape}, whose first "
                       "axis is not the batch's, with computed values")
    sample = value.shape[1:]
    n_in = imp.graph.values[x].size
    weight = sp.csr_array((int(np.prod(sample)), n_in), dtype=real())
    return imp.emit(node, "Dense", [x], {"weight": weight, "bias": value.reshape(-1).astype(real()),
                                         "out_shape": sample})


def select_block(imp: OnnxImporter, node: onnx.NodeProto, x: str, index, output: str) -> None:
    """``y = x[index]`` (per sample) as a Select of flat positions."""
    shape = imp.graph.shape(x)
    grid = np.arange(int(np.prod(shape))).reshape(shape)[index]
    if grid.size == 0:
        imp.fail(node, "selects no values")
    imp.emit(node, "Select", [x], {"indices": grid.ravel(), "out_shape": grid.shape},
             output=output)


@converter("Split")
def convert_split(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    shape = imp.graph.shape(x)
    axis = imp.sample_axis(node, attr(node, "axis", 0), len(shape) + 1)
    outputs = [o for o in node.output]
    if imp.opset >= 13 and len(node.input) > 1 and node.input[1]:
        sizes = [int(v) for v in imp.const(node, 1).ravel()]
    elif attr(node, "split") is not None:
        sizes = [int(v) for v in attr(node, "split")]
    else:  # equal parts; opset 18's num_outputs lets the last one be smaller
        parts = len(outputs)
        step = -(-shape[axis] // parts)
        sizes = [min(step, shape[axis] - i * step) for i in range(parts)]
    if sum(sizes) != shape[axis] or len(sizes) != len(outputs) or min(sizes) < 0:
        imp.fail(node, f"split sizes {sizes} do not divide axis size {shape[axis]} into "
                       f"{len(outputs)} outputs")
    start = 0
    for size, out in zip(sizes, outputs):
        if out:
            index = [slice(None)] * len(shape)
            index[axis] = slice(start, start + size)
            select_block(imp, node, x, tuple(index), out)
        start += size


@converter("Slice")
def convert_slice(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    shape = imp.graph.shape(x)
    rank = len(shape) + 1
    if imp.opset < 10:
        starts, ends = attr(node, "starts"), attr(node, "ends")
        axes, steps = attr(node, "axes", list(range(len(starts)))), [1] * len(starts)
    else:
        starts, ends = imp.const(node, 1).ravel(), imp.const(node, 2).ravel()
        axes = imp.const(node, 3, optional=True)
        axes = list(range(len(starts))) if axes is None else axes.ravel()
        steps = imp.const(node, 4, optional=True)
        steps = [1] * len(starts) if steps is None else steps.ravel()
    index = [slice(None)] * len(shape)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = int(axis) + rank if axis < 0 else int(axis)
        if axis == 0:
            if (int(start), int(step)) != (0, 1) or int(end) < BATCH:
                imp.fail(node, "slices the batch axis; only per-sample slices can become an "
                               "MLP")
            continue
        index[imp.sample_axis(node, axis, rank)] = slice(int(start), int(end), int(step))
    select_block(imp, node, x, tuple(index), node.output[0])




def index_grid(imp: OnnxImporter, x: str) -> np.ndarray:
    """``(1, *sample_shape)``: each entry its own flat index (exact in float64)."""
    shape = imp.graph.shape(x)
    return np.arange(int(np.prod(shape)), dtype=np.float64).reshape((1,) + shape)


@converter("DepthToSpace", "SpaceToDepth", "Tile", "Gather", "GatherElements")
def convert_selection(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """Ops that only move or copy values (constant indices, repeats, block sizes)."""
    for i in node.input[1:]:
        if i and not imp.is_const(i):
            imp.fail(node, f"input {i!r} is computed from the input; only constant "
                           "indices and repeats can become an MLP")
    x = imp.data(node)
    if node.op_type in ("Gather", "GatherElements"):
        imp.sample_axis(node, attr(node, "axis", 0), imp.sample_rank(x) + 1)  # not the batch
    select_by_reference(imp, node, x)


@converter("Expand")
def convert_expand(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """Broadcasting a computed tensor to a constant shape copies values: a selection. The
    shape may name the batch (as the sentinel, or 1) but not add axes before it."""
    x = imp.data(node)
    if not imp.is_const(node.input[1]):
        imp.fail(node, "the target shape is computed from the input; it must be constant")
    shape = np.asarray(imp.const(node, 1), np.int64).ravel().copy()
    full_rank = imp.sample_rank(x) + 1
    if len(shape) > full_rank:
        imp.fail(node, f"shape {shape.tolist()} adds axes before the batch axis")
    if len(shape) == full_rank:
        if shape[0] not in (1, BATCH):
            imp.fail(node, f"shape {shape.tolist()} expands the batch axis")
        shape[0] = 1
    select_by_reference(imp, node, x, {node.input[1]: shape})


def select_by_reference(imp: OnnxImporter, node: onnx.NodeProto, x: str,
                        extra: dict | None = None) -> None:
    """Run ONNX's reference implementation on a grid of flat indices: each output reads
    the input entry whose index it holds; a Select of those indices is the op, exactly.
    The output's size is known from shape inference and checked first."""
    n_out = probe_size(imp, node, x, extra)
    imp.check_values(node, n_out, "its output")
    (out,) = imp.reference(node, {x: index_grid(imp, x), **batch_sizes(imp, node, 1),
                                  **(extra or {})})[:1]
    out = np.asarray(out)
    n_in = imp.graph.values[x].size
    if out.ndim == 0 or out.shape[0] != 1:
        imp.fail(node, "mixes the batch axis with others; only per-sample ops can become "
                       "an MLP")
    if out.size and (np.any(out != np.round(out)) or out.min() < 0 or out.max() >= n_in):
        imp.fail(node, "does not only move or copy values")
    imp.emit(node, "Select", [x], {"indices": out.ravel().astype(np.int64),
                                   "out_shape": out.shape[1:]}, output=node.output[0])


def probe_size(imp: OnnxImporter, node: onnx.NodeProto, x: str,
               extra: dict | None = None) -> int:
    """Values in the node's output for one sample, from shape inference (nothing run). A
    node whose shape inference cannot tell is refused: running it to find out could
    allocate anything."""
    overrides = {**batch_sizes(imp, node, 1), **(extra or {})}
    shape = inferred_output_shape(node, {x: (1,) + imp.graph.shape(x)},
                                  {**imp.consts, **overrides}, imp.opset)
    if shape is None:
        imp.fail(node, "its output shape cannot be inferred from the model's constants, so "
                       "its size cannot be checked before it is built")
    return math.prod(shape)


@converter("Resize", "Upsample")
def convert_resize(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """Nearest resizing copies values (a selection); linear and cubic resizing are fixed
    weights per output (a matrix, measured on basis vectors with ONNX's reference, so
    every coordinate-transformation and rounding mode means what ONNX says)."""
    x = imp.data(node)
    for i in node.input[1:]:
        if i and not imp.is_const(i):
            imp.fail(node, f"input {i!r} (scales or sizes) is computed; it must be constant")
    if as_str(attr(node, "mode", "nearest")) == "nearest":
        select_by_reference(imp, node, x)
        return
    linear_by_reference(imp, node, x)


def batch_sizes(imp: OnnxImporter, node: onnx.NodeProto, batch: int) -> dict:
    """Resize's ``sizes`` (input 3) name the batch too: evaluate with the batch we feed.
    ``scales`` must leave the batch alone."""
    if node.op_type != "Resize":
        return {}
    if len(node.input) > 2 and node.input[2] and imp.opset >= 11:
        scales = np.asarray(imp.const(node, 2)).ravel()
        if scales.size and scales[0] != 1 and not attr(node, "axes", None):
            imp.fail(node, "scales the batch axis")
    if len(node.input) > 3 and node.input[3]:
        sizes = np.asarray(imp.const(node, 3)).astype(np.int64).copy()
        if attr(node, "axes", None) is None:
            sizes[0] = batch
        return {node.input[3]: sizes}
    return {}




def linear_by_reference(imp: OnnxImporter, node: onnx.NodeProto, x: str) -> None:
    """A linear op measured with ONNX's reference implementation (``measure_linear``)."""
    n_out = probe_size(imp, node, x)

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(imp.reference(node, {x: batch,
                                               **batch_sizes(imp, node, len(batch))})[0])

    measure_linear(imp, node, x, run, n_out, node.output[0])
