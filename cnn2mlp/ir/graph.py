"""The graph IR: values with static per-sample shapes, nodes with an op and attributes.

Shapes in the IR never include the batch axis: a value of shape ``(C, H, W)`` is carried at
run time as an array ``(B, C, H, W)``. Every op therefore acts on each sample alone, which
is what makes a model expressible as an MLP over the flattened sample.

The graph is a DAG with one input and one output. A value may feed several nodes and a node
may read several values. Constant tensors (kernels, biases, sparse matrices) live in a
node's ``attrs``.

Graph queries are indexed so that a pass stays linear in the number of nodes: the producer
of a value and its consumers are kept in dictionaries, updated whenever a node is added or
removed or its ``inputs`` are assigned (assign a new list; never mutate ``inputs`` in place:
it is a tuple for that reason). ``graph.nodes`` is a topological order, recomputed lazily
(in O(n log n), stable: ties keep the order nodes were added in) after the graph changed.
"""
from __future__ import annotations

import copy
import heapq
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np

Shape = tuple[int, ...]


@dataclass
class Value:
    name: str
    shape: Shape

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class Node:
    """An op applied to named values. Equality is identity."""

    __slots__ = ("op", "_inputs", "outputs", "attrs", "name", "_graph", "_seq")

    def __init__(self, op: str, inputs: Iterable[str], outputs: Iterable[str],
                 attrs: dict[str, Any] | None = None, name: str = "") -> None:
        self.op = op
        self._inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.attrs = dict(attrs or {})
        self.name = name
        self._graph: Graph | None = None
        self._seq = 0

    @property
    def inputs(self) -> tuple[str, ...]:
        return self._inputs

    @inputs.setter
    def inputs(self, names: Iterable[str]) -> None:
        names = tuple(names)
        if self._graph is not None:
            self._graph._rewire(self, self._inputs, names)
        self._inputs = names

    @property
    def input(self) -> str:
        return self._inputs[0]

    @property
    def output(self) -> str:
        return self.outputs[0]

    def __repr__(self) -> str:
        return f"Node({self.op}, {list(self._inputs)} -> {list(self.outputs)}, name={self.name!r})"


@dataclass
class UniformActivation:
    """One activation for every layer (unify-activation, for OpenCV's ANN_MLP): the
    catalogue's op name, its parameter, and the output's undoing scale and shift."""

    activation: str
    alpha: float
    output_scale: Any
    output_shift: Any


@dataclass
class GraphMeta:
    """Facts one stage leaves for a later one (frontends, passes, backends, the check)."""

    #: the source model's tensor the graph now ends at, when a final Softmax was dropped
    logits: str | None = None
    #: the tensor (ONNX) or layer (Keras) --output-tensor compiled up to
    output_tensor: str | None = None
    #: False when the whole input is one sample (a model without a batch axis)
    batched: bool = True
    #: the source model's input and output names, for targets that name them
    io_names: tuple[str, str] = ("input", "output")
    #: (scale, shift) taken out of the first layer over the flattened input (OpenCV)
    input_affine: tuple[Any, Any] | None = None
    uniform: UniformActivation | None = None
    #: linearizations made (node, activation, epsilon, bounds): the MLP is approximate
    approximations: list[dict[str, Any]] = field(default_factory=list)


