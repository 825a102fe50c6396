"""The scipy engine: numpy and scipy alone. Every part of a layer adds its sums into the
layer's output (row groups as im2col + a BLAS product, copies as slices, the rest as a
sparse product), then the bias and the activations come in one pass."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..ir.mlp import MlpLayer, activate_layer
from .engine import Engine, features_by_batch, register_engine
from .max_blocks import MaxLayer
from .plan import LayerPlan
from .structure import run_copies, run_group


@dataclass
class ScipyLayer:
    """What this engine keeps of a layer's plan: its parts, bias and activations, not the
    store rules the compiled engines need (``--check`` runs this engine: DenseNet121 at
    224×224 has 47 M neurons)."""

    source: MlpLayer
    n_out: int
    bias: np.ndarray
    dense: np.ndarray | None
    parts: list


@register_engine
class ScipyEngine(Engine):
    name = "scipy"

    def prepare(self, plan: LayerPlan):
        if isinstance(plan, MaxLayer):
            return plan, None
        rests = [(part.rest_rows, sp.csr_array(part.rest, shape=(len(part.rest_rows),
                                                                 plan.n_in)))
                 for part in plan.parts if len(part.rest_rows)]
        return ScipyLayer(plan.source, plan.n_out, plan.bias, plan.dense, plan.parts), rests

    def run(self, x: np.ndarray, dtype=np.float32) -> np.ndarray:
        h = features_by_batch(np.asarray(x, dtype))  # (n_in, B): once
        for plan, rests in self.plans(dtype):
            h = self.layer(plan, rests, h, dtype)
        return h.T.copy()

    @staticmethod
    def layer(plan: ScipyLayer, rests, h: np.ndarray, dtype) -> np.ndarray:
        if isinstance(plan, MaxLayer):
            return plan.apply(h)
        if plan.dense is not None:
            z = plan.dense @ h
        else:
            z = np.zeros((plan.n_out, h.shape[1]), h.dtype)
            for part in plan.parts:
                for group in part.groups:
                    run_group(group, h, z, add=True)
                run_copies(part.copies, h, z, add=True)
            for rows, rest in rests:
                z[rows] += np.asarray(rest @ h)
        z += plan.bias[:, None]
        return activate_layer(plan.source, z.T).T.astype(dtype, copy=False)
