"""Writes examples/small_cnn.onnx: a small CNN laid out as torch.onnx.export writes one
(NCHW input with a symbolic batch, Conv + BatchNorm + Relu, a strided Conv, Flatten, Gemm
with transB=1, a final Softmax), with fixed random weights. It rewrites the shipped file byte for byte (a test checks).

    python examples/make_example.py
"""
from pathlib import Path

import onnx

from cnn2mlp.testing import OnnxBuilder


def build() -> onnx.ModelProto:
    b = OnnxBuilder((3, 16, 16), batch="batch_size", opset=13, seed=2024)
    b.normalize(mean=0.45, std=0.225)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 8})
    b.batchnorm()
    b.activation("Relu")
    b.conv({"kernel_shape": (3, 3), "strides": (2, 2), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 2, "out_channels": 8})
    b.activation("Relu")
    b.flatten("flatten")
    b.dense(32)
    b.activation("Relu")
    b.dense(10)
    b.node("Softmax", [b.current], axis=-1)
    return b.build()


if __name__ == "__main__":
    path = Path(__file__).with_name("small_cnn.onnx")
    onnx.save(build(), str(path))
    print(f"wrote {path}")
