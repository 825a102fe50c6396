"""How the register-blocked kernel (``microkernel.py``) cuts a row group: numpy-free
constants shared by its generator and the engine."""
from __future__ import annotations

#: kernels per block, largest first (a group's kernels are cut into blocks of these
#: sizes), and batch columns per block (16 float32 lanes: one AVX-512 register)
BLOCK_SIZES, LANES = (8, 4, 2, 1), 16


def kernel_blocks(n_k: int, sizes: tuple[int, ...] = BLOCK_SIZES) -> list[tuple[int, int]]:
    """(first kernel, size) of each block: as many of the largest size as fit, then the
    next size for what is left, and so on (11 kernels: 8 + 2 + 1)."""
    blocks, start = [], 0
    for size in sizes:
        while n_k - start >= size:
            blocks.append((start, size))
            start += size
    return blocks
