"""What a target is, and the registry of targets by name (a leaf: every backend imports it).

A target is one class in one module of ``backends/``: its name and file suffix, how its
pipeline differs from the core one, the options its passes need, and how it writes (and,
for ``--check``, loads) the MLP. ``@register_target`` adds it; ``backends.get_target``
finds every module that registers one. Adding a target is adding a module.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from ..errors import CompileError
from ..ir.graph import Graph, GraphMeta

if TYPE_CHECKING:  # the passes are imported when a pipeline is built, the layers' module
    # (scipy) when a model is compiled or read: not to load a cached model
    from ..ir.mlp import Mlp
    from ..passes.base import PassContext, PassOptions
    from ..passes.pipeline import Pipeline

#: the largest dense weights a dense target writes unless --max-dense-bytes says otherwise
DEFAULT_MAX_DENSE_BYTES = 2**30


@dataclass
class TargetOptions:
    """What the command line tells a target's writer."""

    #: dense targets: refuse dense weights above this many bytes
    max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES
    #: opencv: "text" (17 digits) or "base64" (binary doubles)
    xml_encoding: str = "text"
    #: verifier targets: write a network a linearization made approximate
    allow_approximate: bool = False
    #: the input domain (.nnet writes it as the input box)
    input_range: tuple[float, float] = (0.0, 1.0)
    #: npz: "structured" (a layer as the parts that generate it) or "plain" (CSR arrays)
    npz_layout: str = "structured"
    #: c: the prefix of the generated functions and macros (None: from the file name)
    c_prefix: str | None = None
    #: c: "source" (static arrays), "file" (a weights file beside it) or "auto" (by size)
    c_weights: str = "auto"
    #: c: the self-test vectors to embed (a runtime.c_source.SelfTest), or None
    c_self_test: Any = None


class Predictor:
    """What ``--check`` runs: ``predict(x)`` on a batch."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray]) -> None:
        self.predict = predict


class Target:
    """A format the MLP is written in. Subclasses set the class attributes and implement
    :meth:`write` and :meth:`load`."""

    name: ClassVar[str] = ""
    suffix: ClassVar[str] = ""
    #: what the file is, for messages ("an OpenCV XML")
    kind: ClassVar[str] = ""
    #: "cost" (fuse linear maps only when that takes no more non-zeros) or "always" (a
    #: dense target has no room for linear layers)
    fusion: ClassVar[str] = "always"
    #: bytes a dense weight takes in the file (None: the target is sparse)
    dense_bytes: ClassVar[int | None] = None
    #: the largest file the format holds (None: no limit), and why
    format_limit: ClassVar[int | None] = None
    limit_note: ClassVar[str] = ""
    #: how the pipeline differs from the core one: a pass replaced, passes added after one
    replace: ClassVar[dict[str, str]] = {}
    insert_after: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: whether ``--kernel-py`` can write a numpy module that runs this target's file
    runs_in_kernel_module: ClassVar[bool] = False
    #: whether the file can carry self-test vectors (``--c-self-test``)
    takes_self_test: ClassVar[bool] = False

    def pipeline(self) -> Pipeline:
        """The core pipeline with this target's replacements and insertions."""
        from ..passes.pipeline import Pipeline

        pipeline = Pipeline.core()
        for old, new in self.replace.items():
            pipeline.replace(old, new)
        for anchor, names in self.insert_after.items():
            for name in reversed(names):
                pipeline.insert_after(anchor, name)
        return pipeline

    def pass_options(self) -> PassOptions:
        """What this target's passes need to know (the defaults: a ReLU-pair target)."""
        from ..passes.base import PassOptions

        return PassOptions()

    def context(self, **kwargs: Any) -> PassContext:
        from ..passes.base import PassContext

        return PassContext(target=self.name, fusion=self.fusion, options=self.pass_options(),
                           **kwargs)

    def check_shapes(self, graph: Graph, model: str, options: TargetOptions) -> None:
        """Before any pass runs: refuse what cannot fit in this format (dense targets)."""
        if self.dense_bytes is not None:
            dense_preflight_from_shapes(self, graph, model, options.max_dense_bytes)

    def write(self, mlp: Mlp, meta: GraphMeta, path: str | Path, options: TargetOptions,
              provenance: dict[str, str]) -> None:
        """Write ``mlp`` to ``path`` (already a staged file); ``provenance`` holds the
        source model's path ("source") and cnn2mlp's version ("cnn2mlp")."""
        raise NotImplementedError

    def load(self, mlp: Mlp, path: Path) -> Predictor:
        raise NotImplementedError

    def check_output(self, path: Path) -> None:
        """Before any work: refuse an output name this format cannot carry."""

    def written_notes(self, path: Path, mlp: Mlp) -> list[str]:
        """Lines the CLI prints after writing (what a device needs, for the C target)."""
        return []

    def companions(self, path: str | Path) -> list[Path]:
        """Files a write makes beside ``path`` (a C source's header): written next to the
        path ``write`` gets with their own suffixes, staged and committed with it."""
        return []


