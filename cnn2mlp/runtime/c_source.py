"""The MLP as one self-contained C99 source and its header (the C library and libm, nothing
else): what the C target writes (``backends/c.py``) and the C engine builds and runs
(``c_engine.py``).

The code follows the runtime's plan (``runtime/plan.py``), the same structure the Python
engines run: per layer, row groups as loops over a kernel's taps with the weights stored
once and a fixed trip count, runs of copied values, CSR for the other rows, a dense product
for a mostly non-zero layer, merged equal columns as a summing layer; then each run of
neurons' activation, written from the activation catalogue's C expressions. A layer
starts from its bias and every part adds to it, so rows that several parts write (a
convolution plus its shortcut) need nothing special.

Weights up to ``STATIC_LIMIT`` bytes are ``static const`` arrays in the source. Above, they
go to a binary file beside it (``<stem>.weights``), which ``<prefix>_init(path)`` reads
once, checking its size and its SHA-256 (``digest``: the file holds index arrays, so a
forged one must not get past init), so that a big model does not make a source file the C
compiler chokes on. Nothing from the model reaches the code but numbers
and the prefix, which is made a C identifier. The weights file is ``c_weights.py``'s, the
self-test ``c_self_test.py``'s, every float literal ``c_literals.py``'s.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import CompileError
from ..ir.mlp import Mlp
from .c_batched import SAMPLES, BatchedLayerWriter
from .c_arrays import Arrays, Scratch, c_type
from .c_layers import LayerWriter
from .c_literals import literals
from .c_max import MaxWriter
from .c_self_test import SELF_TEST_DOC, SelfTest, self_test_code
from .c_sharing import share_functions
from .c_weights import (INIT_DOC_EXTERNAL, INIT_DOC_STATIC, INIT_STATIC, external_arrays,
                        init_external)
from .max_blocks import MaxLayer
from .plan import iter_plans

#: weights above this many bytes go to a binary file read by <prefix>_init (--c-weights
#: auto): a microcontroller's flash holds a few MiB at most, and in the source each float is
#: a literal of 16 characters (MobileNetV2 at 224x224: 11 MB of weights, a 48 MB source)
STATIC_LIMIT = 4 * 2**20
C_KEYWORDS = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
    "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch",
    "typedef", "union", "unsigned", "void", "volatile", "while", "bool", "true", "false"}


#: prefixes the C library, POSIX and C11 name their own functions and types with: a model
#: named so would collide with <semaphore.h>, <threads.h>, <pthread.h> (``sem_init``,
#: ``mtx_init``...) or replace a libc function at link time
RESERVED_PREFIXES = (
    "sem", "mtx", "cnd", "thrd", "tss", "once", "atomic", "memory", "pthread", "posix", "aio",
    "mq", "shm", "sched", "timer", "clock", "time", "sig", "lio", "dl", "getaddrinfo", "cnn2mlp")
#: the C standard reserves these followed by a lower-case letter (future library functions)
RESERVED_STARTS = re.compile(r"^(str|mem|wcs|is|to|mbs)[a-z]")


def c_identifier(text: str) -> str:
    """``text`` made a lower-case C identifier (its upper-case form names the header's
    macros and guard, so two prefixes must differ in more than case): letters, digits and
    underscores, not starting with a digit, not a keyword or a name the C library reserves
    (``m_`` goes before those), and at most 40 characters."""
    name = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", text))[:40].strip("_") or "model"
    name = name.lower()
    if name[0].isdigit():
        name = "m_" + name
    if name in C_KEYWORDS or name.startswith("__") or is_reserved(name):
        name = "m_" + name
    return name


def is_reserved(name: str) -> bool:
    return bool(RESERVED_STARTS.match(name)) or any(
        name == p or name.startswith(p + "_") for p in RESERVED_PREFIXES)


def check_fits_int32(arrays: Arrays) -> None:
    """The C code indexes with 32-bit ints: refuse an index array whose values do not fit
    rather than let a cast wrap them."""
    limit = np.iinfo(np.int32)
    for name, a in arrays.items:
        if a.dtype.kind in "iu" and a.size and (int(a.max()) > limit.max
                                                or int(a.min()) < limit.min):
            raise CompileError(f"the C target indexes with 32-bit ints, and {name} holds "
                               f"{int(a.max()):,}: the model is too large for it")


def split_units(functions: list[str], units: int) -> str:
    """The functions one after another, or, with ``units`` > 1, each in the unit of the
    least code so far (largest first), guarded by ``#if UNIT_IS(j)``."""
    if units <= 1:
        return "\n\n".join(functions)
    sizes = [0] * units
    chosen = [[] for _ in range(units)]
    for index in sorted(range(len(functions)), key=lambda i: -len(functions[i])):
        unit = min(range(units), key=lambda u: (sizes[u], u))
        sizes[unit] += len(functions[index])
        chosen[unit].append(index)
    return "\n\n".join(f"#if UNIT_IS({u})\n" + "\n\n".join(functions[i] for i in sorted(ids))
                       + "\n#endif" for u, ids in enumerate(chosen) if ids)


