"""Hypothesis-generated ONNX CNNs, compiled and run, against onnxruntime."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn2mlp.frontends.onnx import load_onnx
from cnn2mlp.testing import assert_equivalent, compile_to_model, onnx_cnns


@settings(max_examples=30)
@given(onnx_cnns())
def test_compiled_mlp_matches_onnxruntime(model):
    compiled = compile_to_model(model)
    assert_equivalent(model, compiled, n=8)


@settings(max_examples=30)
@given(model=onnx_cnns())
def test_frontend_and_interpreter_match_onnxruntime(model, tmp_path_factory):
    # The IR's reference evaluation is what every pass test trusts: check it at the source.
    path = tmp_path_factory.mktemp("m") / "m.onnx"
    path.write_bytes(model.SerializeToString())
    graph = load_onnx(path)
    assert_equivalent(path, graph, n=8)


@settings(max_examples=15)
@given(onnx_cnns(activations=("Relu",)), st.sampled_from([np.float32, np.float64]))
def test_predict_dtypes(model, dtype):
    compiled = compile_to_model(model)
    x = np.random.default_rng(0).uniform(-1, 1, (3,) + compiled.input_shape)
    y = compiled.predict(x, dtype=dtype)
    assert y.dtype == dtype and y.shape == (3,) + compiled.output_shape
    np.testing.assert_allclose(y, compiled.mlp.forward(x), rtol=1e-4, atol=1e-4)
