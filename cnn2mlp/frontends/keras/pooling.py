"""MaxPooling, AveragePooling and their Global forms, 1D and 2D."""
from __future__ import annotations

from .registry import layer
from .spatial import as_tuple, keras_pads, spatial_input, spatial_rank


@layer("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D")
def convert_pool(imp, lay, t):
    nd = spatial_rank(lay)
    c = lay.config
    x = spatial_input(imp, t, lay)
    kernel = as_tuple(c.get("pool_size", 2), nd)
    strides = as_tuple(c.get("strides") or kernel, nd)
    pads = keras_pads(imp, lay, imp.shape(x)[1:], kernel, strides, (1,) * nd)
    op = "MaxPool" if lay.class_name.startswith("Max") else "AveragePool"
    # TensorFlow's SAME average pooling divides by the cells inside the input.
    return imp.emit(lay, op, x, {"kernel_shape": kernel, "strides": strides, "pads": pads,
                                 "dilations": (1,) * nd, "ceil_mode": False,
                                 "count_include_pad": False})


@layer("GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalAveragePooling1D",
       "GlobalAveragePooling2D")
def convert_global_pool(imp, lay, t):
    x = spatial_input(imp, t, lay)
    spatial = imp.shape(x)[1:]
    nd = len(spatial)
    op = "MaxPool" if "Max" in lay.class_name else "AveragePool"
    y = imp.emit(lay, op, x, {"kernel_shape": spatial, "strides": (1,) * nd,
                              "pads": (0,) * (2 * nd), "dilations": (1,) * nd,
                              "ceil_mode": False, "count_include_pad": False})
    if lay.config.get("keepdims"):
        return y
    return imp.emit(lay, "Reshape", y, {"shape": (imp.shape(y)[0],)}, channels_first=False)
