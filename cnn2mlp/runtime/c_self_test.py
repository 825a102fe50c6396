"""``--c-self-test``: inputs from the model's domain and what the original model computes
for them, embedded in the C source with ``<prefix>_self_test()``, which runs them and
returns the largest error relative to the largest expected output (+INFINITY on NaN or a
failing predict: never a value that hides a failure)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .c_literals import literals


@dataclass
class SelfTest:
    """Inputs from the model's domain and what the original computes for them: the vectors
    ``<prefix>_self_test()`` checks the build against. ``probabilities``: the reference
    gave the softmax of the outputs (a Keras model whose final softmax was dropped), so the
    test applies one to the MLP's logits first."""

    inputs: np.ndarray    # (N, n_in)
    outputs: np.ndarray   # (N, n_out)
    probabilities: bool = False


def self_test_code(test: SelfTest, prefix: str, upper: str, real: str) -> str:
    dtype = np.float64 if real == "double" else np.float32
    inputs = np.ascontiguousarray(test.inputs, dtype)
    outputs = np.ascontiguousarray(test.outputs, dtype)
    scale = float(np.max(np.abs(outputs), initial=0.0)) or 1.0
    return SELF_TEST.format(
        prefix=prefix, upper=upper, real=real, n=len(inputs), inputs=literals(inputs),
        outputs=literals(outputs), scale=repr(scale),
        softmax=SOFTMAX.format(upper=upper, real=real) if test.probabilities else "")


SELF_TEST_DOC = """/* Runs the {n} inputs embedded at compile time (drawn from the model's input domain) and
   compares with what the original model computed for them (its own runtime, as --check
   does): returns the largest |got - expected| over the largest |expected| of the vectors.
   0 when exact; about 1e-6 is float rounding; above 1e-4 the build does not compute what
   the original does. Never negative: a NaN or infinite output, a failing predict (init
   not called) or any other failure returns +INFINITY, so `if (!(e <= 1e-4f))` catches
   every failure. Not reentrant (a static work buffer of {prefix}_work_size(1) values). */
float {prefix}_self_test(void);
"""

SELF_TEST = """
static const {real} self_test_in[{n} * {upper}_INPUT_SIZE] = {{
{inputs}
}};
static const {real} self_test_out[{n} * {upper}_OUTPUT_SIZE] = {{
{outputs}
}};

float {prefix}_self_test(void)
{{
    static {real} work[{upper}_WORK_FLOATS(1)];
    {real} out[{upper}_OUTPUT_SIZE];
    {real} worst = 0, d;  /* in the model's type: no double arithmetic on a float-only FPU */
    int s, i;
    for (s = 0; s < {n}; s++) {{
        if ({prefix}_predict_with(self_test_in + (size_t)s * {upper}_INPUT_SIZE, out, 1, work) != 0)
            return (float)INFINITY;
{softmax}        for (i = 0; i < {upper}_OUTPUT_SIZE; i++) {{
            d = fabs(out[i] - self_test_out[(size_t)s * {upper}_OUTPUT_SIZE + i]);
            if (!(d - d == 0)) return (float)INFINITY;  /* NaN or infinite */
            if (d > worst) worst = d;
        }}
    }}
    return (float)(worst / ({real}){scale});
}}
"""

#: the reference gave probabilities: the MLP's logits through a softmax first
SOFTMAX = """        {{
            {real} top = out[0], sum = 0;
            for (i = 1; i < {upper}_OUTPUT_SIZE; i++) if (out[i] > top) top = out[i];
            for (i = 0; i < {upper}_OUTPUT_SIZE; i++) {{ out[i] = exp(out[i] - top); sum += out[i]; }}
            for (i = 0; i < {upper}_OUTPUT_SIZE; i++) out[i] /= sum;
        }}
"""
