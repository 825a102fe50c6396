"""The driver: reading ``.keras`` and ``.h5`` files safely (zipfile, json, h5py; weights through
hard links only, read lazily after their shapes are checked), the layer graph, and the
registries each family module adds its converters to."""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ...errors import CompileError, UnsupportedOpError
from ...ir import Graph
from ...ir.precision import working_precision

CODE_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda"}

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
    from ...ir.cost import default_max_bytes

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
        self._vars_index: dict[str, str] | None = None  # layer name → its vars group

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
        """Keras 3 stores a layer's variables at layers/<name>/vars (older: nested paths,
        found through an index of every ``.../<name>/vars`` group, made in one walk of
        the file: walking it once per layer took minutes on a file of many groups)."""
        for path in (f"layers/{name}/vars", f"_layer_checkpoint_dependencies/{name}/vars"):
            group = self.child(self.handle, path)
            if group is not None:
                return group
        if self._vars_index is None:
            self._vars_index = {}

            def visit(key, obj):  # h5py's visit follows hard links only
                parts = key.split("/")
                if len(parts) >= 2 and parts[-1] == "vars":
                    self._vars_index.setdefault(parts[-2], key)

            self.handle.visititems(visit)
        found = self._vars_index.get(name)
        return self.child(self.handle, found) if found else None

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
        if name is not None and tensors[name].value == "input":
            raise CompileError(f"{self.path}: --output-tensor {name!r} is the model's input "
                               "layer; name a layer computed from it")
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
        bad = [d for d in dims if d is not None and (not isinstance(d, int) or d < 1)]
        if bad:
            raise CompileError(f"{self.path}: the model's input shape {dims} has the dim "
                               f"{bad[0]!r}; every dim must be a whole number of at least 1 "
                               "(save the model again, or give --input-shape for open dims)")
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
        from ...ir.cost import BYTES_PER_NNZ

        if nnz * BYTES_PER_NNZ > self.max_bytes:
            raise CompileError(f"{self.path}: layer {lay.name!r} ({lay.class_name}) would need "
                               f"{nnz:,} non-zeros, above --max-bytes "
                               f"{self.max_bytes / 2**30:.2g} GiB")

    def activation(self, lay: Layer, t: Tensor, name: str | None) -> Tensor:
        from .activations import apply_activation  # the family modules import this one

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
