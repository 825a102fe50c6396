"""The C code of one planned layer for one sample (``c_source.py`` puts the layers together;
the C target writes them, the c engine builds them): the bias, a dense product, row groups
as loops over a kernel's taps, copied runs, CSR rows, and each run of neurons' activation
(clamps as a multiply and a select, the others from the activation catalogue's C
expressions).

Every part adds to the layer's output, which starts from the bias, so rows that several
parts write (a convolution plus its shortcut) need nothing special; a layer whose one group
writes each row once, in vectors of positions, stores ``clamp(sum + bias)`` instead
(``c_position_vectors.py``). The arrays a layer needs
are collected in an ``Arrays``; ``c_source.py`` decides whether they go into the source or
into a weights file."""
from __future__ import annotations

import numpy as np

from ..ir.activations import IDENTITY
from ..runtime.plan import LayerPlan
from ..runtime.structure import ProductGroup
from .c_activation import activation_loop, stored_clamp
from .c_arrays import Arrays, Scratch
from .c_blocks import BlockGroup, blocks_function, union_of
from .c_copies import copy_lines
from .c_dense import dense_lines
from .c_groups import LANES, KernelIndex, kernels_within, merge_same_rows, position_tile
from .c_indices import (CSR_TOTAL, PairIndex, bias_fill, csr_row_sum, csr_runs, fill_ranges,
                        indexed, pair_bias, position_index, row_index, run_bias, run_lines,
                        run_row_lines, same_along_rows)
from .c_literals import c_number
from .c_padded_maps import padded_functions, padded_maps
from .c_planes import Planes, find_planes, plane_floats, plane_lines, planes_store
from .c_position_panels import panels_apply, panels_function
from .c_position_vectors import vectors_function
from .c_stores import MOST_RANGES, copies_store, merged, outside
from .c_positions import HALF, half_block


#: a convolution's groups run as one function, blocks outermost, where their weights are
#: more than this: half of an L2 cache (DenseNet121's 3x3 convolutions at 32x32, 147 KB,
#: are read from the cache by each group; written together, they shared less code: its
#: first build 14.0 -> 15.5 s)
TOGETHER_ABOVE = 256 * 1024


