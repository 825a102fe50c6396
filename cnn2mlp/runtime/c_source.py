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
once, checking its size and a checksum (``checksum``), so that a big model does not make a
source file the C compiler chokes on. Nothing from the model reaches the code but numbers
and the prefix, which is made a C identifier.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..ir.mlp import Mlp
from .c_batched import SAMPLES, BatchedLayerWriter
from .c_layers import Arrays, LayerWriter, c_type
from .plan import plan_layers

#: weights above this many bytes go to a binary file read by <prefix>_init
STATIC_LIMIT = 16 * 2**20
#: the weights file starts with this tag and the format's version
MAGIC = b"C2MW0001"
C_KEYWORDS = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
    "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch",
    "typedef", "union", "unsigned", "void", "volatile", "while", "bool", "true", "false"}


def c_identifier(text: str) -> str:
    """``text`` made a C identifier: letters, digits and underscores, not starting with a
    digit, not a keyword, and at most 40 characters."""
    name = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", text))[:40].strip("_") or "model"
    if name[0].isdigit():
        name = "m_" + name
    if name.lower() in C_KEYWORDS or name.startswith("__"):
        name = "m_" + name
    return name


def checksum(data: bytes) -> int:
    """The weights file's checksum (the C side computes the same while reading the file):
    the sum of its 8-byte little-endian words (the last one padded with zero bytes), word
    ``i`` times ``2 i + 1``, modulo 2**64. An odd factor changes the sum with any change
    of one word; numpy computes it in wrapping uint64 arithmetic, in chunks (a
    byte-at-a-time hash in Python took 6.8 s on ResNet50's 85 MB at every load)."""
    words = np.frombuffer(data + b"\0" * (-len(data) % 8), "<u8")
    total, chunk = 0, 1 << 20
    for start in range(0, len(words), chunk):
        part = words[start:start + chunk].astype(np.uint64)
        factors = np.arange(2 * start + 1, 2 * (start + len(part)), 2, dtype=np.uint64)
        total = (total + int((part * factors).sum(dtype=np.uint64))) % 2**64
    return total


def literals(array: np.ndarray) -> str:
    """The values as C literals, a line every 8 (floats exactly: 9 or 17 digits)."""
    flat = array.ravel()
    if not flat.size:
        return "0"
    if array.dtype.kind == "f":
        digits, suffix = (9, "f") if array.dtype == np.float32 else (17, "")
        text = np.char.add(np.char.mod(f"%.{digits - 1}e", flat), suffix).tolist()
    else:
        text = [str(v) for v in flat.tolist()]
    return ",\n".join(", ".join(text[i:i + 8]) for i in range(0, len(text), 8))


@dataclass
class CSource:
    source: str
    header: str
    weights: bytes | None  # the binary weights file, or None (weights in the source)


def c_source(mlp: Mlp, prefix: str, header_name: str, contract: str,
             static_limit: int | None = None, dtype=None) -> CSource:
    """The C source, header and (for big models: above ``static_limit`` bytes, default
    STATIC_LIMIT) weights file of ``mlp``, computing in ``dtype`` (default: the MLP's)."""
    static_limit = STATIC_LIMIT if static_limit is None else static_limit
    dtype = np.dtype(mlp.dtype if dtype is None else dtype)
    real = "double" if dtype == np.float64 else "float"
    plans = plan_layers(mlp.layers, dtype)
    arrays = Arrays(real)
    writers = [LayerWriter(k, plan, arrays, real) for k, plan in enumerate(plans)]
    functions = [w.emit() for w in writers]
    functions += [BatchedLayerWriter(k, w.records, real).emit() for k, w in enumerate(writers)]
    n_in, n_out = plans[0].n_in, plans[-1].n_out
    width = max(max(p.n_out for p in plans), n_in)
    upper = prefix.upper()
    external = arrays.nbytes > static_limit
    blob = None
    if external:
        declarations, blob = external_arrays(arrays)
    else:
        declarations = "\n".join(
            f"static const {c_type(a, real)} {name}[{max(1, a.size)}] = {{\n{literals(a)}\n}};"
            for name, a in arrays.items)
    calls, batched = [], []
    for k in range(len(plans)):
        src = "x" if k == 0 else ("a" if k % 2 else "b")
        dst = "a" if k % 2 == 0 else "b"
        calls.append(f"            layer{k}({src}, {dst});")
        batched.append(f"        layer{k}_batch({'b' if k % 2 == 0 else 'a'}, {dst});")
    last = "a" if (len(plans) - 1) % 2 == 0 else "b"
    header = HEADER.format(name=header_name, upper=upper, prefix=prefix, real=real, n_in=n_in, n_out=n_out,
                           contract=contract, init_doc=INIT_DOC_EXTERNAL if external
                           else INIT_DOC_STATIC)
    body = SOURCE.format(
        header=header_name, prefix=prefix, upper=upper, real=real, width=width,
        mask="int64_t" if real == "double" else "int32_t",
        samples=SAMPLES, declarations=declarations, functions="\n\n".join(functions),
        calls="\n".join(calls), batched="\n".join(batched), last=last,
        init=init_external(prefix, arrays, blob) if external else INIT_STATIC.format(
            prefix=prefix),
        ready="    if (!ready) return -1;\n" if external else "")
    return CSource(body, header, blob)


