"""NNet backend: the MLP in the ``.nnet`` text format of ACAS Xu, Reluplex, Marabou and NNV.

Layout: ``//`` header lines; ``numLayers,inputSize,outputSize,maxLayerSize,``; the layer
sizes; a flag line ``0,``; input minimums and maximums (from ``--input-range``); means and
ranges (inputSize + 1 values each: 0 and 1, so nothing is normalized); then for each layer
one line of incoming weights per neuron and one bias line per neuron. Hidden layers are
ReLU and the last layer is linear: that is the format's semantics, so only such networks
are written. float32 weights are written with 9 significant digits, which reads back to
the same float32; float64 weights with 17.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .._io import atomic_write
from ..errors import CompileError
from ..ir.activations import IDENTITY, RELU
from ..ir.graph import GraphMeta
from ..ir.mlp import Mlp, MlpLayer
from ..ir.weights import as_csr
from .registry import Target, TargetOptions, dense_preflight, refuse_approximate, register_target

ROW_BLOCK = 1024


def check_nnet_semantics(mlp: Mlp) -> Mlp:
    """ReLU hidden layers, a linear last layer; a ReLU last layer gets an identity layer
    after it. Anything else is refused naming the layer."""
    for i, layer in enumerate(mlp.layers[:-1]):
        if layer.segments is not None or layer.activation != RELU.name:
            what = "mixed" if layer.segments is not None else layer.activation
            raise CompileError(f"layer {i} has the activation {what}, but every hidden layer "
                               "of an .nnet file is ReLU; use --target onnx (any activation) "
                               "or csr")
    last = mlp.layers[-1]
    if last.segments is None and last.activation == IDENTITY.name:
        return mlp
    if last.segments is not None or last.activation != RELU.name:
        raise CompileError(f"the output layer has the activation {last.activation}; .nnet "
                           "files end with a linear layer after ReLU layers")
    n = last.n_out
    identity = MlpLayer(sp.identity(n, mlp.dtype, "csr"), np.zeros(n, mlp.dtype))
    return Mlp(mlp.layers + [identity], mlp.input_shape, mlp.output_shape, mlp.notes)


def save_nnet(mlp: Mlp, path: str | Path, input_range: tuple[float, float],
              header: list[str]) -> None:
    mlp = check_nnet_semantics(mlp)
    sizes = [mlp.layers[0].n_in] + [layer.n_out for layer in mlp.layers]
    n_in = sizes[0]
    with atomic_write(path, "w") as handle:
        for line in header:
            handle.write("// " + one_line(line) + "\n")
        handle.write(f"{len(mlp.layers)},{n_in},{sizes[-1]},{max(sizes)},\n")
        handle.write(",".join(map(str, sizes)) + ",\n")
        handle.write("0,\n")
        for values in ([input_range[0]] * n_in, [input_range[1]] * n_in,
                       [0.0] * (n_in + 1), [1.0] * (n_in + 1)):
            handle.write(",".join(repr(float(v)) for v in values) + ",\n")
        for layer in mlp.layers:
            weight = as_csr(layer.weight)  # a dense format: the matrix it writes
            for start in range(0, layer.n_out, ROW_BLOCK):  # never the whole dense matrix
                block = weight[start:start + ROW_BLOCK].toarray()
                write_rows(handle, block)
            write_rows(handle, np.asarray(layer.bias)[:, None])


def one_line(text: str) -> str:
    """``text`` with every line break ``str.splitlines`` knows (\\r, \\x0c, U+2028...) made
    visible as an escape: a model path must not end a ``//`` header line early."""
    parts = (text + "x").splitlines()
    if len(parts) == 1:
        return text
    return "".join(ch if (ch + "x").splitlines() == [ch + "x"] else ch.encode(
        "unicode_escape").decode("ascii") for ch in text)


def write_rows(handle, rows: np.ndarray) -> None:
    """9 significant digits read back to the same float32, 17 to the same float64."""
    digits = 17 if rows.dtype == np.float64 else 9
    np.savetxt(handle, rows, fmt=f"%.{digits}g", delimiter=",", newline=",\n")


