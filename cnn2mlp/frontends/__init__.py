"""Frontends: model files into the IR. The file decides which frontend reads it."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import CompileError
from ..ir import Graph

FORMATS = ".onnx, .keras, .h5, .tflite, a SavedModel folder or a frozen .pb"

_PYTORCH = ("a PyTorch file, which cnn2mlp does not read (loading it would run pickled "
            "code): export the model to ONNX with torch.onnx.export(model, example_input, "
            "'model.onnx') and compile that (README: 'From PyTorch')")
#: formats people bring that no frontend reads, and what to do instead
FOREIGN = {
    ".pt": _PYTORCH, ".pth": _PYTORCH, ".ckpt": _PYTORCH,
    ".safetensors": "weights without the network's structure: export the model to ONNX "
                    "(torch.onnx.export) or save it as .keras, and compile that",
    ".pkl": "a pickle, which cnn2mlp does not load (it would run code): save the model as "
            ".onnx or .keras",
    ".mlmodel": "a Core ML model: convert the source model to ONNX instead",
    ".npz": "a .npz is what cnn2mlp writes (an MLP already), not a model it reads: run it "
            "with cnn2mlp.load(path).predict(x), or time it against its original with "
            "python -m cnn2mlp.bench ORIGINAL.onnx --artifact path.npz",
    ".nnet": "a .nnet is a verifier's MLP (what cnn2mlp writes for Marabou), not a model it "
             "reads: give the original .onnx or .keras",
}


def is_onnx_file(path: str | Path) -> bool:
    """Whether ``path`` is read by the ONNX frontend (an ``.onnx`` file)."""
    try:
        return model_kind(path) == "onnx"
    except CompileError:
        return False


def model_kind(path: str | Path) -> str:
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "savedmodel"
        raise CompileError(f"{path}: a folder without saved_model.pb; cnn2mlp reads {FORMATS}")
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".keras", ".h5", ".hdf5"):
        return "keras"
    if suffix == ".pb":
        return "graphdef"
    if suffix == ".tflite":
        return "tflite"
    if not path.exists():
        raise CompileError(f"{path}: no such file")
    if suffix in FOREIGN:
        raise CompileError(f"{path}: {FOREIGN[suffix]}")
    raise CompileError(f"{path}: unknown model format {suffix or '(no suffix)'!r}; "
                       f"cnn2mlp reads {FORMATS}")


def load_model(path: str | Path, input_shape: Sequence[int] | None = None,
               allow_non_finite: bool = False, max_bytes: int | None = None,
               output: str | None = None, batch_axis: str = "auto") -> Graph:
    """Read a model file into the IR, choosing the frontend from the file. Nothing larger
    than ``max_bytes`` (default: a quarter of the RAM) is read, folded or built. ``output``
    names a tensor (ONNX) or layer (Keras) to compile up to, instead of the model's output."""
    kind = model_kind(path)
    if kind == "onnx":
        from .onnx import load_onnx

        return load_onnx(path, input_shape, allow_non_finite, max_bytes, output, batch_axis)
    if kind == "keras":
        from .keras import load_keras

        if batch_axis == "none":
            raise CompileError(f"{path}: a Keras model always has a batch axis; leave out "
                               "--batch-axis none")

        return load_keras(path, input_shape, allow_non_finite, max_bytes, output)
    from .onnx.importer import import_onnx
    from .tensorflow import tensorflow_to_onnx

    model = tensorflow_to_onnx(Path(path), kind)
    return import_onnx(model, str(path), input_shape, allow_non_finite, max_bytes, output,
                       batch_axis)
