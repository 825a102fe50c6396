"""The environment TensorFlow reads when it is first imported, set once for every module
that imports it (the TensorFlow frontend, the Keras reference of ``--check``, the tests)."""
from __future__ import annotations

import logging
import os

_prepared = False


def prepare_tensorflow(debug: bool = False) -> None:
    """Call before ``import tensorflow``/``keras``; the first call decides (the command line
    makes it first, with ``--debug``). Quiets TensorFlow's C++ log lines (oneDNN, CUDA
    stubs) and its Python loggers (tensorflow, absl) unless ``debug``, and turns oneDNN on:
    since TensorFlow 2.21 it is off by default on some CPUs, and without it TensorFlow has
    no CPU kernel for a channels_first (NCHW) convolution, so Keras cannot run such a model
    at all."""
    global _prepared
    if _prepared:
        return
    _prepared = True
    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        for name in ("tensorflow", "absl", "tf2onnx"):
            logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
