"""The activation catalogue: every element-wise activation an MLP layer (or a run of its
neurons) can apply, listed once.

A row gives the IR op (what frontends and passes write), the name the artifact stores,
the code the compiled runtimes dispatch on, the numpy function (the reference semantics,
also embedded in the standalone kernel module), the parameter, what the interval analysis
and the Lipschitz bound need to know, and what other formats call it. Everything that
lists activations derives from this table: the IR's ops (``ir/ops.py``), the MLP's names
(``ir/mlp.py``), the artifact's accepted names, the numba kernels (generated from the
``scalar`` expressions by ``runtime/activation_gen.py``), the C target (from ``c``), the
verifier ONNX writer, OpenCV's names and the test strategies.

Adding an activation: a numpy function below, one row in ``CATALOGUE`` (with the next free
code), then ``python -m cnn2mlp.runtime.activation_gen``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

Fn = Callable[[np.ndarray, float], np.ndarray]


# -- numpy semantics: (values, alpha) → values. numpy and math only: the standalone kernel
# module embeds these functions' source.
def sigmoid_np(h, a=0.0):
    """Split by sign so that exp never overflows."""
    out = np.empty_like(h)
    pos = h >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-h[pos]))
    ex = np.exp(h[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def softplus_np(h, a=0.0):
    return np.logaddexp(0, h)


def erf_np(h, a=0.0):
    try:
        from scipy.special import erf
    except ImportError:  # the standalone kernel module, with numpy alone
        return np.frompyfunc(math.erf, 1, 1)(h).astype(np.result_type(h, np.float32))
    return erf(h)


def identity_np(h, a):
    return h


def relu_np(h, a):
    return np.maximum(h, 0)


def leaky_relu_np(h, a):
    return np.where(h >= 0, h, h * a)


def tanh_np(h, a):
    return np.tanh(h)


def elu_np(h, a):
    return np.where(h > 0, h, a * np.expm1(np.minimum(h, 0)))


def softsign_np(h, a):
    return h / (1 + np.abs(h))


def hard_swish_np(h, a):
    return h * np.clip(h / 6 + 0.5, 0, 1)


def mish_np(h, a):
    return h * np.tanh(softplus_np(h))


def gelu_np(h, a):
    return 0.5 * h * (1 + erf_np(h / np.sqrt(2)))


def gelu_tanh_np(h, a):
    return 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))


def thresholded_relu_np(h, a):
    return np.where(h > a, h, 0 * h)


def swish_np(h, a):
    return h * sigmoid_np(h)


def bounded_relu_np(h, a):
    return np.minimum(np.maximum(h, 0), a)


#: the helpers the functions above call (embedded with them)
NUMPY_HELPERS = (sigmoid_np, softplus_np, erf_np)


@dataclass(frozen=True)
class Activation:
    name: str                 # the MLP's and the artifact's name
    op: str                   # the IR op
    code: int                 # what the compiled runtimes dispatch on (never reused)
    numpy: Fn                 # the semantics, vectorized
    alpha: float | None       # the parameter's default; None: takes no parameter
    #: for interval bounds: "monotone" (non-decreasing), "unimodal" (one minimum, at
    #: ``minimum_at``), or "thresholded" (0 or the value itself)
    shape: str
    lipschitz: float          # |f(x) - f(y)| <= L |x - y|, for the default parameter
    scalar: str               # a Python expression of z and a (numba kernels, generated)
    c: str                    # a C99 expression of z and a (<tgmath.h>: float or double)
    onnx: str | None          # the ONNX op that computes it (None: no node)
    onnx_opset: int = 13      # the opset that op needs
    onnx_attrs: tuple = ()    # (name, value) attributes that op needs besides alpha
    opencv: tuple | None = None  # OpenCV ANN_MLP's (name, f_param1, f_param2); None: none
    minimum_at: float | None = None
    piecewise_linear: bool = False  # a sum of ReLUs (exact on ReLU-only targets)
    #: for an activation that is a clamp ``v = z if z > lo else scale * z; min(v, hi)``:
    #: alpha → (lo, scale, hi); the runtime's kernels apply these as they store a row
    clamp: Callable[[float], tuple[float, float, float]] | None = None

    def lipschitz_for(self, alpha: float) -> float:
        if self.name in ("leaky_relu", "elu"):
            return max(1.0, abs(alpha))
        return self.lipschitz


CATALOGUE: tuple[Activation, ...] = (
    Activation("identity", "Identity", 0, identity_np, None, "monotone", 1.0, "z", "z", None,
               opencv=("IDENTITY", 1.0, 1.0), piecewise_linear=True,
               clamp=lambda a: (-math.inf, 1.0, math.inf)),
    Activation("relu", "Relu", 1, relu_np, None, "monotone", 1.0,
               "z if z > 0 else z * 0", "(z > 0 ? z : z * 0)", "Relu",
               opencv=("RELU", 0.0, 0.0), piecewise_linear=True,
               clamp=lambda a: (0.0, 0.0, math.inf)),
    Activation("leaky_relu", "LeakyRelu", 2, leaky_relu_np, 0.01, "monotone", 1.0,
               "z if z >= 0 else z * a", "(z >= 0 ? z : z * a)", "LeakyRelu",
               opencv=("LEAKYRELU", None, 0.0), piecewise_linear=True,
               clamp=lambda a: (0.0, a, math.inf)),
    Activation("sigmoid", "Sigmoid", 3, sigmoid_np, None, "monotone", 0.25,
               "_sigmoid(z)", "(z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z)))",
               "Sigmoid"),
    Activation("tanh", "Tanh", 4, tanh_np, None, "monotone", 1.0, "math.tanh(z)", "tanh(z)",
               "Tanh", opencv=("SIGMOID_SYM", 2.0, 1.0)),  # beta tanh(alpha x / 2) = tanh
    Activation("elu", "Elu", 5, elu_np, 1.0, "monotone", 1.0,
               "z if z > 0 else a * math.expm1(z)", "(z > 0 ? z : a * expm1(z))", "Elu"),
    Activation("softplus", "Softplus", 6, softplus_np, None, "monotone", 1.0,
               "_softplus(z)", "(fmax(z, 0) + log1p(exp(-fabs(z))))", "Softplus"),
    Activation("softsign", "Softsign", 7, softsign_np, None, "monotone", 1.0,
               "z / (1 + abs(z))", "(z / (1 + fabs(z)))", "Softsign"),
    Activation("hard_swish", "HardSwish", 8, hard_swish_np, None, "unimodal", 1.5,
               "z * min(max(z / 6 + 0.5, 0.0), 1.0)", "(z * fmin(fmax(z / 6 + 0.5, 0), 1))",
               "HardSwish", onnx_opset=14, minimum_at=-1.5),
    Activation("mish", "Mish", 9, mish_np, None, "unimodal", 1.1,
               "z * math.tanh(_softplus(z))",
               "(z * tanh(fmax(z, 0) + log1p(exp(-fabs(z)))))", "Mish", onnx_opset=18,
               minimum_at=-1.19201),
    Activation("gelu", "Gelu", 10, gelu_np, None, "unimodal", 1.13,
               "0.5 * z * (1 + math.erf(z / math.sqrt(2.0)))",
               "(0.5 * z * (1 + erf(z * 0.70710678118654752440)))", "Gelu", onnx_opset=20,
               minimum_at=-0.751791),
    Activation("gelu_tanh", "GeluTanh", 11, gelu_tanh_np, None, "unimodal", 1.13,
               "0.5 * z * (1 + math.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))",
               "(0.5 * z * (1 + tanh(0.79788456080286535588 * (z + 0.044715 * z * z * z))))",
               "Gelu", onnx_opset=20, onnx_attrs=(("approximate", "tanh"),),
               minimum_at=-0.752263),
    Activation("thresholded_relu", "ThresholdedRelu", 12, thresholded_relu_np, 1.0,
               "thresholded", math.inf, "z if z > a else z * 0", "(z > a ? z : z * 0)",
               "ThresholdedRelu"),
    Activation("swish", "Swish", 13, swish_np, None, "unimodal", 1.1, "z * _sigmoid(z)",
               "(z * (z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z))))", "Swish",
               onnx_opset=24, minimum_at=-1.27846),
    Activation("erf", "Erf", 14, erf_np, None, "monotone", 2 / math.sqrt(math.pi),
               "math.erf(z)", "erf(z)", "Erf"),
    Activation("bounded_relu", "BoundedRelu", 15, bounded_relu_np, 6.0, "monotone", 1.0,
               "a if z > a else (z if z > 0 else z * 0)", "(z > a ? a : (z > 0 ? z : z * 0))",
               "Clip", piecewise_linear=True, clamp=lambda a: (0.0, 0.0, a)),
)

BY_NAME: dict[str, Activation] = {a.name: a for a in CATALOGUE}
BY_OP: dict[str, Activation] = {a.op: a for a in CATALOGUE}
BY_CODE: dict[int, Activation] = {a.code: a for a in CATALOGUE}
#: the numpy function of each MLP name (the standalone kernel module's table)
NUMPY_BY_NAME: dict[str, Fn] = {a.name: a.numpy for a in CATALOGUE}
#: the activations every MLP target computes, by role
IDENTITY = BY_NAME["identity"]
RELU = BY_NAME["relu"]
#: IR ops that take the parameter ``alpha``
ALPHA_OPS = tuple(a.op for a in CATALOGUE if a.alpha is not None)


def by_name(name: str) -> Activation:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no activation named {name!r}") from None


def op_attrs(op: str, alpha: float) -> dict[str, float]:
    """The IR node attributes of an activation op with this parameter."""
    return {"alpha": float(alpha)} if op in ALPHA_OPS else {}


def apply(name: str, alpha: float, h: np.ndarray) -> np.ndarray:
    """The activation ``name`` (an MLP name) on ``h``."""
    return by_name(name).numpy(h, alpha)


def embedded_source() -> str:
    """The numpy functions and the name → function table as source, for the standalone
    kernel module (numpy and math alone)."""
    import inspect

    functions = list(NUMPY_HELPERS) + [a.numpy for a in CATALOGUE
                                       if a.numpy not in NUMPY_HELPERS]
    table = ",\n".join(f"    {a.name!r}: {a.numpy.__name__}" for a in CATALOGUE)
    return ("import math\n\n\n" + "\n\n".join(inspect.getsource(f) for f in functions)
            + f"\n\nACTIVATIONS = {{\n{table},\n}}\n")
