"""Linear maps measured on basis vectors: the response to zero is the constant part, the
response to each basis vector minus it a column of the matrix."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import onnx

from ...ir.precision import real

if TYPE_CHECKING:
    from .importer import OnnxImporter

#: the largest dense (outputs × inputs) a linear op may be measured as, by basis vectors
MAX_BASIS_ENTRIES = 1 << 27
#: basis vectors one measurement may hold at the most (entries, float64: 32 MiB)
MAX_PROBE_ENTRIES = 1 << 22


def measure_linear(imp: OnnxImporter, node: onnx.NodeProto, x: str,
                   run: Callable[[np.ndarray], np.ndarray], n_out: int, output: str) -> None:
    """Emit the affine map ``run`` computes on each sample of ``x`` as a Dense node: the
    response to zero is its constant part, the response to each basis vector minus it a
    column of its matrix. Sizes are checked before anything runs (``n_out`` comes from
    shape inference), and the basis vectors go in chunks of at most MAX_PROBE_ENTRIES
    entries: memory stays bounded whatever the input's size."""
    import scipy.sparse as sp

    shape = imp.graph.shape(x)
    n_in = int(np.prod(shape))
    imp.check_values(node, n_out, "its output")
    if n_in * n_out > MAX_BASIS_ENTRIES:
        imp.fail(node, f"as a {n_out}x{n_in} linear map it is too large to measure "
                       f"({n_in * n_out:,} entries; the limit is {MAX_BASIS_ENTRIES:,})")
    imp.check_size(node, n_in * n_out // 8)
    probe = run(np.zeros((1,) + shape))
    if probe.shape[0] != 1 or probe[0].size != n_out:
        imp.fail(node, "mixes the batch axis with others")
    # the response to zero is a constant (tf_crop_and_resize's extrapolation value): the
    # op is affine; each basis response minus it is a column of the matrix
    bias = probe.reshape(-1).astype(np.float64)
    columns = []
    chunk = max(1, MAX_PROBE_ENTRIES // max(n_in, n_out, 1))
    for start in range(0, n_in, chunk):
        count = min(chunk, n_in - start)
        basis = np.zeros((count, n_in))
        basis[np.arange(count), start + np.arange(count)] = 1.0
        response = run(basis.reshape((count,) + shape))
        del basis
        columns.append(sp.csr_array(response.reshape(count, n_out) - bias))
    weight = sp.csr_array(sp.vstack(columns).T)
    weight.eliminate_zeros()
    imp.emit(node, "Dense", [x], {"weight": weight.astype(real()),
                                  "bias": bias.astype(real()) if bias.any() else None,
                                  "out_shape": probe.shape[1:]}, output=output)
