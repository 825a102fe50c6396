"""Keras frontend: ``.keras`` (a zip with config.json and model.weights.h5) and legacy
``.h5`` files, read with zipfile, json and h5py alone: TensorFlow is never imported and no
code in the file is ever run or unmarshalled (a Lambda layer is refused by its class name).

Keras tensors are channels-last (N, H, W, C); the IR's convolutions are channels-first.
Each tensor is tracked with its layout, and Transposes are inserted only where a layer
needs the other one (the layout pass then folds them into the weights for free).
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import CompileError, UnsupportedOpError
from ..ir import Graph
from ..ir.geometry import same_pads
from ..ir.precision import real, working_precision

CODE_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda"}
ACTIVATION_OPS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "softplus": "Softplus",
                  "softsign": "Softsign", "silu": "Swish", "swish": "Swish", "gelu": "Gelu",
                  "mish": "Mish", "hard_silu": "HardSwish", "hard_swish": "HardSwish"}
#: keras.activations.selu's constants
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
IDENTITY_LAYERS = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise",
                   "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity"}

LayerConverter = Callable[["KerasImporter", "Layer", "Tensor"], "Tensor"]
CONVERTERS: dict[str, LayerConverter] = {}
#: layers that read several tensors (joins of a Functional graph)
MERGE_CONVERTERS: dict[str, Callable[["KerasImporter", "Layer", list["Tensor"]], "Tensor"]] = {}


def merge_layer(*names: str):
    def register(fn):
        for name in names:
            MERGE_CONVERTERS[name] = fn
        return fn
    return register


def layer(*names: str):
    def register(fn: LayerConverter) -> LayerConverter:
        for name in names:
            CONVERTERS[name] = fn
        return fn
    return register


@dataclass
class Tensor:
    """An IR value and whether it is laid out as Keras has it (channels last) or as the
    IR's convolutions want it (channels first)."""

    value: str
    channels_first: bool


@dataclass
class Layer:
    name: str
    class_name: str
    config: dict[str, Any]
    weights: list[np.ndarray]
    inbound: list[str]


def load_keras(path: str | Path, input_shape: Sequence[int] | None = None,
               allow_non_finite: bool = False, max_bytes: int | None = None,
               output: str | None = None) -> Graph:
    """Read a Keras ``.keras`` or ``.h5`` model into the IR (per-sample shapes, channels-last
    input as Keras has it). Nothing larger than ``max_bytes`` is read or built."""
    from ..ir.cost import default_max_bytes

    path = Path(path)
    limit = default_max_bytes() if max_bytes is None else max_bytes
    try:
        config, weights = read_keras_file(path, limit)
        importer = KerasImporter(path, config, weights, input_shape, allow_non_finite, limit)
        importer.output_name = output
        return importer.run()
    except CompileError:
        raise
    except (OSError, RuntimeError) as exc:  # h5py on a damaged HDF5 structure
        raise CompileError(f"{path}: the HDF5 data is damaged ({type(exc).__name__}: "
                           f"{str(exc)[:200]}); save the model again") from exc
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, RecursionError) as exc:
        # a config that is JSON but not the structure Keras writes
        raise CompileError(f"{path}: the model config is malformed ({type(exc).__name__}: "
                           f"{str(exc)[:200]}); save the model again with Keras") from exc


# ------------------------------------------------------------------------------ reading
#: config.json larger than this is refused before it is read
MAX_CONFIG_BYTES = 64 * 2**20
#: a compressed zip member may inflate this much (plus a MiB) before it counts as a bomb
MAX_INFLATION = 1000


def read_keras_file(path: Path, max_bytes: int) -> tuple[dict, "WeightSource"]:
    if not path.is_file():
        raise CompileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CompileError(f"{path}: the file is empty")
    try:
        import h5py
    except ImportError as exc:
        raise CompileError("reading Keras files needs h5py: pip install 'cnn2mlp[keras]'") from exc
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                config = parse_config(path, read_member(path, archive, "config.json",
                                                        MAX_CONFIG_BYTES))
                version = archive_version(path, archive)
                blob = read_member(path, archive, "model.weights.h5", max_bytes)
            handle = h5py.File(io.BytesIO(blob), "r")
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            raise CompileError(f"{path}: not a Keras .keras archive ({exc}); it needs "
                               "config.json and model.weights.h5") from exc
        return config, WeightSource(path, handle, keras3=True, max_bytes=max_bytes,
                                    keras_version=version)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise CompileError(f"{path}: neither a .keras zip nor an HDF5 .h5 file ({exc})") from exc
    raw = handle.attrs.get("model_config")
    if raw is None:
        raise CompileError(f"{path}: this HDF5 file holds no model_config (weights only?); "
                           "save the whole model with model.save(...)")
    config = parse_config(path, raw.decode() if isinstance(raw, bytes) else str(raw))
    version = handle.attrs.get("keras_version", b"2")
    version = version.decode() if isinstance(version, bytes) else str(version)
    return config, WeightSource(path, handle, keras3=False, max_bytes=max_bytes,
                                keras_version=version)


def archive_version(path: Path, archive: zipfile.ZipFile) -> str:
    """The Keras version a .keras archive records (metadata.json), "3" if it says none."""
    try:
        meta = json.loads(read_member(path, archive, "metadata.json", 2**20))
        return str(meta.get("keras_version", "3")) if isinstance(meta, dict) else "3"
    except (KeyError, ValueError, CompileError):
        return "3"