def one_sample_scratch(k: int, width: int) -> Scratch:
    """The work space layer ``k``'s one-sample code may use, from its output ``z``. One
    sample's layers use the first ``width`` values of buffers ``a`` (the work's start:
    even layers write it) and ``b`` (odd layers). In a one-sample work ``b`` is ``a +
    width`` and the scratch is past both (``work_size`` counts it); in a block's work,
    whose buffers are ``width * SAMPLES`` long, it is inside the buffer being written,
    past its first ``width``: ``(SAMPLES - 2) * width`` values either way."""
    return Scratch(f"z + {2 * width if k % 2 == 0 else width}L", (SAMPLES - 2) * width, width)


def unit_names(prefix: str, names: list[str]) -> str:
    """In a unit's build, the functions units call across carry the model's prefix (they
    are global there): two models built in units link into one program."""
    return "\n".join(["#if defined(CNN2MLP_UNIT)",
                      *(f"#define {name} {prefix}_{name}" for name in names), "#endif"])


@dataclass
class CSource:
    source: str
    header: str
    weights: bytes | None  # the binary weights file, or None (weights in the source)


def c_source(mlp: Mlp, prefix: str, header_name: str, contract: str,
             static_limit: float | None = None, dtype=None,
             self_test: SelfTest | None = None, units: int = 1,
             max_layers: bool = True) -> CSource:
    """The C source, header and (for big models: above ``static_limit`` bytes, default
    STATIC_LIMIT) weights file of ``mlp``, computing in ``dtype`` (default: the MLP's);
    with ``self_test``, its vectors and ``<prefix>_self_test()``. ``units`` > 1 splits the
    layers into that many units of about equal code, each compiled on its own with
    ``-DCNN2MLP_UNIT=j`` (unit 0 also holds init and predict): the c engine builds them in
    parallel. Compiled without it, the source is one whole program as before. A source
    that holds its weights is one unit (``source_units`` says how many a source has).
    ``max_layers=False`` writes a max pool's tournament as the layers it is (tests)."""
    static_limit = STATIC_LIMIT if static_limit is None else static_limit
    dtype = np.dtype(mlp.dtype if dtype is None else dtype)
    real = "double" if dtype == np.float64 else "float"
    n_in, n_out = mlp.layers[0].n_in, mlp.layers[-1].n_out
    # the runtime's summing layers (equal columns) are narrower than the input they sum
    width = max(max(layer.n_out for layer in mlp.layers), n_in)
    if 2 * width * SAMPLES >= 2**31:  # a batched buffer's positions are 32-bit ints
        raise CompileError(f"the C target indexes with 32-bit ints, and a layer of {width:,} "
                           "values is too wide for its batched buffers")
    arrays = Arrays(real)
    functions, records, plane = [], [], 0
    for k, plan in enumerate(iter_plans(mlp.layers, dtype, max_layers)):  # freed once written
        if isinstance(plan, MaxLayer):
            writer = MaxWriter(k, plan, arrays, real)
            functions.append(writer.emit())
            records.append(writer)
            continue
        writer = LayerWriter(k, plan, arrays, real, one_sample_scratch(k, width))
        functions.append(writer.emit())
        records.append(writer.records)
        plane = max(plane, writer.plane_floats)
    functions += [r.emit_batched() if isinstance(r, MaxWriter) else
                  BatchedLayerWriter(k, r, real).emit() for k, r in enumerate(records)]
    n_layers = len(records)
    check_fits_int32(arrays)
    upper = prefix.upper()
    external = arrays.nbytes > static_limit
    blob = None
    if external:
        declarations, blob = external_arrays(arrays, prefix)
    else:
        declarations = "\n".join(
            f"static const {c_type(a, real)} {name}[{max(1, a.size)}] = {{\n{literals(a)}\n}};"
            for name, a in arrays.items)
    calls, batched = [], []
    for k in range(n_layers):
        src = "x" if k == 0 else ("a" if k % 2 else "b")
        dst = "a" if k % 2 == 0 else "b"
        calls.append(f"            layer{k}({src}, {dst});")
        batched.append(f"        layer{k}_batch({'b' if k % 2 == 0 else 'a'}, {dst});")
    last = "a" if (n_layers - 1) % 2 == 0 else "b"
    sizes = dict(upper=upper, real=real, width=width, samples=SAMPLES, quarter=SAMPLES // 4,
                 plane=plane)
    header = HEADER.format(name=header_name, prefix=prefix, n_in=n_in, n_out=n_out,
                           contract=contract, init_doc=INIT_DOC_EXTERNAL if external
                           else INIT_DOC_STATIC, weights_bytes=arrays.nbytes,
                           self_test=SELF_TEST_DOC.format(
                               prefix=prefix, n=len(self_test.inputs)) if self_test else "",
                           **sizes)
    if not external:  # units share their weights through the file: one unit here
        units = 1
    sharing = share_functions(functions, {name: c_type(a, real) for name, a in arrays.items})
    prototypes = "\n".join([
        unit_names(prefix, [f"layer{k}{kind}" for k in range(n_layers)
                            for kind in ("", "_batch")] + sharing.names)] + [
        f"LAYER void layer{k}{kind}(const {real} *restrict h, {real} *restrict z);"
        for k in range(n_layers) for kind in ("", "_batch")] + sharing.prototypes)
    body = SOURCE.format(
        header=header_name, prefix=prefix, mask="int64_t" if real == "double" else "int32_t",
        declarations=declarations, functions=split_units(sharing.functions, units),
        prototypes=prototypes,
        calls="\n".join(calls), batched="\n".join(batched), last=last,
        includes=INCLUDES_EXTERNAL if external else INCLUDES_STATIC,
        init=init_external(prefix, blob) if external else INIT_STATIC.format(
            prefix=prefix),
        ready="    if (!ready) return -1;\n" if external else "",
        self_test=self_test_code(self_test, prefix, upper, real) if self_test else "",
        clamp_vectors=clamp_functions(CLAMP_VECTOR, "clamp_vector", real),
        clamp_values=clamp_functions(CLAMP_VALUE, "clamp_value", real), **sizes)
    return CSource(body, header, blob)


