"""A convolution's blocks at one sample with many taps: six positions' inputs packed next
to each other once for every block of kernels, in the C code (AVX's 32-byte vectors).

At one sample a block of sixteen kernels runs six positions at a time
(``c_positions.vector_sums``): a tap's two vectors of weights, each multiplied by each
position's input for that tap. The six inputs of a tap are read where the map has them, a
channel's map apart from the next tap's, so a 3x3 convolution of 256 channels reads 2304
lines for six positions, again for every block of kernels: ResNet50's at 224x224 ran at
about 31 G multiply-adds/s, onnxruntime's at about 40.

Here a tile of positions has its inputs packed once, six positions' taps next to each
other (a panel: ``taps`` x 6 values, in the one-sample scratch), and every block of
kernels reads the panels in order. Each sum starts at zero and adds its taps in order, as
``vector_sums`` does: the same bits. Positions that fill no panel run as before.
"""
from __future__ import annotations

from .c_blocks import BlockGroup, each_block
from .c_groups import LANES
from .c_positions import vector_sums, wide_map

#: positions a panel holds: twelve sums (two vectors of eight kernels each), the two
#: vectors of weights and an input are fifteen of AVX2's sixteen registers
PANEL = 6
#: a tile's packed inputs, in bytes: within a share of the L2 cache, with a block's weights
TILE_BYTES = 192 * 1024
#: a group with this many taps or fewer keeps the code it had (its inputs are few lines)
FEWEST_TAPS = 192
#: blocks of kernels a group must have, at least: packing a tap's input is a load and a
#: store, worth it where many blocks read it (DenseNet121's 3x3 convolutions of 32
#: kernels at 224x224, two blocks, took 16 -> 19 % of its time at batch 1 with panels)
FEWEST_BLOCKS = 4


def panels_apply(real: str, b: BlockGroup, scratch_floats: int) -> int | None:
    """The positions of a tile for ``b`` (a multiple of six), or None where this form does
    not apply: double values, few taps, positions or blocks, a shift a block of its own,
    or too little scratch. The map must run six positions at a time
    (``c_positions.wide_map``), the panels' own width: with panels, ResNet18 at 32x32,
    whose 8x8 maps' interiors have 36 positions, took 2.0 -> 2.2 ms at batch 1."""
    if (real != "float" or b.taps <= FEWEST_TAPS or "[i]" in b.shift
            or not wide_map(b.positions) or b.blocks < FEWEST_BLOCKS):
        return None
    tile = max(PANEL, TILE_BYTES // (4 * b.taps * PANEL) * PANEL)
    tile = min(tile, b.positions - b.positions % PANEL)
    return tile if tile * b.taps <= scratch_floats else None


def panel_lines(b: BlockGroup, weights: str, stored: int, scratch: str, tile: int) -> list[str]:
    """The packed loops (AVX2, floats): tiles of ``tile`` positions, packed in ``scratch``
    (a C expression), then each block of kernels over the tile's panels."""
    n_b, taps = b.positions, b.taps
    whole = n_b - n_b % PANEL
    tap = "t" if b.index is None else f"(long){b.index}[t]"
    q6 = range(PANEL)
    sums = [f"s{q}_{v}" for q in q6 for v in range(2)]
    return [
        f"    float *restrict pk = {scratch};",
        f"    for (jt = 0; jt < {whole}; jt += {tile}) {{",
        f"        end = jt + {tile} < {whole} ? jt + {tile} : {whole};",
        f"        for (j = jt; j < end; j += {PANEL}) {{",
        f"            float *restrict pp = pk + (long)(j - jt) * {taps};",
        *[f"            const float *restrict x{q} = h + {b.shift} + {b.bases}[j + {q}];"
          for q in q6],
        f"            for (t = 0; t < {taps}; t++) {{",
        f"                const int32_t at = {b.offsets}[t];",
        "                " + " ".join(f"pp[{PANEL} * t + {q}] = x{q}[at];" for q in q6),
        "            }", "        }",
        f"        for (i = 0; i < {b.blocks}; i++) {{",
        f"            const float *restrict w = {weights} + (long)i * {stored * LANES};",
        "            " + b.rows.pointer("o", f"i * {LANES}"),
        f"            for (j = jt; j < end; j += {PANEL}) {{",
        f"                const float *restrict pp = pk + (long)(j - jt) * {taps};",
        "                vector_sum " + ", ".join(f"{s} = {{0}}" for s in sums) + ", w0, w1;",
        f"                for (t = 0; t < {taps}; t++) {{",
        f"                    memcpy(&w0, w + {tap} * {LANES}, sizeof w0); IN_REGISTER(w0);",
        f"                    memcpy(&w1, w + {tap} * {LANES} + 8, sizeof w1); IN_REGISTER(w1);",
        *[f"                    {{ const float xq = pp[{PANEL} * t + {q}]; "
          f"s{q}_0 += w0 * xq; s{q}_1 += w1 * xq; }}" for q in q6],
        "                }",
        *[f"                UNROLL_LANES for (l = 0; l < 8; l++) "
          f"z[{b.rows.at('o', f'l + {8 * v}', f'j + {q}')}] += s{q}_{v}[l];"
          for q in q6 for v in range(2)],
        "            }", "        }", "    }",
        *([] if whole == n_b else [  # the positions that fill no panel, as before
            f"    for (i = 0; i < {b.blocks}; i++) {{",
            f"        const float *restrict w = {weights} + (long)i * {stored * LANES};",
            "        " + b.rows.pointer("o", f"i * {LANES}"),
            *vector_sums("float", 32, b.offsets, b.bases, b.shift, taps, n_b, b.index,
                         b.rows, str(whole), n_b),
            "    }"])]


def panels_function(name: str, weights: str, stored: int, b: BlockGroup, scratch: str,
                    tile: int) -> str:
    """The function computing ``b`` (its weights ``weights``, ``stored`` taps a kernel)
    from packed panels with AVX's 32-byte vectors, as before elsewhere."""
    return "\n".join([
        f"static NO_LOOP_VECTORIZE void {name}(const float *restrict h, float *restrict z)",
        "{", "    int i, j, t, l, jt, end;", "    (void)i; (void)j; (void)t; (void)l;",
        "#if defined(VECTOR_BYTES) && VECTOR_BYTES == 32",
        *panel_lines(b, weights, stored, scratch, tile),
        "#else",
        "    (void)jt; (void)end;",
        *each_block("float", b, weights, stored),
        "#endif", "}"])