def read_member(path: Path, archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """A zip member, its declared size checked before a byte is inflated."""
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise CompileError(f"{path}: the archive member {name} holds {info.file_size:,} bytes, "
                           f"above the limit of {limit:,}; raise --max-bytes if it is genuine")
    if info.compress_type != zipfile.ZIP_STORED and \
            info.file_size > MAX_INFLATION * info.compress_size + 2**20:
        raise CompileError(f"{path}: the archive member {name} inflates {info.compress_size:,} "
                           f"bytes to {info.file_size:,} (a zip bomb?); refused")
    return archive.read(info)


def parse_config(path: Path, text: str | bytes) -> dict:
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CompileError(f"{path}: the model config is not valid JSON "
                           f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(config, dict):
        raise CompileError(f"{path}: the model config is not a JSON object")
    return config


class WeightSource:
    """The weights of a layer, in the order Keras lists them, as HDF5 datasets that are
    read only once their shape is checked (:meth:`read`).

    Every HDF5 object is reached through hard links inside the file: soft and external
    links, datasets whose data lies in other files (external storage) and virtual datasets
    are refused, so that a model file cannot pull another file's bytes into the weights.
    """

    def __init__(self, path: Path, handle, keras3: bool, max_bytes: int,
                 keras_version: str = "3") -> None:
        self.path = path
        self.handle = handle
        self.keras3 = keras3
        self.keras_version = keras_version  # what wrote the file: some semantics differ
        self.budget = max_bytes  # bytes of weights still allowed to be read

    def of(self, name: str, key: str) -> list:
        """Weights of the layer ``name``; Keras 3 files file them under ``key`` instead."""
        if self.keras3:
            group = self.vars_group(key) or self.vars_group(name)
            if group is None:
                return []
            keys = sorted((k for k in group.keys() if k.isdigit()), key=int)
            return [self.child(group, k) for k in keys]
        root = self.child(self.handle, "model_weights") or self.handle
        group = self.child(root, name)
        if group is None:
            return []
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in group.attrs.get("weight_names", [])]
        return [self.child(group, n, required=True) for n in names]

    def vars_group(self, name: str):
        """Keras 3 stores a layer's variables at layers/<name>/vars (older: nested paths)."""
        for path in (f"layers/{name}/vars", f"_layer_checkpoint_dependencies/{name}/vars"):
            group = self.child(self.handle, path)
            if group is not None:
                return group
        found = []

        def visit(key, obj):  # h5py's visit follows hard links only
            if key.endswith(f"/{name}/vars") or key == f"{name}/vars":
                found.append(key)

        self.handle.visititems(visit)
        return self.child(self.handle, found[0]) if found else None

    def child(self, group, path: str, required: bool = False):
        """The object at ``path`` below ``group``, reached through hard links only."""
        import h5py

        node = group
        for part in [p for p in path.split("/") if p]:
            link = node.get(part, getlink=True) if isinstance(node, h5py.Group) else None
            if link is None:
                if required:
                    raise CompileError(f"{self.path}: the weights file has no {path!r} below "
                                       f"{group.name!r}")
                return None
            if not isinstance(link, h5py.HardLink):
                raise CompileError(f"{self.path}: {node.name.rstrip('/')}/{part} is a "
                                   f"{type(link).__name__} to outside the weights; refused "
                                   "(a model file must not read other files)")
            node = node[part]
        if isinstance(node, h5py.Dataset):
            self.check_storage(node)
        return node

    def check_storage(self, dataset) -> None:
        if dataset.external:
            raise CompileError(f"{self.path}: dataset {dataset.name} keeps its data in another "
                               f"file ({dataset.external[0][0]!s}); refused (a model file must "
                               "not read other files)")
        if dataset.is_virtual:
            raise CompileError(f"{self.path}: dataset {dataset.name} is a virtual dataset "
                               "(data mapped from other files); refused")

    def read(self, dataset, what: str, shape: tuple[int, ...] | None) -> np.ndarray:
        """The values of ``dataset``, after its shape is checked against ``shape`` (from the
        layer's config) and its size against what may still be read."""
        import h5py

        if not isinstance(dataset, h5py.Dataset):
            raise CompileError(f"{self.path}: {what} ({getattr(dataset, 'name', '?')}) is not "
                               "a dataset")
        self.check_storage(dataset)
        if shape is not None and tuple(dataset.shape) != tuple(shape):
            raise CompileError(f"{self.path}: {what} ({dataset.name}) has shape "
                               f"{tuple(dataset.shape)}, the layer's config says {tuple(shape)}")
        if dataset.dtype.kind not in "fiu":
            raise CompileError(f"{self.path}: {what} ({dataset.name}) holds {dataset.dtype}, "
                               "not numbers")
        nbytes = int(np.prod(dataset.shape, dtype=np.int64)) * 8
        if nbytes > self.budget:
            raise CompileError(f"{self.path}: {what} ({dataset.name}) needs {nbytes:,} bytes, "
                               "above what --max-bytes leaves for the weights")
        self.budget -= nbytes
        return np.asarray(dataset[()], np.float64)


# ------------------------------------------------------------------------------ importing
class KerasImporter:
    def __init__(self, path: Path, config: dict, weights: WeightSource,
                 input_shape: Sequence[int] | None, allow_non_finite: bool,
                 max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.output_name: str | None = None  # a layer to compile up to (--output-tensor)
        self.keras_version = weights.keras_version
        self.path = path
        self.config = config
        self.weights = weights
        self.user_shape = tuple(input_shape) if input_shape else None
        self.allow_non_finite = allow_non_finite
        self.graph: Graph | None = None

    def run(self) -> Graph:
        class_name = self.config.get("class_name")
        if class_name not in ("Sequential", "Functional", "Model"):
            raise UnsupportedOpError(f"{self.path}: top-level {class_name!r} is not a "
                                     "Sequential or Functional model")
        layers = self.read_layers()
        refuse_code_layers(self.path, layers)
        inputs = [lay.name for lay in layers if lay.class_name == "InputLayer"]
        if len(inputs) > 1:
            raise UnsupportedOpError(f"{self.path}: the model has {len(inputs)} inputs "
                                     f"({', '.join(inputs)}); cnn2mlp converts models with one")
        input_dims = self.input_dims(layers)
        self.graph = Graph("input", self.resolve_dims(input_dims))
        if input_dtype(layers) == "float64":  # a double model stays double
            self.graph.dtype = np.dtype(np.float64)
        with working_precision(self.graph.dtype):
            return self.convert_layers(layers)

    def convert_layers(self, layers: list[Layer]) -> Graph:
        tensors: dict[str, Tensor] = {}
        current = Tensor("input", False)
        last = None
        for lay in layers:
            if lay.class_name == "InputLayer":
                tensors[lay.name] = current
                continue
            unknown = [n for n in lay.inbound if n not in tensors]
            if unknown:
                raise CompileError(f"{self.path}: layer {lay.name!r} reads {unknown[0]!r}, which "
                                   "no earlier layer produces; save the model again")
            sources = [tensors[n] for n in lay.inbound] or [current]
            merge = MERGE_CONVERTERS.get(lay.class_name)
            fn = CONVERTERS.get(lay.class_name)
            if fn is None and merge is None:
                known = sorted(CONVERTERS) + sorted(MERGE_CONVERTERS)
                raise UnsupportedOpError(
                    f"{self.path}: layer {lay.name!r} of class {lay.class_name} is not "
                    f"supported; supported layers: {', '.join(known)}")
            if fn is not None and len(sources) != 1:
                raise UnsupportedOpError(f"{self.path}: layer {lay.name!r} ({lay.class_name}) "
                                         f"reads {len(sources)} tensors; it takes one")
            try:
                out = merge(self, lay, sources) if merge else fn(self, lay, sources[0])
            except CompileError:
                raise
            except Exception as exc:
                raise CompileError(f"{self.path}: layer {lay.name!r} ({lay.class_name}) cannot "
                                   f"be converted: {type(exc).__name__}: {exc}") from exc
            tensors[lay.name] = current = out
            last = lay.name
        name = self.output_name
        if name is not None and name not in tensors:
            raise CompileError(f"{self.path}: --output-tensor {name!r} is not a layer of the model")
        output = tensors[name or self.output_layer(layers) or last] if layers else current
        output = self.keras_layout(output)
        self.graph.output = output.value
        if name is not None:
            self.graph.meta["output_tensor"] = name
            self.graph.notes.append(f"compiled up to the layer {name!r} (--output-tensor)")
        return self.graph

    def read_layers(self) -> list[Layer]:
        cfg = self.config.get("config", {})
        raw_layers = cfg.get("layers", cfg if isinstance(cfg, list) else [])
        keys = weight_keys(raw_layers, sequential=self.config.get("class_name") == "Sequential")
        layers = []
        for raw, key in zip(raw_layers, keys):
            lcfg = raw.get("config", {})
            name = lcfg.get("name") or raw.get("name")
            if raw.get("class_name") in ("Sequential", "Functional", "Model"):
                raise UnsupportedOpError(f"{self.path}: layer {name!r} is a nested model; "
                                         "flatten it into one model before converting")
            calls = raw.get("inbound_nodes", [])
            if len(calls) > 1:
                raise UnsupportedOpError(f"{self.path}: layer {name!r} ({raw.get('class_name')}) "
                                         f"is called {len(calls)} times (shared weights); "
                                         "cnn2mlp converts layers used once each")
            inbound = parse_inbound(calls)
            weights = [] if raw.get("class_name") in CODE_LAYERS else self.weights.of(name, key)
            layers.append(Layer(name, raw.get("class_name"), lcfg, weights, inbound))
        return layers

    def output_layer(self, layers: list[Layer]) -> str | None:
        outs = self.config.get("config", {}).get("output_layers")
        if not outs:
            return None
        if not isinstance(outs[0], list):  # one output written flat: [name, node, tensor]
            return outs[0]
        if len(outs) > 1:
            raise UnsupportedOpError(f"{self.path}: the model has {len(outs)} outputs; "
                                     "cnn2mlp converts models with one output")
        return outs[0][0]

    def input_dims(self, layers: list[Layer]) -> list[int | None]:
        for lay in layers[:1]:
            for key in ("batch_shape", "batch_input_shape"):
                if lay.config.get(key):
                    return list(lay.config[key])[1:]
        build = self.config.get("build_config", {}).get("input_shape")
        if build:
            return list(build)[1:]
        raise CompileError(f"{self.path}: the model does not record its input shape; pass "
                           "--input-shape")

    def resolve_dims(self, dims: list[int | None]) -> tuple[int, ...]:
        if self.user_shape is None:
            if any(d is None for d in dims):
                shown = ",".join("?" if d is None else str(d) for d in dims)
                raise CompileError(f"{self.path}: the input has unknown dims (N,{shown}); pass "
                                   "--input-shape with the dims after the batch axis")
            return tuple(int(d) for d in dims)
        if len(self.user_shape) != len(dims) or any(
                d is not None and d != u for d, u in zip(dims, self.user_shape)):
            shown = ",".join("?" if d is None else str(d) for d in dims)
            raise CompileError(f"{self.path}: --input-shape "
                               f"{','.join(map(str, self.user_shape))} contradicts the "
                               f"model's input (N,{shown})")
        return self.user_shape

    # -- helpers for converters -----------------------------------------------------------
    def emit(self, lay: Layer, op: str, t: Tensor, attrs=None, channels_first=None) -> Tensor:
        try:
            node = self.graph.add_node(op, [t.value], attrs, name=lay.name)
        except ValueError as exc:
            raise CompileError(f"{self.path}: layer {lay.name!r} ({lay.class_name}): {exc}") from exc
        return Tensor(node.output, t.channels_first if channels_first is None else channels_first)

    def shape(self, t: Tensor) -> tuple[int, ...]:
        return self.graph.shape(t.value)

    def internal_layout(self, t: Tensor, lay: Layer) -> Tensor:
        """Channels first, as Conv and the pools want it."""
        if t.channels_first or len(self.shape(t)) < 2:
            return Tensor(t.value, True) if len(self.shape(t)) < 2 else t
        rank = len(self.shape(t))
        perm = (rank - 1,) + tuple(range(rank - 1))
        return self.emit(lay, "Transpose", t, {"perm": perm}, channels_first=True)

    def keras_layout(self, t: Tensor, lay: Layer | None = None) -> Tensor:
        """Channels last, as Keras has it (Flatten, Reshape, Dense on a map, the output)."""
        rank = len(self.shape(t))
        if not t.channels_first or rank < 2:
            return Tensor(t.value, False)
        perm = tuple(range(1, rank)) + (0,)
        node = self.graph.add_node("Transpose", [t.value], {"perm": perm},
                                   name=(lay.name if lay else "output") + "_to_nhwc")
        return Tensor(node.output, False)

    def weight(self, lay: Layer, index: int, what: str,
               shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The layer's ``index``-th weight, read once its shape is checked against
        ``shape`` (what the layer's config implies)."""
        if index >= len(lay.weights):
            raise CompileError(f"{self.path}: layer {lay.name!r} ({lay.class_name}) has no "
                               f"{what} in the weights file")
        w = self.weights.read(lay.weights[index], f"{what} of layer {lay.name!r}", shape)
        if not self.allow_non_finite and not np.isfinite(w).all():
            raise CompileError(f"{self.path}: weight {what!r} of layer {lay.name!r} has NaN/Inf "
                               "values; fix the model, or pass --allow-non-finite")
        return w

    def check_size(self, lay: Layer, nnz: int) -> None:
        """Refuse a matrix of ``nnz`` non-zeros above --max-bytes before building it."""
        from ..ir.cost import BYTES_PER_NNZ

        if nnz * BYTES_PER_NNZ > self.max_bytes:
            raise CompileError(f"{self.path}: layer {lay.name!r} ({lay.class_name}) would need "
                               f"{nnz:,} non-zeros, above --max-bytes "
                               f"{self.max_bytes / 2**30:.2g} GiB")

    def activation(self, lay: Layer, t: Tensor, name: str | None) -> Tensor:
        return apply_activation(self, lay, t, name)


def input_dtype(layers: list[Layer]) -> str:
    """The InputLayer's dtype name ("float32" unless the model was built in float64)."""
    for lay in layers[:1]:
        dtype = lay.config.get("dtype")
        if isinstance(dtype, dict):  # a DTypePolicy
            dtype = dtype.get("config", {}).get("name")
        if isinstance(dtype, str):
            return dtype
    return "float32"


def weight_keys(raw_layers: list[dict], sequential: bool) -> list[str]:
    """Where Keras 3 files each layer's weights: the snake_case class name, numbered in the
    order of model.layers (which leaves out a Sequential's InputLayer)."""
    used: dict[str, int] = {}
    keys = []
    for raw in raw_layers:
        if sequential and raw.get("class_name") == "InputLayer":
            keys.append("")
            continue
        key = snake_case(raw.get("class_name", ""))
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        keys.append(key)
    return keys


def snake_case(name: str) -> str:
    import re

    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def parse_inbound(nodes) -> list[str]:
    """Source layer names of a Functional layer, in Keras 3 or Keras 2 notation."""
    names: list[str] = []
    for node in nodes:
        if isinstance(node, dict):  # Keras 3: {"args": [keras tensors], "kwargs": {...}}
            for arg in node.get("args", []):
                names.extend(keras_history_names(arg))
        elif isinstance(node, list):  # Keras 2: [[name, node_index, tensor_index, kwargs]]
            names.extend(entry[0] for entry in node if isinstance(entry, list) and entry)
    return names


def keras_history_names(arg) -> list[str]:
    if isinstance(arg, dict):
        history = arg.get("config", {}).get("keras_history")
        if history:
            return [history[0]]
    if isinstance(arg, list):
        return [n for item in arg for n in keras_history_names(item)]
    return []


def refuse_code_layers(path: Path, layers: list[Layer]) -> None:
    for lay in layers:
        if lay.class_name in CODE_LAYERS or "function" in lay.config and \
                lay.class_name not in CONVERTERS:
            raise UnsupportedOpError(
                f"{path}: layer {lay.name!r} is a {lay.class_name} layer, which carries "
                "Python code; cnn2mlp never runs or unmarshals code from model files. Rebuild "
                "the model with built-in layers in place of the Lambda")


# ------------------------------------------------------------------------------ layers
def apply_activation(imp: KerasImporter, lay: Layer, t: Tensor, name) -> Tensor:
    if isinstance(name, dict):  # a serialized activation object
        name = name.get("config", {}).get("name") or name.get("class_name")
    name = (name or "linear").lower()
    if name in ("linear", "identity", None):
        return t
    if name in ACTIVATION_OPS:
        return imp.emit(lay, ACTIVATION_OPS[name], t)
    if name == "leaky_relu":  # keras.activations.leaky_relu: negative_slope 0.2
        return imp.emit(lay, "LeakyRelu", t, {"alpha": 0.2})
    if name == "relu6":
        return imp.emit(lay, "Clip", t, {"low": 0.0, "high": 6.0})
    if name == "elu":
        return imp.emit(lay, "Elu", t, {"alpha": 1.0})
    if name == "selu":
        y = imp.emit(lay, "Elu", t, {"alpha": SELU_ALPHA})
        return imp.emit(lay, "MulConst", y, {"const": np.full(imp.shape(y), SELU_SCALE)})
    if name == "hard_sigmoid":  # Keras 3: relu6(x + 3) / 6; tf.keras 2: clip(0.2 x + 0.5, 0, 1)
        slope = 0.2 if imp.keras_version.startswith("2.") else 1.0 / 6.0
        y = imp.emit(lay, "MulConst", t, {"const": np.full(imp.shape(t), slope)})
        y = imp.emit(lay, "AddConst", y, {"const": np.full(imp.shape(t), 0.5)})
        return imp.emit(lay, "Clip", y, {"low": 0.0, "high": 1.0})
    if name == "softmax":
        flat = imp.keras_layout(t, lay)
        if len(imp.shape(flat)) != 1:
            raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: softmax over part of a "
                                     "tensor is not supported")
        return imp.emit(lay, "Softmax", flat)
    known = sorted(set(ACTIVATION_OPS) | {"leaky_relu", "relu6", "elu", "selu",
                                          "hard_sigmoid", "linear", "softmax"})
    raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: activation {name!r} is not "
                             f"supported ({', '.join(known)})")


@layer("Activation")
def convert_activation_layer(imp, lay, t):
    return imp.activation(lay, t, lay.config.get("activation"))


@layer("ReLU")
def convert_relu(imp, lay, t):
    """Keras ReLU(max_value=m, negative_slope=s, threshold=θ), as Keras computes it:
    ``x·[x > θ]``, clipped to [0, m] when m is given, minus ``s·relu(θ - x)``. With θ = 0
    that is piecewise linear (ReLUs); with θ ≠ 0 it jumps at θ, and the jump is one
    ThresholdedRelu activation (exact in the CSR target; no ReLU network equals it)."""
    c = lay.config
    threshold = float(c.get("threshold", 0.0) or 0.0)
    slope = float(c.get("negative_slope", 0.0) or 0.0)
    top = c.get("max_value")
    if not threshold and top is None:
        return imp.emit(lay, "LeakyRelu", t, {"alpha": slope}) if slope else \
            imp.emit(lay, "Relu", t)
    if threshold:
        y = imp.emit(lay, "ThresholdedRelu", t, {"alpha": threshold})
        if top is not None:
            y = imp.emit(lay, "Clip", y, {"low": 0.0, "high": float(top)})
    else:
        y = imp.emit(lay, "Clip", t, {"low": 0.0, "high": float(top)})
    if not slope:
        return y
    shape = imp.shape(t)
    negative = imp.emit(lay, "MulConst", t, {"const": np.full(shape, -1.0)})
    if threshold:
        negative = imp.emit(lay, "AddConst", negative, {"const": np.full(shape, threshold)})
    negative = imp.emit(lay, "Relu", negative)
    return emit_multi(imp, lay, "Sum", [y, negative], {"coeffs": (1.0, -slope)},
                      t.channels_first)


@layer("ELU")
def convert_elu(imp, lay, t):
    return imp.emit(lay, "Elu", t, {"alpha": float(lay.config.get("alpha", 1.0))})


@layer("Softmax")
def convert_softmax_layer(imp, lay, t):
    axis = lay.config.get("axis", -1)
    if axis not in (-1, [-1]):
        raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: Softmax over axis {axis}")
    return imp.activation(lay, t, "softmax")


@layer("PReLU")
def convert_prelu(imp, lay, t):
    """``relu(x) - a relu(-x)`` with the learned slope ``a`` (shared axes broadcast)."""
    x = imp.keras_layout(t, lay)
    shape = imp.shape(x)
    slope = imp.weight(lay, 0, "alpha")
    try:
        slope = np.broadcast_to(slope, shape)
    except ValueError:
        raise CompileError(f"{imp.path}: layer {lay.name!r}: slope of shape {slope.shape} does "
                           f"not fit {shape}") from None
    positive = imp.emit(lay, "Relu", x)
    negative = imp.emit(lay, "Relu", imp.emit(lay, "MulConst", x, {"const": np.full(shape, -1.0)}))
    negative = imp.emit(lay, "MulConst", negative, {"const": -slope.astype(np.float64)})
    return emit_multi(imp, lay, "Sum", [positive, negative])


@layer("LeakyReLU")
def convert_leaky(imp, lay, t):
    slope = lay.config.get("negative_slope", lay.config.get("alpha", 0.3))
    return imp.emit(lay, "LeakyRelu", t, {"alpha": float(slope)})


@layer(*IDENTITY_LAYERS)
def convert_identity(imp, lay, t):
    return t


def spatial_rank(lay: Layer) -> int:
    return 1 if lay.class_name.endswith("1D") else 2


def channels_first_layer(imp, lay) -> bool:
    fmt = lay.config.get("data_format") or "channels_last"
    if fmt not in ("channels_last", "channels_first"):
        raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: data_format {fmt!r}")
    return fmt == "channels_first"


def spatial_axis_offset(imp, lay) -> int:
    """Where the spatial axes start in the layer's own (Keras) layout of a sample."""
    return 1 if channels_first_layer(imp, lay) else 0


def spatial_input(imp, t: Tensor, lay) -> Tensor:
    """The input as (C, spatial...), as Conv and the pools want it: a channels_last
    layer's input is transposed (lazily); a channels_first layer's is that already."""
    if channels_first_layer(imp, lay):
        return imp.keras_layout(t, lay)
    return imp.internal_layout(t, lay)


def as_tuple(value, n: int) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),) * n


