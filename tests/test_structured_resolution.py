"""keras.applications MobileNetV2, ResNet50 and DenseNet121 (random weights, random
BatchNorm statistics, 10 classes) at 64×64 compile to an ``.npz`` that stores at most twice
the CNN's float32 parameters, and that computes what Keras computes. The small-resolution
version of benchmarks/bench_structured.py (224×224, a benchmark, not a test)."""
from __future__ import annotations

import numpy as np
import pytest

from cnn2mlp.cli import main

MODELS = ("MobileNetV2", "ResNet50", "DenseNet121")


def keras_application(name: str, side: int, path) -> int:
    """Save the model; return its parameters' float32 bytes. BatchNorm gets random scales
    (some negative), shifts and statistics, so that no bias is zero."""
    import keras

    model = getattr(keras.applications, name)(weights=None, classes=10,
                                              input_shape=(side, side, 3))
    rng = np.random.default_rng(7)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.2, c) * rng.choice([-1, 1], c, p=[.1, .9]),
                               rng.uniform(-0.3, 0.3, c), rng.uniform(-0.3, 0.3, c),
                               rng.uniform(0.8, 1.6, c)])
    model.save(path)
    return model.count_params() * 4


@pytest.mark.parametrize("name", MODELS)
def test_a_keras_application_at_64_stores_at_most_twice_its_parameters(name, tmp_path):
    model = tmp_path / f"{name}.keras"
    params = keras_application(name, 64, model)
    out = tmp_path / f"{name}.npz"
    report = tmp_path / "r.json"
    assert main([str(model), "-o", str(out), "--check", "3", "--quiet", "--report",
                 str(report)]) == 0
    written = out.stat().st_size
    assert written <= 2 * params, f"{name}: {written:,} bytes for {params:,} of parameters"
    import json

    facts = json.loads(report.read_text())
    assert facts["check"]["passed"]