class LayerWriter:
    """The C function of one planned layer: ``z = f(W h + b)`` for one sample."""

    def __init__(self, index: int, plan: LayerPlan, arrays: Arrays, real: str,
                 scratch: Scratch | None = None) -> None:
        self.k, self.plan, self.arrays, self.real = index, plan, arrays, real
        self.scratch = scratch
        #: values of scratch the layer's planes take (``c_planes.py``)
        self.plane_floats = 0
        self.lines: list[str] = []
        self.helpers: list[str] = []  # functions of their own the layer calls
        #: each part as (kind, the arrays and sizes it uses): what the batched writer
        #: (c_batched.py) writes the same layer from, reading the same arrays
        self.records: list[tuple[str, dict]] = []

    def array(self, what: str, values, dtype=None) -> str:
        values = np.asarray(values, dtype if dtype is not None else np.int32)
        return self.arrays.add(f"L{self.k}_{what}_{len(self.arrays.items)}", values)

    def weights(self, what: str, values) -> str:
        dtype = np.float32 if self.real == "float" else np.float64
        return self.array(what, values, dtype)

    def emit(self) -> str:
        p, r = self.plan, self.real
        fill = bias_fill(p.bias, self.array, self.weights)
        clamp = stored_clamp(p)
        #: the batched code's parts store their rows with their bias: their records say
        #: where each row's bias is
        self.stores = clamp is not None
        self.records.append(("bias", {"fill": fill, "clamp": clamp}))
        head = [f"LAYER void layer{self.k}(const {r} *restrict h, {r} *restrict z)",
                "{", "    int i, j, t;", "    (void)i; (void)j; (void)t;"]
        filled = fill.lines(r, "z[i] = v;")
        self.lines = head + filled
        if p.dense is not None:
            self.dense(p.dense)
        groups = merge_same_rows([group for part in p.parts for group in part.groups])
        pieces = [piece for group in groups for piece in self.pieces(group)]
        stored = self.share_weights([g for kind, g in pieces if kind == "kernels"])
        #: the clamp where one group writes every row once, with a bias a kernel: its
        #: stretches of positions in vectors may store them with their bias and clamp
        self.alone = self.stores_alone(clamp, pieces)
        self.stored_alone = False
        planes, in_planes = self.planes([g for kind, g in pieces if kind == "positions"])
        blocks = []
        for kind, group in pieces:
            if kind == "kernels":
                ordered, transposed, taps, index = stored[id(group)]
                blocks.append((self.kernels_in_lanes(ordered, transposed, taps, index),
                               transposed, taps))
            elif kind == "left":
                self.kernels_left(group)
            else:  # the batched code runs a plane's groups as they are
                self.positions_in_lanes(group, code=id(group) not in in_planes)
        self.block_functions(blocks)
        stored_planes = self.planes_store(pieces, planes, in_planes)
        for n, found in enumerate(planes):
            store = None if stored_planes is None else (
                self.weights("plane_bias", stored_planes[0][n]), stored_planes[1])
            self.lines += plane_lines(found, self.real, self.scratch.at, self.array,
                                      self.weights, store)
        #: the rows parts store with their bias and clamp: no bias first, no activation
        stored = [(0, p.n_out)] if self.stored_alone else \
            [] if stored_planes is None else [stored_planes[2]]
        copies = copies_store(p)
        with_copies = None if copies is None else merged(stored + copies[1])
        if with_copies is not None and len(outside(0, p.n_out, with_copies)) <= MOST_RANGES:
            stored = with_copies
        copies = copies[0] if stored is with_copies else None
        for part in p.parts:  # every part adds (or stores a row only it writes): any order
            if part.copies is not None and len(part.copies[0]):
                self.copies(part.copies, copies)
            if len(part.rest_rows):
                self.csr(part.rest_rows, part.rest)
        if stored:
            self.lines = head + fill_ranges(fill, p.bias, outside(0, p.n_out, stored),
                                            self.array, self.weights, r) + \
                self.lines[len(head) + len(filled):]
        self.activations(stored)
        self.lines.append("}")
        return "\n\n".join(self.helpers + ["\n".join(self.lines)])

    def dense(self, w: np.ndarray) -> None:
        name, (n_out, n_in) = self.weights("dense", w), w.shape
        self.records.append(("dense", {"w": name, "n_out": n_out, "n_in": n_in}))
        self.lines += dense_lines(self.real, name, n_out, n_in)

    def pieces(self, g) -> list[tuple[str, ProductGroup]]:
        """``out[rows[k, b]] += sum_t kernels[k, t] h[shifts[k] + bases[b] + offsets[t]]``,
        as the pieces the code computes: ("kernels", a group of kernels that read the same
        positions, at least sixteen), ("left", the kernels a convolution's blocks leave
        over) or ("positions", kernels that read positions of their own, or a grouped
        convolution's left over).

        A convolution's kernels all read the same positions: sixteen kernels are computed
        together, tap by tap, as a multiply-add of one input value with sixteen weights
        stored next to each other (the kernels transposed), whatever the map's size. The
        kernels of a depthwise or grouped convolution read positions of their own: eight
        positions of a run of evenly spaced ones (a row of the map) go together instead.
        The code spells out which sums are independent: no reassociation is asked of the
        compiler, so its float results are the same under any flags but those that fuse a
        multiply and an add (``-ffp-contract=fast``, the c engine's: one rounding less)."""
        shifts = np.asarray(g.shifts)
        values = np.unique(shifts)
        if len(values) > len(shifts) // LANES:  # depthwise: each kernel its own positions
            return [("positions", g)]
        blocks, found = [], []
        for value in values:  # kernels that read the same positions go together
            chosen = np.flatnonzero(shifts == value)
            blocked = len(chosen) - len(chosen) % LANES
            blocks.append(chosen[:blocked])
            if blocked < len(chosen):
                left = chosen[blocked:]
                # a convolution's kernels left over (a half block may take eight); a
                # grouped convolution's, a group's each, stay as they were: a function
                # a group would be many (see below)
                found.append(("left" if len(values) == 1 else "positions",
                              ProductGroup(g.kernels[left], g.offsets, g.bases,
                                           g.rows[left], shifts[left])))
        # the blocks of every shift in one piece, each block with its shift: a grouped
        # convolution is one loop, not one function a group (RegNet's 690 functions made
        # a 12.5 MB source, built in 52 s)
        chosen = np.concatenate(blocks)
        if len(chosen):
            found.insert(0, ("kernels", ProductGroup(g.kernels[chosen], g.offsets, g.bases,
                                                     g.rows[chosen], shifts[chosen])))
        return found

    def share_weights(self, groups: list[ProductGroup]) -> dict[int, tuple]:
        """Stores each group's blocks of kernels (transposed), once: a group whose kernels
        another stored group holds, each with every tap's weight, reads that group's array
        through a tap index (its kernels put in that group's order). At a map's borders a
        convolution's kernels lose the taps that fall outside: on a small map each corner
        and edge was a group of its own, whose weights, stored again, made most of a
        layer's weights (ResNet18's 4x4 maps: 5.4x the kernels' size), read for every
        sample (ResNet18's weights file: 37.8 -> 24.5 MB; its time at batch 1, 4-6 % less).
        Equal weights are all that is needed: the code computes the same products. A map
        too small for an interior (2×2: four corners of four taps) stores the union of its
        groups' taps, which they all read (``c_blocks.union_of``).
        Returns, per group (by id): (the group to run, its array, the taps a kernel of
        the array has, the tap index's array or None)."""
        chosen: dict[int, tuple] = {}
        sources = []
        for union, members in union_of(groups):  # a map with no interior: its corners'
            source = ProductGroup(union, [], [], [])
            index = KernelIndex(union)
            if all(kernels_within(g, index) for g in members):
                sources.append(self.stored_kernels(source, index))
        for g in sorted(groups, key=lambda g: -g.kernels.shape[1]):
            for source, name, index in sources:
                found = kernels_within(g, index)
                if found is not None:
                    ordered, taps = found
                    chosen[id(g)] = (ordered, name, source.kernels.shape[1],
                                     self.array("taps", taps))
                    break
            else:
                sources.append(self.stored_kernels(g))
                chosen[id(g)] = (g, sources[-1][1], g.kernels.shape[1], None)
        return chosen

    def stored_kernels(self, g: ProductGroup, index: KernelIndex | None = None) -> tuple:
        """``g``'s blocks of kernels stored transposed: the group, the array's name, and
        the kernels' index (``KernelIndex``): what ``kernels_within`` reads."""
        n_k, taps = g.kernels.shape
        blocked = n_k - n_k % LANES
        kernels = np.asarray(g.kernels)
        name = self.weights("kernels_t", kernels[:blocked].reshape(
            blocked // LANES, LANES, taps).transpose(0, 2, 1))
        return g, name, index or KernelIndex(kernels)

    def kernels_in_lanes(self, g: ProductGroup, transposed: str, stored: int,
                         index: str | None) -> BlockGroup:
        """Blocks of sixteen kernels of ``g``, their weights the array ``transposed``
        (``stored`` taps a kernel), the tap ``t``'s at ``index[t]`` when an index is given:
        recorded for the batched code; ``block_functions`` writes the one-sample code."""
        n_k, taps = g.kernels.shape
        assert n_k % LANES == 0, "pieces() gives whole blocks of kernels"
        tap = "t" if index is None else f"(long){index}[t]"  # the tap's row of weights
        offsets = self.array("offsets", g.offsets)
        bases = self.array("bases", g.bases)
        rows = row_index(g.rows, self.array)
        shift = self.block_shift(g)
        self.records.append(("kernels", {"w": transposed, "offsets": offsets, "bases": bases,
                                         "rows": rows, "bias": self.pair_bias(g.rows),
                                         "blocks": n_k // LANES, "taps": taps,
                                         "n_b": len(g.bases), "shift": shift,
                                         "stored": stored, "tap": tap}))
        return BlockGroup(g, offsets, bases, rows, shift, index)

    def block_functions(self, found: list[tuple[BlockGroup, str, int]]) -> None:
        """The one-sample functions of the blocks ``found`` (each with its weights' array
        and taps a kernel): a small map's convolution over padded planes
        (``c_padded_maps.py``); the groups of one array of more than ``TOGETHER_ABOVE``
        bytes on maps that need no tiles in one function, blocks outermost; a big map's
        alone, in tiles; the others each alone."""
        together: dict[tuple, list[BlockGroup]] = {}
        size, taken = 8 if self.real == "double" else 4, set()
        for p, transposed, stored, same in padded_maps(
                found, self.arrays, self.plan.n_in, self.scratch and self.scratch.floats):
            name = f"layer{self.k}_group{len(self.helpers)}"
            self.helpers += padded_functions(name, self.real, p, same[0].shift, transposed,
                                             stored, self.scratch.at, self.array)
            self.lines.append(f"    {name}(h, z);")
            self.plane_floats = max(self.plane_floats, p.floats)
            taken.update(id(b) for b in same)
        for b, transposed, stored in found:
            if id(b) in taken or self.own_form(transposed, stored, b):
                continue
            tile = position_tile(b.positions, b.taps * size, 8)
            if tile is not None:
                self.block_function(transposed, stored, [b], tile)
            elif b.blocks * stored * LANES * size > TOGETHER_ABOVE:
                together.setdefault((transposed, stored, b.blocks), []).append(b)
            else:  # read from the cache by each group: a function each, shared more often
                self.block_function(transposed, stored, [b])
        for (transposed, stored, _), members in together.items():
            self.block_function(transposed, stored, members)

    def own_form(self, transposed: str, stored: int, b: BlockGroup) -> bool:
        """``b`` as a function of a form of its own, if one takes it: a big map's
        stretches of positions in vectors (``c_position_vectors.py``), or many taps'
        inputs packed in panels of six positions (``c_position_panels.py``)."""
        def rest(positions: np.ndarray) -> BlockGroup:  # the positions in no stretch
            g = b.group
            part = ProductGroup(g.kernels, g.offsets, np.asarray(g.bases)[positions],
                                np.asarray(g.rows)[:, positions], g.shifts)
            return BlockGroup(part, b.offsets, self.array("bases", part.bases),
                              row_index(part.rows, self.array), b.shift, b.index)

        name = f"layer{self.k}_group{len(self.helpers)}"
        store = None if self.alone is None else (lambda: self.weights(
            "kernel_bias", np.asarray(self.plan.bias)[np.asarray(b.group.rows)[:, 0]]),
            tuple(c_number(v, self.real) for v in self.alone))
        code, self.stored_alone = vectors_function(name, self.real, transposed, stored, b,
                                                   self.array, rest, store)
        tile = None if self.scratch is None else panels_apply(
            self.real, b, min(self.scratch.floats, self.scratch.width))
        if code is None and tile is not None:
            self.plane_floats = max(self.plane_floats, tile * b.taps)
            code = panels_function(name, transposed, stored, b, self.scratch.at, tile)
        if code is not None:
            self.helpers.append(code)
            self.lines.append(f"    {name}(h, z);")
        return code is not None

    def stores_alone(self, clamp, pieces) -> tuple | None:
        """The clamp of a layer whose one group of blocks writes each of its rows once,
        with a bias a kernel; else None."""
        p = self.plan
        if clamp is None or len(pieces) != 1 or pieces[0][0] != "kernels" or any(
                part.copies is not None and len(part.copies[0]) or len(part.rest_rows)
                for part in p.parts):
            return None
        rows = np.asarray(pieces[0][1].rows, np.int64)
        covered = rows.size == p.n_out and np.array_equal(np.sort(rows, axis=None),
                                                          np.arange(p.n_out))
        return clamp if covered and same_along_rows(np.asarray(p.bias)[rows]) else None

    def block_function(self, transposed: str, stored: int, members: list[BlockGroup],
                       tile: int | None = None) -> None:
        name = f"layer{self.k}_group{len(self.helpers)}"
        self.helpers.append(blocks_function(name, self.real, transposed, stored, members, tile))
        self.lines.append(f"    {name}(h, z);")

    def block_shift(self, g: ProductGroup) -> str:
        """The shift of the positions block ``i`` of ``g`` reads, as a C expression: a
        number when every kernel's is the same, else an array's entry (one a block, at
        ``[i]``: ``c_packed.packed_kernels`` reads that form as positions of a block's own)."""
        shifts = np.asarray(g.shifts)
        blocked = len(shifts) - len(shifts) % LANES
        if not len(shifts) or (shifts == shifts[0]).all():
            return f"{int(shifts[0]) if len(shifts) else 0}L"
        per_block = shifts[:blocked].reshape(-1, LANES)
        assert (per_block == per_block[:, :1]).all(), "a block of kernels with two shifts"
        return f"(long){self.array('block_shifts', per_block[:, 0])}[i]"

    def planes(self, groups: list[ProductGroup]) -> tuple[list[Planes], set[int]]:
        """The depthwise convolutions among the groups run position by position, as
        planes where the scratch holds them, and the ids of the groups they replace."""
        if self.scratch is None or not groups:
            return [], set()
        fits = [(p, same) for p, same in find_planes(groups, self.plan.n_in)
                if p.floats <= self.scratch.floats]
        self.plane_floats = plane_floats([p for p, _ in fits])
        return [p for p, _ in fits], {id(g) for _, same in fits for g in same}

    def planes_store(self, pieces, planes, in_planes) -> tuple | None:
        """``c_planes.planes_store``'s, where the planes are the layer's only groups."""
        if any(kind != "positions" or id(g) not in in_planes for kind, g in pieces):
            return None
        found = planes_store(planes, self.plan)
        return found and (found[0], tuple(c_number(v, self.real) for v in found[1]), found[2])

    def kernels_left(self, g: ProductGroup) -> None:
        """A convolution's kernels a block of sixteen leaves over: eight in vectors, of
        positions on a big map (``vectors_function``, reading no position index), else of
        kernels (``half_block``); the rest each on its own."""
        if len(g.kernels) < HALF:
            self.positions_in_lanes(g)
            return
        first, rest = (ProductGroup(g.kernels[part], g.offsets, g.bases, g.rows[part],
                                    g.shifts[part]) for part in (slice(HALF), slice(HALF, None)))
        fallback = self.positions_in_lanes(first, code=False)
        name = f"layer{self.k}_group{len(self.helpers)}"
        transposed = self.weights("half_t", np.asarray(first.kernels).T)
        offsets, shift = self.array("offsets", first.offsets), self.block_shift(first)
        code = vectors_function(name, self.real, transposed, first.kernels.shape[1],
                                BlockGroup(first, offsets, "", None, shift, None),
                                self.array, None, lanes=HALF, fallback=fallback)[0]
        self.helpers.append(code or half_block(
            name, self.real, transposed, offsets, self.array("bases", first.bases),
            row_index(first.rows, self.array), shift, first.kernels.shape[1],
            len(first.bases), fallback))
        self.lines.append(f"    {name}(h, z);")
        if len(rest.kernels):
            self.positions_in_lanes(rest)

    def positions_in_lanes(self, g, code: bool = True) -> list[str]:
        """Kernels that read positions of their own (or too few for a block), each on its
        own, positions eight at a time along a run: recorded for the batched code, and
        written here unless ``code`` is false. Returns the statements."""
        n_k, taps = g.kernels.shape
        n_b = len(g.bases)
        kernels = self.weights("kernels", g.kernels)
        offsets = self.array("offsets", g.offsets)
        shifts = self.array("shifts", g.shifts)
        rows, runs = position_index(g.bases, g.rows, self.array)
        run_start, run_length, run_base, run_step, *run_rows = (
            self.array(f"run_{what}", column) for what, column in
            zip(("start", "length", "base", "step", "row", "row_step"), runs.T))
        r = self.real
        self.records.append(("positions", {
            "w": kernels, "offsets": offsets, "shifts": shifts, "run_start": run_start,
            "run_length": run_length, "run_base": run_base, "run_step": run_step,
            "run_rows": run_rows, "rows": rows,
            "bias": self.pair_bias(g.rows),
            "n_k": n_k, "taps": taps, "n_b": n_b, "runs": len(runs),
            "same_positions": len(np.unique(np.asarray(g.shifts))) == 1}))
        lines = [
            f"    for (i = 0; i < {n_k}; i++) {{",
            f"        const {r} *restrict w = {kernels} + (long)i * {taps};",
            f"        const {r} *restrict src = h + {shifts}[i];",
            "        " + rows.pointer("o", "i"),
            f"        for (j = 0; j < {len(runs)}; j++) {{",
            f"            const int first = {run_start}[j], n = {run_length}[j];",
            f"            const int step = {run_step}[j];",
            *run_row_lines(run_rows, "            "),
            f"            const {r} *restrict x = src + {run_base}[j];",
            "            int p = 0, l;", "            (void)l;",
            # positions eight at a time where a run is that long (only then: on a smaller
            # map GCC would see the static rows' array overrun by a loop that never runs)
            *([] if runs[:, 1].max(initial=0) < 8 else [
                "            for (; p + 8 <= n; p += 8) {",
                f"                {r} acc[8] = {{0}};",
                "                const long at = (long)p * step;",
                f"                for (t = 0; t < {taps}; t++) {{",
                f"                    const {r} wt = w[t];",
                f"                    const {r} *restrict xt = x + at + {offsets}[t];",
                "                    if (step == 1) for (l = 0; l < 8; l++) acc[l] += wt * xt[l];",
                "                    else for (l = 0; l < 8; l++) acc[l] += wt * xt[(long)l * step];",
                "                }",
                f"                for (l = 0; l < 8; l++) z[{rows.at('o', 0, 'first + p + l')}] += acc[l];",
                "            }"]),
            "            for (; p < n; p++) {",
            f"                const {r} *restrict xp = x + (long)p * step;",
            f"                {r} acc[8] = {{0}};",
            f"                {r} sum = 0;",
            f"                for (t = 0; t + 8 <= {taps}; t += 8)",
            f"                    for (l = 0; l < 8; l++) acc[l] += w[t + l] * xp[{offsets}[t + l]];",
            f"                for (; t < {taps}; t++) sum += w[t] * xp[{offsets}[t]];",
            "                for (l = 0; l < 8; l++) sum += acc[l];",
            f"                z[{rows.at('o', 0, 'first + p')}] += sum;",
            "            }",
            "        }", "    }"]
        if code:
            self.lines += lines
        return lines

    def copies(self, copies, store: tuple | None = None) -> None:
        """The copy runs, adding to their rows; with ``store`` (each run's bias and clamp,
        ``c_stores.copies_store``), storing ``clamp(w * h + bias)`` instead."""
        rows, columns, lengths, weights, steps = copies
        n = len(rows)
        r, c, n_len = self.array("copy_rows", rows), self.array("copy_cols", columns), \
            self.array("copy_lengths", lengths)
        w = self.weights("copy_weights", weights)
        # a column step other than 1 (a channels-last map read channel by channel) needs
        # its array; runs of consecutive columns keep the plain loop
        step = None if np.all(np.asarray(steps) == 1) else self.array("copy_steps", steps)
        bias = self.weights("copy_bias", run_bias(self.plan.bias, rows, lengths)) \
            if self.stores else None
        self.records.append(("copies", {"rows": r, "cols": c, "lengths": n_len, "w": w, "n": n,
                                        "bias": bias, "steps": step}))
        self.lines += copy_lines(self.real, copies, store, self.array, self.weights,
                                 (r, c, n_len, w, step))

    def csr(self, rest_rows, rest) -> None:
        data, indices, indptr = rest
        value = self.csr_values(np.asarray(data))
        cols = self.array("csr_cols", indices)
        bias = self.row_bias(self.plan.bias[np.asarray(rest_rows, np.int64)]) \
            if self.stores else None
        runs = csr_runs(rest_rows, indptr)
        if runs is not None:  # rows and row pointers computed in runs of rows
            head = [f"    for (t = 0; t < {len(runs)}; t++) {{",
                    *run_lines(self.array, runs, "        "),
                    "        for (i = first; i < first + n; i++) {"]
            row, begin, end = ("row0 + (i - first) * row_step", "ptr0 + (i - first) * count",
                               "ptr0 + (i - first + 1) * count")
        else:
            row = indexed(rest_rows, "csr_rows", self.array).format(i="i")
            pointer = indexed(indptr, "csr_ptr", self.array)
            begin, end = pointer.format(i="i"), pointer.format(i="i + 1")
            head = ["    {", f"        for (i = 0; i < {len(rest_rows)}; i++) {{"]
        self.records.append(("csr", {"row": row, "value": value, "cols": cols, "head": head,
                                     "begin": begin, "end": end, "bias": bias}))
        self.lines += [*head, *csr_row_sum(self.real, value, cols, begin, end),
                       f"            z[{row}] += {CSR_TOTAL};", "        }", "    }"]

    def csr_values(self, data: np.ndarray) -> str:
        """Entry ``j``'s weight as a C expression: a sign (one byte) where every weight
        is 1 or -1 (a max pool's tournament: the product is the same), else the weight."""
        if data.size and np.all(np.abs(data) == 1):
            return f"({self.real}){self.array('csr_signs', data, np.int8)}[j]"
        return f"{self.weights('csr_values', data)}[j]"

    def row_bias(self, bias: np.ndarray) -> str:
        """Row ``i``'s bias as a C expression: one constant where every row has the same
        (bit for bit), else an array's entry."""
        bits = np.ascontiguousarray(bias).view(np.uint8).reshape(len(bias), -1)
        if len(bias) and (bits == bits[:1]).all():
            return c_number(bias[0], self.real)
        return f"{self.weights('csr_bias', bias)}[i]"

    def pair_bias(self, rows) -> PairIndex | None:
        """Where the batched code's store finds the bias of a group's pairs, when it
        stores."""
        return pair_bias(self.plan.bias, rows, self.weights) if self.stores else None

    def activations(self, stored: list[tuple[int, int]]) -> None:
        """Each run of neurons' activation, but in the rows ``stored`` (merged ranges; the
        batched code's records keep every run)."""
        layer = self.plan.source
        runs = layer.segments or ((0, layer.n_out, layer.activation, layer.alpha),)
        for run_start, run_stop, name, alpha in runs:
            if name == IDENTITY.name or run_stop <= run_start:
                continue
            self.records.append(("activation", {"start": run_start, "stop": run_stop,
                                                "name": name, "alpha": float(alpha)}))
            for start, stop in outside(run_start, run_stop, stored):
                self.lines += activation_loop(self.real, start, stop, name, alpha)
