"""How the register-blocked kernel (``microkernel.py``) cuts a row group: numpy-free
constants shared by its generator and the engine."""
from __future__ import annotations

#: the (kernels, batch columns) shapes the kernel has: 16 float32 columns are one AVX-512
#: register. One compiled function a shape, because LLVM's time grows faster than the
#: code. 16 kernels keep 16 sums in flight, enough to hide the FMA latency on a core with
#: two 512-bit FMA units (measured on an AMD EPYC Zen 5: 75-105 G multiply-adds/s against
#: 60-80 with 8; about 20 s to compile, once).
SHAPES = ((16, 16), (8, 16), (4, 16), (1, 16))
#: kernels per block, largest first (a group's kernels are cut into blocks of these sizes)
BLOCK_SIZES = tuple(sorted({size for size, _ in SHAPES}, reverse=True))
#: the least batch the kernel takes (the narrowest block)
LANES = min(width for _, width in SHAPES)


def kernel_blocks(n_k: int, sizes: tuple[int, ...] = BLOCK_SIZES) -> list[tuple[int, int]]:
    """(first kernel, size) of each block: as many of the largest size as fit, then the
    next size for what is left, and so on (11 kernels: 8 + 2 + 1)."""
    blocks, start = [], 0
    for size in sizes:
        while n_k - start >= size:
            blocks.append((start, size))
            start += size
    return blocks


#: bytes of weights and inputs a thread's run of the blocked kernel may keep in its cache
#: (half a 1 MiB L2)
RUN_BYTES = 512 * 1024


def schedule(n_blocks: int, n_bases: int, input_bytes: int, threads: int) -> tuple[int, int]:
    """(bases, blocks of kernels) a thread takes at a time in the blocked kernel.

    Every base when the inputs the group reads fit ``RUN_BYTES``: a thread then takes one
    block of kernels and runs it over all the bases, so the block's weights are read once
    from memory and the inputs stay in cache for the next block (at batch 16, re-reading a
    2 MiB weight matrix for every pair of bases made a convolution 4x slower). Inputs too
    big for that are cut into runs of bases that fit, each run taking every block. With
    several threads and fewer blocks than threads, the bases are cut so that every thread
    has work."""
    run_bases = n_bases
    if input_bytes > RUN_BYTES:
        runs = -(-input_bytes // RUN_BYTES)
        run_bases = max(2, -(-n_bases // runs))
    if threads > 1 and n_blocks * -(-n_bases // run_bases) < 2 * threads:
        run_bases = max(1, -(-n_bases // (2 * threads)))
    return run_bases, 1
