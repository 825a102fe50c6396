from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, get_op
from ..ir import weights
from ..ir.activations import ALPHA_OPS
from .base import Pass, PassContext, register_pass


@register_pass
class PruneNeurons(Pass):
    """Removes neurons that nothing reads: in a chain ``Dense_k → f_k → Dense_{k+1}``, a
    row of ``Dense_k`` whose column in ``Dense_{k+1}`` is all zeros (a convolution output
    that a pool's windows never cover, a carried value the next layer does not use) is
    dropped from ``W_k``, ``b_k`` and the activation, and the column from ``W_{k+1}``.
    Layers are visited from the output back, so that pruning cascades.

    Preserves: the function exactly (a removed neuron contributed zero to every later
    value, whatever its activation). Records the neurons removed in ``ctx.stats``.
    """

    name = "prune-neurons"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        layers = chain_layers(graph)
        removed = 0
        for (dense, act), (reader, _) in reversed(list(zip(layers[:-1], layers[1:]))):
            w_next = reader.attrs["weight"]
            used = used_columns(w_next)
            if used.all():
                continue
            keep = np.flatnonzero(used)
            if len(keep) == 0:  # nothing is read: keep one (inert) neuron, layers need width
                keep = np.array([0])
            if len(keep) == w_next.shape[1]:
                continue
            removed += w_next.shape[1] - len(keep)
            shrink(graph, dense, act, keep)
            reader.attrs["weight"] = w_next[:, keep] if isinstance(w_next, np.ndarray) else \
                weights.select_columns(w_next, keep)
            if reader.attrs.get("input_blocks") is not None:  # the kept columns' blocks
                reader.attrs["input_blocks"] = tuple(int(v) for v in np.unique(
                    np.searchsorted(keep, reader.attrs["input_blocks"])))
        if removed:
            ctx.stats.setdefault(self.name, {"neurons": 0})["neurons"] += removed
        return removed


def chain_layers(graph: Graph) -> list[tuple[Node, Node | None]]:
    """(Dense, its activation or None) for a chain graph; [] for anything else."""
    layers: list[tuple[Node, Node | None]] = []
    current = graph.input
    for node in graph.nodes:
        if list(node.inputs) != [current] or len(graph.consumers(current)) > 1:
            return []
        if node.op == "Dense":
            layers.append((node, None))
        elif get_op(node.op).activation and layers and layers[-1][1] is None:
            layers[-1] = (layers[-1][0], node)
        elif not (node.op == "Reshape" and node.output == graph.output):
            return []
        current = node.output
    # only Dense → activation → Dense boundaries are prunable: both nodes needed
    return layers


def shrink(graph: Graph, dense: Node, act: Node | None, keep: np.ndarray) -> None:
    dense.attrs["weight"] = weights.select_rows(dense.attrs["weight"], keep)
    if dense.attrs.get("bias") is not None:
        dense.attrs["bias"] = np.asarray(dense.attrs["bias"])[keep]
    if "carried_rows" in dense.attrs:
        dense.attrs["carried_rows"] = dense.attrs["carried_rows"][keep]
        dense.attrs["carried"] = int(dense.attrs["carried_rows"].sum())
    dense.attrs.pop("out_shape", None)
    graph.values[dense.output].shape = (len(keep),)
    if act is not None:
        graph.values[act.output].shape = (len(keep),)
        if act.op == "MixedActivation":
            act.attrs["segments"] = keep_segments(act.attrs["segments"], keep)
            if len(act.attrs["segments"]) == 1:  # one activation left: a plain node
                _, _, op, alpha = act.attrs["segments"][0]
                act.op, act.attrs = op, ({"alpha": alpha} if op in ALPHA_OPS else {})


def keep_segments(segments, keep: np.ndarray):
    """The runs of a mixed activation after keeping the neurons ``keep`` (sorted)."""
    out = []
    for start, stop, op, alpha in segments:
        lo, hi = np.searchsorted(keep, [start, stop])
        if hi > lo:
            if out and out[-1][2:] == (op, alpha) and out[-1][1] == lo:
                out[-1] = (out[-1][0], int(hi), op, alpha)
            else:
                out.append((int(lo), int(hi), op, alpha))
    return out


def used_columns(w) -> np.ndarray:
    """Which columns a weight reads with a non-zero (a structured weight: which it reads
    at all; a kernel's zero taps are rare enough to keep)."""
    if isinstance(w, np.ndarray):
        return np.any(w != 0, axis=0)
    if weights.is_structured(w):
        return weights.column_counts(w) > 0
    w = weights.as_csr(w)
    return np.bincount(w.indices[w.data != 0], minlength=w.shape[1]) > 0
