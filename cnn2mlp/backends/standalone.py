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
FORMAT_VERSIONS = (1, 2, 3, 4, 5)
ARTIFACT = "model.npz"  # beside this module unless absolute
INPUT_SHAPE: tuple = ()

# -- embedded: write_kernel puts the source of what these lines import in their place, so
# that the written module needs numpy alone (the same code as cnn2mlp's runtime)
from cnn2mlp.ir.activations import NUMPY_BY_NAME as ACTIVATIONS, relu_np  # noqa: E402
from cnn2mlp.runtime.columns import merged_columns  # noqa: E402
from cnn2mlp.runtime.structure import find_parts, run_copies, run_group  # noqa: E402
from cnn2mlp.ir.index_runs import expand  # noqa: E402
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


def _bias(z, key):
    """A layer's bias: stored whole, or as runs of equal values (format version 4)."""
    if f"{key}.bias_values" in z.files:
        return np.repeat(z[f"{key}.bias_values"], z[f"{key}.bias_lengths"])
    return z[f"{key}.bias"]


def _ints(z, name):
    """An integer member, stored whole or as arithmetic runs (format version 5)."""
    if name + ".runs" in z.files:
        return expand(z[name + ".runs"])
    return z[name]


def _csr_arrays(z, key):
    """(data, indices, indptr) of a layer: as stored, or made from the parts of a
    structured layer (format version 4: see cnn2mlp/backends/npz_parts.py), summing the
    entries several parts give one (row, column)."""
    if f"{key}.parts" not in z.files:
        return z[f"{key}.data"], z[f"{key}.indices"], z[f"{key}.indptr"]
    n_out, n_in = (int(d) for d in z[f"{key}.shape"])
    rows, cols, values = [], [], []
    for j, kind in enumerate(z[f"{key}.parts"]):
        p = f"{key}.part{j}."
        if kind == "group":
            kernels = z[f"{key}.kernels{int(z[p + 'kernel_set'])}"][:, _ints(z, p + "taps")]
            shifts, bases, offsets = (_ints(z, p + k).astype(np.int64) for k in
                                      ("shifts", "bases", "offsets"))
            row = _ints(z, p + "kernel_rows")[:, None] + _ints(z, p + "base_rows")[None, :]
            n_k, n_b, taps = len(kernels), len(bases), len(offsets)
            rows.append(np.broadcast_to(row[:, :, None], (n_k, n_b, taps)).ravel())
            cols.append((shifts[:, None, None] + bases[None, :, None]
                         + offsets[None, None, :]).ravel())
            values.append(np.broadcast_to(kernels[:, None, :], (n_k, n_b, taps)).ravel())
        elif kind == "copies":
            lengths = _ints(z, p + "lengths").astype(np.int64)
            step = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            rows.append(np.repeat(_ints(z, p + "rows"), lengths) + step)
            steps = _ints(z, p + "steps") if p + "steps" in z.files or p + "steps.runs" in \
                z.files else np.ones(len(lengths), np.int64)
            cols.append(np.repeat(_ints(z, p + "columns"), lengths)
                        + np.repeat(steps, lengths) * step)
            values.append(np.repeat(z[p + "weights"], lengths))
        else:
            indptr = _ints(z, p + "indptr")
            rows.append(np.repeat(_ints(z, p + "rows"), np.diff(indptr)))
            cols.append(_ints(z, p + "indices"))
            values.append(z[p + "data"])
    dtype = _bias(z, key).dtype
    flat = np.concatenate([np.zeros(0, np.int64)] + [np.asarray(r, np.int64) * n_in + c
                                                     for r, c in zip(rows, cols)])
    keys, where = np.unique(flat, return_inverse=True)
    data = np.bincount(where.ravel(), np.concatenate([np.zeros(0)] + values).astype(np.float64),
                       minlength=len(keys)).astype(dtype)
    counts = np.bincount(keys // n_in, minlength=n_out)
    return data, keys % n_in, np.concatenate([[0], np.cumsum(counts)])


class Model:
    def __init__(self, path):
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != "cnn2mlp-csr" or int(z["format_version"]) not in FORMAT_VERSIONS:
                raise ValueError(f"{path}: not a cnn2mlp CSR file of versions {FORMAT_VERSIONS}")
            self.input_shape = tuple(int(d) for d in z["input_shape"])
            self.output_shape = tuple(int(d) for d in z["output_shape"])
            self.arrays = [(*_csr_arrays(z, f"layer{i}"),
                            int(z[f"layer{i}.shape"][0]), int(z[f"layer{i}.shape"][1]),
                            _bias(z, f"layer{i}"), _segments(z, i, str(act), float(alpha)),
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
