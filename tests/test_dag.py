"""DAG networks: residual joins, concatenations, branches and extrema lowered to a chain of
layers with carried values; against the interpreter and onnxruntime."""
import numpy as np
import onnx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import helper

from cnn2mlp.ir import Graph
from cnn2mlp.ir.mlp import Mlp
from cnn2mlp.backends import get_target
from cnn2mlp.passes import PassContext, PassOptions, Pipeline, get_pass
from cnn2mlp.testing import (
    OnnxBuilder,
    assert_equivalent,
    compile_to_model,
    dag_graphs,
    onnx_dag_cnns,
)

BEFORE_LINEARIZE = ["eliminate-identity", "fold-batchnorm", "conv-to-dense", "maxpool-to-relu",
                    "extremum-to-relu", "clip-to-relu", "layout-to-permutation", "fold-stride",
                    "fold-affine",
                    "lower-linear", "fuse-dense"]


def lowered(graph: Graph, **options) -> tuple[Graph, PassContext]:
    after = graph.copy()
    ctx = PassContext(options=PassOptions(**options))
    Pipeline(BEFORE_LINEARIZE).run(after, ctx)
    return after, ctx


@given(dag_graphs())
def test_extremum_to_relu(graph):
    after = graph.copy()
    count = get_pass("extremum-to-relu").run(after, PassContext())
    after.verify()
    assert count == graph.ops().count("Maximum") + graph.ops().count("Minimum")
    assert "Maximum" not in after.ops() and "Minimum" not in after.ops()
    assert_equivalent(graph, after, n=6, rtol=1e-6)


@given(dag_graphs())
def test_linearize_dag_gives_a_chain(graph):
    before, _ = lowered(graph)
    after = before.copy()
    ctx = PassContext()
    get_pass("linearize-dag").run(after, ctx)
    after.verify()
    mlp = Mlp.from_graph(after, graph.shape(graph.output))  # a chain, or this raises
    assert_equivalent(before, after, n=6, rtol=1e-5)
    assert_equivalent(graph, mlp, n=6, rtol=1e-5)


@given(dag_graphs(), st.sampled_from(["activation", "identity"]))
def test_default_pipeline_on_dags(graph, carry):
    after = graph.copy()
    get_target("csr").pipeline().run(after, PassContext(options=PassOptions(carry=carry)))
    mlp = Mlp.from_graph(after, graph.shape(graph.output))
    assert_equivalent(graph, mlp, n=6, rtol=1e-5)
    if carry == "identity":  # every carried neuron is an identity neuron
        for layer in mlp.layers:
            identity = sum(b - a for a, b, act, _ in layer.segments or ()
                           if act == "identity")
            assert layer.carried <= max(identity, layer.n_out if layer.activation ==
                                        "identity" else 0)


@settings(max_examples=100)
@given(dag_graphs(steps=("conv", "linear", "linear", "add", "sub", "concat", "projection",
                         "activation", "sum3", "clip", "max"), max_steps=7))
def test_the_size_model_never_exceeds_the_unfused_lowering(graph):
    """Every fusion the default pipeline makes keeps the function, and never makes the
    MLP larger than keeping every linear map a layer of its own. (Joins of a value with
    itself, x - x, cancel to exact zeros whose count depends on the order of rounding,
    not on fusion: left out.)"""
    assume(all(len(set(node.inputs)) == len(node.inputs) for node in graph.nodes))
    nnz = {}
    for fusion in ("cost", "never"):
        after = graph.copy()
        get_target("csr").pipeline().run(after, PassContext(
            fusion=fusion, options=PassOptions(carry="identity")))
        mlp = Mlp.from_graph(after, graph.shape(graph.output))
        assert_equivalent(graph, mlp, n=6, rtol=1e-5)
        nnz[fusion] = sum(layer.weight.nnz for layer in mlp.layers)
    assert nnz["cost"] <= nnz["never"], nnz


