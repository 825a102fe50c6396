"""One copy of the C functions that several layers' parts write alike.

The writers (``c_layers.py``, ``c_batched.py``, ``c_max.py``) write each part of a layer
as a function of its own, with its sizes and loop bounds as constants and its layer's
arrays by name. Many parts are the same code but for those names: the 3×3 convolution of
every layer of a DenseNet block, a ResNet stage's blocks, the border groups of maps of one
size. This rewrite keeps one copy of each such function, which takes the arrays as
arguments, and makes every part a call to it. Each part runs the same machine code as
before (its constants stay constants); the compiler only has less of it to compile
(DenseNet121 at 32×32: 937 functions, 274 distinct; 6.8 of 7.6 MB of source become 1.6).

It rewrites text the writers made, of one form only (``HELPER``); a function of another
form is left as it is, and a name is taken for an array only if the source declares it.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

#: a part's function as the writers write it: its name, its signature's parameters, its body
HELPER = re.compile(r"^static NO_LOOP_VECTORIZE void (\w+)\((const (\w+) \*restrict h, "
                    r"\3 \*restrict z)\)\n\{\n(.*?)\n\}$", re.MULTILINE | re.DOTALL)

#: a layer's array, as ``LayerWriter.array`` names them (``L<layer>_<what>_<index>``)
ARRAY_NAME = re.compile(r"\bL\d+_\w+\b")


@dataclass
class Shared:
    """A body several parts have, with the types of the arrays it takes, in order."""
    name: str
    parameters: str
    body: str
    types: tuple[str, ...]

    def signature(self) -> str:
        arrays = "".join(f", const {t} *restrict A{j}" for j, t in enumerate(self.types))
        return f"LAYER NO_INLINE NO_LOOP_VECTORIZE void {self.name}({self.parameters}{arrays})"

    def definition(self) -> str:
        return f"{self.signature()}\n{{\n{self.body}\n}}"

    def call(self, name: str, arrays: list[str]) -> str:
        """A part named ``name`` that runs this body on its ``arrays``."""
        arguments = "".join(f", {a}" for a in arrays)
        return f"static void {name}({self.parameters})\n{{\n    {self.name}(h, z{arguments});\n}}"


@dataclass
class Sharing:
    """The shared functions of a source, and its parts rewritten to call them."""
    functions: list[str]
    prototypes: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # the shared functions'


@dataclass
class Part:
    """A part's function as found in a chunk, its body with its arrays as arguments."""
    match: re.Match
    key: tuple[str, str, tuple[str, ...]]  # parameters, abstracted body, the arrays' types
    arrays: list[str]


def abstracted(body: str, types: dict[str, str]) -> tuple[str, list[str]]:
    """The body with its arrays as ``A0, A1, ...`` (in order of first use), and the names
    they stand for."""
    names: list[str] = []

    def argument(match: re.Match) -> str:
        name = match.group(0)
        if name not in types:
            return name
        if name not in names:
            names.append(name)
        return f"A{names.index(name)}"

    return ARRAY_NAME.sub(argument, body), names


def parts_of(chunk: str, types: dict[str, str]) -> list[Part]:
    found = []
    for match in HELPER.finditer(chunk):
        body, names = abstracted(match.group(4), types)
        found.append(Part(match, (match.group(2), body, tuple(types[n] for n in names)), names))
    return found


def share_functions(chunks: list[str], types: dict[str, str]) -> Sharing:
    """``chunks`` (each layer's functions, as the writers wrote them) with every function
    whose body another function also has, but for its arrays (``types``: each array's C
    element type, by name), made a call to one shared copy. The copies come first."""
    parts = [parts_of(chunk, types) for chunk in chunks]
    users = Counter(part.key for found in parts for part in found)
    shared: dict[tuple, Shared] = {}
    for key, n in users.items():  # in order of first use
        if n > 1:
            shared[key] = Shared(f"shared{len(shared)}", key[0], key[1], key[2])
    rewritten = []
    for chunk, found in zip(chunks, parts):
        pieces, end = [], 0
        for part in found:
            if part.key in shared:
                pieces += [chunk[end:part.match.start()],
                           shared[part.key].call(part.match.group(1), part.arrays)]
                end = part.match.end()
        rewritten.append("".join(pieces) + chunk[end:])
    return Sharing([s.definition() for s in shared.values()] + rewritten,
                   [s.signature() + ";" for s in shared.values()],
                   [s.name for s in shared.values()])
