"""Named, editable pass pipelines (in the manner of coremltools' PassPipeline)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..ir import Graph
from ..ir.precision import working_precision
from ..ir.structured import materialize_limit
from .base import PassContext, get_pass

#: the pipeline every target starts from (each target replaces or adds a few passes:
#: ``backends``): lower the ops to Dense and activations, fuse what the size model allows,
#: make the DAG a chain, drop what nothing reads
CORE_PIPELINE: list[str] = [
    "eliminate-identity",
    "drop-final-softmax",
    "fold-batchnorm",
    "fold-pad",
    "conv-to-dense",
    "maxpool-to-relu",
    "extremum-to-relu",
    "clip-to-relu",
    "layout-to-permutation",
    "fold-stride",
    "avgpool-fuse",
    "fold-affine",
    "lower-linear",
    # again: a Reshape read by a broadcasting AddConst goes once that is a Dense
    "layout-to-permutation",
    # again: the lowerings keep a node's output name with an Identity (ReLU6 as
    # BoundedRelu then Identity); in a chain, which linearize-dag leaves alone, each would
    # be a layer of its own (an identity matrix, one more pass through memory)
    "eliminate-identity",
    "fuse-dense",
    "linearize-dag",
    "prune-neurons",
    "eliminate-dead",
]


@dataclass
class PassRecord:
    name: str
    seconds: float
    rewrites: int


@dataclass
class PipelineReport:
    records: list[PassRecord] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.records)


class Pipeline:
    """An ordered list of pass names that a user can build, edit and run.

    >>> p = Pipeline.core()
    >>> p.remove("fuse-dense")
    >>> p.insert_after("conv-to-dense", "eliminate-dead")

    A target's own pipeline: ``cnn2mlp.backends.get_target("csr").pipeline()``.
    """

    def __init__(self, passes: Iterable[str] = ()) -> None:
        self.passes: list[str] = []
        for name in passes:
            self.append(name)

    @classmethod
    def core(cls) -> "Pipeline":
        """The core pipeline (CORE_PIPELINE), before a target's changes."""
        return cls(CORE_PIPELINE)

    # -- editing ----------------------------------------------------------------------------
    def append(self, name: str) -> None:
        get_pass(name)  # fail early on a typo
        self.passes.append(name)

    def insert(self, index: int, name: str) -> None:
        get_pass(name)
        self.passes.insert(index, name)

    def insert_before(self, anchor: str, name: str) -> None:
        self.insert(self._index(anchor), name)

    def insert_after(self, anchor: str, name: str) -> None:
        self.insert(self._index(anchor) + 1, name)

    def remove(self, name: str) -> None:
        self.passes.pop(self._index(name))

    def replace(self, old: str, new: str) -> None:
        get_pass(new)
        self.passes[self._index(old)] = new

    def _index(self, name: str) -> int:
        try:
            return self.passes.index(name)
        except ValueError:
            raise ValueError(f"pass {name!r} is not in the pipeline {self.passes}") from None

    def __iter__(self):
        return iter(self.passes)

    def __repr__(self) -> str:
        return f"Pipeline({self.passes})"

    # -- running ----------------------------------------------------------------------------
    def run(self, graph: Graph, ctx: PassContext | None = None,
            after_each: Callable[[str, Graph], None] | None = None,
            before_each: Callable[[int, int, str], None] | None = None) -> PipelineReport:
        """Run the passes in order, in place; ``before_each(index, total, name)`` is told
        which pass starts (progress), ``after_each(name, graph)`` sees each result."""
        ctx = ctx or PassContext()
        report = PipelineReport()
        # weights are rounded to the model's precision; no matrix is materialized above
        # --max-bytes
        with working_precision(graph.dtype), materialize_limit(ctx.max_bytes):
            for index, name in enumerate(self.passes):
                if before_each is not None:
                    before_each(index, len(self.passes), name)
                start = time.perf_counter()
                rewrites = get_pass(name).run(graph, ctx)
                report.records.append(PassRecord(name, time.perf_counter() - start, rewrites))
                if after_each is not None:
                    after_each(name, graph)
        return report