def test_the_size_model_composes_when_the_product_is_smaller_than_factor_and_reads():
    """v = M s + s (M: 8×8, 4 non-zeros a row; 36 non-zeros with the diagonal), read once
    by W (9 non-zeros): composed, W (M + I) takes 38 non-zeros; kept, v costs its 36 and
    W's 9 reads of it, 45. The value is composed into one layer (counting the reads is
    what decides it)."""
    rng = np.random.default_rng(3)
    m = np.zeros((8, 8))
    for row in range(8):
        m[row, rng.choice(8, 4, replace=False)] = rng.uniform(0.5, 1.5, 4)
    w = np.zeros((8, 8))
    w[np.arange(8), np.arange(8)] = rng.uniform(0.5, 1.5, 8)
    w[0, 5] = -0.7
    g = Graph("x", (8,))
    s = g.add_node("Relu", ["x"]).output
    v = g.add_node("Sum", [g.add_node("Dense", [s], {"weight": m, "bias": None}).output, s])
    h = g.add_node("Dense", [v.output], {"weight": w, "bias": rng.uniform(-1, 1, 8)})
    g.output = g.add_node("Relu", [h.output]).output
    after = g.copy()
    get_target("csr").pipeline().run(after, PassContext(options=PassOptions(carry="identity")))
    mlp = Mlp.from_graph(after, (8,))
    assert_equivalent(g, mlp, n=6, rtol=1e-5)
    assert [layer.weight.nnz for layer in mlp.layers] == [8, int((w @ (m + np.eye(8)) != 0).sum())]


@settings(max_examples=30)
@given(onnx_dag_cnns())
def test_onnx_dags_match_onnxruntime(model):
    assert_equivalent(model, compile_to_model(model), n=8)


# ------------------------------------------------------------------ carried neuron counts
def residual(shortcut_activation: str | None, inner: str = "Relu") -> Graph:
    """x → [act] → s;  s → Dense → inner → Dense → (+ s) → Relu → Dense: ``s`` is carried
    through the ``inner`` layer."""
    rng = np.random.default_rng(0)
    g = Graph("x", (5,))
    s = g.add_node(shortcut_activation, ["x"]).output if shortcut_activation else "x"
    h = g.add_node("Dense", [s], {"weight": rng.normal(size=(5, 5)),
                                  "bias": rng.normal(size=5)}).output
    h = g.add_node(inner, [h]).output
    h = g.add_node("Dense", [h], {"weight": rng.normal(size=(5, 5)),
                                  "bias": rng.normal(size=5)}).output
    h = g.add_node("Sum", [h, s]).output
    h = g.add_node("Relu", [h]).output
    g.output = g.add_node("Dense", [h], {"weight": rng.normal(size=(2, 5)),
                                         "bias": rng.normal(size=2)}).output
    return g


@pytest.mark.parametrize("shortcut, inner, carry, per_value, activation", [
    ("Relu", "Relu", "activation", 1, "relu"),   # proven >= 0: relu(v) alone
    (None, "Relu", "activation", 2, "relu"),     # sign unknown: relu(v), relu(-v)
    ("Tanh", "Relu", "activation", 2, "relu"),   # tanh's values are signed too
    (None, "Tanh", "activation", 1, "mixed"),    # a tanh layer cannot: an identity neuron
    (None, "Relu", "identity", 1, "mixed"),      # identity neurons asked for
])
def test_carried_neurons(shortcut, inner, carry, per_value, activation):
    g = residual(shortcut, inner)
    after = g.copy()
    get_target("csr").pipeline().run(after, PassContext(options=PassOptions(carry=carry)))
    mlp = Mlp.from_graph(after, g.shape(g.output))
    carrying = mlp.layers[-3]  # the layer of ``inner``
    assert carrying.carried == 5 * per_value
    assert carrying.n_out == 5 + 5 * per_value
    assert carrying.activation == activation
    if activation == "mixed":
        assert sorted(s[2] for s in carrying.segments) == ["identity", inner.lower()]
    assert_equivalent(g, mlp, n=16, rtol=1e-5, input_range=(-3, 3))


def test_uniform_target_refuses_a_carry_through_tanh():
    from cnn2mlp.errors import CompileError

    g, _ = lowered(residual(None, "Tanh"))
    g2 = g.copy()
    with pytest.raises(CompileError, match="carried through layer 1, whose activation "
                                           r"\(Tanh\) cannot carry it exactly"):
        get_pass("linearize-dag").run(g2, PassContext(options=PassOptions(uniform=True)))


