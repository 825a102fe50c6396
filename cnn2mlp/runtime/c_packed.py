"""A convolution's blocks of kernels at sixteen samples, with AVX's 32-byte vectors: the
passes a block's kernels take over the taps, and the inputs of a block of taps packed next
to each other once for a group of blocks (``packed_kernels``).

The register budget: x86-64 has sixteen vector registers with AVX2 and thirty-two with
AVX-512. A pass keeps each of its kernels' sixteen sums (two 32-byte vectors) in registers
for the whole sum over the taps, with room for a tap's inputs and a weight.
"""
from __future__ import annotations

from .c_build import SAMPLES
from .c_groups import LANES
from .c_indices import PairIndex

#: vector registers the accumulators of a block may take (of x86-64's 16 with AVX2)
VECTOR_REGISTERS = 8
#: the inputs and weights a block of taps reads, in bytes: within the first-level cache
TAP_BLOCK_BYTES = 16 * 1024
#: the weights of a group of kernel blocks whose inputs are packed once, in bytes: they
#: are read again for each position, from the second-level cache
GROUP_WEIGHT_BYTES = 320 * 1024
#: the sums a group keeps on the stack between tap blocks, in vectors (8 KiB of AVX's)
GROUP_KEPT_VECTORS = 256


def kernels_at_once(width: int, vectors: int) -> int:
    """Kernels whose sums (``vectors`` vectors of ``width`` bytes each) stay in registers
    together, with room for the inputs: AVX-512 has 32 vector registers, AVX2 16."""
    return max(1, (16 if width == 64 else VECTOR_REGISTERS) // vectors)


def kernel_passes(count: int, vectors: int) -> list[tuple[int, int, int]]:
    """The passes over a block's taps, as (first kernel, end, kernels a pass). AVX2's
    multiply-add takes five cycles and two start a cycle: ten sums must be in flight to
    keep it busy, and four kernels of two vectors are eight. Six kernels (twelve sums, the
    two inputs and a weight: fifteen of the sixteen registers), then five and five (ten
    sums each; six, six and four had left the last pass waiting on its sums: A/B at batch
    16, DenseNet121 28.9 -> 27.6 ms, ResNet50 33.1 -> 31.7 ms)."""
    if count == 4 and vectors == 2:
        return [(0, 6, 6), (6, LANES, 5)]  # five and five: one loop, one body
    return [(0, LANES, count)]


def group_of_blocks(blocks: int, weight_bytes: int, kept_vectors: int) -> int:
    """Blocks of kernels whose inputs are packed once (``packed_kernels``): as many as keep
    their weights (``weight_bytes`` a block) within GROUP_WEIGHT_BYTES and their kept sums
    (``kept_vectors`` a block) within GROUP_KEPT_VECTORS, at least one."""
    by_weights = GROUP_WEIGHT_BYTES // max(1, weight_bytes)
    return max(1, min(blocks, by_weights, GROUP_KEPT_VECTORS // kept_vectors))


def packed_kernels(writer, offsets: str, rows: PairIndex, bias: PairIndex | None,
                   blocks: int, taps: int, tap: str, block: list[str], shift: str,
                   bases: str, positions: tuple[str, object]) -> list[str]:
    """The 32-byte (AVX) form of ``BatchedLayerWriter.kernels`` (``writer``): at each
    position ``j`` of ``positions`` (first, end), whose inputs are at ``shift`` plus
    ``bases[j]``, each block of kernels (``block``: its pointers) takes passes over the
    taps (``kernel_passes``), each pass reading every tap's inputs (sixteen samples')
    and weights.

    The inputs of one tap of a 1x1 convolution are a channel apart, a power of two on a
    32x32 image's maps (4 KiB at 8x8): they fall into one set of the first-level cache,
    which holds eight of them, and every pass read them from the next level. So the taps
    go in blocks whose inputs and weights the first-level cache holds, their inputs
    first copied next to each other, the sums kept between blocks. A tap block's inputs
    are copied once for a group of blocks of kernels (``group_of_blocks``), not once a
    block: that copy had taken a quarter of DenseNet121's 3x3 convolutions' time at batch
    16 (A/B at batch 16: DenseNet121 34.2 -> 28.7 ms, ResNet50 38.5 -> 32.9 ms). Each
    output's sums are the same, in the same order, as a block at a time: the same bits.
    A grouped convolution's blocks each read positions of their own (a shift a block,
    ``[i]``): they go one a group. With 32-byte vectors (AVX) only, where it was measured:
    16-byte ones are also a microcontroller's, whose stack is small.
    """
    r = writer.real
    size = 8 if r == "double" else 4
    per = 32 // size
    vectors = SAMPLES // per
    count = kernels_at_once(32, vectors)
    weight, row = (f"w + {tap} * {LANES} + q", 1), rows.at("o", "q + {k}", "j")
    row_bias = writer.bias_at(bias, "ob", "q + {k}", "j")
    tap_block = TAP_BLOCK_BYTES // (2 * SAMPLES * size)
    tap_block = -(-taps // -(-taps // tap_block))  # the taps in blocks of about equal size
    own_inputs = "[i]" in shift
    group = 1 if own_inputs else group_of_blocks(blocks, taps * LANES * size, LANES * vectors)
    position = (f"            const {r} *restrict x = h + ({shift.replace('[i]', '[ig]')} + "
                f"{bases}[j]) * {SAMPLES};")
    kept = ("tb", "te", "kept_i") if tap_block < taps else None
    passes = [line for first, end, n in kernel_passes(count, vectors) for line in (
        f"            for (q = {first}; q < {end}; q += {n})",
        *writer.kernel_block(n, per, vectors, taps, offsets, weight, row, row_bias, kept,
                             f"packed + (t - tb) * {SAMPLES}"))]
    return [
        "    long ig;",
        f"    for (ig = 0; ig < {blocks}; ig += {group}) {{",
        f"        const long iend = ig + {group} < {blocks} ? ig + {group} : {blocks};",
        f"        for (j = {positions[0]}; j < {positions[1]}; j++) {{", position,
        f"            {r} packed[{tap_block * SAMPLES}] __attribute__((aligned(64)));",
        "            long tb, te;",
        *([] if kept is None else [
            f"            vector_sum kept[{group * LANES * vectors}];",
            "            memset(kept, 0, sizeof kept);"]),
        f"            for (tb = 0; tb < {taps}; tb += {tap_block}) {{",
        f"            te = tb + {tap_block} < {taps} ? tb + {tap_block} : {taps};",
        f"            for (t = tb; t < te; t++) memcpy(packed + (t - tb) * {SAMPLES}, "
        f"x + (long){offsets}[t] * {SAMPLES}, {SAMPLES} * sizeof *x);",
        "            for (i = ig; i < iend; i++) {",
        *["    " + line for line in block],
        *([] if kept is None else [
            f"            vector_sum *restrict kept_i = kept + (i - ig) * {LANES * vectors};"]),
        "            int q;",
        *passes,
        "            }", "            }", "        }", "    }"]