def keras_pads(imp, lay, spatial, kernel, strides, dilations) -> tuple[int, ...]:
    padding = lay.config.get("padding", "valid")
    nd = len(spatial)
    if padding == "valid":
        return (0,) * (2 * nd)
    if padding == "same":  # TensorFlow pads the extra cell at the end
        pairs = [same_pads(spatial[a], kernel[a], strides[a], dilations[a]) for a in range(nd)]
        return tuple(p[0] for p in pairs) + tuple(p[1] for p in pairs)
    if padding == "causal" and nd == 1:
        return ((kernel[0] - 1) * dilations[0], 0)
    raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: padding {padding!r}")


@layer("Conv1D", "Conv2D")
def convert_conv(imp, lay, t):
    nd = spatial_rank(lay)
    x = spatial_input(imp, t, lay)
    c = lay.config
    groups = int(c.get("groups", 1))
    expected = as_tuple(c["kernel_size"], nd) + (imp.shape(x)[0] // groups, int(c["filters"]))
    kernel = imp.weight(lay, 0, "kernel", expected)  # (k..., in/groups, out)
    oihw = kernel.transpose((nd + 1, nd) + tuple(range(nd)))
    return emit_conv(imp, lay, x, oihw, groups)


def emit_conv(imp, lay, x: Tensor, oihw: np.ndarray, group: int) -> Tensor:
    """A Keras convolution (kernel already OIHW) with its bias, padding and activation."""
    c = lay.config
    nd = oihw.ndim - 2
    bias = imp.weight(lay, 1, "bias", oihw.shape[:1]) if c.get("use_bias", True) else None
    strides = as_tuple(c.get("strides", 1), nd)
    dilations = as_tuple(c.get("dilation_rate", 1), nd)
    pads = keras_pads(imp, lay, imp.shape(x)[1:], oihw.shape[2:], strides, dilations)
    y = imp.emit(lay, "Conv", x, {"kernel": oihw.astype(real()),
                                  "bias": None if bias is None else bias.astype(real()),
                                  "strides": strides, "pads": pads, "dilations": dilations,
                                  "group": group})
    return imp.activation(lay, y, c.get("activation"))


@layer("DepthwiseConv1D", "DepthwiseConv2D")
def convert_depthwise(imp, lay, t):
    nd = spatial_rank(lay)
    x = spatial_input(imp, t, lay)
    expected = as_tuple(lay.config["kernel_size"], nd) + (
        imp.shape(x)[0], int(lay.config.get("depth_multiplier", 1)))
    dk = imp.weight(lay, 0, "depthwise_kernel", expected)  # (k..., in, multiplier)
    channels, mult = dk.shape[nd], dk.shape[nd + 1]
    # output channel c * multiplier + m reads input channel c alone
    oihw = dk.reshape(dk.shape[:nd] + (channels * mult,)).transpose(
        (nd,) + tuple(range(nd)))[:, None]
    return emit_conv(imp, lay, x, oihw, channels)


@layer("Dense")
def convert_dense(imp, lay, t):
    c = lay.config
    x = imp.keras_layout(t, lay)
    shape = imp.shape(x)
    units = int(c["units"])
    kernel = imp.weight(lay, 0, "kernel", (shape[-1], units))  # (in, out)
    bias = imp.weight(lay, 1, "bias", (units,)) if c.get("use_bias", True) else None
    if len(shape) == 1:
        weight = kernel.T.astype(real())
    else:  # Dense acts on the last axis of each position
        import scipy.sparse as sp

        rows = int(np.prod(shape[:-1]))
        imp.check_size(lay, rows * np.count_nonzero(kernel))
        weight = sp.kron(sp.identity(rows, format="csr"), sp.csr_array(kernel.T),
                         format="csr").astype(real())
        bias = None if bias is None else np.tile(bias, rows)
    y = imp.emit(lay, "Dense", x, {"weight": weight,
                                   "bias": None if bias is None else bias.astype(real()),
                                   "out_shape": shape[:-1] + (kernel.shape[1],)})
    return imp.activation(lay, y, c.get("activation"))


@layer("Flatten")
def convert_flatten(imp, lay, t):
    x = imp.keras_layout(t, lay)  # Keras flattens in (H, W, C) order
    rank = len(imp.shape(x))
    if lay.config.get("data_format") == "channels_first" and rank > 1:
        # Flatten(data_format="channels_first") moves the channels last before flattening
        x = imp.emit(lay, "Transpose", x, {"perm": tuple(range(1, rank)) + (0,)})
    return imp.emit(lay, "Reshape", x, {"shape": (int(np.prod(imp.shape(x))),)})


@layer("Reshape")
def convert_reshape(imp, lay, t):
    x = imp.keras_layout(t, lay)
    target = [int(d) for d in lay.config["target_shape"]]
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1]))
        target[target.index(-1)] = int(np.prod(imp.shape(x))) // known
    return imp.emit(lay, "Reshape", x, {"shape": tuple(target)})


