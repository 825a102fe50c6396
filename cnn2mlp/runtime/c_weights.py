"""The C code's weights file: above ``STATIC_LIMIT`` bytes the weights leave the source for
``<stem>.weights`` (MAGIC, then each array 8-byte aligned), which ``<prefix>_init(path)``
reads once into memory and checks against the size and SHA-256 the source holds: the file
carries index arrays, so a file changed in any way must not get past init. The source,
being code, is trusted as any code is; the file need not be.
"""
from __future__ import annotations

import hashlib

from .c_arrays import Arrays, c_type

#: the weights file starts with this tag and the format's version
MAGIC = b"C2MW0001"


def digest(data: bytes) -> bytes:
    """The weights file's SHA-256, which the source holds and ``init`` recomputes over the
    bytes it read: a file changed in any way (damaged, another model's, or forged to make
    the code index out of bounds, since the file holds index arrays) is refused. The
    source, being code, is trusted as any code is; the file need not be."""
    return hashlib.sha256(data).digest()


def c_bytes(data: bytes) -> str:
    return ", ".join(f"0x{b:02x}" for b in data)


def external_arrays(arrays: Arrays, prefix: str) -> tuple[str, bytes]:
    """Each array's name as a pointer into the bytes init reads, and the weights file:
    MAGIC, then each array 8-byte aligned. (Names, not pointer variables that init sets:
    GCC took seconds over an init of thousands of assignments.)"""
    chunks, offset = [MAGIC], len(MAGIC)
    # the model's own name: two models' units can be linked into one program
    lines = [f"SHARED unsigned char *{prefix}_blob;  /* the weights file, read by init */"]
    for name, a in arrays.items:
        pad = (-offset) % 8
        chunks.append(b"\0" * pad)
        offset += pad
        data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()  # int8/32, floats
        lines.append(f"#define {name} ((const {c_type(a, arrays.real)} *)(const void *)"
                     f"({prefix}_blob + {offset}))")
        chunks.append(data)
        offset += len(data)
    return "\n".join(lines), b"".join(chunks)


def init_external(prefix: str, blob: bytes) -> str:
    return INIT_EXTERNAL.format(prefix=prefix, size=len(blob), digest=c_bytes(digest(blob)),
                                magic=MAGIC.decode())


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

INIT_EXTERNAL = ("#ifndef CNN2MLP_WEIGHTS_CHECKED\n" + SHA256 + "#endif\n"
                 + """static char *path_copy;  /* the path init read, for a second call */
static int ready;

int {prefix}_init(const char *weights_path)
{{
    FILE *f;
    size_t n = {size}UL;
    if (ready) return weights_path && strcmp(path_copy, weights_path) == 0 ? 0 : -4;
    if (!weights_path) return -1;
    f = fopen(weights_path, "rb");
    if (!f) return -1;
    {prefix}_blob = (unsigned char *)malloc(n + 1);
    if (!{prefix}_blob) {{ fclose(f); return -2; }}
    /* one byte more than expected: a longer file is not this model's */
    if (fread({prefix}_blob, 1, n + 1, f) != n || memcmp({prefix}_blob, "{magic}", 8) != 0) {{
        fclose(f); free({prefix}_blob); {prefix}_blob = NULL; return -3;
    }}
    fclose(f);
#ifndef CNN2MLP_WEIGHTS_CHECKED  /* defined by cnn2mlp's c engine, which checks its cache */
    {{
        /* the SHA-256 of the bytes read (not of the file again: nothing can change in
           between) */
        static const unsigned char expected[32] = {{{digest}}};
        unsigned char got[32];
        cnn2mlp_sha256({prefix}_blob, n, got);
        if (memcmp(got, expected, 32) != 0) {{ free({prefix}_blob); {prefix}_blob = NULL; return -3; }}
    }}
#endif
    path_copy = (char *)malloc(strlen(weights_path) + 1);
    if (!path_copy) {{ free({prefix}_blob); {prefix}_blob = NULL; return -2; }}
    strcpy(path_copy, weights_path);
    ready = 1;
    return 0;
}}
""")
