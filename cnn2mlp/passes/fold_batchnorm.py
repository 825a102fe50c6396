from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..ir import Graph, Node
from ..ir.ops import batchnorm_affine
from ..ir.precision import real
from .base import Pass, PassContext, register_pass


@register_pass
class FoldBatchNorm(Pass):
    """Folds an inference BatchNorm into the Conv or Dense that feeds it (and nothing else):
    ``scale * (K * x + b) + shift = (scale K) * x + (scale b + shift)`` per channel.

    Preserves: the function exactly (float64 arithmetic, rounded once to float32).
    A BatchNorm with no such producer is left for fold-affine after lowering.
    """

    name = "fold-batchnorm"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        count = 0
        for bn in graph:
            if bn.op != "BatchNorm":
                continue
            source = graph.producer(bn.input)
            if source is None or graph.single_consumer(bn.input) is not bn:
                continue
            if source.op == "Conv":
                fold_into_conv(source, bn)
            elif source.op == "Dense" and len(graph.shape(bn.input)) >= 1:
                fold_into_dense(graph, source, bn)
            else:
                continue
            graph.bypass(bn)
            count += 1
        return count


def fold_into_conv(conv: Node, bn: Node) -> None:
    scale, shift = batchnorm_affine(bn.attrs)
    kernel = conv.attrs["kernel"].astype(np.float64)
    bias = conv.attrs.get("bias")
    bias = np.zeros(len(scale)) if bias is None else bias.astype(np.float64)
    conv.attrs["kernel"] = (kernel * scale.reshape((-1,) + (1,) * (kernel.ndim - 1))
                            ).astype(real())
    conv.attrs["bias"] = (bias * scale + shift).astype(real())


def fold_into_dense(graph: Graph, dense: Node, bn: Node) -> None:
    shape = graph.shape(bn.input)
    scale, shift = batchnorm_affine(bn.attrs)
    per_channel = int(np.prod(shape[1:]))
    scale, shift = np.repeat(scale, per_channel), np.repeat(shift, per_channel)
    w = dense.attrs["weight"]
    if sp.issparse(w):
        w = sp.csr_array(w)
        w.data = (w.data * np.repeat(scale, np.diff(w.indptr))).astype(real())
    else:
        w = (w * scale[:, None]).astype(real())
    bias = dense.attrs.get("bias")
    bias = np.zeros(len(scale)) if bias is None else bias.astype(np.float64)
    dense.attrs["weight"], dense.attrs["bias"] = w, (bias * scale + shift).astype(real())
