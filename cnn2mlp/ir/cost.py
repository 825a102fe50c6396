"""Size estimates from shapes alone: how big the MLP will be, before building any of it."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .geometry import window_axes
from .graph import Graph, Node

#: bytes per stored non-zero: a float32 value and an int32 column index
BYTES_PER_NNZ = 8


def default_max_bytes() -> int:
    """A quarter of the physical memory: fusion and writing need room beyond the result."""
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


@dataclass
class SizeEstimate:
    nnz: int
    rows: int
    largest: tuple[str, str, int]   # (node name, op, bytes) of the biggest layer
    carried: int = 0                # neurons that carry values past layers (DAGs)
    stored: int = 0                 # bytes the layers' weights are stored in

    @property
    def bytes(self) -> int:
        # a carried neuron: one non-zero and a row (pointer, bias), twice when it is a pair
        return self.stored + self.rows * 4 + 2 * self.carried * (BYTES_PER_NNZ + 8)


def estimate_size(graph: Graph) -> SizeEstimate:
    """The MLP's non-zeros and the bytes its weights are stored in: a convolution as its
    kernels and positions (a structured matrix), anything else as CSR."""
    total, rows, stored, largest = 0, 0, 0, ("", "", 0)
    for node in graph.nodes:
        n_out = graph.values[node.output].size
        nnz = node_nnz(graph, node)
        nbytes = node_stored_bytes(graph, node, nnz)
        total += nnz
        rows += n_out
        stored += nbytes
        if nbytes > largest[2]:
            largest = (node.name, node.op, nbytes)
    return SizeEstimate(total, rows, largest, carried_estimate(graph), stored)


def node_stored_bytes(graph: Graph, node: Node, nnz: int) -> int:
    """A convolution: its kernel once, plus two indices an output position and two a tap
    of each border pattern (at most 3 a spatial axis); anything else: its CSR."""
    if node.op != "Conv":
        return nnz * BYTES_PER_NNZ
    kernel = node.attrs["kernel"]
    positions = math.prod(graph.shape(node.output)[1:])
    taps = math.prod(kernel.shape[1:])
    return kernel.size * 4 + 16 * positions + 16 * taps * 3 ** (kernel.ndim - 2)


def layer_levels(node: Node, graph: Graph) -> int:
    """The MLP layers a node becomes: 1 for an activation (ReLU6 and Clip too), ceil(log2 k)
    for a max over k values (a max pool, Maximum of k tensors), 0 for a linear op."""
    from .ops import get_op

    if node.op == "MaxPool":
        return math.ceil(math.log2(max(2, math.prod(node.attrs["kernel_shape"]))))
    if node.op in ("Maximum", "Minimum"):
        return math.ceil(math.log2(max(2, len(node.inputs))))
    if node.op == "Clip" or (get_op(node.op).activation and node.op != "Identity"):
        return 1
    return 0


def carried_estimate(graph: Graph) -> int:
    """Neurons a DAG's chain form spends carrying values past layers, from the shapes: a
    value made at layer d and last read by a layer e (through any linear ops) is held in
    the e - d - 1 layers between. Counted once per value and layer (a ReLU pair is the
    caller's factor of two)."""
    depth: dict[str, int] = {graph.input: 0}
    reads: dict[str, int] = {}
    order = graph.nodes
    for node in order:
        start = max((depth[i] for i in node.inputs), default=0)
        levels = layer_levels(node, graph)
        for out in node.outputs:
            depth[out] = start + levels
        reads[id(node)] = start + 1 if levels else -1  # the layer that reads its inputs
    need: dict[str, int] = {graph.output: depth.get(graph.output, 0) + 1}
    for node in reversed(order):
        if reads[id(node)] >= 0:
            last = reads[id(node)]
        else:  # a linear op: its inputs are needed wherever its output is
            last = max((need.get(o, 0) for o in node.outputs), default=0)
        for i in node.inputs:
            need[i] = max(need.get(i, 0), last)
    sources = {graph.input} | {node.output for node in order if layer_levels(node, graph)}
    return sum(graph.values[v].size * max(0, need.get(v, 0) - depth[v] - 1) for v in sources)


def node_nnz(graph: Graph, node: Node) -> int:
    """Non-zeros of the node's matrix once lowered (an estimate for max pooling)."""
    shape = graph.shape(node.input)
    n_out = graph.values[node.output].size
    a = node.attrs
    if node.op == "Conv":
        kernel = a["kernel"]
        taps = window_taps(shape[1:], kernel.shape[2:], a["strides"], a["dilations"], a["pads"])
        return kernel.shape[0] * kernel.shape[1] * taps
    if node.op in ("MaxPool", "AveragePool"):
        taps = window_taps(shape[1:], a["kernel_shape"], a["strides"], a["dilations"], a["pads"],
                           a.get("ceil_mode", False))
        per_channel = shape[0] * taps
        # the window tables (every output position × every kernel offset) are built too
        tables = n_out * math.prod(a["kernel_shape"])
        if node.op == "AveragePool":
            return max(per_channel, tables)
        levels = math.ceil(math.log2(max(2, math.prod(a["kernel_shape"]))))
        # tournament matrices, a rough upper size
        return max(4 * per_channel + 6 * n_out * levels, tables)
    if node.op == "Dense":
        w = a["weight"]
        return int(w.nnz) if hasattr(w, "nnz") else int(np.count_nonzero(w))
    if node.op in ("Reshape", "Identity", "Softmax") or graph.values[node.output].size == 0:
        return 0
    return n_out  # element-wise ops, layout and padding: at most one entry per output


def window_taps(spatial, kernel, strides, dilations, pads, ceil_mode=False) -> int:
    """Sum over output positions of the kernel cells inside the input (separable per axis),
    by arithmetic per output position: no (positions × kernel) table, whatever the pads."""
    taps = 1
    for ax in window_axes(spatial, kernel, strides, dilations, pads, ceil_mode):
        taps *= axis_taps(ax)
    return taps


def axis_taps(ax) -> int:
    if ax.size_out > 10**7:  # too many positions to count one by one: an upper bound
        return ax.size_out * min(ax.kernel, ax.size_in)
    start = ax.stride * np.arange(ax.size_out, dtype=np.int64) - ax.pad_begin
    # offsets u with 0 <= start + d*u <= n - 1, within [0, k - 1]
    first = np.maximum(0, -(start // ax.dilation))
    last = np.minimum(ax.kernel - 1, (ax.size_in - 1 - start) // ax.dilation)
    return int(np.maximum(0, last - first + 1).sum())


def dense_bytes_lower_bound(graph: Graph) -> tuple[int, list[int]]:
    """A lower bound on the bytes of a dense MLP (float64 weights, as OpenCV's ANN_MLP keeps
    them) made from ``graph``, from its shapes alone, before any matrix is built or fused:
    every activation stays a layer at least as wide as its values, and every linear map
    between two of them fuses into one dense matrix. Returns (bytes, layer widths)."""
    from .ops import get_op

    widths = [graph.values[graph.input].size]
    for node in graph.nodes:
        if get_op(node.op).activation and node.op != "Identity":
            widths.append(graph.values[node.output].size)
    last = graph.producer(graph.output)
    if last is None or not get_op(last.op).activation:
        widths.append(graph.values[graph.output].size)
    weights = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))
    return 8 * weights, widths


def multiply_adds(graph: Graph) -> int:
    """The multiply-adds the original network does for one sample, counted as the usual
    runtimes do them: a convolution's outputs times its taps (C_in / group × kernel), a
    dense layer's weights (all of them, zeros too, when they are stored dense; the
    non-zeros of a matrix the frontend built, such as a ConvTranspose's). Activations,
    pooling and element-wise affine maps are not counted (they are not the work that
    decides a network's speed). The yardstick for the MLP's non-zeros."""
    total = 0
    for node in graph.nodes:
        if node.op == "Conv":
            kernel = node.attrs["kernel"]
            total += graph.values[node.output].size * int(np.prod(kernel.shape[1:]))
        elif node.op == "Dense":
            w = node.attrs["weight"]
            total += int(w.nnz) if hasattr(w, "nnz") else int(w.size)
    return total
