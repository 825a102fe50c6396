"""OpenCV XML writer throughput (text and base64) on a 3072-2048-1024-100-10 MLP with dense
weights, and cv2's load and predict time for it. Prints figures; asserts nothing.

    python benchmarks/bench_opencv_writer.py
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from cnn2mlp.backends.opencv import AnnSpec, save_opencv
from cnn2mlp.ir.mlp import Mlp, MlpLayer

SIZES = [3072, 2048, 1024, 100, 10]


def build() -> Mlp:
    rng = np.random.default_rng(0)
    layers = [MlpLayer(sp.csr_array(rng.normal(size=(n_out, n_in)).astype(np.float32)),
                       rng.normal(size=n_out).astype(np.float32), "relu")
              for n_in, n_out in zip(SIZES[:-1], SIZES[1:])]
    return Mlp(layers, (SIZES[0],), (SIZES[-1],))


def converted_cnn() -> Mlp:
    """A 3x32x32 → 16 channel 3x3 conv → 10 MLP as converted: dense but mostly zeros."""
    from cnn2mlp.ir.conv_matrix import conv_matrix

    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(16, 3, 3, 3)).astype(np.float32)
    w, b, _ = conv_matrix(kernel, np.zeros(16, np.float32), (3, 32, 32), (2, 2), (1, 1, 1, 1),
                          (1, 1), 1)
    head = sp.csr_array(rng.normal(size=(10, w.shape[0])).astype(np.float32))
    return Mlp([MlpLayer(w, b, "relu"), MlpLayer(head, np.zeros(10, np.float32), "relu")],
               (3, 32, 32), (10,))


def main() -> None:
    for label, mlp in (("dense 3072-2048-1024-100-10", build()),
                       ("converted conv 3x32x32 -> 16x16x16 -> 10 (97% zeros)", converted_cnn())):
        print(label)
        write_and_load(mlp)


def write_and_load(mlp: Mlp) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for encoding in ("base64", "text"):
            path = Path(tmp, f"net_{encoding}.xml")
            start = time.perf_counter()
            save_opencv(mlp, AnnSpec("relu"), path, encoding)
            seconds = time.perf_counter() - start
            size = path.stat().st_size
            print(f"{encoding:>6}: {size / 1e6:7.1f} MB in {seconds:5.2f} s = "
                  f"{size / 1e6 / seconds:6.1f} MB/s  [target >= 100 MB/s]")
            try:
                import cv2
            except ImportError:
                continue
            start = time.perf_counter()
            net = cv2.ml.ANN_MLP_load(str(path))
            load = time.perf_counter() - start
            x = np.random.default_rng(1).uniform(0, 1, (64, mlp.layers[0].n_in)).astype(np.float32)
            start = time.perf_counter()
            net.predict(x)
            print(f"        cv2 load {load:.2f} s, predict 64 rows {1e3 * (time.perf_counter() - start):.0f} ms")


if __name__ == "__main__":
    main()