class Graph:
    """A DAG of :class:`Node` over named :class:`Value` s, with one input and one output."""

    def __init__(self, input_name: str, input_shape: Shape) -> None:
        self.values: dict[str, Value] = {input_name: Value(input_name, tuple(input_shape))}
        self.input = input_name
        self.output = input_name
        # Facts for the report: approximations, dropped ops, warnings.
        self.notes: list[str] = []
        # Facts for later stages (GraphMeta)
        self.meta = GraphMeta()
        # The precision weights are stored in (float64 for a double model); see ir.precision.
        self.dtype = np.dtype(np.float32)
        self._names = 0                              # for fresh_name
        self._next_seq = 0                           # insertion order of nodes
        self._members: dict[int, Node] = {}          # id(node) -> node, in insertion order
        self._producer: dict[str, Node] = {}
        self._consumers: dict[str, dict[int, Node]] = {}
        self._order: list[Node] | None = []

    # -- construction -------------------------------------------------------------------
    def fresh_name(self, hint: str) -> str:
        while True:
            name = f"{hint}_{self._names}"
            self._names += 1
            if name not in self.values:
                return name

    def add_node(self, op: str, inputs: list[str], attrs: dict[str, Any] | None = None,
                 name: str = "", output: str | None = None) -> Node:
        """Add a node, infer its output shape and return it."""
        from .ops import get_op

        node = Node(op, inputs, [output or self.fresh_name(name or op.lower())], attrs,
                    name or op)
        missing = [i for i in node.inputs if i not in self.values]
        if missing:
            raise ValueError(f"node {node.name} reads unknown values {missing}")
        shapes = get_op(op).infer_shape(node, [self.values[i].shape for i in node.inputs])
        for out, shape in zip(node.outputs, shapes):
            self.values[out] = Value(out, tuple(int(d) for d in shape))
        self._attach(node)
        return node

    def append(self, op: str, attrs: dict[str, Any] | None = None, name: str = "") -> Node:
        """Add a node reading the current output and make its result the output (chains)."""
        node = self.add_node(op, [self.output], attrs, name)
        self.output = node.output
        return node

    def insert_node_before(self, anchor: Node, op: str, inputs: list[str],
                           attrs: dict[str, Any] | None = None, name: str = "") -> Node:
        """Add a node that ``anchor`` (or a node after it) will read. The topological order
        puts it before its readers; kept for readability at call sites."""
        return self.add_node(op, inputs, attrs, name)

    def _attach(self, node: Node) -> None:
        node._graph = self
        node._seq = self._next_seq
        self._next_seq += 1
        self._members[id(node)] = node
        for out in node.outputs:
            self._producer[out] = node
        for name in node.inputs:
            self._consumers.setdefault(name, {})[id(node)] = node
        self._order = None

    def _rewire(self, node: Node, old: tuple[str, ...], new: tuple[str, ...]) -> None:
        for name in old:
            users = self._consumers.get(name)
            if users is not None:
                users.pop(id(node), None)
        for name in new:
            self._consumers.setdefault(name, {})[id(node)] = node
        self._order = None

    # -- queries --------------------------------------------------------------------------
    @property
    def nodes(self) -> list[Node]:
        """The nodes in a topological order (stable: ties in the order they were added)."""
        if self._order is None:
            self._order = self._toposort()
        return self._order

    @nodes.setter
    def nodes(self, nodes: Iterable[Node]) -> None:
        """Keep exactly ``nodes`` (a pass that filters the graph)."""
        keep = {id(n) for n in nodes}
        for node in list(self._members.values()):
            if id(node) not in keep:
                self._detach(node)

    def _toposort(self) -> list[Node]:
        pending = {}
        ready: list[tuple[int, int]] = []
        for key, node in self._members.items():
            count = sum(1 for i in node.inputs if i in self._producer)
            pending[key] = count
            if count == 0:
                ready.append((node._seq, key))
        heapq.heapify(ready)
        order = []
        while ready:
            _, key = heapq.heappop(ready)
            node = self._members[key]
            order.append(node)
            for out in node.outputs:
                for user_key, user in self._consumers.get(out, {}).items():
                    pending[user_key] -= sum(1 for i in user.inputs if i == out)
                    if pending[user_key] == 0:
                        heapq.heappush(ready, (user._seq, user_key))
        if len(order) != len(self._members):
            raise ValueError("the graph has a cycle")
        return order

    def __contains__(self, node: Node) -> bool:
        return self._members.get(id(node)) is node

    def __len__(self) -> int:
        return len(self._members)

    def shape(self, value: str) -> Shape:
        return self.values[value].shape

    def producer(self, value: str) -> Node | None:
        return self._producer.get(value)

    def consumers(self, value: str) -> list[Node]:
        return sorted(self._consumers.get(value, {}).values(), key=lambda n: n._seq)

    def single_consumer(self, value: str) -> Node | None:
        """The only node reading ``value``, or None if there are several or it is the output."""
        users = self._consumers.get(value, {})
        if len(users) != 1 or value == self.output:
            return None
        (user,) = users.values()
        # a node that reads the value twice (x + x) is not a single, simple reader
        return user if sum(1 for i in user.inputs if i == value) == 1 else None

    def ops(self) -> list[str]:
        return [node.op for node in self.nodes]

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self.nodes))

    # -- rewriting ------------------------------------------------------------------------
    def replace_uses(self, old: str, new: str) -> None:
        """Make every reader of ``old`` (and the graph output) read ``new`` instead."""
        for node in list(self._consumers.get(old, {}).values()):
            node.inputs = [new if i == old else i for i in node.inputs]
        if self.output == old:
            self.output = new

    def remove_node(self, node: Node) -> None:
        self._detach(node)
        for out in node.outputs:
            if not self._consumers.get(out) and out != self.output:
                self.values.pop(out, None)

    def _detach(self, node: Node) -> None:
        del self._members[id(node)]
        for out in node.outputs:
            if self._producer.get(out) is node:
                del self._producer[out]
        for name in node.inputs:
            users = self._consumers.get(name)
            if users is not None:
                users.pop(id(node), None)
                if not users:
                    del self._consumers[name]
        node._graph = None
        self._order = None

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

    def __deepcopy__(self, memo) -> "Graph":
        new = Graph(self.input, self.shape(self.input))
        new.values = copy.deepcopy(self.values, memo)
        new.output = self.output
        new.notes = copy.deepcopy(self.notes, memo)
        new.meta = copy.deepcopy(self.meta, memo)
        new.dtype = self.dtype
        new._names = self._names
        for node in sorted(self._members.values(), key=lambda n: n._seq):
            new._attach(Node(node.op, node.inputs, node.outputs,
                             copy.deepcopy(node.attrs, memo), node.name))
        return new

    # -- checks and printing --------------------------------------------------------------
    def verify(self) -> None:
        """Check the order, the indexes, and that every shape agrees with its op's rule."""
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
                if self._producer.get(out) is not node:
                    raise AssertionError(f"producer index of {out} is stale")
                known.add(out)
            for name in node.inputs:
                if self._consumers.get(name, {}).get(id(node)) is not node:
                    raise AssertionError(f"consumer index of {name} misses {node.name}")
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
        elif isinstance(val, (list, tuple)) and val and hasattr(val[0], "nnz"):
            parts.append(f"{key}=[{len(val)} matrices]")
        elif val is not None:
            parts.append(f"{key}={val}")
    return " [" + ", ".join(parts) + "]" if parts else ""