#: the clamp on a vector and on a value, each written twice: with the optimization
#: attribute of the functions that run blocks and batches, and without (a layer's own)
CLAMP_VECTOR = """static inline {attribute}vector_sum {name}(vector_sum u, {real} lo, {real} scale, {real} hi)
{{
    const vector_sum low = u * scale, top = (vector_sum){{0}} + hi;
    vector_mask m = u > lo;
    u = (vector_sum)((m & (vector_mask)u) | (~m & (vector_mask)low));
    m = u > hi;
    return (vector_sum)((m & (vector_mask)top) | (~m & (vector_mask)u));
}}"""
CLAMP_VALUE = """static inline {attribute}{real} {name}({real} z, {real} lo, {real} scale, {real} hi)
{{
    const {real} low = z * scale;
    const {real} v = z > lo ? z : low;
    return v > hi ? hi : v;
}}"""


def clamp_functions(template: str, name: str, real: str) -> str:
    """``template``'s two functions: ``name`` for blocks and batches, ``layer_<name>``."""
    return "\n\n".join(template.format(attribute=attribute, name=prefix + name, real=real)
                        for attribute, prefix in (("NO_LOOP_VECTORIZE ", ""), ("", "layer_")))


HEADER = """/* {name}: generated by cnn2mlp. An MLP equivalent to a convolutional network. */
#ifndef CNN2MLP_{upper}_H
#define CNN2MLP_{upper}_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {{
#endif

/* values per sample */
#define {upper}_INPUT_SIZE {n_in}
#define {upper}_OUTPUT_SIZE {n_out}
/* bytes the weights take (read-only: flash on a microcontroller; in the weights file when
   the source has none) */
#define {upper}_WEIGHTS_BYTES {weights_bytes}
/* values of type {real} predict_with's work buffer needs for `batch` samples, at least
   {prefix}_work_size(batch); a constant expression for a constant batch, so that
   `static {real} work[{upper}_WORK_FLOATS(1)];` sizes one at file scope (RAM) */
#define {upper}_WORK_FLOATS(batch) ((batch) <= {quarter} ? 2 * {width} + {plane} : 2 * {width} * {samples})

/* {contract} */

{init_doc}
int {prefix}_init(const char *weights_path);

#ifndef CNN2MLP_NO_MALLOC
/* Runs `batch` samples: `in` holds batch * {upper}_INPUT_SIZE values, sample after sample;
   `out` receives batch * {upper}_OUTPUT_SIZE. Returns 0, or -1 (not initialized), -2 (no
   memory for the work buffers), -3 (batch < 0). Reentrant: no state but the weights.
   Absent with -DCNN2MLP_NO_MALLOC (it allocates its work buffer): use predict_with. */
int {prefix}_predict(const {real} *in, {real} *out, int batch);
#endif

/* predict with the work buffer given: `work` holds at least {prefix}_work_size(batch)
   values (allocate it once for the largest batch you run): no memory is taken per call.
   Returns 0, -1 or -3 as predict does. */
int {prefix}_predict_with(const {real} *in, {real} *out, int batch, {real} *work);
size_t {prefix}_work_size(int batch);
{self_test}
#ifdef __cplusplus
}}
#endif

#endif
"""

