"""Testing helpers for cnn2mlp and its users.

    from hypothesis import given
    from cnn2mlp.testing import onnx_cnns, assert_equivalent, compile_to_model

    @given(onnx_cnns())
    def test_my_pipeline(model):
        assert_equivalent(model, compile_to_model(model))

- ``builder``: :class:`OnnxBuilder`, ONNX models written node by node as exporters do;
- ``zoo``: architectures built the way PyTorch exports them (inverted residuals, dense
  blocks, Inception, ShuffleNet, fire modules, ResNet blocks, grouped convolutions);
- ``equivalence``: :func:`assert_equivalent`, :func:`compile_to_model`;
- ``strategies``: hypothesis strategies for random CNNs and DAGs (needs hypothesis,
  the ``test`` extra, ``pip install -e ".[test]"``; imported when first used, so that the rest works without).
"""
from __future__ import annotations

from typing import Any

from .builder import OnnxBuilder, conv_output_shape, drops_last_window, pool_output_shape
from .equivalence import assert_equivalent, compile_to_model, run_kernel_module

_STRATEGIES = ("ACTIVATIONS", "DAG_STEPS", "ELEMENTWISE", "cnn_graphs", "conv_geometries",
               "dag_graphs", "input_shapes", "onnx_cnns", "onnx_dag_cnns", "pool_geometries")

__all__ = ["OnnxBuilder", "assert_equivalent", "compile_to_model", "conv_output_shape",
           "drops_last_window", "pool_output_shape", "run_kernel_module", *_STRATEGIES]


def __getattr__(name: str) -> Any:
    if name in _STRATEGIES:
        from . import strategies

        return getattr(strategies, name)
    raise AttributeError(f"module 'cnn2mlp.testing' has no attribute {name!r}")