@layer("BatchNormalization")
def convert_batchnorm(imp, lay, t):
    c = lay.config
    axis = c.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) else axis
    rank = len(imp.shape(t)) + 1
    if axis % rank == 1 and rank > 2:  # channels_first: the Keras array is (C, ...) already
        x = imp.keras_layout(t, lay)
    elif axis % rank == rank - 1:
        x = imp.internal_layout(t, lay)
    else:
        raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: BatchNormalization over "
                                 f"axis {axis}; only a channel axis (1 or -1) is supported")
    channels = (imp.shape(x)[0],)
    index = 0
    scale = imp.weight(lay, index, "gamma", channels) if c.get("scale", True) else None
    index += scale is not None
    shift = imp.weight(lay, index, "beta", channels) if c.get("center", True) else None
    index += shift is not None
    mean = imp.weight(lay, index, "moving_mean", channels)
    var = imp.weight(lay, index + 1, "moving_variance", channels)
    ones = np.ones_like(mean)
    return imp.emit(lay, "BatchNorm", x, {
        "scale": ones if scale is None else scale, "bias": 0 * ones if shift is None else shift,
        "mean": mean, "var": var, "epsilon": float(c.get("epsilon", 1e-3))})


def spatial_pairs(value, nd: int) -> list[tuple[int, int]]:
    """(before, after) per spatial axis from Keras' forms: n, (a, b) in 1D, ((a, b), (c, d))
    or (n, m) in 2D."""
    if isinstance(value, int):
        return [(value, value)] * nd
    if nd == 1:
        flat = len(value) == 2 and isinstance(value[0], int)
        return [tuple(value)] if flat else [tuple(value[0])]
    return [(p, p) if isinstance(p, int) else tuple(p) for p in value]


