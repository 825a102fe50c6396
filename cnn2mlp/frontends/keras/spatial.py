"""Helpers the spatial layers share: their rank, data_format (channels_last or
channels_first) and the layout the IR's convolutions want, Keras' padding rules, and
selections on Keras' own layout."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ...errors import CompileError, UnsupportedOpError
from ...ir.geometry import same_pads
from .registry import Layer, Tensor

if TYPE_CHECKING:
    from .importer import KerasImporter


def spatial_rank(lay: Layer) -> int:
    return 1 if lay.class_name.endswith("1D") else 2


def channels_first_layer(imp, lay) -> bool:
    fmt = lay.config.get("data_format") or "channels_last"
    if fmt not in ("channels_last", "channels_first"):
        raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: data_format {fmt!r}")
    return fmt == "channels_first"


def spatial_axis_offset(imp, lay) -> int:
    """Where the spatial axes start in the layer's own (Keras) layout of a sample."""
    return 1 if channels_first_layer(imp, lay) else 0


def spatial_input(imp, t: Tensor, lay) -> Tensor:
    """The input as (C, spatial...), as Conv and the pools want it: a channels_last
    layer's input is transposed (lazily); a channels_first layer's is that already."""
    if channels_first_layer(imp, lay):
        return imp.keras_layout(t, lay)
    return imp.internal_layout(t, lay)


def as_tuple(value, n: int) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),) * n


def keras_pads(imp, lay, spatial, kernel, strides, dilations) -> tuple[int, ...]:
    padding = lay.config.get("padding", "valid")
    nd = len(spatial)
    if padding == "valid":
        return (0,) * (2 * nd)
    if padding == "same":  # TensorFlow pads the extra cell at the end
        pairs = [same_pads(spatial[a], kernel[a], strides[a], dilations[a]) for a in range(nd)]
        return tuple(p[0] for p in pairs) + tuple(p[1] for p in pairs)
    if padding == "causal" and nd == 1:
        return ((kernel[0] - 1) * dilations[0], 0)
    raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: padding {padding!r}")


def spatial_pairs(value, nd: int) -> list[tuple[int, int]]:
    """(before, after) per spatial axis from Keras' forms: n, (a, b) in 1D, ((a, b), (c, d))
    or (n, m) in 2D."""
    if isinstance(value, int):
        return [(value, value)] * nd
    if nd == 1:
        flat = len(value) == 2 and isinstance(value[0], int)
        return [tuple(value)] if flat else [tuple(value[0])]
    return [(p, p) if isinstance(p, int) else tuple(p) for p in value]


def same_layout(imp: KerasImporter, lay: Layer, sources: list[Tensor]) -> list[Tensor]:
    """All inputs in one layout: channels-first if they all are, else Keras' own."""
    if all(t.channels_first for t in sources):
        return sources
    return [imp.keras_layout(t, lay) for t in sources]


def emit_multi(imp: KerasImporter, lay: Layer, op: str, sources: list[Tensor], attrs=None,
               channels_first: bool = False) -> Tensor:
    try:
        node = imp.graph.add_node(op, [t.value for t in sources], attrs, name=lay.name)
    except ValueError as exc:
        raise CompileError(f"{imp.path}: layer {lay.name!r} ({lay.class_name}): {exc}") from exc
    return Tensor(node.output, channels_first)


def select_keras(imp, lay, t: Tensor, index) -> Tensor:
    """A selection on Keras' own layout: ``index`` maps the (H, W, C) grid of flat
    positions to the output grid."""
    x = imp.keras_layout(t, lay)
    grid = np.arange(int(np.prod(imp.shape(x)))).reshape(imp.shape(x))
    picked = np.asarray(index(grid))
    return imp.emit(lay, "Select", x, {"indices": picked.ravel(), "out_shape": picked.shape})