SOURCE = """/* Generated by cnn2mlp: do not edit. See {header} for the interface. */
#include <stdint.h>
{includes}#include <string.h>
#include <tgmath.h>

#include "{header}"

#if defined(__GNUC__) && !defined(__clang__)
/* no floating-point trap is ever enabled here: GCC may then turn the activations'
   selects into vector blends (else it keeps them scalar, with a branch per value) */
#pragma GCC optimize ("no-trapping-math")
/* the vector helpers are static: no other code calls them, whatever vectors it passes in */
#pragma GCC diagnostic ignored "-Wpsabi"
#define NO_LOOP_VECTORIZE __attribute__((optimize("no-tree-loop-vectorize")))
#else
#define NO_LOOP_VECTORIZE
#endif
/* the code several layers share (c_sharing.py) is compiled once, not again in each */
#if defined(__GNUC__)
#define NO_INLINE __attribute__((noinline))
#else
#define NO_INLINE
#endif

/* GCC and clang: a convolution block's sixteen sums, and a dense row's partial sums, as
   values of their vector extension, as wide as the machine's vectors (wider ones they
   would split badly; -DCNN2MLP_VECTOR_BYTES=16, 32 or 64 chooses); elsewhere, or with
   -DCNN2MLP_PORTABLE, scalar sums */
#if defined(__GNUC__) && !defined(CNN2MLP_PORTABLE)
#if defined(CNN2MLP_VECTOR_BYTES)
#define VECTOR_BYTES CNN2MLP_VECTOR_BYTES
#elif defined(__AVX512F__)
#define VECTOR_BYTES 64
#elif defined(__AVX__)
#define VECTOR_BYTES 32
#else
#define VECTOR_BYTES 16
#endif
typedef {real} vector_sum __attribute__((vector_size(VECTOR_BYTES)));
typedef {mask} vector_mask __attribute__((vector_size(VECTOR_BYTES)));
#define VECTOR_LANES (VECTOR_BYTES / (int)sizeof({real}))
/* a vector that several multiply-adds read, kept in a register (an empty asm statement
   takes it in one): GCC otherwise folds its load into each of them, a load per
   multiply-add (ResNet50 at 224x224, one sample: 210 -> 145 ms). On x86-64 where the
   vector fits a register; elsewhere the compiler chooses. */
#if defined(__x86_64__) && (VECTOR_BYTES == 16 || (VECTOR_BYTES == 32 && defined(__AVX__)) \
                            || (VECTOR_BYTES == 64 && defined(__AVX512F__)))
#define IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define IN_REGISTER(v) ((void)0)
#endif

/* the clamp v = u if u > lo else u * scale, then min(v, hi), keeping a NaN, on a vector
   (C has no select of vectors: masks). It has the batched parts' optimization attribute,
   as clamp_value does: GCC inlines no function whose options differ from its caller's
   (measured: a call per value, 16 a row); layer_clamp_vector, the same without it, is a
   layer function's own (its planes' stores) */
{clamp_vectors}

/* the larger of two vectors' lanes, a NaN in b kept (a max layer's step, c_max.py) */
static inline vector_sum max_vector(vector_sum a, vector_sum b)
{{
    const vector_mask take = (b > a) | (b != b);
    return (vector_sum)((take & (vector_mask)b) | (~take & (vector_mask)a));
}}
#endif

/* A statement for each of sixteen lanes (a block's kernels, a batch's samples), written
   out by the preprocessor, not in the source: EACH_LANE(F, s) is F(0, s) ... F(15, s), and
   the compiler sees what it saw when the generator wrote them out (a third of a large
   model's source was such lines). The statements name their operands: */
#define EACH_LANE(F, s) F(0, s) F(1, s) F(2, s) F(3, s) F(4, s) F(5, s) F(6, s) F(7, s) \
    F(8, s) F(9, s) F(10, s) F(11, s) F(12, s) F(13, s) F(14, s) F(15, s)
#define LANE_ZERO(l, s) {real} s##l = 0;
#define LANE_WEIGHT_TIMES_INPUT(l, s) s##l += wt[l] * xt;
#define LANE_WEIGHT_TIMES_SAMPLE(l, s) s##l += wk * xt[l];
#define LANE_SAMPLE_TIMES_WEIGHT(l, s) s##l += v * x[l];
#define LANE_ADD_TO_ROW(l, s) z[LANE_ROW(l)] += s##l;
#define LANE_ADD_TO_SAMPLE(l, s) zk[l] += s##l;
#define LANE_STORE_TO_SAMPLE(l, s) zk[l] = clamp_value(s##l + b, CLAMP);
/* a batched part's clamp, as the constants its function declares */
#define CLAMP clamp_lo, clamp_scale, clamp_hi
/* a loop over a vector's lanes, unrolled as the statements written out were (GCC 8 and
   clang know the pragma; only GCC and clang have vectors here) */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 8)
#define UNROLL_LANES _Pragma("GCC unroll 16")
#else
#define UNROLL_LANES
#endif

/* the same on one value (and layer_clamp_value, a layer function's) */
{clamp_values}

/* A build split into units (the c engine compiles them in parallel): -DCNN2MLP_UNIT=j
   compiles unit j's layers, unit 0 also init and predict; without it, one program */
#if defined(CNN2MLP_UNIT)
#define UNIT_IS(j) (CNN2MLP_UNIT == (j))
#define LAYER __attribute__((visibility("hidden")))
#if CNN2MLP_UNIT == 0
#define SHARED __attribute__((visibility("hidden")))
#else
#define SHARED extern __attribute__((visibility("hidden")))
#endif
#else
#define UNIT_IS(j) 1
#define LAYER static
#define SHARED static
#endif

{declarations}

{prototypes}

{functions}

#if UNIT_IS(0)
{init}
size_t {prefix}_work_size(int batch)
{{
    return batch <= {quarter} ? (size_t)2 * {width} + {plane} : (size_t)2 * {width} * {samples};
}}

int {prefix}_predict_with(const {real} *in, {real} *out, int batch, {real} *work)
{{
    {real} *a = work, *b;
    size_t s, i;
    int l, n;
{ready}    if (batch < 0) return -3;
    /* two buffers; one sample's layers keep a scratch past them (one_sample_scratch) */
    b = work + (batch <= {quarter} ? (size_t){width} : (size_t){width} * {samples});
    /* {samples} samples at a time, interleaved (value i of sample l at i * {samples} + l),
       the last block padded; a quarter of a block or less goes one sample at a time
       (the single-sample code: measured, faster than a padded block there) */
    for (s = 0; s < (size_t)batch; s += (size_t)n) {{
        n = (size_t)batch - s < {samples} ? (int)((size_t)batch - s) : {samples};
        if (n * 4 <= {samples}) {{
            const {real} *x = in + s * {upper}_INPUT_SIZE;
            n = 1;
{calls}
            memcpy(out + s * {upper}_OUTPUT_SIZE, {last}, sizeof({real}) * {upper}_OUTPUT_SIZE);
            continue;
        }}
        for (i = 0; i < {upper}_INPUT_SIZE; i++)
            for (l = 0; l < {samples}; l++)
                b[i * {samples} + l] = l < n ? in[(s + (size_t)l) * {upper}_INPUT_SIZE + i] : 0;
{batched}
        for (l = 0; l < n; l++)
            for (i = 0; i < {upper}_OUTPUT_SIZE; i++)
                out[(s + (size_t)l) * {upper}_OUTPUT_SIZE + i] = {last}[i * {samples} + l];
    }}
    return 0;
}}

#ifndef CNN2MLP_NO_MALLOC
int {prefix}_predict(const {real} *in, {real} *out, int batch)
{{
    {real} *work;
    int code;
    if (batch < 0) return -3;
    work = ({real} *)malloc(sizeof({real}) * {prefix}_work_size(batch));
    if (!work) return -2;
    code = {prefix}_predict_with(in, out, batch, work);
    free(work);
    return code;
}}
#endif
{self_test}#endif
"""

#: the C library's allocator and stdio: only predict (malloc) and a weights file's init
#: (fopen) use them, and -DCNN2MLP_NO_MALLOC leaves predict out
INCLUDES_STATIC = """#ifndef CNN2MLP_NO_MALLOC
#include <stdlib.h>
#endif
"""
INCLUDES_EXTERNAL = """#ifdef CNN2MLP_NO_MALLOC
#error "this model's weights are in a .weights file, which init reads with malloc and fopen: \
compile the model with its weights in the source for -DCNN2MLP_NO_MALLOC"
#endif
#include <stdio.h>
#include <stdlib.h>
"""
