"""The input domain: the box of inputs a compile is checked on and its bound analyses assume.

Most targets are exact for every input, but some steps are exact only inside a box (the
OpenCV target shifts outputs into ReLU's range by a bound computed over it; an
avgpool linearization bounds its error over it), and ``--check`` samples it. The default is
[0, 1]. A model that starts with its own input scaling says what it expects instead: a
Keras ``Rescaling(1/255)`` or an ONNX ``Div(x, 255)`` expects pixels in 0..255, and
checking it on [0, 1] would pass while 0..255 pixels give wrong answers. So, when the user
gives no ``--input-range``, the domain is read off the element-wise affine map the graph
starts with (``MulConst``/``AddConst``/``BatchNorm``, through layout ops):

- a scaling ``x * s`` (no offset): the inputs it maps onto [0, 1];
- ``x * s - 1`` (Keras' ``Rescaling(1/127.5, offset=-1)``): the inputs it maps onto [-1, 1];
- any other offset, a standardization ``(x - mean) / std``: mean ± 3 std, the inputs it
  maps onto [-3, 3].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .graph import Graph
from .ops import get_op

#: ops that keep each value's own affine map (per element) while the chain is followed
AFFINE = {"MulConst", "AddConst", "BatchNorm"}
LAYOUT = {"Transpose", "Reshape"}
#: standardized inputs are taken to lie within this many standard deviations of the mean
STANDARD_DEVIATIONS = 3.0


@dataclass(frozen=True)
class InputDomain:
    low: float
    high: float
    #: where it comes from, for the report: "the default", "--input-range", or the map
    source: str

    @property
    def range(self) -> tuple[float, float]:
        return self.low, self.high

    @property
    def inferred(self) -> bool:
        return self.source not in ("the default", "--input-range")

    def describe(self) -> str:
        return f"[{self.low:g}, {self.high:g}] ({self.source})"


DEFAULT_DOMAIN = InputDomain(0.0, 1.0, "the default")


def resolve_input_domain(graph: Graph, given: tuple[float, float] | None) -> InputDomain:
    """The user's range if given, else the one the model's leading scaling implies, else
    the default [0, 1]."""
    if given is not None:
        check_given_range(float(given[0]), float(given[1]))
        return InputDomain(float(given[0]), float(given[1]), "--input-range")
    return infer_input_domain(graph) or DEFAULT_DOMAIN


def leading_affine_map(graph: Graph) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """``(scale, offset, ops)`` of the element-wise affine map the graph starts with (per
    element of the chain's last value), or None when it starts with something else."""
    value, chain = graph.input, []
    while True:
        consumers = graph.consumers(value)
        if len(consumers) != 1 or value == graph.output:
            break
        node = consumers[0]
        if node.op not in AFFINE | LAYOUT or len(node.inputs) != 1:
            break
        chain.append(node)
        value = node.outputs[0]
    if not any(node.op in AFFINE for node in chain):
        return None
    shape = (1, *graph.shape(graph.input))
    at_zero, at_one = (run_chain(chain, np.full(shape, v, np.float64)) for v in (0.0, 1.0))
    return (at_one - at_zero).ravel(), at_zero.ravel(), [n.op for n in chain if n.op in AFFINE]


def run_chain(chain, x: np.ndarray) -> np.ndarray:
    for node in chain:
        (x,) = get_op(node.op).evaluate(node, [x])
    return x


#: a box read off the model is taken only if at least this wide: a narrower one comes from a
#: leading scale above 1 (``x * 255``, ``x * 255 - mean``), which says the model expands its
#: inputs, not where they lie (a check on [0, 0.0039] proves nothing about [0, 1] data)
PLAUSIBLE_WIDTH = 0.5
#: and within this magnitude: a box past float32 (``x * 1e-40``) draws infinite inputs
PLAUSIBLE_MAGNITUDE = 1e30


def infer_input_domain(graph: Graph) -> InputDomain | None:
    found = leading_affine_map(graph)
    if found is None:
        return None
    scale, offset, ops = found
    # a channel the map zeroes (a scale of 0, a BatchNorm gamma of 0) says nothing about
    # its inputs: the box comes from the channels that have a scale
    scaled = np.isfinite(scale) & (scale != 0) & np.isfinite(offset)
    if not scaled.any():
        return None
    scale, offset = scale[scaled], offset[scaled]
    if np.all(offset == 0):
        target, what = (0.0, 1.0), "scaling: the inputs it maps onto [0, 1]"
    elif np.allclose(offset, -1.0, rtol=0, atol=1e-6):
        target, what = (-1.0, 1.0), "scaling: the inputs it maps onto [-1, 1]"
    else:
        k = STANDARD_DEVIATIONS
        target, what = (-k, k), f"standardization: mean ± {k:g} standard deviations"
    with np.errstate(over="ignore"):
        ends = np.stack([(t - offset) / scale for t in target])
    low, high = (float(f"{v:.6g}") for v in (ends.min(), ends.max()))
    if (low, high) == DEFAULT_DOMAIN.range or not low < high:
        return None
    ops = "/".join(dict.fromkeys(ops))
    if high - low < PLAUSIBLE_WIDTH or max(abs(low), abs(high)) > PLAUSIBLE_MAGNITUDE:
        return InputDomain(0.0, 1.0, f"the default: the model's leading {ops} would put its "
                                     f"inputs in [{low:g}, {high:g}], which no data plausibly "
                                     "fills; --input-range sets the real one")
    return InputDomain(low, high, f"inferred from the model's leading {what} ({ops}); "
                                  "--input-range sets another")


def check_given_range(low: float, high: float) -> None:
    """An --input-range the float types can sample: finite, ordered, within float32."""
    from ..errors import CompileError

    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise CompileError(f"--input-range {low:g} {high:g}: give two finite numbers, the "
                           "lower first")
    if max(abs(low), abs(high)) > PLAUSIBLE_MAGNITUDE:
        raise CompileError(f"--input-range {low:g} {high:g}: inputs beyond "
                           f"±{PLAUSIBLE_MAGNITUDE:g} "
                           "overflow float32 in the first layer; give the range your data has")
