"""The C target: the MLP as one self-contained C99 source and its header, for C and C++
programs, robots and microcontrollers (the C library and libm, nothing else).

The code is the runtime's (``runtime/c_source.py``: the plan of each layer as loops, the
weights in the source or, for big models, in a binary file beside it); this module writes
it under the user's names and, for ``--check``, builds and runs it (``CModel``).
"""
from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path

import numpy as np

from ..errors import CompileError
from ..ir.activations import IDENTITY
from ..ir.graph import GraphMeta
from ..ir.mlp import Mlp
from ..ir.weights import compact
from ..runtime.c_build import build_units, load_source, source_units
from ..runtime.c_source import c_identifier, c_source
from .registry import Predictor, Target, TargetOptions, register_target


def c_paths(path: str | Path) -> tuple[Path, Path, Path]:
    """The source's path, its header's (same stem, .h) and its weights file's."""
    path = Path(path)
    return path, path.with_suffix(".h"), path.with_suffix(".weights")


@register_target
class CTarget(Target):
    """A C99 source and header (``-o model.c`` writes ``model.c`` and ``model.h``): sparse
    like the CSR target, with per-neuron activations."""

    name, suffix, kind = "c", ".c", "a C source"
    fusion = "cost"
    replace = {"clip-to-relu": "clip-to-bounded-relu"}
    takes_self_test = True

    def pass_options(self):
        from ..passes.base import PassOptions

        return PassOptions(carry=IDENTITY.name)

    def check_output(self, path: Path) -> None:
        """The header's name goes into the source's ``#include "..."``: a quote, a
        backslash or a control character there would end or redirect the directive."""
        header = c_paths(path)[1].name
        bad = [c for c in header if c in '"\\' or not c.isprintable()]
        if bad:
            raise CompileError(f"-o {str(path)!r}: the header's name {header!r} holds "
                               f"{bad[0]!r}, which an #include line cannot carry; choose a "
                               "name of letters, digits, '-', '_' and '.'")

    def companions(self, path: str | Path) -> list[Path]:
        """The other files a write makes beside ``path``."""
        _, header, weights = c_paths(path)
        return [header, weights]

    def write(self, mlp: Mlp, meta: GraphMeta, path: str | Path, options: TargetOptions,
              provenance: dict[str, str]) -> None:
        if meta.input_affine is not None or meta.uniform is not None:
            raise CompileError("extract-input-affine and unify-activation prepare a graph for "
                               "the opencv target; leave them out of --passes for c")
        final = Path(provenance.get("output", path))
        self.check_output(final)
        prefix = c_identifier(options.c_prefix or final.stem)
        _, header_path, weights_path = c_paths(path)
        n_in = mlp.layers[0].n_in
        contract = (f"Input: the model's input without the batch axis, shape "
                    f"{tuple(mlp.input_shape)}, flattened row-major in its own layout "
                    f"({n_in} values). Output: shape {tuple(mlp.output_shape)}, flattened"
                    + (" (logits: the model's final softmax is not applied)"
                       if meta.logits else "") + ".")
        limit = {"source": float("inf"), "file": 0}.get(options.c_weights)
        # written in units, which a build may compile in parallel (as --check does); one
        # program to a compiler that is given no CNN2MLP_UNIT
        made = c_source(compact_layers(mlp), prefix, c_paths(final)[1].name, contract,
                        self_test=options.c_self_test, static_limit=limit,
                        units=build_units(len(mlp.layers)))
        Path(path).write_text(made.source)
        header_path.write_text(made.header)
        if made.weights is not None:
            weights_path.write_bytes(made.weights)

    def written_notes(self, path: Path, mlp: Mlp) -> list[str]:
        """What the written code needs, from its header: the weights (flash on a
        microcontroller) and predict_with's work buffer for one sample (RAM)."""
        header = c_paths(path)[1].read_text()
        weights = re.search(r"#define \w+_WEIGHTS_BYTES (\d+)", header)
        work = re.search(r"_WORK_FLOATS\(batch\) \(\(batch\) <= \d+ \? 2 \* (\d+)", header)
        if not (weights and work):
            return []
        item = np.dtype(mlp.dtype).itemsize
        return [f"C: weights {int(weights.group(1)):,} bytes (read-only: flash), work buffer "
                f"for one sample {2 * int(work.group(1)) * item:,} bytes (RAM); the header "
                "gives both as macros"]

    def load(self, mlp: Mlp, path: Path) -> Predictor:
        """Builds the source with the system C compiler, its units in parallel, and runs it
        (``--check``)."""
        return CModel(Path(path), mlp, units=source_units(Path(path).read_text()))


class CModel(Predictor):
    """A written C target, built with the system C compiler in a temporary folder and
    called through ctypes, with one work buffer held across calls (as a program that
    predicts often would)."""

    def __init__(self, source_path: Path, mlp: Mlp, optimize: str = "-O2",
                 extra: list[str] | None = None, units: int = 1) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="cnn2mlp-c-")
        self.dtype = np.dtype(mlp.dtype)
        self.library = load_source(Path(source_path), self.dtype, Path(self.folder.name),
                                   optimize, extra, units)
        self.n_in = int(np.prod(mlp.input_shape))
        self.output_shape = tuple(mlp.output_shape)
        self.work = np.empty(0, self.dtype)
        super().__init__(self.predict)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x, self.dtype).reshape(len(x), self.n_in))
        out = np.empty((len(x),) + self.output_shape, self.dtype)
        needed = self.library.work_size(len(x))
        if self.work.size < needed:
            self.work = np.empty(needed, self.dtype)
        self.library.run(x, out.reshape(len(x), -1), self.work)
        return out


def compact_layers(mlp: Mlp) -> Mlp:
    """The MLP with each weight as ``weights.compact`` stores it in least, as the ``.npz``
    holds it (a max pool's tournament as groups, carried values as runs): the code the
    c engine builds from a written ``.npz`` is the code the C target writes."""
    layers = [dataclasses.replace(layer, weight=compact(layer.weight)) for layer in mlp.layers]
    return dataclasses.replace(mlp, layers=layers)
