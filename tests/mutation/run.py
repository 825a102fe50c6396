"""Mutation testing on demand: plant one small bug at a time in a scratch copy of the tree
and run the test suite against it. A planted bug that no test catches is a blind spot.

    python tests/mutation/run.py              # every mutant (about 10-20 minutes here)
    python tests/mutation/run.py -k csr       # the mutants whose name contains "csr"
    python tests/mutation/run.py --list

Each mutant is (name, file, the exact text to replace, the replacement). The text must occur
exactly once, so a mutant that no longer applies fails loudly instead of testing nothing.
Prints one line per mutant (CAUGHT by which test, or SURVIVED) and the score.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import signal
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

MUTANTS: list[tuple[str, str, str, str]] = [
    # ir: analysis, geometry, matrix forms, op semantics
    ("analysis: Mul by a constant assumed >= 0", "cnn2mlp/ir/analysis.py",
     'return with_weights("MulConst", "const", np.maximum(c, 0), np.minimum(c, 0))',
     'return with_weights("MulConst", "const", c, 0 * c)'),
    ("analysis: affine upper/lower corner mixed", "cnn2mlp/ir/analysis.py",
     "return (run_pos(lo) + run_neg(hi) + constant,", "return (run_pos(lo) + run_neg(lo) + constant,"),
    ("analysis: Dense Lipschitz from column sums", "cnn2mlp/ir/weights.py",
     "np.asarray(abs(w).sum(axis=1))", "np.asarray(abs(w).sum(axis=0))"),
    ("analysis: sigmoid slope 0.125", "cnn2mlp/ir/activations.py",
     '"monotone", 0.25,', '"monotone", 0.125,'),
    ("geometry: ceil_mode keeps a window starting in the trailing pad", "cnn2mlp/ir/geometry.py",
     "if (out - 1) * stride >= size_in + pad_begin:", "if (out - 1) * stride > size_in + pad_begin:"),
    ("geometry: SAME_UPPER pads at the start", "cnn2mlp/ir/geometry.py",
     "return (small, total - small) if upper else (total - small, small)",
     "return (total - small, small) if upper else (small, total - small)"),
    ("geometry: inside_padded ignores the end pad", "cnn2mlp/ir/geometry.py",
     "return (pos >= -self.pad_begin) & (pos < self.size_in + self.pad_end)",
     "return (pos >= -self.pad_begin) & (pos < self.size_in)"),
    ("linear: count_include_pad ignored", "cnn2mlp/ir/linear.py",
     'which = "inside_padded" if attrs.get("count_include_pad") else "inside"',
     'which = "inside"'),
    ("linear: pad value on the kept entries", "cnn2mlp/ir/linear.py",
     "bias = np.where(kept, 0.0, value) if value else None",
     "bias = np.where(kept, value, 0.0) if value else None"),
    ("linear: transpose by the inverse permutation", "cnn2mlp/ir/linear.py",
     ".reshape(shape).transpose(perm).ravel()", ".reshape(shape).transpose(np.argsort(perm)).ravel()"),
    ("ops: batch norm without epsilon", "cnn2mlp/ir/ops.py",
     'np.asarray(attrs["var"], np.float64) + attrs["epsilon"]', 'np.asarray(attrs["var"], np.float64)'),
    # passes
    ("conv-to-dense: groups by modulo", "cnn2mlp/ir/conv_matrix.py",
     "group_start = (np.arange(n_out) // (n_out // group)) * (c_group * n_pix)",
     "group_start = (np.arange(n_out) % group) * (c_group * n_pix)"),
    ("conv-to-dense: bias tiled instead of repeated", "cnn2mlp/ir/conv_matrix.py",
     "np.repeat(np.asarray(bias, real()), n_pos)", "np.tile(np.asarray(bias, real()), n_pos)"),
    ("maxpool-to-relu: every passed value taken as >= 0", "cnn2mlp/passes/maxpool_to_relu.py",
     "needs_neg = ~nonneg[pass_values]", "needs_neg = np.zeros(len(pass_values), bool)"),
    ("fold-batchnorm: conv bias not scaled", "cnn2mlp/passes/fold_batchnorm.py",
     'conv.attrs["bias"] = (bias * scale + shift).astype(real())',
     'conv.attrs["bias"] = (bias + shift).astype(real())'),
    ("compose: second bias dropped", "cnn2mlp/passes/_compose.py",
     "bias = np.asarray(b2, np.float64) if bias is None else bias + b2",
     "bias = np.asarray(b2, np.float64) if bias is None else bias"),
    ("fold-stride: bias not selected", "cnn2mlp/passes/fold_stride.py",
     'source.attrs["bias"] = None if b is None else b[idx]',
     'source.attrs["bias"] = None if b is None else b[:len(idx)]'),
    ("fold-pad: pads of the wrong axis", "cnn2mlp/passes/fold_pad.py",
     "old[a] + pads[1 + a] for a in range(spatial)", "old[a] + pads[a] for a in range(spatial)"),
    ("avgpool-linearize: eps ignores f'(0)", "cnn2mlp/passes/avgpool_linearize.py",
     "a = c3 / f1 * zmax ** 3", "a = c3 * zmax ** 3"),
    ("avgpool-linearize: bound ignores f'(0)", "cnn2mlp/passes/avgpool_linearize.py",
     "return c3 / f1 * eps ** 2 * zmax ** 3 + relative * zmax + absolute / (f1 * eps)",
     "return c3 * eps ** 2 * zmax ** 3 + relative * zmax + absolute / (f1 * eps)"),
    ("unify-activation: output shift of the wrong sign", "cnn2mlp/passes/unify_activation.py",
     "shift = np.maximum(0.0, -z_lo)", "shift = np.maximum(0.0, z_lo)"),
    ("unify-activation: sigmoid not halved", "cnn2mlp/passes/unify_activation.py",
     "scale_rows(dense, 0.5)", "scale_rows(dense, 1.0)"),
    ("unify-activation: relu from leaky off by 1 + alpha", "cnn2mlp/passes/unify_activation.py",
     "/ (1.0 - alpha * alpha)", "/ (1.0 - alpha)"),
    ("extract-input-affine: shift not scaled", "cnn2mlp/passes/extract_input_affine.py",
     "scale, shift = scale * s, shift * s + t", "scale, shift = scale * s, shift + t"),
    ("linearize-dag: carried signed values as one relu neuron", "cnn2mlp/passes/linearize_dag.py",
     "signed = np.flatnonzero(~self.nonneg[s])", "signed = np.flatnonzero(self.nonneg[s] & False)"),
    ("linearize-dag: leaky carry without 1/(1+a)", "cnn2mlp/passes/linearize_dag.py",
     "scale = 1.0 / (1.0 + alpha)", "scale = 1.0"),
    ("linearize-dag: concat placement off by one", "cnn2mlp/passes/_dag_plan.py",
     "index[axis] = slice(start, start + shape[axis])",
     "index[axis] = slice(start, start + shape[axis]) if start == 0 else slice(start - 1, start - 1 + shape[axis])"),
    ("extremum-to-relu: min as max", "cnn2mlp/passes/extremum_to_relu.py",
     'keep, sign = (b, 1.0) if node.op == "Maximum" else (a, -1.0)',
     "keep, sign = (b, 1.0)"),
    ("clip-to-relu: upper ReLU not subtracted", "cnn2mlp/passes/clip_to_relu.py",
     "coeffs, offset = (1.0, -1.0), low", "coeffs, offset = (1.0, 1.0), low"),
    ("prune-neurons: reads counted from the wrong axis", "cnn2mlp/passes/prune_neurons.py",
     "np.bincount(w.indices[w.data != 0],",
     "np.bincount(w.indices[w.data != 0] % max(1, w.shape[1] - 1),"),
    ("analysis: unimodal minimum ignored", "cnn2mlp/ir/analysis.py",
     "low = np.where(inside, np.minimum(f_min, both.min(axis=0)), both.min(axis=0))",
     "low = both.min(axis=0)"),
    ("runtime: numba leaky slope ignored", "cnn2mlp/runtime/activation_kernels.py",
     "return z if z >= 0 else z * a", "return z if z >= 0 else z * 0.01"),
    ("runtime: the scipy engine drops the bias", "cnn2mlp/runtime/scipy_engine.py",
     "z += plan.bias[:, None]", "z += 0"),
    ("onnx target: mixed runs read the wrong columns", "cnn2mlp/backends/onnx_mlp.py",
     "dense[start:stop, lo:hi].T", "dense[start:stop, 0:hi - lo].T"),
    ("nnet: bias lines dropped", "cnn2mlp/backends/nnet.py",
     "            write_rows(handle, np.asarray(layer.bias)[:, None])",
     "            write_rows(handle, 0 * np.asarray(layer.bias)[:, None])"),
    # backends
    ("csr: object arrays not refused", "cnn2mlp/backends/npz_reader.py",
     "        if dtype.hasobject:\n", "        if False:\n"),
    ("csr: column indices not range-checked", "cnn2mlp/backends/csr.py",
     "if len(indices) and (indices.min() < 0 or indices.max() >= n_in):",
     "if len(indices) and indices.min() < 0:"),
    ("csr: indptr monotonicity not checked", "cnn2mlp/backends/csr.py",
     "or np.any(np.diff(indptr) < 0):", ":"),
    ("csr: header size not compared with the member", "cnn2mlp/backends/npz_reader.py",
     "if handle.tell() + nbytes != info.file_size:", "if handle.tell() + nbytes > 2**62:"),
    ("keras: external storage allowed", "cnn2mlp/frontends/keras/files.py",
     "        if dataset.external:\n", "        if False:\n"),
    ("keras: soft and external links followed", "cnn2mlp/frontends/keras/files.py",
     "if not isinstance(link, h5py.HardLink):", "if isinstance(link, h5py.HardLink) and False:"),
    ("keras: weight shape not checked", "cnn2mlp/frontends/keras/files.py",
     "if shape is not None and tuple(dataset.shape) != tuple(shape):", "if False:"),
    ("cli: output may be the model", "cnn2mlp/cli.py",
     "if dest == model or (dest.exists() and model.exists() and os.path.samefile(dest, model)):",
     "if False:"),
    ("cli: outputs committed one by one", "cnn2mlp/_io.py",
     "        if exc_type is None:\n", "        if True:\n"),
    ("cli: SIGTERM not handled", "cnn2mlp/cli.py",
     "previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm)}", "previous = {}"),
    ("xml: comment text not escaped", "cnn2mlp/backends/opencv.py",
     "    while \"--\" in text:\n", "    while False:\n"),
    ("kernel-py: artifact name not quoted", "cnn2mlp/backends/csr.py",
     'f"ARTIFACT = {artifact!r}"', "f'ARTIFACT = \"{artifact}\"'"),
    ("activations: sigmoid's positive half twice as steep", "cnn2mlp/ir/activations.py",
     "out[pos] = 1.0 / (1.0 + np.exp(-h[pos]))", "out[pos] = 1.0 / (1.0 + np.exp(-2 * h[pos]))"),
    ("activations: leaky slope fixed", "cnn2mlp/ir/activations.py",
     "return np.where(h >= 0, h, h * a)", "return np.where(h >= 0, h, h * 0.01)"),
    ("opencv: inv_output_scale not the inverse", "cnn2mlp/backends/opencv.py",
     "-out_scale[1::2] / out_scale[0::2], n_out)", "-out_scale[1::2], n_out)"),
    # frontends and the checker
    ("onnx: Sub(c, x) loses the sign", "cnn2mlp/frontends/onnx/arithmetic.py",
     'x = imp.emit(node, "MulConst", [x], {"const": -np.ones_like(c)})',
     'x = imp.emit(node, "MulConst", [x], {"const": np.ones_like(c)})'),
    ("onnx: Gemm alpha ignored", "cnn2mlp/frontends/onnx/linear.py",
     'weight = attr(node, "alpha", 1.0) * b.T', "weight = b.T"),
    ("keras: Dense-on-a-map bias repeated", "cnn2mlp/frontends/keras/core.py",
     "bias = None if bias is None else np.tile(bias, rows)",
     "bias = None if bias is None else np.repeat(bias, rows)"),
    ("keras: Conv bias dropped", "cnn2mlp/frontends/keras/convolution.py",
     'bias = imp.weight(lay, 1, "bias", oihw.shape[:1]) if c.get("use_bias", True) else None',
     "bias = None"),
    ("keras: causal pad ignores dilation", "cnn2mlp/frontends/keras/spatial.py",
     "return ((kernel[0] - 1) * dilations[0], 0)", "return ((kernel[0] - 1), 0)"),
    ("keras: channels_first input transposed anyway", "cnn2mlp/frontends/keras/spatial.py",
     "    if channels_first_layer(imp, lay):\n        return imp.keras_layout(t, lay)\n",
     "    if False:\n        return imp.keras_layout(t, lay)\n"),
    ("keras: bilinear without half-pixel centres", "cnn2mlp/ir/linear.py",
     "coord = np.clip((out + 0.5) / scale - 0.5, 0.0, n_in - 1)",
     "coord = np.clip(out / scale, 0.0, n_in - 1)"),
    ("keras: Normalization mean not subtracted", "cnn2mlp/frontends/keras/preprocessing.py",
     "scale, offset = 1.0 / std, -mean / std", "scale, offset = 1.0 / std, 0 * mean"),
    ("keras: ReLU threshold's slope branch unshifted", "cnn2mlp/frontends/keras/activations.py",
     '        negative = imp.emit(lay, "AddConst", negative, {"const": np.full(shape, threshold)})',
     '        pass'),
    ("onnx: GELU pattern with any Erf scale", "cnn2mlp/frontends/onnx/patterns.py",
     "ERF_SCALE_TOLERANCE = 1e-6", "ERF_SCALE_TOLERANCE = 10.0"),
    ("onnx: threshold gate ignores the zero branch", "cnn2mlp/frontends/onnx/patterns.py",
     "and graph.scalar(node.input[2]) == 0.0:", ":"),
    ("batch-less: axes not shifted past the batch", "cnn2mlp/frontends/onnx/batch_rules.py",
     "return [int(a) + 1 if int(a) >= 0 else int(a) for a in np.ravel(axes)]",
     "return [int(a) for a in np.ravel(axes)]"),
    ("batch-less: W @ x keeps x a vector", "cnn2mlp/frontends/onnx/batch_rules.py",
     "        x = b.unsqueeze(computed, [rank + 1 + axis + 1])",
     "        x = computed"),
    ("float64: a double model rounded to float32", "cnn2mlp/frontends/onnx/importer.py",
     "            graph.dtype = np.dtype(np.float64)", "            pass"),
    ("runtime: direct groups read the first tap only", "cnn2mlp/runtime/numba_kernels.py",
     "s0, s1 = h[base + offsets[t]], h[base", "s0, s1 = h[base + offsets[0]], h[base"),
    ("microkernel: columns past the blocks skip the last tap", "cnn2mlp/runtime/microkernel.py",
     "for t in range(taps):\n                            s +=",
     "for t in range(taps - 1):\n                            s +="),
    ("microkernel: a block of 16 stores its last kernel's sums in the row before",
     "cnn2mlp/runtime/microkernel.py",
     "row = rows[k0 + np.uint64(15), b]", "row = rows[k0 + np.uint64(14), b]"),
    ("runtime: blocked kernel's weights packed kernel by kernel", "cnn2mlp/runtime/numba_engine.py",
     "group.kernels[k0:k0 + size].T.astype(dtype).ravel()",
     "group.kernels[k0:k0 + size].astype(dtype).ravel()"),
    ("runtime: blocks of kernels overlap", "cnn2mlp/runtime/blocking.py",
     "            start += size\n", "            start += size - (size > 1)\n"),
    ("plan: ReLU rows stored as the identity", "cnn2mlp/ir/activations.py",
     "clamp=lambda a: (0.0, 0.0, math.inf)),", "clamp=lambda a: (-math.inf, 1.0, math.inf)),"),
    ("plan: rows one part writes lose their bias", "cnn2mlp/runtime/plan.py",
     "store_bias = np.where(stored, bias, 0)", "store_bias = np.where(stored, 0 * bias, 0)"),
    ("runtime: a forked child runs the threaded kernels", "cnn2mlp/runtime/numba_engine.py",
     "                not variants.forked_after_threads", "                True"),
    ("runtime: threaded and serial kernels share their cache entries",
     "cnn2mlp/runtime/variants.py", "copy.__qualname__ = func.__qualname__ + suffix",
     "copy.__qualname__ = func.__qualname__"),
    ("runtime: CSR layer drops the third of four non-zeros", "cnn2mlp/runtime/numba_kernels.py",
     "(w2 * s2[j] + w3 * s3[j])\n                k += four", "(w3 * s3[j])\n                k += four"),
    ("runtime: equal columns confirmed by their rows alone", "cnn2mlp/runtime/columns.py",
     " & (col_data[here] == col_data[there])", ""),
    ("runtime: equal columns never looked for", "cnn2mlp/runtime/columns.py",
     "    return len(np.unique(summary, axis=0)) < n_in", "    return False"),
    ("runtime: summing layer counts a member twice", "cnn2mlp/runtime/columns.py",
     "np.ones(len(class_of), w.dtype)", "np.full(len(class_of), 2, w.dtype)"),
    ("kernel-py: merged layer keeps the repeated columns", "cnn2mlp/backends/standalone.py",
     "    keep = renumber[indices] >= 0\n", "    keep = renumber[indices] >= -1\n"),
    ("runtime: CSR rows lose their bias", "cnn2mlp/runtime/numba_kernels.py",
     "            v = acc[j] + add\n", "            v = acc[j]\n"),
    ("cli: commit after a swallowed SIGTERM", "cnn2mlp/_io.py",
     "        raise_if_terminated()\n        mode", "        mode"),
    ("check: comparison 100x looser", "cnn2mlp/comparison.py",
     "diff / np.maximum(1.0, np.abs(reference))", "diff / np.maximum(100.0, np.abs(reference))"),
    # round 3: behaviours nothing pinned before (tests/test_pinned.py, test_verifiers.py)
    ("nnet: input minimums and maximums swapped", "cnn2mlp/backends/nnet.py",
     "for values in ([input_range[0]] * n_in, [input_range[1]] * n_in,",
     "for values in ([input_range[1]] * n_in, [input_range[0]] * n_in,"),
    ("analysis: a negative coefficient bounds a join by the same end", "cnn2mlp/ir/analysis.py",
     "low = low + (c * lo if c >= 0 else c * hi)", "low = low + c * lo"),
    ("patterns: a gate from another value taken as ThresholdedRelu",
     "cnn2mlp/frontends/onnx/patterns.py",
     "if compared and compared[0] == value:", "if compared:"),
    ("patterns: x < θ read as x > θ", "cnn2mlp/frontends/onnx/patterns.py",
     'x, c = node.input if node.op_type == "Greater" else node.input[::-1]',
     "x, c = node.input"),
    ("patterns: c / x read as a scaling of x", "cnn2mlp/frontends/onnx/patterns.py",
     'elif ca is not None and node.op_type == "Mul":', "elif ca is not None:"),
    ("extremum-to-relu: the odd last input dropped", "cnn2mlp/passes/extremum_to_relu.py",
     "values = paired + values[len(values) - len(values) % 2:]", "values = paired"),
    ("extremum-to-relu: a minimum keeps the second operand",
     "cnn2mlp/passes/extremum_to_relu.py",
     'keep = b if node.op == "Maximum" else a', "keep = b"),
    ("prune-neurons: runs of a mixed layer shifted", "cnn2mlp/passes/prune_neurons.py",
     "lo, hi = np.searchsorted(keep, [start, stop])",
     'lo, hi = np.searchsorted(keep, [start, stop], side="right")'),
    ("linearize-dag: runs merged by op alone", "cnn2mlp/passes/linearize_dag.py",
     "if runs and runs[-1][2:] == (b.op, b.alpha):", "if runs and runs[-1][2] == b.op:"),
    ("linearize-dag: the negative half of a partly signed value unflipped",
     "cnn2mlp/passes/linearize_dag.py",
     "blocks.append(Block(sp.csr_array(-rows[signed]), zero[signed]",
     "blocks.append(Block(sp.csr_array(rows[signed]), zero[signed]"),
    ("linearize-dag: composed matrices rounded to float32", "cnn2mlp/ir/weights.py",
     "    return out.astype(dtype)", "    return out.astype(np.float32)"),
    ("onnx target: ThresholdedRelu without its alpha", "cnn2mlp/backends/onnx_mlp.py",
     'attrs = {"alpha": alpha} if entry.alpha is not None else {}',
     'attrs = {"alpha": alpha} if op in ("LeakyRelu", "Elu") else {}'),
    ("keras: Normalization(invert) divides by the deviation",
     "cnn2mlp/frontends/keras/preprocessing.py",
     "scale, offset = std, mean", "scale, offset = 1.0 / std, mean"),
    ("keras: Flatten(channels_first) keeps the channels first",
     "cnn2mlp/frontends/keras/layout.py",
     'if lay.config.get("data_format") == "channels_first" and rank > 1:',
     "if False:"),
    ("onnx: measured chunks all start at the first basis vector",
     "cnn2mlp/frontends/onnx/measure.py",
     "basis[np.arange(count), start + np.arange(count)] = 1.0",
     "basis[np.arange(count), np.arange(count)] = 1.0"),
    ("batch-less: a Transpose without perm keeps the axes", "cnn2mlp/frontends/onnx/batch_rules.py",
     'perm = attribute(node, "perm", list(reversed(range(rank))))',
     'perm = attribute(node, "perm", list(range(rank)))'),
    ("onnx: opset-18 Pad axes take begins and ends swapped", "cnn2mlp/frontends/onnx/layout.py",
     "full[a], full[rank + a] = pads[i], pads[len(axes) + i]",
     "full[a], full[rank + a] = pads[len(axes) + i], pads[i]"),
    ("check: float64 judged at float32's tolerance", "cnn2mlp/check.py",
     '"float64": 1e-9}', '"float64": 1e-4}'),
    ("runtime: rows several parts write are not zeroed first", "cnn2mlp/runtime/numba_engine.py",
     '        if len(layer.shared):\n', '        if False:\n'),
    ("plan: rows several parts write lose their bias", "cnn2mlp/runtime/plan.py",
     "finish_bias = np.where(stored, 0, bias)", "finish_bias = np.where(stored, 0, 0 * bias)"),
    ("runtime: blocks of a shifted group read the first shift", "cnn2mlp/runtime/numba_engine.py",
     "blocks.append((k0, size, start, int(shifts[k0])))",
     "blocks.append((k0, size, start, int(shifts[0])))"),
    ("runtime: direct groups read without their shift", "cnn2mlp/runtime/numba_kernels.py",
     "            base = bases[b] + shift\n", "            base = bases[b]\n"),
    ("structure: copy runs read the next column", "cnn2mlp/runtime/structure.py",
     "copies = (r[starts[keep]].astype(np.int64), c[starts[keep]].astype(np.int64),",
     "copies = (r[starts[keep]].astype(np.int64), c[starts[keep]].astype(np.int64) + 1,"),
    ("structure: merged groups all take the first group's shift", "cnn2mlp/runtime/structure.py",
     "np.repeat(np.array([g.bases[0] for g in members], np.int64),",
     "np.repeat(np.array([members[0].bases[0] for g in members], np.int64),"),
    ("structure: a row two parts write counted once", "cnn2mlp/runtime/structure.py",
     "            touched[g.rows.ravel()] += 1\n", "            touched[g.rows.ravel()] = 1\n"),
    ("scipy engine: parts assign instead of adding", "cnn2mlp/runtime/scipy_engine.py",
     "run_group(group, h, z, add=True)", "run_group(group, h, z, add=False)"),
    # hardening, round 2 (tests/test_hardening.py)
    ("npz: unsigned indices checked as unsigned", "cnn2mlp/backends/npz_reader.py",
     "        return values.astype(np.int64)", "        return values"),
    ("load: zero threads accepted", "cnn2mlp/runtime/engine.py",
     "or not isinstance(threads, (int, np.integer)) or threads < 1:",
     "or not isinstance(threads, (int, np.integer)) or threads < 0:"),
    ("kernel cache: a folder others can write is used", "cnn2mlp/runtime/kernel_cache.py",
     "    if info.st_mode & 0o022:\n        return f\"others can write it",
     "    if False:\n        return f\"others can write it"),
    ("onnx: a selection's output not sized before it is probed",
     "cnn2mlp/frontends/onnx/layout.py",
     '    imp.check_values(node, n_out, "its output")\n    (out,)',
     "    (out,)"),
    ("onnx: broadcasting not sized before the indices are made",
     "cnn2mlp/frontends/onnx/arithmetic.py",
     '    imp.check_values(node, math.prod(out), f"broadcasting to {tuple(out)}")\n', ""),
    ("onnx: measured in one chunk of every basis vector", "cnn2mlp/frontends/onnx/measure.py",
     "chunk = max(1, MAX_PROBE_ENTRIES // max(n_in, n_out, 1))", "chunk = n_in"),
    ("onnx: ConstantOfShape([N, ...]) made a million rows",
     "cnn2mlp/frontends/onnx/folding.py",
     "        shape[0] = 1\n        return {name: shape}", "        return {}"),
    ("preflight: carried neurons not counted", "cnn2mlp/ir/cost.py",
     "    return sum(graph.values[v].size * max(0, need.get(v, 0) - depth[v] - 1) for v in sources)",
     "    return 0"),
    ("linearize-dag: layers built past --max-bytes", "cnn2mlp/passes/linearize_dag.py",
     "if limit is not None and self.bytes > limit:", "if False:"),
    ("check: every input in one batch", "cnn2mlp/check.py",
     "batch = batch_size_for(per_sample, n)", "batch = n"),
    ("batch-less: the whole model measured, a Loop included",
     "cnn2mlp/frontends/onnx/batch_axis.py",
     "self.model = model = needed_part(model, output)", "self.model = model"),
    ("nnet: line breaks in a header line kept", "cnn2mlp/backends/nnet.py",
     "    if len(parts) == 1:\n        return text", "    if True:\n        return text"),
    ("geometry: a kernel of size 0 accepted", "cnn2mlp/ir/geometry.py",
     "if len(values) != nd or any(int(v) < 1 for v in values):",
     "if len(values) != nd:"),
    ("onnx target: the 2 GiB limit not checked", "cnn2mlp/backends/registry.py",
     "if limit is not None and need > limit:", "if False:"),
    # the size model, the yardstick and the pools (#19)
    ("size model: linear values always composed into their readers",
     "cnn2mlp/passes/_dag_plan.py",
     'KEEPING = {"cost": worth_keeping,', 'KEEPING = {"cost": None,'),
    ("size model: a kept value's readers cost nothing", "cnn2mlp/passes/_dag_plan.py",
     '(own(affine.terms) + read(None) + carried(affine.terms), "whole")',
     '(own(affine.terms) + carried(affine.terms), "whole")'),
    ("yardstick: a convolution's multiply-adds counted per output", "cnn2mlp/ir/cost.py",
     "total += graph.values[node.output].size * int(np.prod(kernel.shape[1:]))",
     "total += graph.values[node.output].size"),
    ("csr pipeline: ReLU6 as a pair of ReLUs", "cnn2mlp/backends/csr.py",
     'replace = {"clip-to-relu": "clip-to-bounded-relu"}', "replace = {}"),
    ("maxpool: the separable plan never tried", "cnn2mlp/passes/maxpool_to_relu.py",
     "        plans.append(plan_separable(in_shape, attrs, nonneg, axes))", "        pass"),
    ("maxpool: a separable plan a layer deeper accepted", "cnn2mlp/passes/maxpool_to_relu.py",
     "if len(axes) > 1 and sum(levels", "if len(axes) > 1 or sum(levels"),
    ("maxpool: the second axis' values assumed non-negative",
     "cnn2mlp/passes/maxpool_to_relu.py",
     "nonneg = ((members >= 0) & nonneg[np.maximum(members, 0)]).any(axis=1)",
     "nonneg = np.ones(len(members), bool)"),
    # the C target (tests/test_c_target.py)
    ("c: a group's sums assigned instead of added", "cnn2mlp/runtime/c_layers.py",
     'f"z[{rows.at(\'o\', l, \'j\')}] += a{l};"', 'f"z[{rows.at(\'o\', l, \'j\')}] = a{l};"'),
    ("c: strided positions read as consecutive", "cnn2mlp/runtime/c_layers.py",
     "acc[l] += wt * xt[(long)l * step];", "acc[l] += wt * xt[l];"),
    ("c: an activation's alpha dropped", "cnn2mlp/runtime/c_layers.py",
     "const {real} a = {c_number(alpha, real)};", "const {real} a = {c_number(0.0, real)};"),
    ("c: the weights file's SHA-256 not compared", "cnn2mlp/runtime/c_weights.py",
     "if (memcmp(got, expected, 32) != 0)", "if (memcmp(got, expected, 32) != 0 && 0)"),
    ("c: copies read one column late", "cnn2mlp/runtime/c_layers.py",
     "const {self.real} *restrict hi = h + {c}[i];", "const {self.real} *restrict hi = h + {c}[i] + 1;"),
    ("c: the vector sums assigned instead of added", "cnn2mlp/runtime/c_layers.py",
     'f"z[{rows.at(\'o\', l, f\'j + {q}\')}] += "', 'f"z[{rows.at(\'o\', l, f\'j + {q}\')}] = "'),
    ("c: every position of a run read at the first one's inputs", "cnn2mlp/runtime/c_layers.py",
     '"s{q}_{v} += wt * x{q}[at];"', '"s{q}_{v} += wt * x0[at];"'),
    ("c: a bounded ReLU's upper bound dropped", "cnn2mlp/runtime/c_layers.py",
     'store = "v" if hi == float("inf") else', 'store = "v" if True else'),
    ("c: the batched vector sums assigned instead of added", "cnn2mlp/runtime/c_batched.py",
     'f"memcpy(&u, {target}, sizeof u); u += {value}; "', 'f"memcpy(&u, {target}, sizeof u); u = {value}; "'),
    ("c: wide vectors read the weights at narrow steps", "cnn2mlp/runtime/c_layers.py",
     "memcpy(&wt, {weights('t')} + {v * per}, sizeof wt)",
     "memcpy(&wt, {weights('t')} + {v * 4}, sizeof wt)"),
    ("c: a dense row's second vector of partial sums dropped", "cnn2mlp/runtime/c_layers.py",
     '"            s0 += s1;",', '"            s0 += 0 * s1;",'),
    ("c: the batched code's sums assigned instead of added",
     "cnn2mlp/runtime/c_batched.py", 'return f"{target} += {value};"', 'return f"{target} = {value};"'),
    ("c: the padded samples of a short batch read past the input",
     "cnn2mlp/runtime/c_source.py", "b[i * {samples} + l] = l < n ? in[", "b[i * {samples} + l] = l < 8 ? in["),
    ("c: the batched activations stop at the first sample's neurons",
     "cnn2mlp/runtime/c_batched.py", "start * SAMPLES, stop * SAMPLES, name", "start * SAMPLES, stop, name"),
    ("c: a stored row's bias dropped", "cnn2mlp/runtime/c_batched.py",
     'return f"{target} = clamp_value({value} + {bias}, {self.stored});"',
     'return f"{target} = clamp_value({value}, {self.stored});"'),
    # the C code's rows and biases without an entry per neuron (tests/test_c_indices.py)
    ("c: a group's bias taken per kernel wherever it varies", "cnn2mlp/runtime/c_indices.py",
     "if values.size and same_along_rows(values):", "if values.size:"),
    ("c: a bias run ends a row early", "cnn2mlp/runtime/c_indices.py",
     "ends = np.r_[starts[1:], n]", "ends = np.r_[starts[1:] - 1, n]"),
    ("c: a group's rows factored where they do not", "cnn2mlp/runtime/c_indices.py",
     "if np.array_equal(rows, by_kernel[:, None] + by_position[None, :]):", "if True:"),
    ("c: a copy run's stored bias dropped", "cnn2mlp/runtime/c_batched.py",
     'self.store("zo[j]", "wi * hi[j]", "0" if bias is None else f"{bias}[i]")',
     'self.store("zo[j]", "wi * hi[j]", "0")'),
    ("c: the stored clamp's upper bound dropped", "cnn2mlp/runtime/c_source.py",
     "    return v > hi ? hi : v;", "    return v > hi ? v : v;"),
    ("c: the vector clamp lets values below lo through", "cnn2mlp/runtime/c_source.py",
     "u = (vector_sum)((m & (vector_mask)u) | (~m & (vector_mask)low));",
     "u = (vector_sum)((m & (vector_mask)u) | (~m & (vector_mask)u)); (void)low;"),
    ("c: a dense block of rows adds to the wrong sample", "cnn2mlp/runtime/c_batched.py",
     "{r} *restrict zq = z + (i + {q}) * {SAMPLES} + v + {p} * VECTOR_LANES;",
     "{r} *restrict zq = z + (i + {q}) * {SAMPLES} + {p} * VECTOR_LANES;"),
    ("c: a block of kernels reads the first kernel's weights", "cnn2mlp/runtime/c_batched.py",
     'weight = f"{w}[(q + {{k}}) * {taps} + t]"', 'weight = f"{w}[t]"'),
    ("c: the last kernels a block leaves over skipped", "cnn2mlp/runtime/c_batched.py",
     "            if n_k % block:\n", "            if False:\n"),
    ("c: a sample's vector sums all read its first vector", "cnn2mlp/runtime/c_batched.py",
     '"memcpy(&y{v}, x + {v * per}, sizeof y{v}); a{v} += y{v} * v;"',
     '"memcpy(&y{v}, x, sizeof y{v}); a{v} += y{v} * v;"'),
    ("c: the dense rows taken eight at a time end at a multiple of four",
     "cnn2mlp/runtime/c_batched.py", "together = n_out - n_out % (2 * DENSE_ROWS)",
     "together = n_out - n_out % DENSE_ROWS"),
    ("c: a border group's taps read the stored group's first taps",
     "cnn2mlp/runtime/c_layers.py", 'tap = "t" if index is None else f"(long){index}[t]"',
     'tap = "t"'),
    ("c: a position's partial sums over taps not all added", "cnn2mlp/runtime/c_layers.py",
     '" + ".join(f"p{c}_{v}" for c in chains)', '" + ".join(f"p{c}_{v}" for c in chains[:1])'),
    ("c: one sample's border groups read the stored group's first taps",
     "cnn2mlp/runtime/c_layers.py", "return f\"w + {tap if index is None else f'(long){index}[{tap}]'} * {LANES}\"",
     "return f\"w + {tap} * {LANES}\""),
    ("c: a tap whose weights the stored group lacks reads its first", "cnn2mlp/runtime/c_layers.py",
     "taps = [columns.get(np.ascontiguousarray(kernels[:blocked, t]).tobytes())",
     "taps = [columns.get(np.ascontiguousarray(kernels[:blocked, t]).tobytes(), 0)"),
    # the c engine (tests/test_c_engine.py)
    ("c engine: the last thread's samples never run", "cnn2mlp/runtime/c_engine.py",
     "return list(zip(bounds[:-1], bounds[1:]))", "return list(zip(bounds[:-2], bounds[1:-1]))"),
    # the input domain (tests/test_input_domain.py)
    ("domain: the inferred range not given to the passes", "cnn2mlp/compile.py",
     "    ctx.input_range = domain.range\n", ""),
    ("domain: --check samples the default box", "cnn2mlp/cli.py",
     "result.input_domain.range, args.tolerance", "(0.0, 1.0), args.tolerance"),
    ("domain: a scaling to [-1, 1] read as one to [0, 1]", "cnn2mlp/ir/domain.py",
     "elif np.allclose(offset, -1.0, rtol=0, atol=1e-6):", "elif False:"),
    ("domain: the preimage's ends not ordered", "cnn2mlp/ir/domain.py",
     "(ends.min(), ends.max())", "(ends[0].min(), ends[1].max())"),
    ("check: an overflowing output's error widens every output's slack",
     "cnn2mlp/comparison.py", "finite = reference_rel[np.isfinite(reference_rel)]",
     "finite = reference_rel"),
    ("check: NaN in the reference agrees", "cnn2mlp/comparison.py",
     "comparison.reference_nans = int(np.isnan(reference).sum())",
     "comparison.reference_nans = 0"),
    ("check: the float64 evaluation fed the whole batch", "cnn2mlp/references.py",
     "in_fixed_batches(run, fixed_batch(double))", "run"),
    ("domain: a channel scaled by zero kept", "cnn2mlp/ir/domain.py",
     "np.isfinite(scale) & (scale != 0) & np.isfinite(offset)",
     "np.isfinite(scale) & np.isfinite(offset)"),
    ("c engine: a cached library's digest not compared", "cnn2mlp/runtime/c_engine.py",
     "return file_digest(library) == recorded", "return True"),
    ("c: a NaN in the self-test's outputs passes", "cnn2mlp/runtime/c_self_test.py",
     "if (!(d - d == 0)) return (float)INFINITY;", "if (d > 1e30f) return (float)INFINITY;"),
    ("c: predict kept under CNN2MLP_NO_MALLOC", "cnn2mlp/runtime/c_source.py",
     "#ifndef CNN2MLP_NO_MALLOC\nint {prefix}_predict(const", "#if 1\nint {prefix}_predict(const"),
    ("structured: grouped kernels not shifted to their channels", "cnn2mlp/ir/structured.py",
     "shifts = (np.arange(n_out, dtype=INDEX) // per_group) * (c_group * n_pix)",
     "shifts = (np.arange(n_out, dtype=INDEX) // per_group) * 0"),
    ("structured: any row scaling taken as per kernel", "cnn2mlp/ir/structured_rules.py",
     "if not np.all(per_pair == per_pair[:, :1]):", "if False:"),
    ("structured: any row selection taken as a grid", "cnn2mlp/ir/structured_rules.py",
     "if np.array_equal(kept, np.outer(kernels, bases)):", "if True:"),
    ("structured: relabelled rows taken as kernel + position", "cnn2mlp/ir/structured_rules.py",
     "    if np.array_equal(rows, kernel_rows[:, None] + base_rows[None, :]):\n",
     "    if True:\n"),
    ("structured: remapped columns taken as affine", "cnn2mlp/ir/structured_rules.py",
     "if not np.array_equal(columns, shift + bases[:, None] + offsets[None, :]):",
     "if False:"),
    ("structured: a left factor reading a row twice relabels", "cnn2mlp/ir/weights.py",
     "if len(np.unique(cols)) == len(cols):       # each row of b lands on one row",
     "if True:"),
    ("structured: a copy run continues past a change of step",
     "cnn2mlp/ir/structured_parts.py",
     "breaks = np.flatnonzero(~linked | changed) + 1", "breaks = np.flatnonzero(~linked) + 1"),
    ("structured: a product that materializes a conv is cheap", "cnn2mlp/passes/_compose.py",
     "        return not weights.is_light(a)\n", "        return False\n"),
    ("format 4: a group's columns checked from below only", "cnn2mlp/backends/npz_parts.py",
     "if low < 0 or high >= n:", "if low < 0:"),
    ("structured: a fully kept copy run moved whole whatever the order",
     "cnn2mlp/ir/structured_rules.py",
     "        if np.all(new >= 0) and np.array_equal(new - firsts, rows - np.repeat(part.rows,\n"
     "                                                                              part.lengths)):",
     "        if np.all(new >= 0):"),
    ("runtime: copy runs of a structured layer not counted as writers", "cnn2mlp/runtime/plan.py",
     "        for start, length in zip(part.copies[0], part.copies[2]):\n"
     "            touched[start:start + length] += 1\n", ""),
]


def apply(tree: Path, file: str, old: str, new: str) -> None:
    path = tree / file
    text = path.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"mutant no longer applies: {old!r} occurs {text.count(old)} times "
                         f"in {file}; update tests/mutation/run.py")
    path.write_text(text.replace(old, new))


#: fast, core tests first: with -x, a caught mutant stops within seconds
ORDER = ["test_structured.py", "test_structured_npz.py", "test_pinned.py", "test_c_target.py", "test_c_engine.py", "test_input_domain.py", "test_row_forms.py", "test_hardening.py", "test_passes.py", "test_analysis.py", "test_dag.py", "test_pooling.py",
         "test_architectures.py",
         "test_activations.py", "test_linear_ops.py", "test_batch_axis.py", "test_precision.py",
         "test_conformance.py", "test_check.py",
         "test_csr_backend.py", "test_hostile_files.py", "test_runtime.py",
         "test_end_to_end.py", "test_realistic.py", "test_cli.py", "test_opencv.py",
         "test_verifiers.py", "test_keras.py", "test_bad_input.py",
         "test_structured_resolution.py"]


def test_files(tree: Path) -> list[str]:
    present = sorted(p.name for p in (tree / "tests").glob("test_*.py"))
    first = [name for name in ORDER if name in present]
    return [f"tests/{name}" for name in first + [n for n in present if n not in first]]


def run_suite(tree: Path, timeout: float) -> tuple[bool, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                               *test_files(tree)], cwd=tree, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return True, "timeout (counted as caught)"
    failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return proc.returncode != 0, (failed[0] if failed else proc.stdout.strip()[-200:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="run only mutants whose name contains this")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--skip", type=int, default=0, help="skip the first N mutants")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.k in m[0]][args.skip:]
    if args.list:
        print("\n".join(m[0] for m in chosen))
        return 0
    # SIGTERM unwinds like Ctrl-C, so the scratch copy is removed either way
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with tempfile.TemporaryDirectory(prefix="cnn2mlp-mutants-") as scratch:
        clean = Path(scratch, "clean")
        shutil.copytree(ROOT, clean, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", ".hypothesis", ".pytest_cache", "*.egg-info"))
        print(f"running the unmutated suite first, in {clean} (about ten minutes; every "
              "mutant is then judged against it)", flush=True)
        ok, why = run_suite(clean, args.timeout)
        if ok:
            print(f"the unmutated suite fails: {why}")
            return 2
        survivors = []
        for name, file, old, new in chosen:
            tree = Path(scratch, "mutant")
            shutil.rmtree(tree, ignore_errors=True)
            shutil.copytree(clean, tree)
            apply(tree, file, old, new)
            start = time.perf_counter()
            caught, why = run_suite(tree, args.timeout)
            status = "CAUGHT  " if caught else "SURVIVED"
            print(f"{status} {name} ({time.perf_counter() - start:.0f} s): {why}", flush=True)
            if not caught:
                survivors.append(name)
    print(f"score: {len(chosen) - len(survivors)}/{len(chosen)} planted bugs caught")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
