"""The environment TensorFlow reads when it is first imported, set once for every module
that imports it (the TensorFlow frontend, the Keras reference of ``--check``, the tests)."""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Iterator

_prepared = False
_debug = False


def prepare_tensorflow(debug: bool = False) -> None:
    """Call before ``import tensorflow``/``keras``; the first call decides (the command line
    makes it first, with ``--debug``). Quiets TensorFlow's C++ log lines (oneDNN, CUDA
    stubs) and its Python loggers (tensorflow, absl) unless ``debug``, and turns oneDNN on:
    since TensorFlow 2.21 it is off by default on some CPUs, and without it TensorFlow has
    no CPU kernel for a channels_first (NCHW) convolution, so Keras cannot run such a model
    at all."""
    global _prepared, _debug
    if _prepared:
        return
    _prepared = True
    _debug = debug
    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        for name in ("tensorflow", "absl", "tf2onnx"):
            logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


@contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Standard error closed at the file-descriptor level while TensorFlow loads (unless
    ``--debug``): its C++ libraries write their first log lines (oneDNN, CUDA stubs) through
    absl before any log level is read, so TF_CPP_MIN_LOG_LEVEL does not stop them. Python
    exceptions still propagate; a crash inside TensorFlow shows with ``--debug``."""
    if _debug:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no file descriptor 2 (an embedding host)
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
