"""Layout chains that move the batch axis away and back: one linear map of each sample.

PyTorch's dynamo exporter writes an adaptive average pool whose output size does not divide
the input as ``Transpose(perm [2, 3, 0, 1])`` (the batch axis third), ``GatherND`` (the
windows' cells, picked from the leading spatial axes), ``Transpose(perm [4, 5, 0, 1, 2,
3])`` (the batch axis first again), then ``ReduceMean``. No single node of the chain keeps
the batch axis first, but the chain as a whole maps each sample on its own. So when a
layout op moves the batch axis, the layout ops that follow it (each the only reader of the
one before, its other inputs constants) are taken with it until one puts the batch axis
first again; the chain is then measured as one map on basis vectors, after checking that
it keeps samples apart.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx

from .measure import measure_linear
from .registry import inferred_output_shape

if TYPE_CHECKING:
    from .importer import OnnxImporter

#: ops that only move, pick or reshape values: what a chain may hold
CHAIN_OPS = {"Transpose", "GatherND", "Gather", "Reshape", "Squeeze", "Unsqueeze", "Slice",
             "Identity", "Flatten", "Expand"}
#: nodes a chain may take at the most
MAX_CHAIN = 8


def convert_batch_move(imp: OnnxImporter, node: onnx.NodeProto, x: str, why: str) -> None:
    """``node`` moves the batch axis (``why`` says how): convert it together with the
    layout ops after it up to the one that moves the batch axis back, or refuse."""
    chain = [node]
    while True:
        shapes = sized(imp, chain, x)
        where = batch_axis_after(imp, chain, x)
        if where == 0:
            break
        if where is None:
            imp.fail(chain[-1], "mixes the batch axis with the other axes; only ops that keep "
                                "each sample separate can become an MLP")
        readers = imp.consumers(chain[-1].output[0])
        if len(readers) != 1 or readers[0].op_type not in CHAIN_OPS or len(chain) == MAX_CHAIN \
                or any(i and i != chain[-1].output[0] and not imp.is_const(i)
                       for i in readers[0].input):
            imp.fail(node, f"{why}, and the layout ops after it do not move it back (a chain of "
                           "Transpose, Gather, Reshape... may move it away and back); only ops "
                           "that keep each sample separate can become an MLP")
        chain.append(readers[0])
    check_samples_apart(imp, chain, x)

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(imp.reference(chain, {x: batch})[0])

    measure_linear(imp, chain[-1], x, run, math.prod(shapes[-1][1:]), chain[-1].output[0])
    imp.absorbed.update(o for n in chain for o in n.output if o)


def sized(imp: OnnxImporter, chain: list[onnx.NodeProto], x: str) -> list[tuple[int, ...]]:
    """The shapes of the chain's tensors for one sample, from shape inference (nothing
    run), each checked against the size limit."""
    shapes, current, shape = [], x, (1,) + imp.graph.shape(x)
    for node in chain:
        shape = inferred_output_shape(node, {current: shape}, imp.consts, imp.opset)
        if shape is None:
            imp.fail(node, "its output shape cannot be inferred from the model's constants, "
                           "so its size cannot be checked before it is built")
        imp.check_values(node, math.prod(shape), "its output")
        shapes.append(tuple(shape))
        current = node.output[0]
    return shapes


def batch_axis_after(imp: OnnxImporter, chain: list[onnx.NodeProto], x: str) -> int | None:
    """Where the batch axis is in the chain's output: the one axis whose size follows the
    batch's (run on zeros with batches of 1 and 2), or None if none or several do."""
    sample = imp.graph.shape(x)
    one, two = (np.shape(imp.reference(chain, {x: np.zeros((n,) + sample)})[0])
                for n in (1, 2))
    if len(one) != len(two):
        return None
    moved = [a for a, (p, q) in enumerate(zip(one, two)) if p != q]
    return moved[0] if len(moved) == 1 and (one[moved[0]], two[moved[0]]) == (1, 2) else None


def check_samples_apart(imp: OnnxImporter, chain: list[onnx.NodeProto], x: str) -> None:
    """Two random samples run together give what each gives alone: the chain does not
    mix samples (a Gather along the moved batch axis would)."""
    sample = imp.graph.shape(x)
    pair = np.random.default_rng(0).uniform(-1, 1, (2,) + sample)
    together = np.asarray(imp.reference(chain, {x: pair})[0])
    alone = [np.asarray(imp.reference(chain, {x: pair[i:i + 1]})[0]) for i in range(2)]
    if together.shape[0] != 2 or not all(np.array_equal(together[i:i + 1], alone[i])
                                         for i in range(2)):
        imp.fail(chain[0], "mixes the samples of a batch; only ops that keep each sample "
                           "separate can become an MLP")