@layer("ZeroPadding1D", "ZeroPadding2D")
def convert_zero_padding(imp, lay, t):
    pairs = spatial_pairs(lay.config.get("padding", 1), spatial_rank(lay))
    x = spatial_input(imp, t, lay)
    pads = (0,) + tuple(p[0] for p in pairs) + (0,) + tuple(p[1] for p in pairs)
    return imp.emit(lay, "Pad", x, {"pads": pads, "value": 0.0})


@layer("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D")
def convert_pool(imp, lay, t):
    nd = spatial_rank(lay)
    c = lay.config
    x = spatial_input(imp, t, lay)
    kernel = as_tuple(c.get("pool_size", 2), nd)
    strides = as_tuple(c.get("strides") or kernel, nd)
    pads = keras_pads(imp, lay, imp.shape(x)[1:], kernel, strides, (1,) * nd)
    op = "MaxPool" if lay.class_name.startswith("Max") else "AveragePool"
    # TensorFlow's SAME average pooling divides by the cells inside the input.
    return imp.emit(lay, op, x, {"kernel_shape": kernel, "strides": strides, "pads": pads,
                                 "dilations": (1,) * nd, "ceil_mode": False,
                                 "count_include_pad": False})


@layer("GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalAveragePooling1D",
       "GlobalAveragePooling2D")