def external_arrays(arrays: Arrays) -> tuple[str, bytes]:
    """Pointer declarations, and the weights file: MAGIC, then each array 8-byte aligned."""
    chunks, offset = [MAGIC], len(MAGIC)
    lines = []
    for name, a in arrays.items:
        pad = (-offset) % 8
        chunks.append(b"\0" * pad)
        offset += pad
        data = a.astype(a.dtype.newbyteorder("<") if a.dtype.kind == "f" else "<i4",
                        copy=False).tobytes()
        lines.append(f"static const {c_type(a, arrays.real)} *{name}; /* @{offset} */")
        chunks.append(data)
        offset += len(data)
    return "\n".join(lines), b"".join(chunks)


def init_external(prefix: str, arrays: Arrays, blob: bytes) -> str:
    assignments, offset = [], len(MAGIC)
    for name, a in arrays.items:
        offset += (-offset) % 8
        assignments.append(f"    {name} = (const void *)(blob + {offset});")
        offset += a.nbytes
    return INIT_EXTERNAL.format(prefix=prefix, size=len(blob), checksum=checksum(blob),
                                magic=MAGIC.decode(), assignments="\n".join(assignments))


HEADER = """/* {name}: generated by cnn2mlp. An MLP equivalent to a convolutional network. */
#ifndef {upper}_H
#define {upper}_H

#ifdef __cplusplus
extern "C" {{
#endif

/* values per sample */
#define {upper}_INPUT_SIZE {n_in}
#define {upper}_OUTPUT_SIZE {n_out}

/* {contract} */

{init_doc}
int {prefix}_init(const char *weights_path);

/* Runs `batch` samples: `in` holds batch * {upper}_INPUT_SIZE values, sample after sample;
   `out` receives batch * {upper}_OUTPUT_SIZE. Returns 0, or -1 (not initialized), -2 (no
   memory for the work buffers), -3 (batch < 0). Reentrant: no state but the weights. */
int {prefix}_predict(const {real} *in, {real} *out, int batch);

/* predict with the work buffer given: `work` holds at least {prefix}_work_size(batch)
   values (allocate it once for the largest batch you run): no memory is taken per call.
   Returns 0, -1 or -3 as predict does. */
int {prefix}_predict_with(const {real} *in, {real} *out, int batch, {real} *work);
long {prefix}_work_size(int batch);

#ifdef __cplusplus
}}
#endif

#endif
"""

INIT_DOC_STATIC = """/* The weights are in the source: init does nothing and returns 0 (kept so that code
   written for a bigger model, whose weights are in a file, works unchanged). */"""
INIT_DOC_EXTERNAL = """/* Reads the weights file written beside the source (its size and checksum are checked).
   Returns 0, or -1 (cannot open or read), -2 (no memory), -3 (not this model's weights).
   Call once before predict. */"""

INIT_STATIC = """int {prefix}_init(const char *weights_path)
{{
    (void)weights_path;
    return 0;
}}
"""

