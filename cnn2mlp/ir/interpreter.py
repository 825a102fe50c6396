"""Runs an IR graph with the ops' numpy reference evaluation."""
from __future__ import annotations

import numpy as np

from .graph import Graph
from .ops import get_op


def run(graph: Graph, x: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Evaluate ``graph`` on a batch ``x`` of shape ``(B, *input_shape)``."""
    x = np.asarray(x, dtype=dtype)
    expected = graph.shape(graph.input)
    if x.shape[1:] != expected:
        raise ValueError(f"input has sample shape {x.shape[1:]}, graph expects {expected}")
    env = {graph.input: x}
    for node in graph.nodes:
        outs = get_op(node.op).evaluate(node, [env[i] for i in node.inputs])
        for name, val in zip(node.outputs, outs):
            env[name] = val
    return env[graph.output]
