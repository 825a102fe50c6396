"""Backends: the lowered MLP into files a runtime loads. Targets by name and by suffix."""
from __future__ import annotations

from pathlib import Path

from ..errors import CompileError

TARGETS = {"csr": ".npz", "opencv": ".xml", "onnx": ".onnx", "nnet": ".nnet"}
#: fusion policy each target needs: dense targets fuse every linear map (fewer, and for
#: OpenCV and .nnet no linear hidden layers)
FUSION = {"csr": "cost", "opencv": "always", "onnx": "always", "nnet": "always"}
#: bytes a dense weight takes in each dense target (float64 in OpenCV, float32 in ONNX,
#: text in .nnet)
DENSE_BYTES = {"opencv": 8, "onnx": 4, "nnet": 13}
#: the largest file a format can hold: protobuf refuses to serialize an ONNX model of 2 GiB
#: or more (weights in external data would lift that, but verifiers read one file)
FORMAT_LIMIT = {"onnx": 2**31 - 2**24}


def check_format_limit(target: str, need: int, source: str = "") -> None:
    """Refuse up front a network whose dense weights alone exceed what its format holds."""
    limit = FORMAT_LIMIT.get(target)
    if limit is not None and need > limit:
        raise CompileError(
            f"{source}: as a dense {target} network this MLP needs {need / 2**30:,.2f} GiB of "
            f"weights, but an ONNX file holds less than 2 GiB (protobuf's limit); use "
            "--target csr (sparse), or compile a smaller --input-shape")


def target_for(path: str | Path, target: str | None) -> str:
    if target:
        if target not in TARGETS:
            raise CompileError(f"unknown target {target!r}; targets: {', '.join(TARGETS)}")
        return target
    suffix = Path(path).suffix.lower()
    for name, ext in TARGETS.items():
        if suffix == ext:
            return name
    raise CompileError(f"{path}: cannot tell the target from the suffix {suffix or '(none)'!r}; "
                       f"use --target ({', '.join(TARGETS)}) or a {'/'.join(TARGETS.values())} "
                       "output")


def dense_preflight(mlp, target: str, max_bytes: int, source: str = "") -> None:
    """Dense targets store every weight: refuse, with the numbers, a network whose dense
    form is above ``max_bytes``."""
    weights = sum((layer.n_in + 1) * layer.n_out for layer in mlp.layers)
    need = weights * DENSE_BYTES[target]
    check_format_limit(target, need, source)
    if need > max_bytes:
        widest = max(mlp.layers, key=lambda l: (l.n_in + 1) * l.n_out)
        raise CompileError(
            f"{source}: as a dense {target} network this MLP needs {weights:,} weights "
            f"({need / 2**20:,.0f} MiB), above --max-dense-bytes {max_bytes / 2**20:,.0f} MiB; "
            f"its widest layer is {widest.n_in}x{widest.n_out}. The {target} format stores "
            "dense weights: use --target csr (sparse), or raise --max-dense-bytes")
