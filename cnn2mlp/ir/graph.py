"""The graph IR: values with static per-sample shapes, nodes with an op and attributes.

Shapes in the IR never include the batch axis: a value of shape ``(C, H, W)`` is carried at
run time as an array ``(B, C, H, W)``. Every op therefore acts on each sample alone, which
is what makes a model expressible as an MLP over the flattened sample.

The graph is a DAG with one input and one output; nodes are kept in topological order.
Constant tensors (kernels, biases, sparse matrices) live in a node's ``attrs``.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

Shape = tuple[int, ...]


@dataclass
class Value:
    name: str
    shape: Shape

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    @property
    def input(self) -> str:
        return self.inputs[0]

    @property
    def output(self) -> str:
        return self.outputs[0]


class Graph:
    """A DAG of :class:`Node` over named :class:`Value` s, with one input and one output."""

    def __init__(self, input_name: str, input_shape: Shape) -> None:
        self.values: dict[str, Value] = {input_name: Value(input_name, tuple(input_shape))}
        self.nodes: list[Node] = []
        self.input = input_name
        self.output = input_name
        # Facts for the report: approximations, dropped ops, warnings.
        self.notes: list[str] = []
        # Facts for later stages, e.g. "logits": the source-model tensor now output.
        self.meta: dict[str, Any] = {}
        self._counter = itertools.count()

    # -- construction -------------------------------------------------------------------
    def fresh_name(self, hint: str) -> str:
        while True:
            name = f"{hint}_{next(self._counter)}"
            if name not in self.values:
                return name

    def add_node(self, op: str, inputs: list[str], attrs: dict[str, Any] | None = None,
                 name: str = "", output: str | None = None) -> Node:
        """Append a node, infer its output shape and return it."""
        from .ops import get_op

        node = Node(op, list(inputs), [output or self.fresh_name(name or op.lower())],
                    dict(attrs or {}), name or op)
        shapes = get_op(op).infer_shape(node, [self.values[i].shape for i in node.inputs])
        for out, shape in zip(node.outputs, shapes):
            self.values[out] = Value(out, tuple(int(d) for d in shape))
        self.nodes.append(node)
        return node

    def append(self, op: str, attrs: dict[str, Any] | None = None, name: str = "") -> Node:
        """Add a node reading the current output and make its result the output (chains)."""
        node = self.add_node(op, [self.output], attrs, name)
        self.output = node.output
        return node

    def insert_node_before(self, anchor: Node, op: str, inputs: list[str],
                           attrs: dict[str, Any] | None = None, name: str = "") -> Node:
        """Add a node and move it in front of ``anchor`` (keeps the topological order)."""
        node = self.add_node(op, inputs, attrs, name)
        self.nodes.pop()
        self.nodes.insert(self.nodes.index(anchor), node)
        return node

    # -- queries --------------------------------------------------------------------------
    def shape(self, value: str) -> Shape:
        return self.values[value].shape

    def producer(self, value: str) -> Node | None:
        for node in self.nodes:
            if value in node.outputs:
                return node
        return None

    def consumers(self, value: str) -> list[Node]:
        return [node for node in self.nodes if value in node.inputs]

    def single_consumer(self, value: str) -> Node | None:
        """The only node reading ``value``, or None if there are several or it is the output."""
        users = self.consumers(value)
        if len(users) != 1 or value == self.output:
            return None
        return users[0]

    def ops(self) -> list[str]:
        return [node.op for node in self.nodes]

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self.nodes))

    # -- rewriting ------------------------------------------------------------------------
    def replace_uses(self, old: str, new: str) -> None:
        """Make every reader of ``old`` (and the graph output) read ``new`` instead."""
        for node in self.nodes:
            node.inputs = [new if i == old else i for i in node.inputs]
        if self.output == old:
            self.output = new

    def remove_node(self, node: Node) -> None:
        self.nodes.remove(node)
        for out in node.outputs:
            if not self.consumers(out) and out != self.output:
                self.values.pop(out, None)

    def bypass(self, node: Node) -> None:
        """Remove a node whose output equals its input (an identity on the flat vector)."""
        src, dst = node.input, node.output
        if dst == self.output:
            # The graph output keeps its declared shape: rename the source instead.
            self.output = src
        self.replace_uses(dst, src)
        self.remove_node(node)

    def copy(self) -> "Graph":
        return copy.deepcopy(self)

    # -- checks and printing --------------------------------------------------------------
    def verify(self) -> None:
        """Check topological order and that every shape agrees with its op's shape rule."""
        from .ops import get_op

        known = {self.input}
        for node in self.nodes:
            missing = [i for i in node.inputs if i not in known]
            if missing:
                raise AssertionError(f"node {node.name} reads {missing} before they exist")
            shapes = get_op(node.op).infer_shape(node, [self.shape(i) for i in node.inputs])
            for out, shape in zip(node.outputs, shapes):
                if tuple(shape) != self.shape(out):
                    raise AssertionError(f"node {node.name}: {out} has shape {self.shape(out)}, "
                                         f"rule says {tuple(shape)}")
                known.add(out)
        if self.output not in known:
            raise AssertionError(f"graph output {self.output} is never produced")

    def __repr__(self) -> str:
        return f"<Graph\n{self.dump()}>"

    def dump(self) -> str:
        lines = [f"input {self.input}: {self.shape(self.input)}"]
        for node in self.nodes:
            extra = describe_attrs(node.attrs)
            ins = ", ".join(node.inputs)
            outs = ", ".join(f"{o}: {self.shape(o)}" for o in node.outputs)
            lines.append(f"  {outs} = {node.op}({ins}){extra}")
        lines.append(f"output {self.output}: {self.shape(self.output)}")
        return "\n".join(lines)


def describe_attrs(attrs: dict[str, Any]) -> str:
    parts = []
    for key, val in attrs.items():
        if hasattr(val, "nnz"):
            parts.append(f"{key}=sparse{val.shape} nnz={val.nnz}")
        elif isinstance(val, np.ndarray):
            parts.append(f"{key}=tensor{val.shape}")
        elif val is not None:
            parts.append(f"{key}={val}")
    return " [" + ", ".join(parts) + "]" if parts else ""
