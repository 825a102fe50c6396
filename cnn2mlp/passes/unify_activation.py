from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import CompileError
from ..ir import Graph, Node, UniformActivation, get_op
from ..ir.analysis import interval_bounds
from ..ir.linear import to_csr
from ..ir.precision import real
from .avgpool_linearize import best_epsilon, error_bound
from .base import Pass, PassContext, register_pass

TANH_FAMILY = {"Tanh", "Sigmoid"}


@register_pass
class UnifyActivation(Pass):
    """Makes a lowered chain of Dense layers one where every layer carries the SAME
    activation, the output layer included (OpenCV's ANN_MLP applies one to all).

    - tanh/sigmoid networks become tanh: ``sigmoid(z) = (1 + tanh(z / 2)) / 2``, the halving
      folded into the layer and the affine part into the next layer (or the output scale);
    - ReLU layers (from max pooling) in a LeakyReLU network become LeakyReLU layers of twice
      the width: ``relu(t) = (leaky(t) + alpha leaky(-t)) / (1 - alpha^2)``;
    - a hidden layer left linear passes values as ``relu(z) - relu(-z)`` (ReLU, LeakyReLU
      with ``1 + alpha``); under tanh it is refused;
    - the linear output layer: under ReLU/LeakyReLU its bias is shifted by a sound lower
      bound ``s`` from interval propagation over ``ctx.input_range`` so ``f(z + s) = z + s``,
      and ``-s`` goes to the output shift (exact inside the domain); under tanh it runs in the
      linear regime ``tanh(eps z) / eps`` (APPROXIMATE, bound recorded);
    - a hidden layer of one neuron gets an inert second one (OpenCV refuses width 1).

    Writes ``graph.meta.uniform``: activation, alpha, output scale and shift.
    Activations that cannot be unified are an error naming the layers.

    Preserves: the function exactly (ReLU family: exact inside ``ctx.input_range``, where
    the output shift's bound holds); a tanh linear regime within its recorded bound.
    """

    name = "unify-activation"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        layers = read_chain(graph)
        activation, alpha = choose_activation(layers)
        out_scale = np.ones(layers[-1][0].attrs["weight"].shape[0])
        out_shift = np.zeros_like(out_scale)
        if activation == "Tanh":
            out_scale, out_shift = sigmoid_to_tanh(graph, layers, out_scale, out_shift)
        if activation == "LeakyRelu":
            relu_layers_to_leaky(graph, layers, alpha)
        make_hidden_layers_nonlinear(graph, layers, activation, alpha)
        dense, act = layers[-1]
        if act is None and activation != "Identity":
            out_scale, out_shift = activate_output(graph, ctx, dense, activation, alpha,
                                                   out_scale, out_shift)
        pad_single_neuron_layers(graph)
        graph.meta.uniform = UniformActivation(activation, alpha, out_scale, out_shift)
        return 1


def read_chain(graph: Graph) -> list[list[Node | None]]:
    """[[dense, activation or None], ...] of a graph that is a chain of Dense layers."""
    layers: list[list[Node | None]] = []
    current = graph.input
    for node in list(graph.nodes):
        if list(node.inputs) != [current]:
            raise CompileError(f"node {node.name} ({node.op}) is not part of a layer chain")
        if node.op == "Dense":
            layers.append([node, None])
        elif get_op(node.op).activation and node.op != "Identity":
            if not layers or layers[-1][1] is not None:
                n = graph.values[current].size
                dense = graph.insert_node_before(node, "Dense", [current],
                                                 {"weight": sp.identity(n, real(), "csr"),
                                                  "bias": None}, name=f"{node.name}_in")
                node.inputs = [dense.output]
                layers.append([dense, None])
            layers[-1][1] = node
        elif node.op == "Identity" or (node.op == "Reshape" and node.output == graph.output):
            graph.bypass(node)
            continue
        else:
            raise CompileError(f"node {node.name} ({node.op}) was not lowered to a Dense layer")
        current = node.output
    if not layers:
        n = graph.values[graph.input].size
        layers.append([graph.append("Dense", {"weight": sp.identity(n, real(), "csr"),
                                              "bias": None}), None])
    return layers