INIT_EXTERNAL = """static unsigned char *blob;
static int ready;

int {prefix}_init(const char *weights_path)
{{
    FILE *f;
    unsigned long long h = 0, word;
    long n = {size}L, i;
    int k;
    if (ready) return 0;
    f = fopen(weights_path, "rb");
    if (!f) return -1;
    blob = (unsigned char *)malloc((size_t)n + 1);
    if (!blob) {{ fclose(f); return -2; }}
    /* one byte more than expected: a longer file is not this model's */
    if ((long)fread(blob, 1, (size_t)n + 1, f) != n || memcmp(blob, "{magic}", 8) != 0) {{
        fclose(f); free(blob); blob = NULL; return -3;
    }}
    fclose(f);
    /* checksum() in c_source.py: 8-byte little-endian words, word i times 2 i + 1 */
    for (i = 0; i < (n + 7) / 8; i++) {{
        word = 0;
        for (k = 0; k < 8 && i * 8 + k < n; k++)
            word |= (unsigned long long)blob[i * 8 + k] << (8 * k);
        h += word * (2ULL * (unsigned long long)i + 1ULL);
    }}
    if (h != {checksum}ULL) {{ free(blob); blob = NULL; return -3; }}
{assignments}
    ready = 1;
    return 0;
}}
"""

SOURCE = """/* Generated by cnn2mlp: do not edit. See {header} for the interface. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* the clamp v = u if u > lo else u * scale, then min(v, hi), keeping a NaN, on a vector
   (C has no select of vectors: masks). It has the batched parts' optimization attribute,
   as clamp_value does: GCC inlines no function whose options differ from its caller's
   (measured: a call per value, 16 a row) */
static inline NO_LOOP_VECTORIZE vector_sum clamp_vector(vector_sum u, {real} lo, {real} scale, {real} hi)
{{
    const vector_sum low = u * scale, top = (vector_sum){{0}} + hi;
    vector_mask m = u > lo;
    u = (vector_sum)((m & (vector_mask)u) | (~m & (vector_mask)low));
    m = u > hi;
    return (vector_sum)((m & (vector_mask)top) | (~m & (vector_mask)u));
}}
#endif

/* the same on one value */
static inline NO_LOOP_VECTORIZE {real} clamp_value({real} z, {real} lo, {real} scale, {real} hi)
{{
    const {real} low = z * scale;
    const {real} v = z > lo ? z : low;
    return v > hi ? hi : v;
}}

{declarations}

{init}
{functions}

long {prefix}_work_size(int batch)
{{
    return (long)batch * 4 <= {samples} ? 2L * {width} : 2L * {width} * {samples};
}}

int {prefix}_predict_with(const {real} *in, {real} *out, int batch, {real} *work)
{{
    {real} *a = work, *b;
    long s, i;
    int l, n;
{ready}    if (batch < 0) return -3;
    b = work + {prefix}_work_size(batch) / 2;  /* two buffers, each half the work */
    /* {samples} samples at a time, interleaved (value i of sample l at i * {samples} + l),
       the last block padded; a quarter of a block or less goes one sample at a time
       (the single-sample code: measured, faster than a padded block there) */
    for (s = 0; s < batch; s += n) {{
        n = batch - s < {samples} ? (int)(batch - s) : {samples};
        if (n * 4 <= {samples}) {{
            const {real} *x = in + s * {upper}_INPUT_SIZE;
            n = 1;
{calls}
            memcpy(out + s * {upper}_OUTPUT_SIZE, {last}, sizeof({real}) * {upper}_OUTPUT_SIZE);
            continue;
        }}
        for (i = 0; i < {upper}_INPUT_SIZE; i++)
            for (l = 0; l < {samples}; l++)
                b[i * {samples} + l] = l < n ? in[(s + l) * {upper}_INPUT_SIZE + i] : 0;
{batched}
        for (l = 0; l < n; l++)
            for (i = 0; i < {upper}_OUTPUT_SIZE; i++)
                out[(s + l) * {upper}_OUTPUT_SIZE + i] = {last}[i * {samples} + l];
    }}
    return 0;
}}

int {prefix}_predict(const {real} *in, {real} *out, int batch)
{{
    {real} *work;
    int code;
    if (batch < 0) return -3;
    work = ({real} *)malloc(sizeof({real}) * (size_t){prefix}_work_size(batch));
    if (!work) return -2;
    code = {prefix}_predict_with(in, out, batch, work);
    free(work);
    return code;
}}
"""
