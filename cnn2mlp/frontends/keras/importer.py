"""The driver: the layer graph of a ``.keras`` or ``.h5`` file (read by ``files.py``) converted
layer by layer with the converters each family module registers (``registry.py``)."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import CompileError, UnsupportedOpError
from ...ir import Graph
from ...ir.precision import working_precision
from ..reasons import KERAS_NO_MLP_FORM as NO_MLP_FORM
from .files import WeightSource, read_keras_file
from .registry import CONVERTERS, MERGE_CONVERTERS, Layer, Tensor

#: layers that hold Python code (never run: refused by name)
CODE_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda"}


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
                                     f"({', '.join(inputs)}); cnn2mlp converts models with one input (give "
                                     "a model that takes the one the MLP should read)")
        input_dims = self.input_dims(layers)
        self.graph = Graph("input", self.resolve_dims(input_dims))
        if input_dtype(layers) == "float64":  # a double model stays double
            self.graph.dtype = np.dtype(np.float64)
        with working_precision(self.graph.dtype):
            return self.convert_layers(layers)

    def convert_layers(self, layers: list[Layer]) -> Graph:
        name = self.output_name
        if name is not None:  # cut first: what comes after the named layer is never read
            layers = self.layers_up_to(layers, name)
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
                self.refuse_unknown(lay, tensors, last)
            if fn is not None and len(sources) != 1:
                raise UnsupportedOpError(f"{self.path}: layer {lay.name!r} ({lay.class_name}) "
                                         f"reads {len(sources)} tensors; it takes one")
            try:
                out = merge(self, lay, sources) if merge else fn(self, lay, sources[0])
            except UnsupportedOpError as exc:
                hint = self.cut_hint(lay, tensors, last)
                text = str(exc).rstrip()
                raise UnsupportedOpError(text + ("" if not hint or text.endswith(".") else ".")
                                         + hint) from exc
            except CompileError:
                raise
            except Exception as exc:
                raise CompileError(f"{self.path}: layer {lay.name!r} ({lay.class_name}) cannot "
                                   f"be converted: {type(exc).__name__}: {exc}") from exc
            tensors[lay.name] = current = out
            last = lay.name
        if name is not None and tensors[name].value == "input":
            raise CompileError(f"{self.path}: --output-tensor {name!r} is the model's input "
                               "layer; name a layer computed from it")
        output = tensors[name or self.output_layer(layers) or last] if layers else current
        output = self.keras_layout(output)
        self.graph.output = output.value
        if name is not None:
            self.graph.meta.output_tensor = name
            self.graph.notes.append(f"compiled up to the layer {name!r} (--output-tensor)")
        return self.graph

    def layers_up_to(self, layers: list[Layer], name: str) -> list[Layer]:
        """The layers ``name`` reads, directly or not, and itself, in the file's order."""
        by_name = {lay.name: lay for lay in layers}
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            raise CompileError(f"{self.path}: --output-tensor {name!r} is not a layer of the "
                               "model" + (f"; did you mean {close[0]!r}?" if close else
                                          " (the layer names are in the model's summary)"))
        needed, stack = set(), [name]
        while stack:
            current = stack.pop()
            if current in needed or current not in by_name:
                continue
            needed.add(current)
            stack.extend(by_name[current].inbound)
        if len(layers) > 1 and layers[0].class_name == "InputLayer":
            needed.add(layers[0].name)
        return [lay for lay in layers if lay.name in needed]

    def refuse_unknown(self, lay: Layer, tensors: dict[str, Tensor], last: str | None) -> None:
        """A layer class no converter handles: why no MLP computes it, where known, and
        the cut that compiles."""
        reason = NO_MLP_FORM.get(lay.class_name)
        if reason is not None:
            text = f"{reason}: no MLP layer f(Wx + b) computes this."
        else:
            text = ("is not a layer cnn2mlp converts (the README's 'Getting a model in' lists "
                    "the Keras layers it does).")
        raise UnsupportedOpError(f"{self.path}: layer {lay.name!r} ({lay.class_name}) {text}"
                                 + self.cut_hint(lay, tensors, last))

    def cut_hint(self, lay: Layer, tensors: dict[str, Tensor], last: str | None) -> str:
        """' Compile the network up to the layer before it: --output-tensor NAME' for an
        input of ``lay`` (the layer before it in a Sequential model) that was converted and
        is not the model's input, or ''."""
        if self.output_name is not None:
            return ""
        inputs = lay.inbound or ([last] if last is not None else [])
        before = next((n for n in inputs if n in tensors and tensors[n].value != "input"),
                      None)
        if before is None:
            return ""
        return f" Compile the network up to the layer before it: --output-tensor {before}"

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
