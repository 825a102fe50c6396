"""The pass interface and the registry of passes by name."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..ir import Graph

PASSES: dict[str, type["Pass"]] = {}


@dataclass
class PassOptions:
    """Options that passes read, set by the target (``backends``) and the command line."""

    #: linearize-dag: carry values past layers with "identity" neurons (targets with an
    #: activation per neuron) or with the layer's own "activation" (ReLU pairs)
    carry: str = "activation"
    #: linearize-dag: every layer one activation (OpenCV's ANN_MLP, .nnet)
    uniform: bool = False
    #: avgpool-linearize: error bounds in OpenCV's arithmetic (float64, its SIGMOID_SYM)
    opencv_arithmetic: bool = False
    #: avgpool-linearize: the scale (None: chosen to minimise the error bound)
    epsilon: float | None = None
    #: avgpool-linearize: the activation to linearize under (None: the network's own)
    activation: str | None = None
    #: conv-to-dense: build a strided convolution's matrix directly (False: via fold-stride)
    fold_stride: bool = True


@dataclass
class PassContext:
    """What passes may read (options) and write (notes for the report)."""

    target: str = "csr"
    #: "cost": fuse linear layers only when the non-zeros do not grow; "always": fuse all
    #: (targets with no room for a linear layer); "never": keep every linear map a layer of
    #: its own (the unfused lowering: a baseline for the size model, and for teaching)
    fusion: str = "cost"
    #: declared input domain, used by analyses that need bounds
    input_range: tuple[float, float] = (0.0, 1.0)
    options: PassOptions = field(default_factory=PassOptions)
    #: per-pass statistics, filled by passes (e.g. neurons added)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the most bytes the MLP may take (--max-bytes); passes that grow it check before
    #: they allocate (None: no limit)
    max_bytes: int | None = None


class Pass:
    """A graph rewrite. Subclasses set ``name`` and implement :meth:`run`, in place.

    ``run`` returns the number of rewrites made (0 when nothing matched), which the
    pipeline reports.
    """

    name: ClassVar[str] = ""

    def run(self, graph: Graph, ctx: PassContext) -> int:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<pass {self.name}>"


def register_pass(cls: type[Pass]) -> type[Pass]:
    if not cls.name or cls.name in PASSES:
        raise ValueError(f"pass name {cls.name!r} is empty or taken")
    PASSES[cls.name] = cls
    return cls


def get_pass(name: str) -> Pass:
    from ..errors import CompileError

    if name not in PASSES:
        raise CompileError(f"unknown pass {name!r}; passes: {', '.join(sorted(PASSES))}")
    return PASSES[name]()