def choose_activation(layers) -> tuple[str, float]:
    acts = [(i, act) for i, (_, act) in enumerate(layers) if act is not None]
    kinds = {act.op for _, act in acts}
    if not kinds:
        return "Identity", 0.0
    foreign = sorted(kinds - {"Relu", "LeakyRelu", "Tanh", "Sigmoid"})
    if foreign:
        raise CompileError(f"OpenCV's ANN_MLP has no {', '.join(foreign)} activation (it has "
                           "identity, sigmoid, gaussian, relu and leaky relu): use --target "
                           "csr or onnx, which keep any element-wise activation")
    if kinds <= TANH_FAMILY:
        return "Tanh", 0.0
    alphas = {act.attrs.get("alpha", 0.01) for _, act in acts if act.op == "LeakyRelu"}
    if kinds == {"Relu"}:
        return "Relu", 0.0
    last = layers[-1][1]
    # ReLU layers (max pooling's) can be rebuilt from LeakyReLU ones, not the output layer.
    if kinds <= {"LeakyRelu", "Relu"} and len(alphas) == 1 and 0 < min(alphas) < 1 and (
            last is None or last.op == "LeakyRelu"):
        return "LeakyRelu", alphas.pop()
    described = ", ".join(f"layer {i} {act.op}{describe_alpha(act)} (node {act.name})"
                          for i, act in acts)
    raise CompileError("OpenCV's ANN_MLP applies one activation to every layer, but this "
                       f"network's layers differ: {described}. (Max pooling makes ReLU "
                       "layers.) Use --target csr, which keeps an activation per layer")


def describe_alpha(act: Node) -> str:
    return f"(alpha={act.attrs.get('alpha', 0.01):g})" if act.op == "LeakyRelu" else ""


def sigmoid_to_tanh(graph, layers, out_scale, out_shift):
    """sigmoid(z) = 1/2 + tanh(z/2)/2: halve the layer, fold the affine part forward."""
    for i, (dense, act) in enumerate(layers):
        if act is None or act.op != "Sigmoid":
            continue
        scale_rows(dense, 0.5)
        act.op, act.attrs = "Tanh", {}
        if i + 1 < len(layers):
            nxt = layers[i + 1][0]
            w = to_csr(nxt.attrs["weight"]).astype(np.float64)
            bias = np.zeros(w.shape[0]) if nxt.attrs.get("bias") is None else \
                np.asarray(nxt.attrs["bias"], np.float64)
            nxt.attrs["bias"] = (bias + 0.5 * np.asarray(w.sum(axis=1)).ravel()).astype(real())
            nxt.attrs["weight"] = (0.5 * w).astype(real())
        else:
            out_shift = out_shift + 0.5 * out_scale
            out_scale = 0.5 * out_scale
    return out_scale, out_shift


def relu_layers_to_leaky(graph, layers, alpha: float) -> None:
    """relu(t) = (leaky(t) + alpha * leaky(-t)) / (1 - alpha^2): the ReLU layers that max
    pooling made become LeakyReLU layers of twice the width."""
    for i, (dense, act) in enumerate(layers[:-1]):
        if act is None or act.op != "Relu":
            continue
        mirror_rows(graph, dense)
        graph.values[act.output].shape = graph.shape(dense.output)
        act.op, act.attrs = "LeakyRelu", {"alpha": alpha}
        nxt = layers[i + 1][0]
        w2 = to_csr(nxt.attrs["weight"]).astype(np.float64) / (1.0 - alpha * alpha)
        nxt.attrs["weight"] = sp.hstack([w2, alpha * w2], format="csr").astype(real())


def mirror_rows(graph: Graph, dense: Node) -> None:
    """Make the layer compute ``[z; -z]`` instead of ``z``."""
    w = to_csr(dense.attrs["weight"])
    b = dense.attrs.get("bias")
    dense.attrs["weight"] = sp.vstack([w, -w], format="csr")
    dense.attrs["bias"] = None if b is None else np.concatenate([b, -b])
    dense.attrs.pop("out_shape", None)
    graph.values[dense.output].shape = (2 * w.shape[0],)


def scale_rows(dense: Node, factor: float) -> None:
    dense.attrs["weight"] = (to_csr(dense.attrs["weight"]).astype(np.float64) * factor
                             ).astype(real())
    if dense.attrs.get("bias") is not None:
        dense.attrs["bias"] = (np.asarray(dense.attrs["bias"], np.float64) * factor
                               ).astype(real())


