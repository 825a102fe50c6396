"""Reading an ONNX file: loading and checking it, and the part of its graph an output needs."""
from __future__ import annotations

from pathlib import Path

import onnx

from ...errors import CompileError
from .registry import first_line

#: the oldest opset whose operator semantics the converters implement
MIN_OPSET = 7



def read_model(path: str | Path) -> tuple[onnx.ModelProto, list[str]]:
    """The model (external data loaded from beside it) and notes for the report."""
    path = Path(path)
    if not path.is_file():
        raise CompileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CompileError(f"{path}: the file is empty; export the model again")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several types for garbage
        raise CompileError(f"{path}: not a readable ONNX file ({first_line(exc)}); "
                           "check that the file is complete and is an .onnx model") from exc
    if not model.graph.node and not model.graph.output:
        raise CompileError(f"{path}: not an ONNX model (no graph); check the file")
    return model, check_model(model, str(path))


def check_model(model: onnx.ModelProto, source: str) -> list[str]:
    """onnx.checker, except for graph outputs that declare no type or shape: onnxruntime
    runs such models and the shapes are inferred anyway, so they compile with a note."""
    try:
        onnx.checker.check_model(model)
        return []
    except Exception as exc:
        first = first_line(exc)
    untyped = [o.name for o in model.graph.output
               if not o.type.HasField("tensor_type") or not o.type.tensor_type.HasField("shape")]
    if untyped:
        patched = onnx.ModelProto()
        patched.CopyFrom(model)
        for out in patched.graph.output:
            if out.name in untyped:
                out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
                out.type.tensor_type.shape.dim.add().dim_param = "N"
        try:
            onnx.checker.check_model(patched)
            return [f"the model's output {', '.join(map(repr, untyped))} declares no type or "
                    "shape (onnx.checker rejects that; onnxruntime accepts it): inferred"]
        except Exception:
            pass
    raise CompileError(f"{source}: invalid ONNX model: {first}")

def needed_nodes(nodes: list[onnx.NodeProto], target: str) -> list[onnx.NodeProto]:
    """The nodes ``target`` depends on, in the file's order."""
    producer = {out: node for node in nodes for out in node.output if out}
    keep: set[int] = set()
    stack = [target]
    seen = set()
    while stack:
        name = stack.pop()
        if name in seen or name not in producer:
            continue
        seen.add(name)
        node = producer[name]
        keep.add(id(node))
        stack.extend(i for i in node.input if i)
        for attribute in node.attribute:  # subgraphs (If, Loop) read outer names too
            if attribute.g.node:
                stack.extend(i for n in attribute.g.node for i in n.input if i)
    return [node for node in nodes if id(node) in keep]


def needed_part(model: onnx.ModelProto, output: str | None) -> onnx.ModelProto:
    """A copy of the model with only the nodes ``output`` (default: the model's outputs)
    depends on: nothing else is inferred, measured or run."""
    targets = [output] if output else [o.name for o in model.graph.output]
    nodes = list(model.graph.node)  # one list: needed_nodes answers by identity
    wanted = {id(n) for t in targets for n in needed_nodes(nodes, t)}
    part = onnx.ModelProto()
    part.CopyFrom(model)
    del part.graph.node[:]
    part.graph.node.extend(n for n in nodes if id(n) in wanted)
    if output:  # that tensor alone is the output
        declared = [o for o in model.graph.output if o.name == output]
        del part.graph.output[:]
        part.graph.output.extend(declared or [onnx.ValueInfoProto(name=output)])
    return part
