"""Each pass on hypothesis-generated graphs: the interpreter before and after must agree."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cnn2mlp.ir import Graph, run
from cnn2mlp.ir.mlp import Mlp
from cnn2mlp.ir.weights import as_csr
from cnn2mlp.backends import get_target
from cnn2mlp.passes import PassContext, PassOptions, get_pass
from cnn2mlp.testing import assert_equivalent, cnn_graphs

CONV_ONLY = ("conv",)


def apply(graph: Graph, *names: str, **options) -> tuple[Graph, int]:
    """Run passes on a copy; return it and the rewrites of the last pass."""
    after = graph.copy()
    ctx = PassContext(options=PassOptions(**options))
    rewrites = 0
    for name in names:
        rewrites = get_pass(name).run(after, ctx)
        after.verify()
    return after, rewrites


def stride_one_shape(graph, conv):
    from cnn2mlp.ir import get_op
    from cnn2mlp.ir.graph import Node
    unit = Node("Conv", conv.inputs, conv.outputs, {**conv.attrs,
                                                    "strides": (1,) * len(conv.attrs["strides"])})
    return tuple(get_op("Conv").infer_shape(unit, [graph.shape(conv.input)])[0])


def assert_same_function(before: Graph, after: Graph, n: int = 6) -> None:
    assert_equivalent(before, after, n=n, rtol=1e-5)


@given(cnn_graphs(layers=CONV_ONLY, dense_head=False))
def test_conv_to_dense(graph):
    after, rewrites = apply(graph, "conv-to-dense")
    assert rewrites == graph.ops().count("Conv") > 0
    assert "Conv" not in after.ops()
    assert_same_function(graph, after)


@given(cnn_graphs(layers=CONV_ONLY, dense_head=False))
def test_conv_to_dense_builds_sorted_canonical_csr(graph):
    after, _ = apply(graph, "conv-to-dense")
    for node in after.nodes:
        w = as_csr(node.attrs["weight"])  # built structured: its CSR is canonical
        fresh = w.copy()
        fresh.has_canonical_format = False
        fresh.sum_duplicates()
        assert np.array_equal(fresh.indices, w.indices) and np.array_equal(fresh.indptr, w.indptr)
        assert w.indices.dtype == np.int32


@given(cnn_graphs(layers=CONV_ONLY, dense_head=False))
def test_fold_stride(graph):
    unfolded, _ = apply(graph, "conv-to-dense", fold_stride=False)
    strided = sum(1 for n in graph.nodes if n.op == "Conv" and stride_one_shape(graph, n)
                  != graph.shape(n.output))
    assert unfolded.ops().count("Select") == strided
    folded, rewrites = apply(unfolded, "fold-stride")
    assert rewrites == strided and "Select" not in folded.ops()
    assert_same_function(unfolded, folded)
    # Folding the selection yields exactly the matrix conv-to-dense emits directly.
    direct, _ = apply(graph, "conv-to-dense")
    for a, b in zip(folded.nodes, direct.nodes):
        assert (as_csr(a.attrs["weight"]) != as_csr(b.attrs["weight"])).nnz == 0


@given(cnn_graphs(layers=("conv", "batchnorm", "activation")))
def test_fold_batchnorm(graph):
    after, rewrites = apply(graph, "fold-batchnorm")
    bn_after_conv = sum(1 for n in graph.nodes if n.op == "BatchNorm"
                        and graph.producer(n.input) is not None
                        and graph.producer(n.input).op == "Conv")
    assert rewrites >= bn_after_conv
    assert_same_function(graph, after)


@given(cnn_graphs(layers=("affine", "conv", "batchnorm", "activation")))
def test_fold_affine_after_lowering(graph):
    lowered, _ = apply(graph, "conv-to-dense")
    after, rewrites = apply(lowered, "fold-affine")
    assert after.ops().count("AddConst") + after.ops().count("MulConst") + rewrites == \
        lowered.ops().count("AddConst") + lowered.ops().count("MulConst") + \
        lowered.ops().count("BatchNorm") - after.ops().count("BatchNorm")
    assert_same_function(graph, after)


@given(cnn_graphs(layers=("pad", "conv", "activation")))
def test_fold_pad(graph):
    after, _ = apply(graph, "fold-pad")
    assert_same_function(graph, after)


@given(cnn_graphs(layers=("transpose", "conv", "activation")))
def test_layout_to_permutation_and_fold(graph):
    lowered, _ = apply(graph, "conv-to-dense")
    after, rewrites = apply(lowered, "layout-to-permutation")
    assert "Transpose" not in after.ops()
    assert_same_function(graph, after)
    folded, _ = apply(after, "fold-stride")
    assert_same_function(graph, folded)


@given(cnn_graphs())
def test_lower_linear_leaves_only_dense_and_activations(graph):
    after, _ = apply(graph, "conv-to-dense", "maxpool-to-relu", "lower-linear")
    from cnn2mlp.ir import get_op

    assert all(op in ("Dense", "Reshape") or get_op(op).activation for op in after.ops())
    assert_same_function(graph, after)


@given(cnn_graphs(layers=("conv", "affine", "pad", "transpose", "avgpool")),
       st.sampled_from(["cost", "always"]))
def test_fuse_dense(graph, policy):
    lowered, _ = apply(graph, "conv-to-dense", "lower-linear", "layout-to-permutation")
    after = lowered.copy()
    rewrites = get_pass("fuse-dense").run(after, PassContext(fusion=policy))
    after.verify()
    if policy == "always":
        assert after.ops().count("Dense") == 1  # no activations in between: one matrix
    assert rewrites == lowered.ops().count("Dense") - after.ops().count("Dense")
    assert_same_function(graph, after)


def test_fuse_dense_cost_model_keeps_growing_products_apart():
    # Two 3x3 convolutions fuse into a 5x5: more non-zeros than the two factors together.
    g = Graph("x", (8, 12, 12))
    rng = np.random.default_rng(0)
    for _ in range(2):
        g.append("Conv", {"kernel": rng.normal(size=(8, 8, 3, 3)).astype(np.float32),
                                        "bias": None, "strides": (1, 1), "pads": (1, 1, 1, 1),
                                        "dilations": (1, 1), "group": 1})
    lowered, _ = apply(g, "conv-to-dense")
    kept, fused = lowered.copy(), lowered.copy()
    assert get_pass("fuse-dense").run(kept, PassContext(fusion="cost")) == 0
    assert get_pass("fuse-dense").run(fused, PassContext(fusion="always")) == 1
    assert_same_function(g, fused)


@given(cnn_graphs())
def test_eliminate_identity_and_dead(graph):
    extra = graph.add_node("Identity", [graph.output])
    graph.add_node("Relu", [graph.input])  # dead branch
    graph.output = extra.output
    after, removed = apply(graph, "eliminate-identity", "eliminate-dead")
    assert "Identity" not in after.ops() and removed >= 1
    assert_same_function(graph, after)


@given(cnn_graphs())
def test_drop_final_softmax_keeps_argmax(graph):
    graph.output = graph.add_node("Softmax", [graph.output]).output
    after, rewrites = apply(graph, "drop-final-softmax")
    assert rewrites == 1 and after.notes and after.meta.logits is not None
    x = np.random.default_rng(1).uniform(-1, 1, (5,) + graph.shape(graph.input))
    logits = run(after, x)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True), run(graph, x), atol=1e-12)


@given(cnn_graphs(), st.sampled_from(["cost", "always"]))
def test_default_pipeline_gives_an_mlp(graph, policy):
    after = graph.copy()
    get_target("csr").pipeline().run(after, PassContext(fusion=policy))
    mlp = Mlp.from_graph(after, graph.shape(graph.output))
    assert_equivalent(graph, mlp, n=6, rtol=1e-5)


def relu6_chain(tmp_path):
    """A chain (no branch: linearize-dag leaves it alone) of convolutions each with ReLU6
    as Clip(0, 6), a depthwise one among them, then a dense layer: three Dense nodes."""
    import onnx

    from cnn2mlp.testing import OnnxBuilder

    b = OnnxBuilder((3, 6, 6), seed=4)
    relu6 = [b.const(np.float32(0)), b.const(np.float32(6))]
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 4})
    b.node("Clip", [b.current] + relu6)
    b.conv({"kernel_shape": (3, 3), "strides": (2, 2), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 4, "out_channels": 4})
    b.node("Clip", [b.current] + relu6)
    b.flatten()
    b.dense(5)
    path = tmp_path / "relu6_chain.onnx"
    onnx.save(b.build(), str(path))
    return path


def test_a_chains_relu6_adds_no_identity_layer(tmp_path):
    """clip-to-bounded-relu keeps the Clip's name with an Identity after the BoundedRelu;
    in a chain each was an identity matrix of a layer of its own (Keras's MobileNet at
    32x32: 55 layers for 28, and for the dense targets a dense identity matrix each)."""
    from cnn2mlp.compile import compile_model
    from cnn2mlp.references import onnx_runner

    path = relu6_chain(tmp_path)
    for out in ("net.npz", "net.onnx"):
        result = compile_model(path, tmp_path / out)
        assert len(result.mlp.layers) == 3, out
        x = np.random.default_rng(0).uniform(-1, 1, (7, 3, 6, 6)).astype(np.float32)
        np.testing.assert_allclose(result.mlp.forward(x), onnx_runner(path)(x), rtol=1e-5,
                                   atol=1e-5)
