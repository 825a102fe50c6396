"""Standalone runtime for a cnn2mlp CSR artifact: needs numpy only.

    model = load()          # the artifact named in ARTIFACT, or load(path)
    y = model.predict(x)    # x shaped (B, *model.input_shape)

This file is real code in the cnn2mlp package (``cnn2mlp/backends/standalone.py``, where it
can be linted, covered and tested), and the template of every ``--kernel-py`` module:
``write_kernel`` copies it with its settings and the source of what it imports embedded.
"""
from __future__ import annotations

import json

import numpy as np

# The values below are this module's settings; the writer (backends/csr.py, write_kernel)
# sets them for the artifact it runs, through repr() alone.
FORMAT_VERSIONS = (1, 2, 3)
ARTIFACT = "model.npz"  # beside this module unless absolute
INPUT_SHAPE: tuple = ()

# -- embedded: write_kernel puts the source of what these lines import in their place, so
# that the written module needs numpy alone (the same code as cnn2mlp's runtime)
from cnn2mlp.ir.activations import NUMPY_BY_NAME as ACTIVATIONS, relu_np  # noqa: E402
from cnn2mlp.runtime.columns import merged_columns  # noqa: E402
from cnn2mlp.runtime.structure import find_parts, run_copies, run_group  # noqa: E402
# -- end embedded


def _activate(name, alpha, h):
    return ACTIVATIONS[name](h, alpha)


def _segments(z, i, act, alpha):
    """(start, stop, activation, alpha) runs of a layer: one for the whole layer, or the
    runs of a mixed layer (format version 2)."""
    n_out = int(z[f"layer{i}.shape"][0])
    if act != "mixed":
        return [(0, n_out, act, alpha)]
    stops = [int(s) for s in z[f"layer{i}.segment_stops"]]
    starts = [0] + stops[:-1]
    return list(zip(starts, stops, [str(a) for a in z[f"layer{i}.segment_activations"]],
                    [float(a) for a in z[f"layer{i}.segment_alphas"]]))


def _ell_groups(data, indices, indptr):
    """The rows of a CSR matrix in groups of similar length (within 2x), each as column
    and value tables (slot, row) padded with zeros: ELLPACK per group."""
    counts = np.diff(indptr)
    bucket = np.where(counts > 0, np.ceil(np.log2(np.maximum(counts, 1))), -1).astype(int)
    groups = []
    for b in np.unique(bucket[bucket >= 0]):
        rows = np.flatnonzero(bucket == b)
        width = int(counts[rows].max())
        slot = np.arange(width)[:, None]
        valid = slot < counts[rows][None, :]
        position = np.where(valid, indptr[rows][None, :] + slot, 0)
        groups.append((rows, np.where(valid, indices[position], 0),
                       np.where(valid, data[position], 0)))
    return groups


def _ell_matmul(groups, n_out, h):
    """W @ h for h (n_in, B), features by batch: one (rows × B) multiply-add per slot, so
    temporaries stay the size of the output."""
    out = np.zeros((n_out, h.shape[1]), dtype=h.dtype)
    for rows, cols, vals in groups:
        acc = np.zeros((len(rows), h.shape[1]), dtype=h.dtype)
        tmp = np.empty_like(acc)
        for k in range(len(cols)):
            np.multiply(h[cols[k]], vals[k][:, None], out=tmp)
            acc += tmp
        out[rows] = acc
    return out


def _runtime_arrays(data, indices, indptr, n_out, n_in, bias, segments, blocks):
    """The layer's arrays, preceded by a summing layer's when its equal columns pay to merge."""
    found = merged_columns(data, indices, indptr, n_in)
    if found is None:
        return [(data, indices, indptr, n_out, n_in, bias, segments, blocks)]
    class_of, first = found
    n_classes = len(first)
    order = np.argsort(class_of, kind="stable")
    summing = (np.ones(n_in, data.dtype), order, np.searchsorted(class_of[order], np.arange(n_classes + 1)),
               n_classes, n_in, np.zeros(n_classes, data.dtype), [],  # no activation
               blocks)
    renumber = np.full(n_in, -1, np.int64)
    renumber[first] = np.arange(n_classes)
    keep = renumber[indices] >= 0
    rows = np.repeat(np.arange(n_out), np.diff(indptr))
    lengths = np.bincount(rows[keep], minlength=n_out)
    merged = (data[keep], renumber[indices[keep]], np.concatenate([[0], np.cumsum(lengths)]),
              n_out, n_classes, bias, segments, None)
    return [summing, merged]