def test_leaky_relu_layer_carries_with_two_leaky_neurons():
    g = residual(None)
    for node in g.nodes:
        if node.op == "Relu":
            node.op, node.attrs = "LeakyRelu", {"alpha": 0.2}
    after = g.copy()
    get_target("csr").pipeline().run(after, PassContext())
    mlp = Mlp.from_graph(after, g.shape(g.output))
    assert [l.activation for l in mlp.layers] == ["leaky_relu", "leaky_relu", "identity"]
    assert mlp.layers[0].carried == 10
    assert_equivalent(g, mlp, n=16, rtol=1e-5, input_range=(-3, 3))


# ------------------------------------------------------------------ realistic exports
def conv_geo(k=3, s=1, p=1, out=4, g=1):
    return {"kernel_shape": (k, k), "strides": (s, s), "dilations": (1, 1),
            "pads": (p, p, p, p), "group": g, "out_channels": out}


def pytorch_resnet(projection: bool) -> onnx.ModelProto:
    """torch.onnx.export of a ResNet basic block: Conv-BN-ReLU, Conv-BN, Add with the
    shortcut (identity, or 1×1 stride-2 Conv + BN), ReLU; a GlobalAveragePool head."""
    b = OnnxBuilder((3, 8, 8), batch="batch_size", opset=17, seed=31)
    b.conv(conv_geo(out=8))
    b.batchnorm()
    stem = b.activation("Relu")
    stride = 2 if projection else 1
    b.conv(conv_geo(out=8, s=stride))
    b.batchnorm()
    b.activation("Relu")
    b.conv(conv_geo(out=8))
    main_branch = b.batchnorm()
    shape = b.shape
    if projection:
        b.current, b.shape = stem, (8, 8, 8)
        b.conv(conv_geo(k=1, s=2, p=0, out=8))
        shortcut = b.batchnorm()
    else:
        shortcut = stem
    b.node("Add", [main_branch, shortcut])
    b.shape = shape
    b.activation("Relu")
    b.pool("GlobalAveragePool", None)
    b.flatten("flatten")
    b.dense(10)
    return b.build()


@pytest.mark.parametrize("projection", [False, True])
def test_pytorch_resnet_block(projection):
    model = pytorch_resnet(projection)
    compiled = compile_to_model(model)
    assert_equivalent(model, compiled, n=16)
    # The stem (8×8×8, after a ReLU) is carried one neuron a value through the block's
    # first layer; a stride-2 1×1 projection reads only 8×4×4 of it: pruning keeps those.
    carried = [l.carried for l in compiled.layers]
    assert carried[1] == (8 * 4 * 4 if projection else 8 * 8 * 8)
    assert sum(carried) == carried[1]


