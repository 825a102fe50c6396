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
    #: the float32 reference runtime's own error, worst elements
    truth_error: float | None = None
    reference_truth_error: float | None = None
    truth_note: str = ""     # why there is no float64 evaluation, when there is none
    #: whether the float32 reference's own error widens the tolerance against float64
    #: (not when the user set --tolerance: that is the bar)
    float32_slack: bool = True
    #: the box the inputs were drawn from (--check), when known
    input_range: tuple[float, float] | None = None
    #: elements that agree with neither the reference nor (where it ran) the float64
    #: evaluation; None for a comparison with the reference alone (judged on max_rel_error)
    failures: int | None = None
    #: elements where the reference itself is NaN (nothing to compare with: never a pass)
    reference_nans: int = 0
    #: what was compared when a final softmax was dropped: "logits" or "probabilities"
    compared: str = ""

    @property
    def passed(self) -> bool:
        if self.reference_nans:
            return False
        if self.failures is not None:
            return self.failures == 0
        return self.max_rel_error <= self.tolerance

    def describe(self) -> str:
        inputs = f"{self.samples} inputs" + (
            f" in [{self.input_range[0]:g}, {self.input_range[1]:g}]" if self.input_range else "")
        text = (f"{COMPARED.get(self.compared, '')}max abs error {self.max_abs_error:.3g}, "
                f"max rel error {self.max_rel_error:.3g} "
                f"(tolerance {self.tolerance:g}) over {inputs}; worst at "
                f"{self.worst_index}: reference {self.worst_reference:.9g}, "
                f"got {self.worst_got:.9g}"
                + (f"; reference: {self.reference}" if self.reference else ""))
        if self.reference_nans:
            text += (f"; the reference gives NaN for {self.reference_nans} output values, "
                     "so those inputs prove nothing (check the input domain)")
        if self.truth_error is not None:
            slack = (" or twice the float32 reference's own largest finite error"
                     if self.float32_slack else "")
            text += (f"; against a float64 evaluation of the original: the MLP "
                     f"{self.truth_error:.3g}, the float32 reference "
                     f"{self.reference_truth_error:.3g} (each output may differ from it by the "
                     f"tolerance{slack})" + (f"; {self.failures} output values agree with "
                                             "neither" if self.failures else ""))
        elif self.truth_note:
            text += f"; {self.truth_note}"
        return text

    def as_dict(self) -> dict:
        return {"samples": self.samples, "max_abs_error": self.max_abs_error,
                "max_rel_error": self.max_rel_error, "tolerance": self.tolerance,
                "passed": self.passed, "worst_index": list(self.worst_index),
                "input_range": list(self.input_range) if self.input_range else None,
                "reference_nans": self.reference_nans, "compared": self.compared or "outputs",
                "float64": None if self.truth_error is None else {
                    "mlp_rel_error": self.truth_error,
                    "reference_rel_error": self.reference_truth_error,
                    "float32_slack": self.float32_slack,
                    "failures": self.failures}}


#: how the check line starts when a final softmax was dropped
COMPARED = {"logits": "on the logits (before the model's softmax): ",
            "probabilities": "on probabilities (the reference gives only the softmax's output: "
                             "the MLP's logits go through a softmax): "}


def relative_errors(reference: np.ndarray, got: np.ndarray,
                    nan_agrees: bool) -> tuple[np.ndarray, np.ndarray]:
    """(|got - ref|, that over max(1, |ref|)) element by element; equal infinities agree,
    NaN on both sides only when ``nan_agrees``; any other non-finite difference is inf."""
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(got - reference)
        same = got == reference
        if nan_agrees:
            same |= np.isnan(got) & np.isnan(reference)
        diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
        rel = np.where(same, 0.0, diff / np.maximum(1.0, np.abs(reference)))
    return diff, rel


def compare(reference: np.ndarray, got: np.ndarray, tolerance: float,
            truth: np.ndarray | None = None, float32_slack: bool = True,
            nan_agrees: bool = True) -> Comparison:
    """Element-wise error relative to ``max(1, |reference|)``. With ``truth`` (a float64
    evaluation of the original), each element passes if it is within ``tolerance`` of the
    reference or of the truth, where ``float32_slack`` widens the latter to twice the
    reference's own largest finite error (float32 accumulation noise, which the MLP's own
    rounding matches in size but not element by element; an output that overflows or is
    NaN in the reference widens nothing). ``nan_agrees=False`` (``--check``) also fails
    every element where the reference is NaN."""
    reference = np.asarray(reference, np.float64)
    got = np.asarray(got, np.float64)
    if reference.shape != got.shape:
        raise AssertionError(f"shapes differ: reference {reference.shape}, got {got.shape}")
    diff, rel = relative_errors(reference, got, nan_agrees)
    worst = np.unravel_index(int(np.argmax(rel)), rel.shape) if rel.size else ()
    comparison = Comparison(len(reference), float(diff.max(initial=0.0)),
                            float(rel.max(initial=0.0)), tuple(int(i) for i in worst),
                            float(reference[worst]) if rel.size else 0.0,
                            float(got[worst]) if rel.size else 0.0, tolerance)
    if not nan_agrees:
        comparison.reference_nans = int(np.isnan(reference).sum())
    if truth is not None:
        truth = np.asarray(truth, np.float64).reshape(got.shape)
        _, mlp_rel = relative_errors(truth, got, nan_agrees)
        _, reference_rel = relative_errors(truth, reference, nan_agrees)
        finite = reference_rel[np.isfinite(reference_rel)]
        allowed = max(tolerance, 2 * float(finite.max(initial=0.0))) if float32_slack \
            else tolerance
        failing = (rel > tolerance) & ~(mlp_rel <= allowed)
        comparison.failures = int(failing.sum())
        comparison.truth_error = float(mlp_rel.max(initial=0.0))
        comparison.reference_truth_error = float(reference_rel.max(initial=0.0))
        comparison.float32_slack = float32_slack
    return comparison


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
    worst.reference_nans = sum(p.reference_nans for p in parts)
    judged = [p for p in parts if p.failures is not None]
    if judged and len(judged) == len(parts):
        worst.failures = sum(p.failures for p in judged)
        worst.truth_error = max(p.truth_error for p in judged)
        worst.reference_truth_error = max(p.reference_truth_error for p in judged)
        worst.float32_slack = judged[0].float32_slack
    return worst
