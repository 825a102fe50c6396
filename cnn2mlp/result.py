"""What a compile returns: the MLP, the graph it came from, and the figures of the run."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .comparison import Comparison
from .ir import Graph
from .ir.domain import DEFAULT_DOMAIN, InputDomain
from .ir.mlp import Mlp
from .passes.pipeline import PipelineReport


@dataclass
class CompileResult:
    mlp: Mlp
    graph: Graph
    #: the target's name (``cnn2mlp.backends.get_target``)
    target: str
    pipeline: PipelineReport
    seconds: dict[str, float] = field(default_factory=dict)
    check: Comparison | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    #: the original network's multiply-adds for one sample: the yardstick of the MLP's
    #: non-zeros (ir.cost.multiply_adds)
    multiply_adds: int = 0
    #: the inputs the compile assumed and the check sampled (ir/domain.py)
    input_domain: InputDomain = DEFAULT_DOMAIN

    @property
    def nnz(self) -> int:
        return sum(int(layer.weight.nnz) for layer in self.mlp.layers)

    @property
    def exact(self) -> bool:
        return not any(note.startswith("approximate") for note in self.mlp.notes)
