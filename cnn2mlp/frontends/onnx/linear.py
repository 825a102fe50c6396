"""Gemm, MatMul and BatchNormalization: affine maps with constant weights."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ...ir.precision import real
from .registry import as_str, attr, converter

if TYPE_CHECKING:
    from .importer import OnnxImporter


@converter("Gemm")
def convert_gemm(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    if attr(node, "transA", 0):
        imp.fail(node, "transA=1 mixes the batch axis into the product")
    if imp.sample_rank(x) != 1:
        imp.fail(node, f"input has sample shape {imp.graph.shape(x)}; Gemm needs a flat vector")
    b = np.asarray(imp.const(node, 1), np.float64)
    b = b.T if attr(node, "transB", 0) else b
    weight = attr(node, "alpha", 1.0) * b.T
    c = imp.const(node, 2, optional=True)
    bias = None
    if c is not None:
        c = np.asarray(c, np.float64)
        if c.ndim == 2 and c.shape[0] != 1:
            imp.fail(node, f"C of shape {c.shape} varies along the batch axis")
        bias = attr(node, "beta", 1.0) * np.broadcast_to(c.reshape(-1) if c.ndim else c,
                                                         (weight.shape[0],))
    imp.emit(node, "Dense", [x], {"weight": weight.astype(real()),
                                  "bias": None if bias is None else bias.astype(real())},
             output=node.output[0])


@converter("MatMul")
def convert_matmul(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    if imp.is_const(node.input[0]) and not imp.is_const(node.input[1]):
        convert_matmul_left(imp, node)
        return
    x = imp.data(node)
    if not imp.is_const(node.input[1]):
        from .arithmetic import PRODUCT

        imp.refuse(node, PRODUCT)
    b = np.asarray(imp.const(node, 1), real())
    sample = imp.graph.shape(x)
    if b.ndim != 2 or not sample or sample[-1] != b.shape[0]:
        matmul_by_reference(imp, node, x, b.shape)
        return
    import scipy.sparse as sp

    rows = math.prod(sample[:-1])
    imp.check_size(node, rows * int(np.count_nonzero(b)))
    weight = b.T if rows == 1 else sp.kron(sp.identity(rows, real(), "csr"),
                                           sp.csr_array(b.T), format="csr")
    imp.emit(node, "Dense", [x], {"weight": weight, "bias": None,
                                  "out_shape": sample[:-1] + (b.shape[1],)},
             output=node.output[0])


def matmul_by_reference(imp: OnnxImporter, node: onnx.NodeProto, x: str, const_shape) -> None:
    """Other MatMuls with a constant (a stack of matrices, a vector) are linear maps of the
    sample when the constant does not reach the batch axis: measured on basis vectors."""
    from .layout import linear_by_reference

    sample = imp.graph.shape(x)
    # the constant's stacking axes (all but its last two) must fit among the sample's
    if len(const_shape) - 2 > len(sample) - 1:
        imp.fail(node, f"multiplies (N,{sample}) by a constant of shape {const_shape}, whose "
                       "leading axes would broadcast against the batch axis")
    linear_by_reference(imp, node, x)


def convert_matmul_left(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """``C @ X`` per sample, for X of sample shape (b, m): the matrix kron(C, I_m)."""
    import scipy.sparse as sp

    c = np.asarray(imp.const(node, 0), real())
    x = imp.data(node, 1)
    sample = imp.graph.shape(x)
    if len(sample) >= 2 and c.ndim <= len(sample) + 1 and (
            c.ndim != 2 or len(sample) != 2 or sample[0] != c.shape[1]):
        from .layout import linear_by_reference

        linear_by_reference(imp, node, x)  # a stack of matrices: measured on basis vectors
        return
    if c.ndim != 2 or len(sample) != 2 or sample[0] != c.shape[1]:
        imp.fail(node, f"multiplies a constant of shape {c.shape} by (N,{sample}); only a "
                       "matrix times a per-sample matrix is supported. If the model has no "
                       "batch axis (W @ x with x a column), pass --batch-axis none")
    m = sample[1]
    imp.check_size(node, m * int(np.count_nonzero(c)))
    weight = sp.kron(sp.csr_array(c), sp.identity(m, real(), "csr"), format="csr")
    imp.emit(node, "Dense", [x], {"weight": weight.astype(real()), "bias": None,
                                  "out_shape": (c.shape[0], m)}, output=node.output[0])


@converter("BatchNormalization")
def convert_batchnorm(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    if attr(node, "training_mode", 0) or len([o for o in node.output if o]) > 1:
        imp.fail(node, "training mode; export the model in inference mode (model.eval())")
    attrs = {key: np.asarray(imp.const(node, i), np.float64)
             for i, key in enumerate(("scale", "bias", "mean", "var"), start=1)}
    attrs["epsilon"] = float(attr(node, "epsilon", 1e-5))
    imp.emit(node, "BatchNorm", [x], attrs, output=node.output[0])


@converter("ReduceMean", "ReduceSum")
def convert_reduce(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """Sums and averages over sample axes: a matrix of ones (or 1/count) on the reduced
    axes and the identity on the others, built directly (a Kronecker product). Reducing
    the batch axis is refused."""
    import scipy.sparse as sp

    from ...ir.linear import kron_per_axis

    x = imp.data(node)
    axes = imp.reduce_axes(node, x)
    if axes is None:
        imp.alias(node, x)
        return
    shape = imp.graph.shape(x)
    count = math.prod(shape[a] for a in axes)
    imp.check_size(node, int(np.prod(shape)))
    weight = kron_per_axis(shape, {a: np.ones((1, shape[a])) for a in axes})
    if node.op_type == "ReduceMean":
        weight = sp.csr_array(weight * (1.0 / count))
    keep = attr(node, "keepdims", 1)
    out_shape = tuple(1 if a in axes else d for a, d in enumerate(shape)) if keep else \
        tuple(d for a, d in enumerate(shape) if a not in axes)
    imp.emit(node, "Dense", [x], {"weight": weight.astype(real()), "bias": None,
                                  "out_shape": out_shape}, output=node.output[0])


@converter("Einsum")
def convert_einsum(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """An Einsum of one computed tensor with constants is a linear map of the sample when
    the computed operand's first index (its batch axis) stays first in the output and no
    constant carries it: measured with ONNX's reference on basis vectors. Einsums of two
    computed tensors are products (refused); contracting or moving the batch is refused."""
    from .arithmetic import PRODUCT
    from .layout import linear_by_reference

    computed = [k for k, name in enumerate(node.input) if name and not imp.is_const(name)]
    if len(computed) != 1:
        imp.refuse(node, PRODUCT)
    equation = as_str(attr(node, "equation", ""))
    terms, output = einsum_terms(equation)
    if terms is None or len(terms) != len(node.input):
        imp.fail(node, f"equation {equation!r} cannot be read")
    mine = terms[computed[0]]
    batch = "..." if mine.startswith("...") else mine[:1]
    others = [t for k, t in enumerate(terms) if k != computed[0]]
    if not batch or not output.startswith(batch) or any(batch in t for t in others) or (
            batch != "..." and (output.count(batch) != 1 or mine.count(batch) != 1)):
        imp.fail(node, f"equation {equation!r} does not keep the batch "
                       "axis (the computed operand's first index) first and alone")
    linear_by_reference(imp, node, imp.data(node, computed[0]))


def einsum_terms(equation: str) -> tuple[list[str] | None, str]:
    """The input subscripts and the output subscript (implicit output: the letters used
    once, sorted, after any ellipsis), spaces removed."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if not all(t.replace("...", "").isalpha() or t.replace("...", "") == "" for t in terms):
        return None, ""
    if not arrow:
        letters = "".join(t.replace("...", "") for t in terms)
        rhs = ("..." if "..." in lhs else "") + "".join(
            sorted(ch for ch in set(letters) if letters.count(ch) == 1))
    return terms, rhs
