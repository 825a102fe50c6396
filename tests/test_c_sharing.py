"""The C code's parts that are alike but for their arrays are one function
(``runtime/c_sharing.py``): the rewrite keeps every constant, passes the arrays, and changes
no bit of what the code computes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import cnn2mlp
from cnn2mlp.compile import compile_model
from cnn2mlp.runtime import c_source as c_source_module
from cnn2mlp.runtime.c_build import find_compiler
from cnn2mlp.runtime.c_sharing import Sharing, share_functions
from cnn2mlp.runtime.c_source import c_source
from cnn2mlp.testing.zoo import block_model


def part(name: str, weights: str, offsets: str, taps: int = 9) -> str:
    return (f"static NO_LOOP_VECTORIZE void {name}(const float *restrict h, float *restrict z)\n"
            "{\n    int t;\n"
            f"    for (t = 0; t < {taps}; t++) z[t] += {weights}[t] * h[{offsets}[t]];\n"
            f"    z[0] += {weights}[0];\n}}")


TYPES = {"L0_w_1": "float", "L0_o_2": "int32_t", "L1_w_3": "float", "L1_o_4": "int32_t",
         "L2_w_5": "float", "L2_o_6": "int32_t"}


def test_parts_alike_but_for_their_arrays_call_one_copy_that_takes_them():
    chunks = [part("layer0_group0", "L0_w_1", "L0_o_2"),
              part("layer1_group0", "L1_w_3", "L1_o_4"),
              part("layer2_group0", "L2_w_5", "L2_o_6", taps=8)]  # a constant differs
    sharing = share_functions(chunks, TYPES)
    assert sharing.prototypes == [
        "LAYER NO_INLINE NO_LOOP_VECTORIZE void shared0(const float *restrict h, float "
        "*restrict z, const float *restrict A0, const int32_t *restrict A1);"]
    copy, first, second, third = sharing.functions
    assert "A0[t] * h[A1[t]]" in copy and "z[0] += A0[0]" in copy and "t < 9" in copy
    assert "shared0(h, z, L0_w_1, L0_o_2);" in first
    assert "shared0(h, z, L1_w_3, L1_o_4);" in second
    assert third == chunks[2]


def test_a_name_the_source_does_not_declare_is_not_an_array_and_keeps_a_part_its_own():
    chunks = [part("layer0_group0", "L0_w_1", "L0_o_2"),
              part("layer1_group0", "L1_w_3", "L1_undeclared_9")]
    assert share_functions(chunks, TYPES).functions == chunks


def test_arrays_of_other_types_are_not_shared():
    types = {**TYPES, "L1_o_4": "int8_t"}
    chunks = [part("layer0_group0", "L0_w_1", "L0_o_2"),
              part("layer1_group0", "L1_w_3", "L1_o_4")]
    assert share_functions(chunks, types).functions == chunks


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler (apt install gcc)")
def test_shared_code_computes_every_bit_the_parts_did(tmp_path, monkeypatch):
    """A dense block's layers share their convolutions' code; the c engine's results are
    the same bits with and without the sharing, in float32 and float64."""
    monkeypatch.setenv("CNN2MLP_C_CACHE", str(tmp_path / "cache"))
    onnx.save(block_model("dense_block", size=12, seed=3), str(tmp_path / "m.onnx"))
    mlp = compile_model(tmp_path / "m.onnx", tmp_path / "m.npz").mlp
    shared = c_source(mlp, "m", "m.h", "", static_limit=0).source
    assert shared.count("LAYER NO_INLINE") >= 5

    def run() -> list[np.ndarray]:
        model = cnn2mlp.load(tmp_path / "m.npz", engine="c")
        assert model.engine == "c"
        rng = np.random.default_rng(7)
        return [model.predict(rng.uniform(-1, 1, (b, 3, 12, 12)), dtype)
                for b in (1, 37) for dtype in (np.float32, np.float64)]

    with_sharing = run()
    monkeypatch.setattr(c_source_module, "share_functions",
                        lambda functions, types: Sharing(list(functions)))
    monkeypatch.setenv("CNN2MLP_C_CACHE", str(tmp_path / "cache-unshared"))
    unshared = c_source(mlp, "m", "m.h", "", static_limit=0).source
    assert "LAYER NO_INLINE" not in unshared and len(unshared) > 1.5 * len(shared)
    for a, b in zip(with_sharing, run()):
        assert a.dtype == b.dtype and np.array_equal(a, b)
