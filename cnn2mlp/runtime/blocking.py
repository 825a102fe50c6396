"""How the register-blocked kernel (``microkernel.py``) cuts a row group: numpy-free
constants shared by its generator and the engine."""
from __future__ import annotations

#: the (kernels, batch columns) shapes the kernel has: 16 float32 columns are one AVX-512
#: register. One compiled function a shape, because LLVM's time grows faster than the
#: code: one function for every shape took 18 s to compile, these take 10 s together.
#: (8 × 32 was 5-35% faster on long dense rows but alone took 17 s to compile.)
SHAPES = ((8, 16), (4, 16), (2, 16), (1, 16))
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
