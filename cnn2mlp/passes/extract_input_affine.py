from __future__ import annotations

import numpy as np

from ..ir import Graph
from ..ir.linear import elementwise_affine
from .base import Pass, PassContext, register_pass

AFFINE_OPS = ("AddConst", "MulConst", "BatchNorm")


@register_pass
class ExtractInputAffine(Pass):
    """Moves the per-feature affine ops that read the graph input directly (input
    normalization ``(x - mean) / std``) out of the graph into
    ``graph.meta.input_affine = (scale, shift)`` over the flattened input, for targets
    that apply it themselves (OpenCV's ``input_scale``).

    Preserves: the function, with the input transformed by ``x * scale + shift`` first.
    """

    name = "extract-input-affine"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        shape = graph.shape(graph.input)
        n = int(np.prod(shape))
        scale, shift = np.ones(n), np.zeros(n)
        count = 0
        while True:
            readers = graph.consumers(graph.input)
            if len(readers) != 1 or readers[0].op not in AFFINE_OPS or graph.output == graph.input:
                break
            node = readers[0]
            s, t = elementwise_affine(node, shape)
            scale, shift = scale * s, shift * s + t
            graph.bypass(node)
            count += 1
        if count:
            old_scale, old_shift = graph.meta.input_affine or (np.ones(n), np.zeros(n))
            graph.meta.input_affine = (old_scale * scale, old_shift * scale + shift)
        return count
