"""How far a compiled MLP's outputs are from a reference's: the worst element."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Comparison:
    samples: int
    max_abs_error: float
    max_rel_error: float     # |got - ref| / max(1, |ref|), worst element
    worst_index: tuple[int, ...]
    worst_reference: float
    worst_got: float
    tolerance: float
    reference: str = ""      # set when the reference is not the usual runtime for the file
    #: against a float64 evaluation of the original (when one ran): the MLP's error and
    #: the float32 reference runtime's own error
    truth_error: float | None = None
    reference_truth_error: float | None = None
    truth_note: str = ""     # why there is no float64 evaluation, when there is none
    #: whether the float32 reference's own error widens the tolerance against float64
    #: (not when the user set --tolerance: that is the bar)
    float32_slack: bool = True
    #: the box the inputs were drawn from (--check), when known
    input_range: tuple[float, float] | None = None

    @property
    def truth_tolerance(self) -> float | None:
        """What the MLP may differ from the float64 truth: the tolerance, or twice the
        float32 reference's own error where float32 accumulation makes that larger."""
        if self.truth_error is None or self.reference_truth_error is None:
            return None
        if not self.float32_slack:
            return self.tolerance
        return max(self.tolerance, 2 * self.reference_truth_error)

    @property
    def passed(self) -> bool:
        if self.max_rel_error <= self.tolerance:
            return True
        return self.truth_tolerance is not None and self.truth_error <= self.truth_tolerance

    def describe(self) -> str:
        inputs = f"{self.samples} inputs" + (
            f" in [{self.input_range[0]:g}, {self.input_range[1]:g}]" if self.input_range else "")
        text = (f"max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g} "
                f"(tolerance {self.tolerance:g}) over {inputs}; worst at "
                f"{self.worst_index}: reference {self.worst_reference:.9g}, "
                f"got {self.worst_got:.9g}"
                + (f"; reference: {self.reference}" if self.reference else ""))
        if self.truth_tolerance is not None:
            text += (f"; against a float64 evaluation of the original: the MLP "
                     f"{self.truth_error:.3g}, the float32 reference {self.reference_truth_error:.3g}"
                     f" (the MLP may differ by {self.truth_tolerance:.3g})")
        elif self.truth_note:
            text += f"; {self.truth_note}"
        return text

    def as_dict(self) -> dict:
        return {"samples": self.samples, "max_abs_error": self.max_abs_error,
                "max_rel_error": self.max_rel_error, "tolerance": self.tolerance,
                "passed": self.passed, "worst_index": list(self.worst_index),
                "input_range": list(self.input_range) if self.input_range else None,
                "float64": None if self.truth_tolerance is None else {
                    "mlp_rel_error": self.truth_error,
                    "reference_rel_error": self.reference_truth_error,
                    "tolerance": self.truth_tolerance}}


def compare(reference: np.ndarray, got: np.ndarray, tolerance: float) -> Comparison:
    """Element-wise error relative to ``max(1, |reference|)``."""
    reference = np.asarray(reference, np.float64)
    got = np.asarray(got, np.float64)
    if reference.shape != got.shape:
        raise AssertionError(f"shapes differ: reference {reference.shape}, got {got.shape}")
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(got - reference)
        # equal infinities (overflow on both sides) and NaN on both sides agree
        same = (got == reference) | (np.isnan(got) & np.isnan(reference))
        diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
        rel = np.where(same, 0.0, diff / np.maximum(1.0, np.abs(reference)))
    worst = np.unravel_index(int(np.argmax(rel)), rel.shape) if rel.size else ()
    return Comparison(len(reference), float(diff.max(initial=0.0)), float(rel.max(initial=0.0)),
                      tuple(int(i) for i in worst),
                      float(reference[worst]) if rel.size else 0.0,
                      float(got[worst]) if rel.size else 0.0, tolerance)



def merged(parts: list[Comparison]) -> Comparison:
    """One comparison of batches compared one by one: the worst element over all of them
    (its index counted from the first sample of the first batch)."""
    offset, worst, total = 0, None, 0
    for part in parts:
        if worst is None or part.max_rel_error > worst.max_rel_error:
            index = (part.worst_index[0] + offset,) + part.worst_index[1:] \
                if part.worst_index else ()
            worst = Comparison(0, 0.0, part.max_rel_error, index, part.worst_reference,
                               part.worst_got, part.tolerance, part.reference)
        offset += part.samples
        total += part.samples
    if worst is None:
        raise ValueError("nothing was compared")
    worst.samples = total
    worst.max_abs_error = max(p.max_abs_error for p in parts)
    return worst
