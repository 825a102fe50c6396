"""Why no MLP computes an op: the reasons a refusal gives for ops without an MLP form."""

from ..reasons import ATTENDS, NORMALIZES

#: ops that no MLP computes, and why (a product, a division or a normalization by values
#: computed from the input; functions no target has as an activation)
NO_MLP_FORM = {
    "LayerNormalization": NORMALIZES, "InstanceNormalization": NORMALIZES,
    "GroupNormalization": NORMALIZES, "MeanVarianceNormalization": NORMALIZES,
    "LpNormalization": "divides each sample by its norm (a division by computed values)",
    "Attention": ATTENDS, "MultiHeadAttention": ATTENDS,
    **{op: f"computes {op.lower()} of values (a function no MLP target has as an activation)"
       for op in ("Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh",
                  "Atanh", "Exp", "Log", "Sqrt", "Reciprocal")},
    "LogSoftmax": "takes a logarithm of a sum computed from the input",
    "Hardmax": "is discontinuous (a jump no weighted sum of ReLUs has)",
}

#: ops that jump: no continuous piecewise-linear function, so no MLP, computes them
DISCONTINUOUS = {"ArgMax", "ArgMin", "OneHot", "Equal", "Greater", "Less", "GreaterOrEqual",
                 "LessOrEqual", "Round", "Floor", "Ceil", "Sign", "TopK", "NonZero", "Not",
                 "And", "Or", "Xor", "IsNaN", "IsInf", "BitShift", "Mod"}
