from __future__ import annotations

from ..ir import Graph, Node
from ..ir.conv_matrix import strided_positions
from ..ir.precision import real
from ..ir.structured import conv_structured
from .base import Pass, PassContext, register_pass


@register_pass
class ConvToDense(Pass):
    """Rewrites each Conv as a Dense whose weight is the convolution's matrix, kept as
    what generates it (``ir/structured.py``: product groups of the kernels and the
    positions, each kernel stored once).

    Row ``(o, *out_pos)`` holds ``K[o, c, *u]`` in column ``(c, *in_pos)`` for every kernel
    offset ``u`` that lands inside the input; padding contributes nothing. Built in
    O(parameters + positions) time and memory, never O(multiply-adds).

    Option ``conv-to-dense.fold_stride`` (default True): emit the strided matrix directly.
    When False, emit the stride-1 matrix followed by a Select of the strided positions,
    which the fold-stride pass then folds.

    Preserves: the function exactly (the weights are the kernel's values, unchanged).
    """

    name = "conv-to-dense"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        direct = ctx.options.fold_stride
        count = 0
        for node in graph:
            if node.op == "Conv":
                lower_conv(graph, node, direct)
                count += 1
        return count


def lower_conv(graph: Graph, node: Node, direct: bool) -> None:
    a = node.attrs
    in_shape = graph.shape(node.input)
    out_shape = graph.shape(node.output)
    strides = a["strides"] if direct else (1,) * len(a["strides"])
    weight, bias, full_shape = conv_structured(a["kernel"], a.get("bias"), in_shape, strides,
                                               a["pads"], a["dilations"], a["group"], real())
    node.op, node.attrs = "Dense", {"weight": weight, "bias": bias, "out_shape": full_shape}
    if full_shape == out_shape:
        return
    # Stride-1 matrix: keep every s-th output position through a Select.
    graph.values[node.output].shape = full_shape
    select = strided_positions(full_shape, a["strides"])
    out = node.output
    readers = graph.consumers(out)
    sel = graph.add_node("Select", [out], {"indices": select, "out_shape": out_shape},
                         name=f"{node.name}_stride")
    for reader in readers:
        if reader is not sel:
            reader.inputs = [sel.output if i == out else i for i in reader.inputs]
    if graph.output == out:
        graph.output = sel.output
