"""The ONNX frontend's leaf: the converter registry and the helpers converters share
(attributes, constants, shape inference on one node). Every converter module and the
importer import this module; it imports neither."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import onnx
from onnx import numpy_helper

from ...errors import UnsupportedOpError

if TYPE_CHECKING:
    from .importer import OnnxImporter

#: Stands for the batch size inside folded shape computations.
BATCH = 1_000_003

Converter = Callable[["OnnxImporter", onnx.NodeProto], None]
CONVERTERS: dict[str, Converter] = {}


def converter(*op_types: str):
    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            CONVERTERS[op_type] = fn
        return fn
    return register


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def describe_bytes(count: int) -> str:
    """``100 MiB``, ``1.5 GiB``: a byte count as a person reads it."""
    if count >= 2**30:
        return f"{count / 2**30:.3g} GiB"
    return f"{count / 2**20:.3g} MiB"


def inferred_output_shape(node: onnx.NodeProto, data: dict[str, tuple[int, ...]],
                          consts: dict[str, np.ndarray], opset: int
                          ) -> tuple[int, ...] | None:
    """ONNX shape inference (with data propagation) on the node alone: the computed
    inputs as typed values of the given shapes, small constants as initializers (their
    values decide shapes: Resize's scales, Tile's repeats), large ones by shape."""
    from onnx import helper, shape_inference

    inputs, inits = [], []
    for name in dict.fromkeys(i for i in node.input if i):
        if name in data:
            inputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.DOUBLE,
                                                        list(data[name])))
            continue
        value = np.asarray(consts[name])
        if value.size <= 4096:
            inits.append(numpy_helper.from_array(value, name))
        else:
            elem = helper.np_dtype_to_tensor_dtype(value.dtype) if value.dtype.kind in "fiub" \
                else onnx.TensorProto.DOUBLE
            inputs.append(helper.make_tensor_value_info(name, elem, list(value.shape)))
    outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
               for o in node.output if o]
    graph = helper.make_graph([node], "probe", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        return None
    for vi in inferred.graph.output:
        if vi.name == node.output[0]:
            ttype = vi.type.tensor_type
            if not ttype.HasField("shape"):
                return None
            dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
            return None if any(d is None for d in dims) else tuple(dims)
    return None


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def constant_value(node: onnx.NodeProto) -> np.ndarray:
    a = node.attribute[0]
    if a.name == "value":
        return numpy_helper.to_array(a.t)
    if a.name == "sparse_value":
        raise UnsupportedOpError(f"Constant node {node.name!r}: sparse constants are not supported")
    value = onnx.helper.get_attribute_value(a)
    if isinstance(value, bytes):
        value = value.decode()
    return np.asarray(value, dtype=np.float32 if a.name.startswith("value_float") else None)


def as_float64(value: np.ndarray) -> np.ndarray:
    value = np.asarray(value)
    return value.astype(np.float64) if value.dtype.kind == "f" else value


def as_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