def convert_global_pool(imp, lay, t):
    x = spatial_input(imp, t, lay)
    spatial = imp.shape(x)[1:]
    nd = len(spatial)
    op = "MaxPool" if "Max" in lay.class_name else "AveragePool"
    y = imp.emit(lay, op, x, {"kernel_shape": spatial, "strides": (1,) * nd,
                              "pads": (0,) * (2 * nd), "dilations": (1,) * nd,
                              "ceil_mode": False, "count_include_pad": False})
    if lay.config.get("keepdims"):
        return y
    return imp.emit(lay, "Reshape", y, {"shape": (imp.shape(y)[0],)}, channels_first=False)


# ------------------------------------------------------------------------------ merges
def same_layout(imp: KerasImporter, lay: Layer, sources: list[Tensor]) -> list[Tensor]:
    """All inputs in one layout: channels-first if they all are, else Keras' own."""
    if all(t.channels_first for t in sources):
        return sources
    return [imp.keras_layout(t, lay) for t in sources]


def emit_multi(imp: KerasImporter, lay: Layer, op: str, sources: list[Tensor], attrs=None,
               channels_first: bool = False) -> Tensor:
    try:
        node = imp.graph.add_node(op, [t.value for t in sources], attrs, name=lay.name)
    except ValueError as exc:
        raise CompileError(f"{imp.path}: layer {lay.name!r} ({lay.class_name}): {exc}") from exc
    return Tensor(node.output, channels_first)


