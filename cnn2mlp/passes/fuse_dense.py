from __future__ import annotations

from ..ir import Graph
from ._compose import compose, dense_map, fusion_is_cheap
from .base import Pass, PassContext, register_pass


@register_pass
class FuseDense(Pass):
    """Weight-matrix fusion: Dense → Dense with nothing between becomes one Dense,
    ``W2 (W1 x + b1) + b2 = (W2 W1) x + (W2 b1 + b2)``.

    Cost-aware: with ``ctx.fusion == "cost"`` it fuses only when a bound on the product's
    non-zeros does not exceed the two factors' (diagonal, permutation and selection factors
    always qualify; a max pool's recombination ``b + relu(a - b)`` doubles the next
    layer's reads and stays a layer of its own); with ``"always"`` (targets with no room
    for a linear layer) it fuses every pair. Preserves: the function exactly, up to float32
    rounding of the product.
    """

    name = "fuse-dense"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        if ctx.fusion == "never":
            return 0
        count = 0
        changed = True
        while changed:
            changed = False
            for first in graph:
                second = graph.single_consumer(first.output) if first.op == "Dense" else None
                if second is None or second.op != "Dense" or first not in graph:
                    continue
                w1, w2 = first.attrs["weight"], second.attrs["weight"]
                if ctx.fusion != "always" and not fusion_is_cheap(w1, w2):
                    continue
                second.attrs["weight"], second.attrs["bias"] = compose(dense_map(first),
                                                                       dense_map(second))
                second.attrs["input_blocks"] = first.attrs.get("input_blocks")
                second.inputs = [first.input]
                graph.remove_node(first)
                count += 1
                changed = True
        return count
