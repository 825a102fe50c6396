"""What a compile reports: the layer table, the JSON report, the verifier's contract."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .ir.mlp import Mlp
from .ir.weights import csr_bytes, stored_bytes
from .result import CompileResult


def layer_rows(mlp: Mlp) -> list[dict[str, Any]]:
    rows = []
    for i, layer in enumerate(mlp.layers):
        w = layer.weight
        rows.append({"layer": i, "inputs": layer.n_in, "neurons": layer.n_out,
                     "carried": layer.carried, "nnz": int(w.nnz),
                     "density": w.nnz / max(1, layer.n_in * layer.n_out),
                     "bytes": int(csr_bytes(w) + layer.bias.nbytes),
                     "stored_bytes": int(stored_bytes(w) + layer.bias.nbytes),
                     "activation": describe_activation(layer)})
    return rows


def describe_activation(layer) -> str:
    if layer.segments is None:
        return layer.activation
    return "mixed"


def activation_detail(layer) -> str:
    """``mixed (relu 144, identity 64)`` for a layer with per-neuron activations."""
    if layer.segments is None:
        return layer.activation
    counts: dict[str, int] = {}
    for start, stop, name, _ in layer.segments:
        counts[name] = counts.get(name, 0) + stop - start
    return "mixed (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")"


def format_table(result: CompileResult) -> str:
    rows = layer_rows(result.mlp)
    lines = [f"{'layer':>5} {'inputs':>9} {'neurons':>9} {'carried':>8} {'non-zeros':>12} "
             f"{'density':>9} {'CSR bytes':>12} {'stored':>12}  activation"]
    for r, layer in zip(rows, result.mlp.layers):
        lines.append(f"{r['layer']:>5} {r['inputs']:>9} {r['neurons']:>9} {r['carried']:>8} "
                     f"{r['nnz']:>12} {r['density']:>9.2%} {r['bytes']:>12} "
                     f"{r['stored_bytes']:>12}  {activation_detail(layer)}")
    lines.append(f"{'total':>5} {'':>9} {sum(r['neurons'] for r in rows):>9} "
                 f"{sum(r['carried'] for r in rows):>8} {sum(r['nnz'] for r in rows):>12} "
                 f"{'':>9} {sum(r['bytes'] for r in rows):>12} "
                 f"{sum(r['stored_bytes'] for r in rows):>12}")
    if result.multiply_adds:
        lines.append(f"the CNN does {result.multiply_adds:,} multiply-adds a sample; the MLP "
                     f"has {result.nnz:,} non-zeros ({result.nnz / result.multiply_adds:.2f}x)")
    lines.append("passes: " + ", ".join(f"{p.name} {p.seconds * 1e3:.1f} ms ({p.rewrites})"
                                        for p in result.pipeline.records))
    if result.input_domain.inferred:
        lines.append(f"INPUT DOMAIN: {result.input_domain.describe()}: --check samples it and "
                     "bounds assume it")
    if result.mlp.dtype != np.float32:
        lines.append(f"precision: {result.mlp.dtype.name} (the model's own; weights, the "
                     "artifact and predict keep it)")
    pruned = result.stats.get("prune-neurons")
    if pruned:
        lines.append(f"prune-neurons removed {pruned['neurons']} neurons nothing read")
    pools = result.stats.get("maxpool-to-relu")
    if pools:
        lines.append(f"maxpool-to-relu added {pools['neurons']} neurons in "
                     f"{pools['relu_layers']} ReLU layers")
    for entry in result.graph.meta.approximations:
        lines.append(f"APPROXIMATE: {entry['node']} linearized under {entry['activation']} "
                     f"(eps {entry['epsilon']:.3g}): error bound {entry['bound_at_output']:.3g} "
                     "at the output")
    return "\n".join(lines)



def report_dict(result: CompileResult, model: str | Path, output: str | Path) -> dict[str, Any]:
    return {
        "cnn2mlp": __version__, "model": str(model), "output": str(output),
        "target": result.target, "input_shape": list(result.mlp.input_shape),
        "output_shape": list(result.mlp.output_shape), "exact": result.exact,
        "dtype": result.mlp.dtype.name,
        "notes": result.mlp.notes, "layers": layer_rows(result.mlp),
        "totals": {"neurons": sum(l.n_out for l in result.mlp.layers), "nnz": result.nnz,
                   "cnn_multiply_adds": result.multiply_adds,
                   "nnz_per_multiply_add": (result.nnz / result.multiply_adds
                                            if result.multiply_adds else None)},
        "passes": [{"name": p.name, "seconds": p.seconds, "rewrites": p.rewrites}
                   for p in result.pipeline.records],
        "seconds": result.seconds,
        "check": result.check.as_dict() if result.check else None,
        "stats": result.stats,
        "approximations": result.graph.meta.approximations,
        "contract": contract(result),
        "input_domain": {"low": result.input_domain.low, "high": result.input_domain.high,
                         "source": result.input_domain.source},
    }


def contract(result: CompileResult) -> dict[str, Any]:
    """What a verifier user needs: how inputs and outputs are indexed, and whether a
    property of the source model carries over."""
    n_in = int(np.prod(result.mlp.input_shape))
    n_out = int(np.prod(result.mlp.output_shape))
    return {
        "input": f"X_0..X_{n_in - 1}: the model's input without the batch axis, shape "
                 f"{list(result.mlp.input_shape)}, flattened row-major in its own layout",
        "output": f"Y_0..Y_{n_out - 1}: the model's output (logits if a final Softmax was "
                  f"dropped), shape {list(result.mlp.output_shape)}, flattened row-major",
        "vnnlib": "a VNN-LIB property written for the source model applies to the MLP "
                  "unchanged" if result.exact else "the MLP is approximate: see approximations",
        "exact": result.exact,
    }
