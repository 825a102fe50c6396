"""The README's lists of supported ONNX ops and Keras layers are the lists the code has."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()

#: Keras layers that are registered only to be refused with a reason, or listed as a group
REFUSING_KERAS = {"Dot", "Multiply"}
DROPOUT_FRIENDS = {"ActivityRegularization", "AlphaDropout", "GaussianDropout", "GaussianNoise",
                   "SpatialDropout1D", "SpatialDropout2D"}


def section(start: str, end: str) -> str:
    begin = README.index(start)
    return README[begin:README.index(end, begin)]


def expanded_words(text: str) -> set[str]:
    """Words, with the README's abbreviations spelled out: Conv1D/Conv2D, MaxPooling1D/2D,
    Global{Max,Average}Pooling1D/2D, Add/Sub/Mul/Div."""
    text = re.sub(r"(\w*)\{([\w,]+)\}([\w/]*)",
                  lambda m: " ".join(m.group(1) + part + m.group(3)
                                     for part in m.group(2).split(",")), text)
    text = re.sub(r"(\w+?)1D/2D", r"\g<1>1D \g<1>2D", text)
    return set(re.findall(r"[A-Za-z][A-Za-z0-9]*", text))


def test_every_onnx_converter_is_in_the_readme():
    from cnn2mlp.frontends.onnx import CONVERTERS

    listed = expanded_words(section("### Supported ONNX ops", "\n## "))
    missing = sorted(set(CONVERTERS) - listed)
    assert not missing, f"README's ONNX op list lacks {missing}"


def test_every_keras_layer_is_in_the_readme():
    from cnn2mlp.frontends.keras import CONVERTERS, MERGE_CONVERTERS

    listed = expanded_words(section("  - Keras `.keras`", "  - TensorFlow SavedModel"))
    layers = set(CONVERTERS) | set(MERGE_CONVERTERS)
    missing = sorted(layers - REFUSING_KERAS - DROPOUT_FRIENDS - listed)
    assert not missing, f"README's Keras layer list lacks {missing}"
    assert "Dropout and friends" in section("  - Keras `.keras`", "  - TensorFlow SavedModel")


def test_onnx_ops_named_in_the_readme_exist():
    """Op-like words (CamelCase names of ONNX operators) in the list are converters."""
    import onnx.defs

    from cnn2mlp.frontends.onnx import CONVERTERS

    onnx_ops = {s.name for s in onnx.defs.get_all_schemas()}
    listed = expanded_words(section("### Supported ONNX ops", "An op outside this list"))
    named = (listed & onnx_ops) - {"Max", "Min", "Shape", "Sum", "Mean"} | (
        listed & {"Max", "Min", "Sum", "Mean"})
    # discontinuous or refused ops are named in the text as refusals, not as support
    unknown = sorted(named - set(CONVERTERS))
    assert not unknown, f"README lists ops the code does not convert: {unknown}"


# ------------------------------------------------------------ the Python blocks, as written
ROOT = Path(__file__).resolve().parent.parent
#: blocks that say they are not run here: a file of the package (run by test_layout.py) or
#: code for another environment (PyTorch)
NOT_RUN = ("# (not run by the tests", "# cnn2mlp/")
#: what a block may need from an extra; without it the block is skipped, not failed
EXTRAS = {"maraboupy": "verify", "hypothesis": "test", "numba": "fast"}


def python_blocks() -> list[tuple[str, str]]:
    """(the heading above it, the code) for each ```python block the tests run."""
    blocks = []
    for match in re.finditer(r"```python\n(.*?)\n```", README, re.S):
        heading = re.findall(r"^#+ (.*)$", README[:match.start()], re.M)[-1]
        if not match.group(1).startswith(NOT_RUN):
            blocks.append((heading, match.group(1)))
    return blocks


def test_the_readme_has_python_blocks_to_run():
    headings = [h for h, _ in python_blocks()]
    assert {"Python API", "Property-based equivalence testing",
            "A verification query with Marabou"} <= set(headings)


@pytest.mark.parametrize("heading, code", python_blocks(), ids=[h for h, _ in python_blocks()])
def test_the_readmes_python_runs_as_written(heading, code, tmp_path):
    """From a folder that holds what a checkout holds (examples/), in a fresh interpreter,
    with hypothesis' own default settings (no conftest profile)."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_PROFILE"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900, env=env)
    missing = re.search(r"No module named '(\w+)'", proc.stderr)
    if proc.returncode and missing and missing.group(1) in EXTRAS:
        pytest.skip(f"needs the {EXTRAS[missing.group(1)]} extra")
    assert proc.returncode == 0, f"README block under {heading!r} failed:\n{proc.stderr[-3000:]}"
