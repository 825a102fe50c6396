"""The lowered form: a chain of layers ``h = f(W h + b)`` over the flattened sample."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .activations import BY_OP, IDENTITY, apply
from .graph import Graph, Shape
from .linear import diagonal
from .precision import real
from .weights import as_csr, astype, is_structured, matvec


class NotAnMlpError(ValueError):
    """The graph still holds ops that are not Dense layers and activations."""


#: one run of neurons with its own activation: (start, stop, activation name, alpha)
Segment = tuple[int, int, str, float]


@dataclass
class MlpLayer:
    #: (n_out, n_in), float32 (float64 for a double model): CSR, or a StructuredMatrix
    weight: sp.csr_array
    bias: np.ndarray              # (n_out,), the weight's dtype
    activation: str = IDENTITY.name  # "mixed" when ``segments`` gives one per run of neurons
    alpha: float = 0.0            # negative slope of leaky_relu
    segments: tuple[Segment, ...] | None = None
    carried: int = 0              # neurons that carry values for later layers (DAGs)
    #: where the sources the layer reads begin and end among its inputs (a DAG's layer
    #: reads several side by side: a convolution's channels, a carried shortcut); a hint
    #: for the runtime's structure finder, None when unknown
    input_blocks: tuple[int, ...] | None = None

    def csr(self) -> sp.csr_array:
        """The layer's matrix as a scipy CSR array (a structured weight materialized)."""
        return as_csr(self.weight)

    @property
    def n_in(self) -> int:
        return self.weight.shape[1]

    @property
    def n_out(self) -> int:
        return self.weight.shape[0]


@dataclass
class Mlp:
    layers: list[MlpLayer]
    input_shape: Shape
    output_shape: Shape
    notes: list[str] = field(default_factory=list)

    @property
    def dtype(self) -> np.dtype:
        """The precision the weights are stored in, float32 or float64."""
        return np.dtype(self.layers[0].weight.dtype)

    @classmethod
    def from_graph(cls, graph: Graph, output_shape: Shape | None = None) -> "Mlp":
        """Read a lowered graph: a chain of Dense nodes, each optionally followed by one
        activation. An activation with no Dense before it gets an identity layer."""
        layers: list[MlpLayer] = []
        current = graph.input
        open_layer = False  # the last layer has no activation yet
        for node in graph.nodes:
            if list(node.inputs) != [current]:
                raise NotAnMlpError(f"node {node.name} ({node.op}) is not part of a chain")
            if node.op == "Dense":
                w = astype(node.attrs["weight"], real())
                w = w if is_structured(w) else as_csr(w)
                b = node.attrs.get("bias")
                b = np.zeros(w.shape[0], real()) if b is None else np.asarray(b, real())
                blocks = node.attrs.get("input_blocks")
                layers.append(MlpLayer(w, b, carried=int(node.attrs.get("carried", 0)),
                                       input_blocks=None if blocks is None else
                                       tuple(int(v) for v in blocks)))
                open_layer = True
            elif node.op in BY_OP or node.op == "MixedActivation":
                if not open_layer:
                    n = graph.values[current].size
                    layers.append(MlpLayer(diagonal(np.ones(n)), np.zeros(n, real())))
                if node.op == "MixedActivation":
                    layers[-1].activation = "mixed"
                    layers[-1].segments = tuple(
                        (int(a), int(b), BY_OP[op].name, float(alpha))
                        for a, b, op, alpha in node.attrs["segments"])
                else:
                    layers[-1].activation = BY_OP[node.op].name
                    layers[-1].alpha = float(node.attrs.get("alpha", 0.0))
                open_layer = False
            elif node.op != "Reshape" or node.output != graph.output:
                raise NotAnMlpError(f"node {node.name} ({node.op}) was not lowered to a "
                                    "Dense layer")
            current = node.output
        if not layers:
            n = graph.values[graph.input].size
            layers.append(MlpLayer(diagonal(np.ones(n)), np.zeros(n, real())))
        return cls(layers, graph.shape(graph.input), output_shape or graph.shape(graph.output),
                   list(graph.notes))

    def forward(self, x: np.ndarray, dtype=np.float64) -> np.ndarray:
        h = np.asarray(x, dtype).reshape(len(x), -1)
        for layer in self.layers:
            h = matvec(astype(layer.weight, dtype), h) + layer.bias.astype(dtype)
            h = activate_layer(layer, h)
        return h.reshape((len(x),) + tuple(self.output_shape))


def activate(name: str, alpha: float, h: np.ndarray) -> np.ndarray:
    return apply(name, alpha, h)


def activate_layer(layer: MlpLayer, h: np.ndarray) -> np.ndarray:
    """The layer's activation on ``h`` (B, n_out): one function, or one per segment."""
    if layer.segments is None:
        return activate(layer.activation, layer.alpha, h)
    out = np.empty_like(h)
    for start, stop, name, alpha in layer.segments:
        out[:, start:stop] = activate(name, alpha, h[:, start:stop])
    return out
