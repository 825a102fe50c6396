"""Size estimates from shapes alone: how big the MLP will be, before building any of it."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .geometry import window_axes
from .graph import Graph, Node

#: bytes per stored non-zero: a float32 value and an int32 column index
BYTES_PER_NNZ = 8


@dataclass
class SizeEstimate:
    nnz: int
    rows: int
    largest: tuple[str, str, int]   # (node name, op, nnz) of the biggest layer

    @property
    def bytes(self) -> int:
        return self.nnz * BYTES_PER_NNZ + self.rows * 4


def estimate_size(graph: Graph) -> SizeEstimate:
    total, rows, largest = 0, 0, ("", "", 0)
    for node in graph.nodes:
        n_out = graph.values[node.output].size
        nnz = node_nnz(graph, node)
        total += nnz
        rows += n_out
        if nnz > largest[2]:
            largest = (node.name, node.op, nnz)
    return SizeEstimate(total, rows, largest)


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
        if node.op == "AveragePool":
            return per_channel
        levels = math.ceil(math.log2(max(2, math.prod(a["kernel_shape"]))))
        return 4 * per_channel + 6 * n_out * levels  # tournament matrices, a rough upper size
    if node.op == "Dense":
        w = a["weight"]
        return int(w.nnz) if hasattr(w, "nnz") else int(np.count_nonzero(w))
    if node.op in ("Reshape", "Identity", "Softmax") or graph.values[node.output].size == 0:
        return 0
    return n_out  # element-wise ops, layout and padding: at most one entry per output


def window_taps(spatial, kernel, strides, dilations, pads, ceil_mode=False) -> int:
    """Sum over output positions of the kernel cells inside the input (separable per axis)."""
    taps = 1
    for ax in window_axes(spatial, kernel, strides, dilations, pads, ceil_mode):
        taps *= int(ax.inside().sum())
    return taps