def densenet_inception() -> onnx.ModelProto:
    """A DenseNet-style dense block (each layer reads the concat of all before) feeding an
    Inception-style module (1×1, 3×3 and 1×1→3×3 branches of different depth, Concat)."""
    b = OnnxBuilder((2, 6, 6), opset=13, seed=32)
    features = [b.current]
    channels = 2
    for _ in range(2):
        joined = b.node("Concat", features, axis=1) if len(features) > 1 else features[0]
        b.current, b.shape = joined, (channels, 6, 6)
        b.batchnorm()
        b.activation("Relu")
        features.append(b.conv(conv_geo(out=3)))
        channels += 3
    block = b.node("Concat", features, axis=1)
    branches = []
    for depth, k in ((1, 1), (1, 3), (2, 3)):
        b.current, b.shape = block, (channels, 6, 6)
        for _ in range(depth):
            b.conv(conv_geo(k=k, p=k // 2, out=2))
            b.activation("Relu")
        branches.append(b.current)
    b.node("Concat", branches, axis=1)
    b.shape = (6, 6, 6)
    b.pool("MaxPool", {"kernel_shape": (2, 2), "strides": (2, 2), "dilations": (1, 1),
                       "pads": (0, 0, 0, 0), "ceil_mode": False})
    b.flatten("flatten")
    b.dense(4)
    return b.build()


def test_densenet_and_inception_concats():
    model = densenet_inception()
    assert_equivalent(model, compile_to_model(model), n=16)


def mobilenet_v2_block() -> onnx.ModelProto:
    """An inverted residual: 1×1 expand + ReLU6 (Clip 0..6 written as Max/Min with
    constants), depthwise 3×3 + ReLU6, 1×1 project (linear), Add the input."""
    b = OnnxBuilder((4, 6, 6), opset=11, seed=33)
    block_input = b.current
    b.conv(conv_geo(k=1, p=0, out=12))
    b.batchnorm()
    for conv in (conv_geo(out=12, g=12), conv_geo(k=1, p=0, out=4)):
        b.node("Max", [b.current, b.const(np.array(0.0, np.float32))])
        b.node("Min", [b.current, b.const(np.array(6.0, np.float32))])
        b.conv(conv)
        b.batchnorm()
    b.node("Add", [b.current, block_input])
    b.flatten("flatten")
    b.dense(3)
    return b.build()


def test_mobilenet_v2_inverted_residual():
    model = mobilenet_v2_block()
    assert_equivalent(model, compile_to_model(model), n=16, input_range=(-4, 4))


def test_product_of_computed_values_is_refused_by_name():
    """Squeeze-and-excitation: x · sigmoid(W pool(x)). No MLP computes a product."""
    from cnn2mlp.errors import CompileError

    b = OnnxBuilder((3, 4, 4), opset=13, seed=34)
    x = b.conv(conv_geo(out=3))
    b.pool("GlobalAveragePool", None)
    b.activation("Sigmoid")
    gate = b.current
    b.node("Mul", [x, gate])
    b.nodes[-1].name = "se_scale"
    b.shape = (3, 4, 4)
    b.flatten("flatten")
    b.dense(2)
    with pytest.raises(CompileError, match="se_scale.*multiplies two values computed from the "
                                           "input.*--output-tensor "):
        compile_to_model(b.build())


# ------------------------------------------------------------------ pruning and formats
def test_prune_neurons_drops_conv_outputs_no_pool_window_reads():
    """A 3×3/stride-3 pool over a 7×7 map reads 6×6 of it: the last row and column of the
    conv's outputs feed nothing, and their neurons are removed."""
    b = OnnxBuilder((1, 9, 9), opset=13, seed=35)
    b.conv(conv_geo(out=2, p=0))          # 2 × 7 × 7
    b.activation("Relu")
    b.pool("AveragePool", {"kernel_shape": (3, 3), "strides": (3, 3), "dilations": (1, 1),
                           "pads": (0, 0, 0, 0), "ceil_mode": False})
    b.activation("Relu")
    b.flatten("flatten")
    b.dense(3)
    model = b.build()
    compiled = compile_to_model(model)
    assert compiled.layers[0].n_out == 2 * 6 * 6  # 2 × 7 × 7 before pruning
    assert compiled.result.stats["prune-neurons"]["neurons"] == 2 * (49 - 36)
    assert_equivalent(model, compiled, n=16)


def test_version_1_artifacts_still_load(tmp_path):
    import scipy.sparse as sp

    import cnn2mlp
    from cnn2mlp.backends.csr import save_csr
    from cnn2mlp.ir.mlp import MlpLayer

    rng = np.random.default_rng(0)
    mlp = Mlp([MlpLayer(sp.csr_array(rng.normal(size=(3, 4)).astype(np.float32)),
                        np.ones(3, np.float32), "tanh")], (4,), (3,))
    path = tmp_path / "v1.npz"
    save_csr(mlp, path)
    with np.load(path) as z:
        arrays = dict(z)
    arrays["format_version"] = np.array(1)
    np.savez(path, **arrays)
    x = rng.normal(size=(5, 4))
    np.testing.assert_allclose(cnn2mlp.load(path).predict(x, dtype=np.float64),
                               mlp.forward(x), rtol=1e-6)


def test_mixed_layers_round_trip_and_run_in_the_kernel_module(tmp_path):

    import cnn2mlp
    from cnn2mlp.backends.csr import save_csr
    from cnn2mlp.testing import run_kernel_module

    g = residual(None, "Tanh")
    after = g.copy()
    get_target("csr").pipeline().run(after, PassContext())
    mlp = Mlp.from_graph(after, g.shape(g.output))
    assert any(l.segments for l in mlp.layers)
    x = np.random.default_rng(1).normal(size=(7, 5))
    got = run_kernel_module(mlp, x, tmp_path)
    save_csr(mlp, tmp_path / "m.npz")
    expected = cnn2mlp.load(tmp_path / "m.npz").predict(x, dtype=np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert_equivalent(g, cnn2mlp.load(tmp_path / "m.npz"), n=8, rtol=1e-5)


def test_opencv_target_on_a_relu_resnet(tmp_path):
    pytest.importorskip("cv2")
    from cnn2mlp.cli import main

    path = tmp_path / "resnet.onnx"
    onnx.save(pytorch_resnet(projection=True), str(path))
    assert main([str(path), "-o", str(tmp_path / "r.xml"), "--check", "16", "--quiet"]) == 0


def test_a_large_chain_stays_linear_in_the_nodes():
    """The graph indexes producers and consumers: 20,000 nodes go through the pipeline
    (timed in benchmarks/bench_graph.py, not here)."""
    g = Graph("x", (4,))
    for i in range(20000):
        g.append("Relu" if i % 2 else "Identity")
    get_target("csr").pipeline().run(g, PassContext())
    assert g.ops() == ["Relu"] * 10000


def test_discontinuous_tail_is_refused_and_output_tensor_compiles_the_logits(tmp_path, capsys):
    """A segmentation net ends in ArgMax: no MLP computes it. The error names the node and
    offers --output-tensor with its input; with it, the logits compile and check."""
    from cnn2mlp.cli import main

    b = OnnxBuilder((2, 5, 5), opset=13, seed=36)
    b.conv(conv_geo(out=3))
    b.activation("Relu")
    logits = b.conv(conv_geo(out=4))
    b.nodes.append(helper.make_node("ArgMax", [logits], ["classes"], axis=1, keepdims=0,
                                    name="pick"))
    b.current, b.shape = "classes", (5, 5)
    model = b.build()
    model.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.INT64
    path = tmp_path / "seg.onnx"
    onnx.save(model, str(path))
    assert main([str(path), "-o", str(tmp_path / "a.npz")]) == 2
    err = capsys.readouterr().err
    assert "'pick' (ArgMax) is discontinuous" in err and f"--output-tensor {logits}" in err
    report = tmp_path / "r.json"
    assert main([str(path), "-o", str(tmp_path / "a.npz"), "--output-tensor", logits,
                 "--check", "8", "--report", str(report)]) == 0
    assert "check passed" in capsys.readouterr().out
    import json

    data = json.loads(report.read_text())
    assert data["output_shape"] == [4, 5, 5]
    assert any("--output-tensor" in note for note in data["notes"])


def test_output_tensor_that_does_not_exist(tmp_path, capsys):
    from cnn2mlp.cli import main

    path = tmp_path / "r.onnx"
    onnx.save(pytorch_resnet(False), str(path))
    assert main([str(path), "-o", str(tmp_path / "a.npz"), "--output-tensor", "nope"]) == 2
    assert "--output-tensor 'nope' is not a tensor of the model" in capsys.readouterr().err


@pytest.mark.parametrize("carry", ["activation", "identity"])
def test_carry_flag(tmp_path, carry):
    import json

    from cnn2mlp.cli import main

    path, report = tmp_path / "r.onnx", tmp_path / "r.json"
    onnx.save(pytorch_resnet(False), str(path))
    assert main([str(path), "-o", str(tmp_path / "a.npz"), "--carry", carry, "--check", "8",
                 "--report", str(report), "--quiet"]) == 0
    layers = json.loads(report.read_text())["layers"]
    expected = "relu" if carry == "activation" else "mixed"
    assert layers[1]["activation"] == expected and layers[1]["carried"] == 8 * 8 * 8


@given(dag_graphs(steps=("conv", "clip", "add", "activation")))
def test_clip_to_relu(graph):
    after = graph.copy()
    count = get_pass("clip-to-relu").run(after, PassContext())
    after.verify()
    assert count == graph.ops().count("Clip") and "Clip" not in after.ops()
    assert_equivalent(graph, after, n=8, rtol=1e-6, input_range=(-8, 8))


@given(dag_graphs(steps=("conv", "clip", "add", "activation")))
def test_clip_to_bounded_relu(graph):
    after = graph.copy()
    count = get_pass("clip-to-bounded-relu").run(after, PassContext())
    after.verify()
    assert count == graph.ops().count("Clip") and "Clip" not in after.ops()
    assert_equivalent(graph, after, n=8, rtol=1e-6, input_range=(-8, 8))


@pytest.mark.parametrize("target, layer", [("csr", (4, "bounded_relu")),
                                           ("onnx", (8, "relu"))])
def test_relu6_is_one_neuron_on_csr_and_two_relus_elsewhere(target, layer):
    """ReLU6 stays one activation where the target has per-neuron activations; ReLU-only
    targets get relu(x) - relu(x - 6), two neurons a value in one layer."""
    g = Graph("x", (4,))
    g.append("Dense", {"weight": np.random.default_rng(0).normal(size=(4, 4)) * 5,
                       "bias": np.random.default_rng(1).normal(size=4)})
    g.append("Clip", {"low": -0.5, "high": 6.0} if target == "csr" else
             {"low": 0.0, "high": 6.0})
    g.append("Dense", {"weight": np.ones((2, 4)), "bias": np.zeros(2)})
    after = g.copy()
    get_target(target).pipeline().run(after, PassContext(fusion="always" if target == "onnx"
                                                    else "cost"))
    mlp = Mlp.from_graph(after, g.shape(g.output))
    assert [(l.n_out, l.activation) for l in mlp.layers] == [layer, (2, "identity")]
    assert_equivalent(g, mlp, n=32, rtol=1e-5, input_range=(-2, 2))


def test_progress_line_on_a_terminal_only(monkeypatch):
    import io
    import sys

    from cnn2mlp.compile import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    for stream, shown in ((Tty(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        progress = Progress(enabled=True, after=0.0)
        progress.step(4, 17, "conv-to-dense")
        progress.done()
        assert ("[ 5/17] conv-to-dense" in stream.getvalue()) == shown


def keras_dense_block(layers: int = 2) -> tuple[onnx.ModelProto, int]:
    """DenseNet as Keras writes it (tf2onnx): the stem's max pool read by the first dense
    layer's BatchNorm and by one Concat, each layer joined to the features once
    (``x = concat([x, layer(x)])``); and the pool's output size."""
    from cnn2mlp.testing.zoo import Net
    net = Net(size=16, seed=5)
    x = net.max_pool(net.conv_relu("input", 8, 3, 2), 3, 2, 1)
    pool_size = int(np.prod(net.shapes[x]))
    for _ in range(layers):
        x = net.concat([x, net.dense_layer(x, 4, bottleneck=2)])
    return net.build(net.classifier(net.relu(net.batchnorm(x)), 5), "keras_dense"), pool_size


def test_a_pool_joined_to_deeper_features_is_kept_once_not_carried_as_its_tournament():
    """The max pool's output ``b + relu(a - b)`` read by a BatchNorm and by the Concat
    that joins it to the next layer's features: composed, both its tournament's neurons
    are read by the BatchNorm and carried to the Concat's layer (two a value); kept, one
    neuron a value is. The size model counts what the Concat holds (Keras' DenseNet121 at
    224x224: the pool, now one max layer in the C code, and 86 -> 82 ms at batch 1)."""
    model, pool_size = keras_dense_block()
    runtime = compile_to_model(model)
    assert_equivalent(model, runtime, n=16)
    layers = runtime.mlp.layers
    kept = [i for i, layer in enumerate(layers)
            if layer.n_out == pool_size and layer.activation == "identity"]
    assert kept, [(layer.n_out, layer.activation) for layer in layers]
    assert [layer.carried for layer in layers[kept[0] + 1:kept[0] + 3]] == [pool_size] * 2
