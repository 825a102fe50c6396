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
and the prefix, which is made a C identifier.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from ..errors import CompileError
from ..ir.mlp import Mlp
from .c_batched import SAMPLES, BatchedLayerWriter
from .c_layers import Arrays, LayerWriter, c_number, c_type
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


def digest(data: bytes) -> bytes:
    """The weights file's SHA-256, which the source holds and ``init`` recomputes over the
    bytes it read: a file changed in any way (damaged, another model's, or forged to make
    the code index out of bounds, since the file holds index arrays) is refused. The
    source, being code, is trusted as any code is; the file need not be."""
    return hashlib.sha256(data).digest()


def c_bytes(data: bytes) -> str:
    return ", ".join(f"0x{b:02x}" for b in data)


def check_fits_int32(arrays: Arrays) -> None:
    """The C code indexes with 32-bit ints: refuse an index array whose values do not fit
    rather than let a cast wrap them."""
    limit = np.iinfo(np.int32)
    for name, a in arrays.items:
        if a.dtype.kind in "iu" and a.size and (int(a.max()) > limit.max
                                                or int(a.min()) < limit.min):
            raise CompileError(f"the C target indexes with 32-bit ints, and {name} holds "
                               f"{int(a.max()):,}: the model is too large for it")


def literals(array: np.ndarray) -> str:
    """The values as C literals, a line every 8 (floats exactly: 9 or 17 digits)."""
    flat = array.ravel()
    if not flat.size:
        return "0"
    if array.dtype.kind == "f":
        digits, suffix = (9, "f") if array.dtype == np.float32 else (17, "")
        text = np.char.add(np.char.mod(f"%.{digits - 1}e", flat), suffix).tolist()
        if not np.isfinite(flat).all():  # NaN and infinities as <math.h>'s macros
            for i in np.flatnonzero(~np.isfinite(flat)):
                text[i] = "NAN" if np.isnan(flat[i]) else (
                    "INFINITY" if flat[i] > 0 else "-INFINITY")
    else:
        text = [str(v) for v in flat.tolist()]
    return ",\n".join(", ".join(text[i:i + 8]) for i in range(0, len(text), 8))


@dataclass
class CSource:
    source: str
    header: str
    weights: bytes | None  # the binary weights file, or None (weights in the source)


