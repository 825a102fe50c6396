from __future__ import annotations

from ..ir import Graph
from .base import Pass, PassContext, register_pass

WINDOW_OPS = ("Conv", "AveragePool")


@register_pass
class FoldPad(Pass):
    """Merges a zero, non-negative constant Pad of the spatial axes into the pads of the
    Conv that reads it (or an AveragePool with count_include_pad=1, where padded zeros
    count, exactly as the explicit Pad's zeros did).

    Preserves: the function exactly. Other pads are lowered by lower-linear.
    """

    name = "fold-pad"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        count = 0
        for pad in graph:
            if pad.op != "Pad" or pad.attrs.get("value", 0.0) != 0.0:
                continue
            reader = graph.single_consumer(pad.output)
            pads = pad.attrs["pads"]
            nd = len(pads) // 2
            if (reader is None or reader.op not in WINDOW_OPS or min(pads) < 0
                    or pads[0] or pads[nd]):  # the channel axis must not be padded
                continue
            if reader.op == "AveragePool" and (not reader.attrs.get("count_include_pad")
                                               or reader.attrs.get("ceil_mode")):
                continue  # ceil_mode's last-window rule counts explicit pads differently
            spatial = nd - 1
            old = reader.attrs["pads"]
            reader.attrs["pads"] = tuple(old[a] + pads[1 + a] for a in range(spatial)) + \
                tuple(old[spatial + a] + pads[nd + 1 + a] for a in range(spatial))
            graph.bypass(pad)
            count += 1
        return count
