from __future__ import annotations

import math

import numpy as np

from ..ir import Graph, Node
from ..ir.analysis import interval_bounds, lipschitz_inf
from ..ir.linear import avgpool_matrix, diagonal
from ..ir.precision import real
from .base import Pass, PassContext, register_pass

#: unit roundoffs (weights are stored in float32)
FLOAT32_U = 2.0 ** -24
FLOAT64_U = 2.0 ** -53

# f(u) = f0 + f1 u + O(u^3), with |f(u) - f0 - f1 u| <= c3 |u|^3 for all u.
SERIES = {"Tanh": (0.0, 1.0, 1.0 / 3.0), "Sigmoid": (0.5, 0.25, 1.0 / 48.0)}


@register_pass
class AvgPoolLinearize(Pass):
    """Makes an AveragePool that must stand as its own layer a layer under the network's
    activation ``f`` (targets that apply one activation to every layer).

    - ReLU, inputs proven >= 0: ``relu(P h) = P h``: exact.
    - ReLU otherwise: ``P h = relu(P h) - relu(-P h)``, two neurons an output: exact.
    - tanh / sigmoid: linearization with scaling: the layer computes ``f(eps P h)`` and the
      next layer undoes it with ``(y - f(0)) / (eps f'(0))`` (fused into it). Truncation is
      ``c3 eps^2 |z|^3 / f'(0)``; rounding grows like ``u |f(0)| / (eps f'(0))``. ``eps``
      minimises their sum over the bound on ``|z|`` from interval analysis on
      ``ctx.input_range``, unless ``ctx.options.epsilon`` sets it.
      APPROXIMATE: the pass records eps, the bound at the pool and at the output
      (through a Lipschitz bound of the rest of the network) in the graph notes and
      ``ctx.stats``.

    The activation is ``ctx.options.activation`` if set, else Tanh or Sigmoid when the
    network uses one, else Relu.

    Preserves: the function exactly under ReLU; under tanh/sigmoid within the recorded
    bound (the tool says so, and --check compares against it).
    """

    name = "avgpool-linearize"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        pools = [n for n in graph.nodes if n.op == "AveragePool"]
        if not pools:
            return 0
        activation = ctx.options.activation or network_activation(graph)
        bounds = interval_bounds(graph, *ctx.input_range)
        unbounded = interval_bounds(graph) if activation == "Relu" else None
        for node in pools:
            pool = avgpool_matrix(graph.shape(node.input), node.attrs)
            if activation == "Relu":
                exact_under_relu(graph, node, pool, bool((unbounded[node.input][0] >= 0).all()))
                continue
            z_lo, z_hi = bounds[node.output]
            zmax = float(max(np.abs(z_lo).max(initial=0), np.abs(z_hi).max(initial=0)))
            eps = ctx.options.epsilon or best_epsilon(activation, zmax, ctx)
            local = error_bound(activation, eps, zmax, ctx)
            lipschitz = lipschitz_inf(graph, node.output)
            linearize(graph, node, pool, activation, eps)
            record(graph, ctx, node, activation, eps, zmax, local, lipschitz)
        return len(pools)


def network_activation(graph: Graph) -> str:
    ops = set(graph.ops())
    return "Tanh" if "Tanh" in ops else "Sigmoid" if "Sigmoid" in ops else "Relu"


def rounding_model(activation: str, ctx: PassContext) -> tuple[float, float]:
    """(relative error of the layer's values, absolute error of f's output near 0).

    float32 runtimes (CSR predict): f is accurate relative to its value, so only an offset
    f(0) loses digits (sigmoid). OpenCV computes in float64 but its SIGMOID_SYM is
    ``(1 - e^-x) / (1 + e^-x)``, which cancels near 0: an absolute error of a few ulps.
    """
    f0, _, _ = SERIES[activation]
    if ctx.options.opencv_arithmetic:
        return 8 * FLOAT64_U, 4 * FLOAT64_U
    return 8 * FLOAT32_U, 4 * FLOAT32_U * abs(f0)


def best_epsilon(activation: str, zmax: float, ctx: PassContext) -> float:
    """Minimise ``c3/f1 eps^2 zmax^3 + a / (f1 eps)`` (or reach the relative rounding floor)."""
    _, f1, c3 = SERIES[activation]
    relative, absolute = rounding_model(activation, ctx)
    if zmax == 0:
        return 1.0
    a = c3 / f1 * zmax ** 3
    if absolute:
        eps = (absolute / f1 / (2 * a)) ** (1 / 3)
    else:
        eps = math.sqrt(relative * zmax / a)
    return min(eps, 1.0 / zmax)


def error_bound(activation: str, eps: float, zmax: float, ctx: PassContext) -> float:
    """Bound on |z - undo(f(eps z))| per pool output: truncation + first-order rounding."""
    _, f1, c3 = SERIES[activation]
    relative, absolute = rounding_model(activation, ctx)
    return c3 / f1 * eps ** 2 * zmax ** 3 + relative * zmax + absolute / (f1 * eps)


def linearize(graph: Graph, node: Node, pool, activation: str, eps: float) -> None:
    f0, f1, _ = SERIES[activation]
    scaled = graph.insert_node_before(node, "Dense", [node.input],
                                      {"weight": (pool * eps).astype(real()), "bias": None},
                                      name=f"{node.name}_scaled")
    act = graph.insert_node_before(node, activation, [scaled.output], name=f"{node.name}_act")
    n = pool.shape[0]
    node.op, node.inputs = "Dense", [act.output]
    node.attrs = {"weight": diagonal(np.full(n, 1.0 / (eps * f1))),
                  "bias": np.full(n, -f0 / (eps * f1), real()) if f0 else None,
                  "out_shape": graph.shape(node.output)}


def exact_under_relu(graph: Graph, node: Node, pool, nonneg: bool) -> None:
    import scipy.sparse as sp

    n = pool.shape[0]
    out_shape = graph.shape(node.output)
    if nonneg:  # relu(P h) = P h when h >= 0
        dense = graph.insert_node_before(node, "Dense", [node.input],
                                         {"weight": pool, "bias": None, "out_shape": out_shape},
                                         name=f"{node.name}_pool")
        node.op, node.inputs, node.attrs = "Relu", [dense.output], {}
        return
    both = sp.vstack([pool, -pool], format="csr")
    dense = graph.insert_node_before(node, "Dense", [node.input], {"weight": both, "bias": None},
                                     name=f"{node.name}_pool")
    relu = graph.insert_node_before(node, "Relu", [dense.output], name=f"{node.name}_relu")
    eye = sp.identity(n, dtype=real(), format="csr")
    node.op, node.inputs = "Dense", [relu.output]
    node.attrs = {"weight": sp.hstack([eye, -eye], format="csr"), "bias": None,
                  "out_shape": out_shape}


def record(graph: Graph, ctx: PassContext, node: Node, activation: str, eps: float, zmax: float,
           local: float, lipschitz: float) -> None:
    entry = {"node": node.name, "activation": activation, "epsilon": eps, "z_max": zmax,
             "bound_at_pool": local, "lipschitz_to_output": lipschitz,
             "bound_at_output": local * lipschitz}
    ctx.stats.setdefault("avgpool-linearize", {"pools": []})["pools"].append(entry)
    graph.meta.approximations.append(entry)
    graph.notes.append(
        f"approximate: {node.name} linearized under {activation.lower()} with eps={eps:.3g}; "
        f"error bound {local:.3g} at the pool, {local * lipschitz:.3g} at the output "
        f"(inputs in [{ctx.input_range[0]:g}, {ctx.input_range[1]:g}])")