def c_source(mlp: Mlp, prefix: str, header_name: str, contract: str,
             static_limit: int | None = None, dtype=None,
             self_test: SelfTest | None = None) -> CSource:
    """The C source, header and (for big models: above ``static_limit`` bytes, default
    STATIC_LIMIT) weights file of ``mlp``, computing in ``dtype`` (default: the MLP's);
    with ``self_test``, its vectors and ``<prefix>_self_test()``."""
    static_limit = STATIC_LIMIT if static_limit is None else static_limit
    dtype = np.dtype(mlp.dtype if dtype is None else dtype)
    real = "double" if dtype == np.float64 else "float"
    plans = plan_layers(mlp.layers, dtype)
    n_in, n_out = plans[0].n_in, plans[-1].n_out
    width = max(max(p.n_out for p in plans), n_in)
    if 2 * width * SAMPLES >= 2**31:  # a batched buffer's positions are 32-bit ints
        raise CompileError(f"the C target indexes with 32-bit ints, and a layer of {width:,} "
                           "values is too wide for its batched buffers")
    arrays = Arrays(real)
    writers = [LayerWriter(k, plan, arrays, real) for k, plan in enumerate(plans)]
    functions = [w.emit() for w in writers]
    functions += [BatchedLayerWriter(k, w.records, real).emit() for k, w in enumerate(writers)]
    check_fits_int32(arrays)
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
    sizes = dict(upper=upper, real=real, width=width, samples=SAMPLES, quarter=SAMPLES // 4)
    header = HEADER.format(name=header_name, prefix=prefix, n_in=n_in, n_out=n_out,
                           contract=contract, init_doc=INIT_DOC_EXTERNAL if external
                           else INIT_DOC_STATIC, weights_bytes=arrays.nbytes,
                           self_test=SELF_TEST_DOC.format(
                               prefix=prefix, n=len(self_test.inputs)) if self_test else "",
                           **sizes)
    body = SOURCE.format(
        header=header_name, prefix=prefix, mask="int64_t" if real == "double" else "int32_t",
        declarations=declarations, functions="\n\n".join(functions),
        calls="\n".join(calls), batched="\n".join(batched), last=last,
        includes=INCLUDES_EXTERNAL if external else INCLUDES_STATIC,
        init=init_external(prefix, arrays, blob) if external else INIT_STATIC.format(
            prefix=prefix),
        ready="    if (!ready) return -1;\n" if external else "",
        self_test=self_test_code(self_test, prefix, upper, real) if self_test else "",
        **sizes)
    return CSource(body, header, blob)


@dataclass
class SelfTest:
    """Inputs from the model's domain and what the original computes for them: the vectors
    ``<prefix>_self_test()`` checks the build against. ``probabilities``: the reference
    gave the softmax of the outputs (a Keras model whose final softmax was dropped), so the
    test applies one to the MLP's logits first."""

    inputs: np.ndarray    # (N, n_in)
    outputs: np.ndarray   # (N, n_out)
    probabilities: bool = False


def self_test_code(test: SelfTest, prefix: str, upper: str, real: str) -> str:
    dtype = np.float64 if real == "double" else np.float32
    inputs = np.ascontiguousarray(test.inputs, dtype)
    outputs = np.ascontiguousarray(test.outputs, dtype)
    scale = float(np.max(np.abs(outputs), initial=0.0)) or 1.0
    return SELF_TEST.format(
        prefix=prefix, upper=upper, real=real, n=len(inputs), inputs=literals(inputs),
        outputs=literals(outputs), scale=repr(scale),
        softmax=SOFTMAX.format(upper=upper, real=real) if test.probabilities else "")


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
    return INIT_EXTERNAL.format(prefix=prefix, size=len(blob), digest=c_bytes(digest(blob)),
                                magic=MAGIC.decode(), assignments="\n".join(assignments))


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
#define {upper}_WORK_FLOATS(batch) ((batch) <= {quarter} ? 2 * {width} : 2 * {width} * {samples})

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

INIT_DOC_STATIC = """/* The weights are in the source: init does nothing and returns 0 (kept so that code
   written for a bigger model, whose weights are in a file, works unchanged). */"""
INIT_DOC_EXTERNAL = """/* Reads the weights file written beside the source into memory and checks its size and
   SHA-256 against the ones this source holds, so a file changed in any way (damaged,
   another model's, forged) is refused before any of its index arrays is used.
   Returns 0, or -1 (cannot open or read), -2 (no memory), -3 (not this model's weights),
   -4 (already initialized from another path: the weights stay those first read; a second
   call with the same path returns 0).
   Not thread-safe: call it once, before any thread calls predict; predict and
   predict_with are reentrant after that. */"""

INIT_STATIC = """int {prefix}_init(const char *weights_path)
{{
    (void)weights_path;
    return 0;
}}
"""

#: SHA-256 (FIPS 180-4) in C99, for the weights file's check
SHA256 = """static uint32_t sha256_rotr(uint32_t x, int n) {{ return (x >> n) | (x << (32 - n)); }}

static void sha256_block(uint32_t h[8], const unsigned char *p)
{{
    static const uint32_t k[64] = {{
        0x428a2f98UL, 0x71374491UL, 0xb5c0fbcfUL, 0xe9b5dba5UL, 0x3956c25bUL, 0x59f111f1UL,
        0x923f82a4UL, 0xab1c5ed5UL, 0xd807aa98UL, 0x12835b01UL, 0x243185beUL, 0x550c7dc3UL,
        0x72be5d74UL, 0x80deb1feUL, 0x9bdc06a7UL, 0xc19bf174UL, 0xe49b69c1UL, 0xefbe4786UL,
        0x0fc19dc6UL, 0x240ca1ccUL, 0x2de92c6fUL, 0x4a7484aaUL, 0x5cb0a9dcUL, 0x76f988daUL,
        0x983e5152UL, 0xa831c66dUL, 0xb00327c8UL, 0xbf597fc7UL, 0xc6e00bf3UL, 0xd5a79147UL,
        0x06ca6351UL, 0x14292967UL, 0x27b70a85UL, 0x2e1b2138UL, 0x4d2c6dfcUL, 0x53380d13UL,
        0x650a7354UL, 0x766a0abbUL, 0x81c2c92eUL, 0x92722c85UL, 0xa2bfe8a1UL, 0xa81a664bUL,
        0xc24b8b70UL, 0xc76c51a3UL, 0xd192e819UL, 0xd6990624UL, 0xf40e3585UL, 0x106aa070UL,
        0x19a4c116UL, 0x1e376c08UL, 0x2748774cUL, 0x34b0bcb5UL, 0x391c0cb3UL, 0x4ed8aa4aUL,
        0x5b9cca4fUL, 0x682e6ff3UL, 0x748f82eeUL, 0x78a5636fUL, 0x84c87814UL, 0x8cc70208UL,
        0x90befffaUL, 0xa4506cebUL, 0xbef9a3f7UL, 0xc67178f2UL}};
    uint32_t w[64], a, b, c, d, e, f, g, hh, t1, t2;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (i = 16; i < 64; i++)
        w[i] = w[i - 16] + (sha256_rotr(w[i - 15], 7) ^ sha256_rotr(w[i - 15], 18) ^ (w[i - 15] >> 3))
             + w[i - 7] + (sha256_rotr(w[i - 2], 17) ^ sha256_rotr(w[i - 2], 19) ^ (w[i - 2] >> 10));
    a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; hh = h[7];
    for (i = 0; i < 64; i++) {{
        t1 = hh + (sha256_rotr(e, 6) ^ sha256_rotr(e, 11) ^ sha256_rotr(e, 25))
           + ((e & f) ^ (~e & g)) + k[i] + w[i];
        t2 = (sha256_rotr(a, 2) ^ sha256_rotr(a, 13) ^ sha256_rotr(a, 22))
           + ((a & b) ^ (a & c) ^ (b & c));
        hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }}
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}}

static void cnn2mlp_sha256(const unsigned char *data, size_t n, unsigned char out[32])
{{
    uint32_t h[8] = {{0x6a09e667UL, 0xbb67ae85UL, 0x3c6ef372UL, 0xa54ff53aUL,
                     0x510e527fUL, 0x9b05688cUL, 0x1f83d9abUL, 0x5be0cd19UL}};
    unsigned char tail[128];
    size_t i, rest = n % 64, tail_bytes = rest < 56 ? 64 : 128;
    unsigned long long bits = (unsigned long long)n * 8ULL;
    for (i = 0; i + 64 <= n; i += 64)
        sha256_block(h, data + i);
    memset(tail, 0, sizeof tail);
    memcpy(tail, data + (n - rest), rest);
    tail[rest] = 0x80;
    for (i = 0; i < 8; i++)
        tail[tail_bytes - 1 - i] = (unsigned char)(bits >> (8 * i));
    sha256_block(h, tail);
    if (tail_bytes == 128) sha256_block(h, tail + 64);
    for (i = 0; i < 32; i++)
        out[i] = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
}}

"""

INIT_EXTERNAL = SHA256 + """static unsigned char *blob;
static char *path_copy;  /* the path init read, for a second call */
static int ready;

int {prefix}_init(const char *weights_path)
{{
    static const unsigned char expected[32] = {{{digest}}};
    unsigned char got[32];
    FILE *f;
    size_t n = {size}UL;
    if (ready) return weights_path && strcmp(path_copy, weights_path) == 0 ? 0 : -4;
    if (!weights_path) return -1;
    f = fopen(weights_path, "rb");
    if (!f) return -1;
    blob = (unsigned char *)malloc(n + 1);
    if (!blob) {{ fclose(f); return -2; }}
    /* one byte more than expected: a longer file is not this model's */
    if (fread(blob, 1, n + 1, f) != n || memcmp(blob, "{magic}", 8) != 0) {{
        fclose(f); free(blob); blob = NULL; return -3;
    }}
    fclose(f);
    /* the SHA-256 of the bytes read (not of the file again: nothing can change in between) */
    cnn2mlp_sha256(blob, n, got);
    if (memcmp(got, expected, 32) != 0) {{ free(blob); blob = NULL; return -3; }}
{assignments}
    path_copy = (char *)malloc(strlen(weights_path) + 1);
    if (!path_copy) {{ free(blob); blob = NULL; return -2; }}
    strcpy(path_copy, weights_path);
    ready = 1;
    return 0;
}}
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

size_t {prefix}_work_size(int batch)
{{
    return batch <= {samples} / 4 ? (size_t)2 * {width} : (size_t)2 * {width} * {samples};
}}

int {prefix}_predict_with(const {real} *in, {real} *out, int batch, {real} *work)
{{
    {real} *a = work, *b;
    size_t s, i;
    int l, n;
{ready}    if (batch < 0) return -3;
    b = work + {prefix}_work_size(batch) / 2;  /* two buffers, each half the work */
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
{self_test}"""

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

SELF_TEST_DOC = """/* Runs the {n} inputs embedded at compile time (drawn from the model's input domain) and
   compares with what the original model computed for them (its own runtime, as --check
   does): returns the largest |got - expected| over the largest |expected| of the vectors.
   0 when exact; about 1e-6 is float rounding; above 1e-4 the build does not compute what
   the original does. Never negative: a NaN or infinite output, a failing predict (init
   not called) or any other failure returns +INFINITY, so `if (!(e <= 1e-4f))` catches
   every failure. Not reentrant (a static work buffer of {prefix}_work_size(1) values). */
float {prefix}_self_test(void);
"""

SELF_TEST = """
static const {real} self_test_in[{n} * {upper}_INPUT_SIZE] = {{
{inputs}
}};
static const {real} self_test_out[{n} * {upper}_OUTPUT_SIZE] = {{
{outputs}
}};

float {prefix}_self_test(void)
{{
    static {real} work[{upper}_WORK_FLOATS(1)];
    {real} out[{upper}_OUTPUT_SIZE];
    {real} worst = 0, d;  /* in the model's type: no double arithmetic on a float-only FPU */
    int s, i;
    for (s = 0; s < {n}; s++) {{
        if ({prefix}_predict_with(self_test_in + (size_t)s * {upper}_INPUT_SIZE, out, 1, work) != 0)
            return (float)INFINITY;
{softmax}        for (i = 0; i < {upper}_OUTPUT_SIZE; i++) {{
            d = fabs(out[i] - self_test_out[(size_t)s * {upper}_OUTPUT_SIZE + i]);
            if (!(d - d == 0)) return (float)INFINITY;  /* NaN or infinite */
            if (d > worst) worst = d;
        }}
    }}
    return (float)(worst / ({real}){scale});
}}
"""

#: the reference gave probabilities: the MLP's logits through a softmax first
SOFTMAX = """        {{
            {real} top = out[0], sum = 0;
            for (i = 1; i < {upper}_OUTPUT_SIZE; i++) if (out[i] > top) top = out[i];
            for (i = 0; i < {upper}_OUTPUT_SIZE; i++) {{ out[i] = exp(out[i] - top); sum += out[i]; }}
            for (i = 0; i < {upper}_OUTPUT_SIZE; i++) out[i] /= sum;
        }}
"""
