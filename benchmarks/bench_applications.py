"""keras.applications models at 32×32×3 (random weights, random BatchNorm statistics, no
softmax) compiled with the CSR target, each in a child process: compile time, non-zeros,
carried neurons, peak memory against the final arrays, and the error against Keras' own
logits on 8 inputs. Prints figures; asserts nothing. Needs the tensorflow extra.

    python benchmarks/bench_applications.py [ResNet50 MobileNetV2 DenseNet121 ...]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ["ResNet50", "MobileNetV2", "DenseNet121"]

BUILD = """
import os, sys, numpy as np
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
name, path = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10,
                                           classifier_activation=None)
for w in model.weights:
    if "moving_variance" in w.path or "gamma" in w.path:
        w.assign(rng.uniform(0.5, 1.5, tuple(w.shape)))
    elif "moving_mean" in w.path or "beta" in w.path:
        w.assign(rng.uniform(-0.2, 0.2, tuple(w.shape)))
model.save(path)
x = rng.uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
np.save(path + ".x.npy", x)
np.save(path + ".y.npy", model.predict(x, verbose=0))
"""




def main() -> None:
    import numpy as np

    import cnn2mlp
    from cnn2mlp.check import compare

    names = sys.argv[1:] or MODELS
    print(f"{'model':<14} {'non-zeros':>12} {'carried':>10} {'compile s':>10} "
          f"{'peak MiB':>9} {'arrays MiB':>11} {'ratio':>6} {'max error':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = str(Path(tmp, f"{name}.keras"))
            subprocess.run([sys.executable, "-c", BUILD, name, path], check=True,
                           capture_output=True)
            report = Path(tmp, f"{name}.json")
            # a fresh child per compile, so that its peak is its own (ru_maxrss is a maximum
            # over children: measure in a grandchild and read its report)
            probe = (f"import resource, subprocess, sys, json\n"
                     f"subprocess.run([sys.executable, '-m', 'cnn2mlp.compile', {path!r}, '-o', "
                     f"{path + '.npz'!r}, '--quiet', '--report', {str(report)!r}], check=True)\n"
                     "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                 check=True)
            seconds = time.perf_counter() - start
            peak = int(out.stdout.split()[-1]) * 1024
            data = json.loads(report.read_text())
            arrays = sum(layer["bytes"] for layer in data["layers"])
            x, y = np.load(path + ".x.npy"), np.load(path + ".y.npy")
            error = compare(y, cnn2mlp.load(path + ".npz").predict(x), 1e-4).max_rel_error
            print(f"{name:<14} {data['totals']['nnz']:>12,} "
                  f"{sum(l['carried'] for l in data['layers']):>10,} {seconds:>10.1f} "
                  f"{peak / 2**20:>9.0f} {arrays / 2**20:>11.0f} {peak / arrays:>6.2f} "
                  f"{error:>10.2g}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
