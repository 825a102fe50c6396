"""The one writer of C float literals: a scalar (``c_number``) or an array's values
(``literals``), exactly (Python's repr, or 9/17 significant digits), with NaN and the
infinities as <math.h>'s macros (``nanf`` or ``inff`` would not compile)."""
from __future__ import annotations

import numpy as np


def c_number(value: float, real: str) -> str:
    """A float as a C constant of type ``real``, exactly (Python's repr is the shortest
    string that reads back the same double), infinities and NaN as <math.h>'s macros:
    the one writer of a scalar float literal."""
    value = float(value)
    if np.isnan(value):
        return f"(({real})NAN)"
    if np.isinf(value):
        return f"({'-' if value < 0 else ''}({real})INFINITY)"
    return f"({real}){value!r}"


def literals(array: np.ndarray) -> str:
    """The values as C literals, a line every 8 (floats exactly: 9 or 17 digits)."""
    flat = array.ravel()
    if not flat.size:
        return "0"
    if array.dtype.kind == "f":
        digits, suffix = (9, "f") if array.dtype == np.float32 else (17, "")
        text = np.char.add(np.char.mod(f"%.{digits - 1}e", flat), suffix).tolist()
        if not np.isfinite(flat).all():  # NaN and infinities as <math.h>'s macros
            for i in np.flatnonzero(~np.isfinite(flat)):
                text[i] = "NAN" if np.isnan(flat[i]) else (
                    "INFINITY" if flat[i] > 0 else "-INFINITY")
    else:
        text = [str(v) for v in flat.tolist()]
    return ",\n".join(", ".join(text[i:i + 8]) for i in range(0, len(text), 8))
