"""OpenCV backend: the MLP as the ``opencv_ml_ann_mlp`` FileStorage XML that
``cv2.ml.ANN_MLP_load`` and C++ ``cv::ml::ANN_MLP::load`` read.

ANN_MLP applies ONE activation to every layer, the output layer too, and its weights are
dense: layer k is ``(n_in + 1) x n_out`` doubles, rows = inputs, the last row the bias.
Prediction is ``x' = x * input_scale[2i] + input_scale[2i+1]``, ``h = f(h W + b)`` per layer,
``y = h * output_scale[2j] + output_scale[2j+1]``. The unify-activation pass prepares the
graph (one activation, output shift/scale, input scale); this module only writes it,
streaming: a layer is converted to dense a block of rows at a time.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

import numpy as np
import scipy.sparse as sp

from .._io import atomic_write
from ..errors import CompileError, install_hint
from ..ir.activations import BY_OP, by_name
from ..ir.graph import GraphMeta
from ..ir.mlp import Mlp
from ..ir.weights import as_csr
from .registry import Predictor, Target, TargetOptions, dense_preflight, register_target

#: numbers per text line, and bytes per base64 line (64 characters), as OpenCV writes them
TEXT_PER_LINE = 8
B64_LINE_BYTES = 48
ROW_BLOCK = 4096


@dataclass
class AnnSpec:
    """What the XML holds besides the layers."""

    activation: str
    alpha: float = 0.0
    input_scale: np.ndarray | None = None    # (n_in,), default 1
    input_shift: np.ndarray | None = None    # (n_in,), default 0
    output_scale: np.ndarray | None = None   # (n_out,), default 1
    output_shift: np.ndarray | None = None   # (n_out,), default 0
    notes: list[str] = field(default_factory=list)


def save_opencv(mlp: Mlp, spec: AnnSpec, path: str | Path, encoding: str = "text") -> None:
    if encoding not in ("text", "base64"):
        raise CompileError(f"unknown XML encoding {encoding!r}: use text or base64")
    # OpenCV's name and parameters f_param1 (alpha; None: the negative slope), f_param2
    name, f1, f2 = by_name(spec.activation).opencv
    if f1 is None:
        f1 = spec.alpha
    sizes = [mlp.layers[0].n_in] + [layer.n_out for layer in mlp.layers]
    n_in, n_out = sizes[0], sizes[-1]
    in_scale = interleave(spec.input_scale, spec.input_shift, n_in)
    out_scale = interleave(spec.output_scale, spec.output_shift, n_out)
    inv_scale = interleave(1.0 / out_scale[0::2], -out_scale[1::2] / out_scale[0::2], n_out)
    writer = _Writer(encoding)
    with atomic_write(path, "wb") as handle:
        writer.handle = handle
        put = writer.put
        put('<?xml version="1.0"?>\n<opencv_storage>\n<opencv_ml_ann_mlp>\n')
        put("  <format>3</format>\n")
        writer.sequence("layer_sizes", np.array(sizes, np.int32), "  ")
        put(f"  <activation_function>{name}</activation_function>\n")
        put(f"  <f_param1>{f1!r}</f_param1>\n  <f_param2>{f2!r}</f_param2>\n")
        # min/max_val only matter for training; OpenCV writes these for SIGMOID_SYM
        put("  <min_val>0.</min_val>\n  <max_val>0.</max_val>\n"
            "  <min_val1>0.</min_val1>\n  <max_val1>0.</max_val1>\n")
        if spec.notes:
            put(f"  <!-- cnn2mlp: {escape_comment('; '.join(spec.notes))} -->\n")
        writer.sequence("input_scale", in_scale, "  ")
        writer.sequence("output_scale", out_scale, "  ")
        writer.sequence("inv_output_scale", inv_scale, "  ")
        put("  <weights>\n")
        for layer in mlp.layers:
            writer.sequence("_", None, "    ", blocks=layer_blocks(as_csr(layer.weight),
                                                                     layer.bias))
        put("  </weights></opencv_ml_ann_mlp>\n</opencv_storage>\n")


def interleave(scale, shift, n) -> np.ndarray:
    out = np.empty(2 * n, np.float64)
    out[0::2] = 1.0 if scale is None else scale
    out[1::2] = 0.0 if shift is None else shift
    return out


def escape_comment(text: str) -> str:
    """Text that is safe inside ``<!-- ... -->``: printable ASCII, no ``--`` anywhere (XML
    forbids it in a comment, and ``-->`` would end it), and no ``-`` at the end."""
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    while "--" in text:
        text = text.replace("--", "-")
    return text + " " if text.endswith("-") else text


def layer_blocks(weight: sp.csr_array, bias: np.ndarray) -> Iterator[np.ndarray]:
    """The layer's ``[W^T; b]`` as float64 row blocks, never the whole dense matrix at once."""
    by_input = sp.csc_array(weight)  # column i of W = row i of W^T
    n_in = weight.shape[1]
    for start in range(0, n_in, ROW_BLOCK):
        block = by_input[:, start:start + ROW_BLOCK].toarray().T
        yield np.ascontiguousarray(block, dtype=np.float64)
    yield np.asarray(bias, np.float64)[None, :]


