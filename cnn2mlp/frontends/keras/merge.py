"""Layers that join a Functional graph's branches: Add, Subtract, Average, Maximum,
Minimum, Concatenate; Multiply and Dot are refused as products."""
from __future__ import annotations

from ...errors import CompileError, UnsupportedOpError
from .registry import merge_layer
from .spatial import emit_multi, same_layout


@merge_layer("Add", "Subtract", "Average")
def convert_add(imp, lay, sources):
    sources = same_layout(imp, lay, sources)
    n = len(sources)
    coeffs = {"Add": (1.0,) * n, "Subtract": (1.0, -1.0), "Average": (1.0 / n,) * n}
    if lay.class_name == "Subtract" and n != 2:
        raise CompileError(f"{imp.path}: layer {lay.name!r}: Subtract takes two tensors")
    return emit_multi(imp, lay, "Sum", sources, {"coeffs": coeffs[lay.class_name]},
                      sources[0].channels_first)


@merge_layer("Maximum", "Minimum")
def convert_extremum(imp, lay, sources):
    sources = same_layout(imp, lay, sources)
    return emit_multi(imp, lay, lay.class_name, sources, channels_first=sources[0].channels_first)


@merge_layer("Concatenate")
def convert_concatenate(imp, lay, sources):
    sources = [imp.keras_layout(t, lay) for t in sources]
    rank = len(imp.shape(sources[0])) + 1
    axis = int(lay.config.get("axis", -1))
    axis = axis + rank if axis < 0 else axis
    if not 0 < axis < rank:
        raise CompileError(f"{imp.path}: layer {lay.name!r}: Concatenate on the batch axis")
    return emit_multi(imp, lay, "Concat", sources, {"axis": axis - 1})


@merge_layer("Multiply", "Dot")
def convert_product(imp, lay, sources):
    raise UnsupportedOpError(
        f"{imp.path}: layer {lay.name!r} ({lay.class_name}) is a product of two values "
        "computed from the input (as squeeze-and-excitation, attention or gating compute): no "
        "MLP layer f(Wx + b) computes a product exactly")