class _Layer:
    """A layer as the kernel runs it: dense (BLAS) when more than a third is non-zero, else
    the parts cnn2mlp's runtime finds (row groups by GEMM, copies as slices) and the other
    rows by ELL, each adding into the output."""

    def __init__(self, data, indices, indptr, n_out, n_in, bias, segments, blocks, dtype):
        data = data.astype(dtype)
        self.n_out, self.bias, self.segments = n_out, bias.astype(dtype), segments
        self.dense, self.parts, self.rests = None, [], []
        if len(data) > 0.3 * n_out * n_in:
            self.dense = np.zeros((n_out, n_in), dtype)
            rows = np.repeat(np.arange(n_out), np.diff(indptr))
            np.add.at(self.dense, (rows, indices), data)
            return
        self.parts, _ = find_parts(data, indices.astype(np.int64), indptr.astype(np.int64),
                                   n_in, blocks)
        self.rests = [(part.rest_rows, _ell_groups(*part.rest)) for part in self.parts
                      if len(part.rest_rows)]

    def __call__(self, h):
        if self.dense is not None:
            z = self.dense @ h
        else:
            z = np.zeros((self.n_out, h.shape[1]), dtype=h.dtype)
            for part in self.parts:
                for group in part.groups:
                    run_group(group, h, z, add=True)
                run_copies(part.copies, h, z, add=True)
            for rows, ell in self.rests:
                z[rows] += _ell_matmul(ell, len(rows), h)
        z += self.bias[:, None]
        for start, stop, act, alpha in self.segments:
            if ACTIVATIONS[act] is relu_np:  # in place: no temporary the size of the layer
                np.maximum(z[start:stop], 0, out=z[start:stop])
            else:
                z[start:stop] = _activate(act, alpha, z[start:stop])
        return z


class Model:
    def __init__(self, path):
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != "cnn2mlp-csr" or int(z["format_version"]) not in FORMAT_VERSIONS:
                raise ValueError(f"{path}: not a cnn2mlp CSR file of versions {FORMAT_VERSIONS}")
            self.input_shape = tuple(int(d) for d in z["input_shape"])
            self.output_shape = tuple(int(d) for d in z["output_shape"])
            self.arrays = [(z[f"layer{i}.data"], z[f"layer{i}.indices"], z[f"layer{i}.indptr"],
                            int(z[f"layer{i}.shape"][0]), int(z[f"layer{i}.shape"][1]),
                            z[f"layer{i}.bias"], _segments(z, i, str(act), float(alpha)),
                            z[f"layer{i}.input_blocks"] if f"layer{i}.input_blocks" in z.files
                            else None)
                           for i, (act, alpha) in enumerate(zip(z["activations"], z["alphas"]))]
            self._layers = {}
            self.meta = json.loads(str(z["meta"]))

    def predict(self, x, dtype=None):
        """dtype defaults to the model's own precision (float32, or float64)."""
        x = np.asarray(x)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"expected (B, *{self.input_shape}), got {x.shape}")
        key = np.dtype(self.arrays[0][0].dtype if dtype is None else dtype)
        if key not in self._layers:  # prepared once per dtype
            self._layers[key] = [_Layer(*runtime, dtype=key) for arrays in self.arrays
                                 for runtime in _runtime_arrays(*arrays)]
        h = np.ascontiguousarray(x.reshape(len(x), -1).T, dtype=key)  # features × batch
        for layer in self._layers[key]:
            h = layer(h)
        return h.T.reshape((len(x),) + self.output_shape)


def load(path=None):
    if path is None:
        import os

        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), ARTIFACT)
    return Model(path)