@merge_layer("Add", "Subtract", "Average")
def convert_add(imp, lay, sources):
    sources = same_layout(imp, lay, sources)
    n = len(sources)
    coeffs = {"Add": (1.0,) * n, "Subtract": (1.0, -1.0), "Average": (1.0 / n,) * n}
    if lay.class_name == "Subtract" and n != 2:
        raise CompileError(f"{imp.path}: layer {lay.name!r}: Subtract takes two tensors")
    return emit_multi(imp, lay, "Sum", sources, {"coeffs": coeffs[lay.class_name]},
                      sources[0].channels_first)


@merge_layer("Maximum", "Minimum")
def convert_extremum(imp, lay, sources):
    sources = same_layout(imp, lay, sources)
    return emit_multi(imp, lay, lay.class_name, sources, channels_first=sources[0].channels_first)


@merge_layer("Concatenate")
def convert_concatenate(imp, lay, sources):
    sources = [imp.keras_layout(t, lay) for t in sources]
    rank = len(imp.shape(sources[0])) + 1
    axis = int(lay.config.get("axis", -1))
    axis = axis + rank if axis < 0 else axis
    if not 0 < axis < rank:
        raise CompileError(f"{imp.path}: layer {lay.name!r}: Concatenate on the batch axis")
    return emit_multi(imp, lay, "Concat", sources, {"axis": axis - 1})


@merge_layer("Multiply", "Dot")
def convert_product(imp, lay, sources):
    raise UnsupportedOpError(
        f"{imp.path}: layer {lay.name!r} ({lay.class_name}) is a product of two values "
        "computed from the input (as squeeze-and-excitation, attention or gating compute): no "
        "MLP layer f(Wx + b) computes a product exactly")


# ------------------------------------------------------------------------------ more layers
@layer("Conv1DTranspose", "Conv2DTranspose")
def convert_conv_transpose(imp, lay, t):
    """Keras' transposed convolution: kernel (k..., filters, in); "valid" gives
    (n - 1) s + k outputs, "same" n s (TensorFlow's pads: the larger half at the end)."""
    from ..passes.conv_to_dense import conv_transpose_matrix

    c = lay.config
    nd = 1 if lay.class_name.startswith("Conv1D") else 2
    if c.get("output_padding") not in (None, [None] * nd):
        raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: output_padding is not "
                                 "supported")
    x = spatial_input(imp, t, lay)
    c_in, spatial = imp.shape(x)[0], imp.shape(x)[1:]
    ks = as_tuple(c["kernel_size"], nd)
    filters = int(c["filters"])
    kernel = imp.weight(lay, 0, "kernel", ks + (filters, c_in))
    strides = as_tuple(c.get("strides", 1), nd)
    dilations = as_tuple(c.get("dilation_rate", 1), nd)
    full = [(n - 1) * s + (k - 1) * d + 1 for n, k, s, d in zip(spatial, ks, strides, dilations)]
    if c.get("padding", "valid") == "same":
        total = [max(f - n * s, 0) for f, n, s in zip(full, spatial, strides)]
        pads = tuple(t_ // 2 for t_ in total) + tuple(t_ - t_ // 2 for t_ in total)
    else:
        pads = (0,) * (2 * nd)
    out_spatial = tuple(f - pads[a] - pads[nd + a] for a, f in enumerate(full))
    io_kernel = kernel.transpose((nd + 1, nd) + tuple(range(nd))).astype(real())
    imp.check_size(lay, io_kernel.size * int(np.prod(spatial)))
    weight = conv_transpose_matrix(io_kernel, imp.shape(x), out_spatial, strides, pads,
                                   dilations, 1)
    bias = imp.weight(lay, 1, "bias", (filters,)) if c.get("use_bias", True) else None
    out_bias = None if bias is None else np.repeat(bias, int(np.prod(out_spatial)))
    y = imp.emit(lay, "Dense", x, {"weight": weight.astype(real()),
                                   "bias": None if out_bias is None else out_bias.astype(real()),
                                   "out_shape": (filters,) + out_spatial})
    return imp.activation(lay, y, c.get("activation"))


@layer("SeparableConv1D", "SeparableConv2D")
def convert_separable(imp, lay, t):
    """A depthwise convolution (depth_multiplier) then a 1×1 pointwise one, with the bias."""
    c = lay.config
    nd = spatial_rank(lay)
    x = spatial_input(imp, t, lay)
    channels = imp.shape(x)[0]
    mult = int(c.get("depth_multiplier", 1))
    ks = as_tuple(c["kernel_size"], nd)
    dk = imp.weight(lay, 0, "depthwise_kernel", ks + (channels, mult))
    pk = imp.weight(lay, 1, "pointwise_kernel", (1,) * nd + (channels * mult, int(c["filters"])))
    depthwise = dk.reshape(ks + (channels * mult,)).transpose((nd,) + tuple(range(nd)))[:, None]
    strides = as_tuple(c.get("strides", 1), nd)
    dilations = as_tuple(c.get("dilation_rate", 1), nd)
    pads = keras_pads(imp, lay, imp.shape(x)[1:], ks, strides, dilations)
    h = imp.emit(lay, "Conv", x, {"kernel": depthwise.astype(real()), "bias": None,
                                  "strides": strides, "pads": pads, "dilations": dilations,
                                  "group": channels})
    pointwise = pk.reshape(channels * mult, -1).T.reshape((-1, channels * mult) + (1,) * nd)
    bias = imp.weight(lay, 2, "bias", (int(c["filters"]),)) if c.get("use_bias", True) else None
    y = imp.emit(lay, "Conv", h, {"kernel": pointwise.astype(real()),
                                  "bias": None if bias is None else bias.astype(real()),
                                  "strides": (1,) * nd, "pads": (0,) * (2 * nd),
                                  "dilations": (1,) * nd, "group": 1})
    return imp.activation(lay, y, c.get("activation"))


def select_keras(imp, lay, t: Tensor, index) -> Tensor:
    """A selection on Keras' own layout: ``index`` maps the (H, W, C) grid of flat
    positions to the output grid."""
    x = imp.keras_layout(t, lay)
    grid = np.arange(int(np.prod(imp.shape(x)))).reshape(imp.shape(x))
    picked = np.asarray(index(grid))
    return imp.emit(lay, "Select", x, {"indices": picked.ravel(), "out_shape": picked.shape})


@layer("UpSampling1D", "UpSampling2D")
def convert_upsampling(imp, lay, t):
    """Nearest: each cell repeated (a selection). Bilinear: TensorFlow's resize with
    half-pixel centres, a fixed linear map per spatial axis."""
    c = lay.config
    nd = spatial_rank(lay)
    size = as_tuple(c.get("size", 2), nd)
    mode = c.get("interpolation", "nearest")
    first = spatial_axis_offset(imp, lay)  # where the spatial axes start in Keras' layout
    if mode == "bilinear":
        from ..ir.linear import half_pixel_linear, kron_per_axis

        x = imp.keras_layout(t, lay)
        shape = imp.shape(x)
        axes = {first + a: half_pixel_linear(shape[first + a], s) for a, s in enumerate(size)}
        out_shape = tuple(n * size[a - first] if a in axes else n for a, n in enumerate(shape))
        imp.check_size(lay, int(np.prod(out_shape)) * 2 ** nd)
        weight = kron_per_axis(shape, axes).astype(real())
        return imp.emit(lay, "Dense", x, {"weight": weight, "bias": None,
                                          "out_shape": out_shape})
    if mode != "nearest":
        raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: interpolation "
                                 f"{mode!r}; nearest and bilinear are supported")

    def repeat(grid):
        for axis, s in enumerate(size):
            grid = np.repeat(grid, s, axis=first + axis)
        return grid

    return select_keras(imp, lay, t, repeat)