class _Writer:
    """FileStorage sequences as decimal text or as base64 binary, written in pieces."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.handle: IO[bytes] | None = None

    def put(self, text: str) -> None:
        self.handle.write(text.encode("ascii", "replace"))

    def sequence(self, tag: str, values: np.ndarray | None, indent: str,
                 blocks: Iterator[np.ndarray] | None = None) -> None:
        blocks = blocks if blocks is not None else iter([values])
        if self.encoding == "base64":
            self._base64(tag, blocks, indent)
        else:
            self._text(tag, blocks, indent)

    def _text(self, tag: str, blocks, indent: str) -> None:
        h = self
        h.put(f"{indent}<{tag}>")
        carry: list[str] = []  # numbers that did not fill a line yet
        for block in blocks:
            numbers = carry + format_numbers(block.ravel())
            full = len(numbers) - len(numbers) % TEXT_PER_LINE
            h.put("".join(f"\n{indent}  " + " ".join(numbers[i:i + TEXT_PER_LINE])
                          for i in range(0, full, TEXT_PER_LINE)))
            carry = numbers[full:]
        if carry:
            h.put(f"\n{indent}  " + " ".join(carry))
        h.put(f"</{tag}>\n")

    def _base64(self, tag: str, blocks, indent: str) -> None:
        first = next(blocks)
        code = "i" if first.dtype.kind == "i" else "d"
        self.put(f'{indent}<{tag} type_id="binary">\n')
        pending = code.ljust(24).encode()  # FileStorage's header: the element type, padded
        for block in _chain(first, blocks):
            raw = np.ascontiguousarray(block, "<i4" if code == "i" else "<f8").tobytes()
            pending += raw
            cut = len(pending) - len(pending) % B64_LINE_BYTES
            self._b64_lines(pending[:cut], indent)
            pending = pending[cut:]
        self._b64_lines(pending, indent)
        self.put(f"{indent}  </{tag}>\n")

    def _b64_lines(self, data: bytes, indent: str) -> None:
        if not data:
            return
        text = np.frombuffer(base64.b64encode(data), np.uint8)
        step = B64_LINE_BYTES * 4 // 3
        full = len(text) - len(text) % step
        # Lay the lines out as rows of a byte matrix: indent, 64 characters, newline.
        prefix = np.frombuffer(f"{indent}  ".encode(), np.uint8)
        lines = np.empty((full // step, len(prefix) + step + 1), np.uint8)
        lines[:, :len(prefix)] = prefix
        lines[:, len(prefix):-1] = text[:full].reshape(-1, step)
        lines[:, -1] = ord("\n")
        if len(lines):
            self.handle.write(memoryview(lines).cast("B"))
        if full < len(text):
            self.handle.write(prefix.tobytes() + text[full:].tobytes() + b"\n")


def _chain(first, rest):
    yield first
    yield from rest


def format_numbers(values: np.ndarray) -> list[str]:
    """Shortest decimal text that reads back to the same double (exact, ≤ 17 digits).
    Zeros, most of a converted convolution's dense matrix, skip the formatter."""
    if values.dtype.kind == "i":
        return [str(int(v)) for v in values]
    values = values.astype(np.float64)
    out = np.full(len(values), "0", dtype=object)
    nonzero = np.flatnonzero(values)
    out[nonzero] = [repr(v) for v in values[nonzero].tolist()]
    return out.tolist()


class OpenCvModel:
    """The written XML loaded through cv2: ``predict(x)`` with x ``(B, *input_shape)``."""

    def __init__(self, path: str | Path, input_shape, output_shape) -> None:
        cv2 = import_cv2()
        self.net = cv2.ml.ANN_MLP_load(str(path))
        if self.net.empty() if hasattr(self.net, "empty") else False:
            raise CompileError(f"{path}: OpenCV could not load the ANN_MLP")
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(output_shape)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        _, y = self.net.predict(x.reshape(len(x), -1))
        return np.asarray(y).reshape((len(x),) + self.output_shape)


def import_cv2():
    try:
        import cv2
    except ImportError as exc:
        raise CompileError("the opencv target's --check needs cv2 with the ml module: "
                           f"{install_hint('opencv')} (opencv-contrib-python-headless)") \
            from exc
    if not hasattr(cv2, "ml"):
        raise CompileError("this cv2 has no ml module (OpenCV 5 moved it to contrib): "
                           "pip uninstall opencv-python; pip install "
                           "opencv-contrib-python-headless")
    return cv2


@register_target
class OpenCvTarget(Target):
    """OpenCV's ``ANN_MLP`` XML: one activation for every layer, dense float64 weights,
    the input's affine part and the output's scale in the file's own slots."""

    name, suffix, kind = "opencv", ".xml", "an OpenCV ANN_MLP"
    dense_bytes = 8
    insert_after = {"fold-pad": ("extract-input-affine",),
                    "avgpool-fuse": ("avgpool-linearize",),
                    "linearize-dag": ("fuse-dense",),
                    "eliminate-dead": ("unify-activation",)}

    def pass_options(self):
        from ..passes.base import PassOptions

        return PassOptions(uniform=True, opencv_arithmetic=True)

    def write(self, mlp: Mlp, meta: GraphMeta, path: str | Path, options: TargetOptions,
              provenance: dict[str, str]) -> None:
        dense_preflight(self, mlp, options.max_dense_bytes, provenance.get("source", ""))
        save_opencv(mlp, ann_spec(mlp, meta), path, options.xml_encoding)

    def load(self, mlp: Mlp, path: Path) -> Predictor:
        return OpenCvModel(path, mlp.input_shape, mlp.output_shape)


def ann_spec(mlp: Mlp, meta: GraphMeta) -> AnnSpec:
    """The XML's activation and scales, from what unify-activation and
    extract-input-affine left in the graph's meta."""
    if meta.uniform is None:
        raise CompileError("the opencv target needs the unify-activation pass in --passes")
    scale, shift = meta.input_affine or (None, None)
    u = meta.uniform
    return AnnSpec(BY_OP[u.activation].name, u.alpha, scale, shift, u.output_scale,
                   u.output_shift, mlp.notes)
