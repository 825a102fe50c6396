"""The README's lists of supported ONNX ops and Keras layers are the lists the code has."""
import re
from pathlib import Path

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