def make_hidden_layers_nonlinear(graph, layers, activation, alpha) -> None:
    for i, (dense, act) in enumerate(layers[:-1]):
        if act is not None:
            continue
        if activation not in ("Relu", "LeakyRelu"):
            raise CompileError(f"layer {i} (node {dense.name}) is linear inside a "
                               f"{activation.lower()} network and could not be fused")
        mirror_rows(graph, dense)
        act_node = graph.insert_node_before(layers[i + 1][0], activation, [dense.output],
                                            {"alpha": alpha} if activation == "LeakyRelu" else {})
        nxt = layers[i + 1][0]
        nxt.inputs = [act_node.output]
        w2 = to_csr(nxt.attrs["weight"]) / (1.0 + (alpha if activation == "LeakyRelu" else 0.0))
        nxt.attrs["weight"] = sp.hstack([w2, -w2], format="csr").astype(real())
        layers[i][1] = act_node


def activate_output(graph, ctx, dense, activation, alpha, out_scale, out_shift):
    """Give the linear output layer the activation, and undo it in the output scale."""
    low, high = input_box(graph, ctx)
    z_lo, z_hi = interval_bounds(graph, low, high, keep={dense.output})[dense.output]
    z_lo, z_hi = z_lo.ravel(), z_hi.ravel()
    if activation in ("Relu", "LeakyRelu"):
        shift = np.maximum(0.0, -z_lo)
        shift = shift + 1e-6 * (1.0 + shift)  # margin for float rounding of the bound
        bias = dense.attrs.get("bias")
        bias = np.zeros(len(shift), real()) if bias is None else np.asarray(bias, real())
        shifted = (bias.astype(np.float64) + shift).astype(real())
        dense.attrs["bias"] = shifted
        # Biases are stored in float32: undo exactly the shift that was stored.
        shift = shifted.astype(np.float64) - bias.astype(np.float64)
        out_shift = out_shift - out_scale * shift
        graph.notes.append(f"output shifted by up to {shift.max():.4g} into ReLU's range; exact "
                           f"for inputs in [{ctx.input_range[0]:g}, {ctx.input_range[1]:g}]")
    else:
        zmax = float(max(np.abs(z_lo).max(initial=0), np.abs(z_hi).max(initial=0)))
        eps = best_epsilon("Tanh", zmax, ctx)
        bound = error_bound("Tanh", eps, zmax, ctx)
        scale_rows(dense, eps)
        out_scale = out_scale / eps
        entry = {"node": dense.name, "activation": "Tanh", "epsilon": eps, "z_max": zmax,
                 "bound_at_pool": bound, "lipschitz_to_output": 1.0, "bound_at_output": bound}
        graph.meta.approximations.append(entry)
        graph.notes.append(f"approximate: the linear output layer runs in tanh's linear regime "
                           f"(eps={eps:.3g}); error bound {bound:.3g} for inputs in "
                           f"[{ctx.input_range[0]:g}, {ctx.input_range[1]:g}]")
    graph.append(activation, {"alpha": alpha} if activation == "LeakyRelu" else {})
    return out_scale, out_shift


def input_box(graph: Graph, ctx: PassContext):
    low, high = ctx.input_range
    if graph.meta.input_affine is None:
        return low, high
    scale, shift = graph.meta.input_affine
    a, b = low * scale + shift, high * scale + shift
    shape = graph.shape(graph.input)
    return np.minimum(a, b).reshape(shape), np.maximum(a, b).reshape(shape)


def pad_single_neuron_layers(graph: Graph) -> None:
    denses = [n for n in graph.nodes if n.op == "Dense"]
    for dense, nxt in zip(denses[:-1], denses[1:]):
        w = to_csr(dense.attrs["weight"])
        if w.shape[0] != 1:
            continue
        dense.attrs["weight"] = sp.vstack([w, sp.csr_array((1, w.shape[1]), dtype=w.dtype)],
                                          format="csr")
        b = dense.attrs.get("bias")
        dense.attrs["bias"] = np.concatenate([np.zeros(1, real()) if b is None else b,
                                              np.zeros(1, real())])
        dense.attrs.pop("out_shape", None)
        graph.values[dense.output].shape = (2,)
        act = graph.single_consumer(dense.output)
        graph.values[act.output].shape = (2,)
        w2 = to_csr(nxt.attrs["weight"])
        nxt.attrs["weight"] = sp.hstack([w2, sp.csr_array((w2.shape[0], 1), dtype=w2.dtype)],
                                        format="csr")