@layer("Cropping1D", "Cropping2D")
def convert_cropping(imp, lay, t):
    pairs = spatial_pairs(lay.config.get("cropping", 1), spatial_rank(lay))
    first = spatial_axis_offset(imp, lay)
    pairs = [(0, 0)] * first + pairs
    return select_keras(imp, lay, t, lambda grid: grid[tuple(
        slice(a, grid.shape[i] - b) for i, (a, b) in enumerate(pairs))])


@layer("Permute")
def convert_permute(imp, lay, t):
    dims = [int(d) - 1 for d in lay.config["dims"]]
    return select_keras(imp, lay, t, lambda grid: grid.transpose(dims))


@layer("RepeatVector")
def convert_repeat_vector(imp, lay, t):
    n = int(lay.config["n"])
    return select_keras(imp, lay, t, lambda grid: np.repeat(grid[None, :], n, axis=0))


@layer("Rescaling")
def convert_rescaling(imp, lay, t):
    """``x * scale + offset`` (input preprocessing): folded into the first matrix."""
    x = imp.keras_layout(t, lay)
    shape = imp.shape(x)
    scale = np.broadcast_to(np.asarray(lay.config.get("scale", 1.0), np.float64), shape)
    offset = np.broadcast_to(np.asarray(lay.config.get("offset", 0.0), np.float64), shape)
    y = imp.emit(lay, "MulConst", x, {"const": np.array(scale)})
    return imp.emit(lay, "AddConst", y, {"const": np.array(offset)})


#: keras.config.epsilon(), the floor Normalization puts under the standard deviation
KERAS_EPSILON = 1e-7


@layer("Normalization")
def convert_normalization(imp, lay, t):
    """``(x - mean) / max(sqrt(var), ε)`` (or its inverse with ``invert``), an affine map
    folded into the first matrix; mean and variance come from the config or, after
    ``adapt()``, from the weights, over the kept ``axis``."""
    c = lay.config
    x = imp.keras_layout(t, lay)
    shape = imp.shape(x)
    rank = len(shape) + 1
    axes = c.get("axis", -1)
    axes = [axes] if axes is None or isinstance(axes, int) else list(axes)
    if None in axes:
        axes = []
    keep = sorted(a % rank for a in axes)
    if 0 in keep:
        raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: Normalization keeps the "
                                 "batch axis; only per-sample axes are supported")
    broadcast = tuple(shape[d - 1] if d in keep else 1 for d in range(1, rank))
    kept_dims = tuple(shape[d - 1] for d in keep)
    if c.get("mean") is not None:
        mean = config_stat(c["mean"], keep, broadcast)
        var = config_stat(c["variance"], keep, broadcast)
    else:
        mean = imp.weight(lay, 0, "mean", kept_dims).reshape(broadcast)
        var = imp.weight(lay, 1, "variance", kept_dims).reshape(broadcast)
    std = np.maximum(np.sqrt(np.asarray(var, np.float64)), KERAS_EPSILON)
    mean = np.asarray(mean, np.float64)
    if c.get("invert"):
        scale, offset = std, mean
    else:
        scale, offset = 1.0 / std, -mean / std
    y = imp.emit(lay, "MulConst", x, {"const": np.broadcast_to(scale, shape).copy()})
    return imp.emit(lay, "AddConst", y, {"const": np.broadcast_to(offset, shape).copy()})


def config_stat(value, keep: list[int], broadcast: tuple[int, ...]) -> np.ndarray:
    """A mean or variance given in the config, aligned to the kept axes from the right
    (as Keras does) and broadcast over the rest."""
    v = np.asarray(value, np.float64)
    if v.ndim == 0:
        return np.broadcast_to(v, broadcast)
    expanded = [1] * len(broadcast)
    for i in range(1, v.ndim + 1):
        expanded[keep[-i] - 1] = v.shape[-i]
    return np.broadcast_to(v.reshape(expanded), broadcast)
