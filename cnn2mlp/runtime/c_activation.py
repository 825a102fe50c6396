"""The C code of a layer's activations: a clamp (ReLU, leaky and bounded ReLU) as a
multiply and a select, the others from the activation catalogue's C expressions; and the
clamp a layer's parts apply as they store its rows, where they can (``stored_clamp``)."""
from __future__ import annotations

import re

import numpy as np

from ..ir.activations import BY_NAME
from .c_indices import run_bias
from .c_literals import c_number
from .plan import LayerPlan


def stored_clamp(plan: LayerPlan) -> tuple[float, float, float] | None:
    """The clamp (lo, scale, hi) every row of the layer takes as its one part stores it,
    with its bias (``plan.py``'s rule, for a layer whose rows all follow it with one clamp);
    else None: the layer starts from its bias, its parts add, its activations come after."""
    if plan.dense is not None or len(plan.finish) or not plan.n_out:
        return None
    if any(part.copies is not None and len(part.copies[0]) and
           run_bias(plan.bias, part.copies[0], part.copies[2]) is None for part in plan.parts):
        return None  # a copy run whose rows have biases of their own
    ends = [np.unique(a) for a in (plan.lo, plan.scale, plan.hi)]
    if any(len(e) != 1 for e in ends):
        return None
    return tuple(float(e[0]) for e in ends)


def activation_loop(real: str, start: int, stop: int, name: str, alpha: float) -> list[str]:
    """``z[i] = f(z[i])`` for ``start <= i < stop``, f the catalogue's activation ``name``
    with the parameter ``alpha``: a clamp (ReLU, leaky and bounded ReLU) without a branch,
    the others from the catalogue's C expression of z and a."""
    activation = BY_NAME[name]
    head = [f"    for (i = {start}; i < {stop}; i++) {{", f"        const {real} z0 = z[i];"]
    if activation.clamp is None:
        return head + [f"        const {real} a = {c_number(alpha, real)};", "        (void)a;",
                       f"        z[i] = ({real})({activation.c.replace('z', 'z0')});", "    }"]
    lo, scale, hi = (float(v) for v in activation.clamp(float(alpha)))
    # v = z if z > lo else scale * z, then min(v, hi), keeping a NaN. The product is
    # computed for every z: a product only one side of a branch needs is kept scalar
    # and branchy under the default -ftrapping-math; the source also says no-trapping-math
    # to GCC (measured together: SqueezeNet's first layer at batch 16, 230 400 ReLUs,
    # 385 -> 263 us)
    top = c_number(hi, real)
    store = "v" if hi == float("inf") else f"v > {top} ? {top} : v"
    return head + [f"        const {real} low = z0 * {c_number(scale, real)};",
                   f"        const {real} v = z0 > {c_number(lo, real)} ? z0 : low;",
                   f"        z[i] = {store};", "    }"]


def expression_uses_only_z_and_a(expr: str) -> bool:
    """The catalogue's C expressions name z and a; renaming z to z0 relies on no function
    name containing a 'z' (checked by a test over the whole catalogue)."""
    return not re.search(r"[A-Za-y_]z|z[A-Za-z_0-9]", expr)
