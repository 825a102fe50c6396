"""Running a compiled MLP fast: engines that apply ``h = f(W h + b)`` layer by layer.

Activations are kept as (features × batch) arrays, contiguous along the batch, so that each
non-zero of a sparse row is one short, vectorizable multiply-add over the batch; the input
is transposed once at the start and the output once at the end; bias and activation are
applied in the same pass as the product; two ping-pong buffers serve every layer. Layers
denser than :data:`~cnn2mlp.runtime.engine.DENSE_THRESHOLD` run as dense GEMM (BLAS).

Engines: ``numba`` (compiled, multi-threaded kernels; ``pip install 'cnn2mlp[fast]'``) and
``scipy`` (always there). Both give the same results up to float rounding, for any thread
count. Before running, the runtime finds structure in the plain CSR file: convolution-like
row groups (structure.py), equal columns to merge (columns.py), dense layers; the numba
engine runs groups and dense layers on a register-blocked kernel (microkernel.py).
"""
from .engine import DENSE_THRESHOLD, Engine, available_engines, make_engine

__all__ = ["Engine", "make_engine", "available_engines", "DENSE_THRESHOLD"]