#: name → target, filled by @register_target as backend modules are imported
TARGETS: dict[str, Target] = {}


def register_target(cls: type[Target]) -> type[Target]:
    if not cls.name or not cls.suffix:
        raise ValueError(f"{cls.__name__} needs a name and a suffix")
    TARGETS[cls.name] = cls()
    return cls


# ------------------------------------------------------------------------ dense targets
def check_format_limit(target: Target, need: int, source: str = "") -> None:
    """Refuse up front a network whose dense weights alone exceed what its format holds."""
    limit = target.format_limit
    if limit is not None and need > limit:
        raise CompileError(
            f"{source}: as a dense {target.name} network this MLP needs {need / 2**30:,.2f} GiB "
            f"of weights, but {target.limit_note}; use --target csr (sparse), or compile a "
            "smaller --input-shape")


def dense_size(target: Target, mlp: Mlp) -> tuple[int, int]:
    """(weights, bytes) a dense target stores for ``mlp``: every matrix entry and bias."""
    weights = sum((layer.n_in + 1) * layer.n_out for layer in mlp.layers)
    return weights, weights * (target.dense_bytes or 0)


def dense_preflight(target: Target, mlp: Mlp, max_bytes: int, source: str = "") -> None:
    """Dense targets store every weight: refuse, with the numbers, a network whose dense
    form is above ``max_bytes``."""
    weights, need = dense_size(target, mlp)
    check_format_limit(target, need, source)
    if need > max_bytes:
        widest = max(mlp.layers, key=lambda l: (l.n_in + 1) * l.n_out)
        raise CompileError(
            f"{source}: as a dense {target.name} network this MLP needs {weights:,} weights "
            f"({need / 2**20:,.0f} MiB), above --max-dense-bytes {max_bytes / 2**20:,.0f} MiB; "
            f"its widest layer is {widest.n_in}x{widest.n_out}. The {target.name} format "
            "stores dense weights: use --target csr (sparse), or raise --max-dense-bytes")


def dense_preflight_from_shapes(target: Target, graph: Graph, model: str, limit: int) -> None:
    """Dense targets store every weight: refuse, before fusing anything, a network whose
    dense layers cannot fit (fusing N→1→N alone makes an N×N matrix)."""
    from ..ir.cost import dense_bytes_lower_bound

    need, widths = dense_bytes_lower_bound(graph)
    need = need // 8 * target.dense_bytes
    check_format_limit(target, need, model)
    if need > limit:
        shown = "-".join(map(str, widths[:8])) + ("-…" if len(widths) > 8 else "")
        raise CompileError(
            f"{model}: as {target.kind} this network needs at least {need / 2**20:,.0f} MiB "
            f"of dense weights (layers {shown}), above --max-dense-bytes "
            f"{limit / 2**20:,.0f} MiB. The {target.name} format stores dense weights: use "
            "--target csr (sparse), or raise --max-dense-bytes")


def refuse_approximate(mlp: Mlp, options: TargetOptions, source: str) -> None:
    """Verifier targets never get an approximate network unless the user said so."""
    exact = not any(note.startswith("approximate") for note in mlp.notes)
    if not exact and not options.allow_approximate:
        raise CompileError(f"{source}: the MLP is approximate ({'; '.join(mlp.notes)}); "
                           "a verifier must not be given an approximate network silently: "
                           "pass --allow-approximate to write it anyway")