def read_nnet(path: str | Path, input_shape=None, output_shape=None) -> Mlp:
    """Read an .nnet file (the project's own reader, for --check): ReLU hidden layers, a
    linear last layer; normalization (means, ranges) is applied to inputs and the output."""
    lines = [line.strip() for line in Path(path).read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("//")]

    def numbers(line: str) -> list[float]:
        return [float(v) for v in line.rstrip(",").split(",") if v.strip()]

    n_layers, n_in, n_out, _ = (int(v) for v in numbers(lines[0]))
    sizes = [int(v) for v in numbers(lines[1])]
    means, ranges = numbers(lines[5]), numbers(lines[6])
    row = 7
    layers = []
    for k in range(n_layers):
        rows, cols = sizes[k + 1], sizes[k]
        weight = np.array([numbers(lines[row + i]) for i in range(rows)], np.float64)
        bias = np.array([numbers(lines[row + rows + i])[0] for i in range(rows)], np.float64)
        row += 2 * rows
        if weight.shape != (rows, cols):
            raise CompileError(f"{path}: layer {k} weights have shape {weight.shape}, the header "
                               f"says {(rows, cols)}")
        if k == 0 and (any(means[:n_in]) or any(r != 1 for r in ranges[:n_in])):
            scale = 1.0 / np.asarray(ranges[:n_in])
            bias = bias - weight @ (np.asarray(means[:n_in]) * scale)
            weight = weight * scale
        if k == n_layers - 1 and (means[n_in] or ranges[n_in] != 1):
            weight, bias = weight * ranges[n_in], bias * ranges[n_in] + means[n_in]
        act = IDENTITY.name if k == n_layers - 1 else RELU.name
        layers.append(MlpLayer(sp.csr_array(weight), bias, act))  # float64: no rounding
    return Mlp(layers, tuple(input_shape or (n_in,)), tuple(output_shape or (n_out,)))


def read_input_box(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The input minimums and maximums an .nnet file declares (lines 5 and 6 after the
    header): the box a verifier takes as the input domain."""
    lines = [line.strip() for line in Path(path).read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("//")]
    values = [np.array([float(v) for v in lines[i].rstrip(",").split(",") if v.strip()])
              for i in (3, 4)]
    return values[0], values[1]


class NNetModel:
    """An .nnet file read back: ``predict(x)`` with x ``(B, *input_shape)``. Inputs must
    lie in the box the file declares: a box that does not hold them (swapped or wrong
    bounds, which would let a verifier prove anything on an empty domain) fails the check."""

    def __init__(self, path: str | Path, input_shape, output_shape) -> None:
        self.path = Path(path)
        self.mlp = read_nnet(path, input_shape, output_shape)
        self.input_shape, self.output_shape = tuple(input_shape), tuple(output_shape)
        self.minimums, self.maximums = read_input_box(path)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        flat = x.reshape(len(x), -1)
        if flat.shape[1] != len(self.minimums) or np.any(flat < self.minimums) or \
                np.any(flat > self.maximums):
            raise CompileError(f"{self.path}: the input box the file declares does not hold "
                               "the checked inputs (minimums and maximums from --input-range)")
        return self.mlp.forward(x)


@register_target
class NNetTarget(Target):
    """The .nnet text format (ACAS Xu, Reluplex, Marabou, NNV): ReLU hidden layers and a
    linear last layer, dense, with the input box from --input-range."""

    name, suffix, kind = "nnet", ".nnet", "an NNet file"
    dense_bytes = 13
    insert_after = {"linearize-dag": ("fuse-dense",)}

    def pass_options(self):
        from ..passes.base import PassOptions

        return PassOptions(uniform=True)

    def write(self, mlp: Mlp, meta: GraphMeta, path: str | Path, options: TargetOptions,
              provenance: dict[str, str]) -> None:
        source = provenance.get("source", "")
        refuse_approximate(mlp, options, source)
        dense_preflight(self, mlp, options.max_dense_bytes, source)
        save_nnet(mlp, path, options.input_range, [
            f"cnn2mlp {provenance.get('cnn2mlp', '')}: an MLP equivalent to {source}",
            f"input: the source's input {tuple(mlp.input_shape)} flattened row-major "
            f"(X_0..X_{mlp.layers[0].n_in - 1}); output: "
            f"{tuple(mlp.output_shape)} flattened (Y_0..)",
            "hidden layers ReLU, last layer linear; means 0 and ranges 1: no normalization"])

    def load(self, mlp: Mlp, path: Path) -> NNetModel:
        return NNetModel(path, mlp.input_shape, mlp.output_shape)
