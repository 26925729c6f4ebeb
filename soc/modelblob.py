"""The model blob: a model file as data for the firmware's layer interpreter (``interp.c``).

The blob is little-endian 32-bit words: a header of :data:`HEADER` fields, one record of
:data:`LAYER_FIELDS` per layer, then each weight layer's stored weights and biases at the offsets its
record gives (from the blob's start, 4-byte aligned). Weights stay in the method's stored form; a bit
stream is stored as 32-bit words, bit ``n`` of the stream in bit ``n mod 32`` of word ``n // 32``, as the
method's packed image holds it (:mod:`insitu.golden.packed`: LSB first), without its header and CRC:

* ``dense``: int8, ``c_out × c_in × k × k`` or ``out × in``.
* ``qgp``: one code byte per kernel (``c_out × c_in``: the kept tap's index and a sign bit above it, as
  :func:`insitu.golden.qgp.pack`); ``aux`` is the index width.
* ``smartdeal``: the packed bit stream (basis codes, then per row a skip bit and the coefficient codes, as
  :func:`insitu.golden.smartdeal.pack`); ``aux`` its length in bits, ``p0`` group size, ``p1`` basis
  bits | exponent bits << 8, ``p2`` rows per filter (the flattened filter padded to a multiple of 3, over 3).
* ``mlg``: the packed codes of ``basis``, ``u`` and ``v`` (:func:`insitu.golden.mlg.pack`); ``k`` is 1 for
  a linear layer, ``p0`` ``bo | bi << 16``, ``p1`` the three code widths, one byte each.
* ``escalate``: the packed bit stream (basis codes, then per coefficient a zero flag and its code, as
  :func:`insitu.golden.escalate.pack`); ``p0`` basis kernels per channel, ``p1`` shared | pow2 << 1 |
  basis bits << 8 | coefficient bits or levels << 16.
* ``circulant``: per block ``(i, j)`` of the ``p × q`` grid, the Hermitian half spectrum as ``k`` int16
  (real parts of bins ``0 … k/2``, then imaginary parts of bins ``1 … k/2 − 1``); at ``x_off`` the
  twiddles of the forward then the inverse transform, int16 (re, im) pairs, one per position of each
  twiddle stage of :func:`insitu.golden.fft.stage_plan`; ``aux`` ``log2 k``, ``p0`` ``k | spectrum width
  << 16``, ``p1`` ``mid_shift``, ``p2`` the input's pre-shift. Data and twiddles are 16-bit (:func:`insitu.golden.circulant.matvec`).

Biases are int32. A weight layer's ``in_shift`` is the shift of the weight layer before it: its input is
requantised with it first, as :func:`insitu.golden.network.forward_int` does. ``w_bytes`` and ``x_bytes``
bound what the decoders read. ``scratch_words`` (header) is the largest working memory a layer needs
beyond the two activation buffers (decoded filters, generated factors, spectra).

The header for the firmware (``modelblob.h``) is generated from the same tables (:func:`c_header`); a
model file becomes a blob in :func:`insitu.tools.blob.pack_model`.
"""

import struct

__all__ = ["pack", "payload_offset", "working_bytes", "c_header", "HEADER", "LAYER_FIELDS", "KINDS", "METHODS", "RUNTIME_METHODS",
           "MAGIC", "VERSION", "FLAGS", "POOL_MODES", "IN_SHIFT_NONE"]

MAGIC = 0x4D534E49                          # "INSM"
VERSION = 2                                 # 2: the compressed methods, scratch memory
HEADER = ("magic", "version", "layers", "in_c", "in_h", "in_w", "act_width", "outputs", "max_activation",
          "total_bytes", "scratch_words", "reserved1", "reserved2", "reserved3", "reserved4", "reserved5")
LAYER_FIELDS = ("kind", "method", "c_in", "h_in", "w_in", "c_out", "h_out", "w_out", "k", "stride", "padding",
                "in_shift", "flags", "w_off", "b_off", "aux", "w_bytes", "x_off", "x_bytes", "p0", "p1", "p2")
KINDS = {"conv2d": 1, "linear": 2, "relu": 3, "pool": 4, "flatten": 5}
METHODS = {None: 0, "dense": 1, "qgp": 2, "smartdeal": 3, "mlg": 4, "escalate": 5, "circulant": 6}
#: the methods the interpreter runs; the others (float) are refused by name
RUNTIME_METHODS = ("dense", "qgp", "smartdeal", "mlg", "escalate", "circulant")
FLAGS = {"bias": 1, "int8_input": 2}
POOL_MODES = {"sum": 0, "avg": 0, "max": 1}     # the integer path sums for avg (the shift scales)
IN_SHIFT_NONE = 0xFFFFFFFF


def pack(header, records, payload):
    """The blob's bytes: ``header`` (field → value of :data:`HEADER`, missing ones 0), ``records`` (one
    dict of :data:`LAYER_FIELDS` per layer), then ``payload`` (weights and biases, at the offsets the records
    give)."""
    words = [header.get(f, 0) for f in HEADER] + [r.get(f, 0) for r in records for f in LAYER_FIELDS]
    return struct.pack(f"<{len(words)}I", *words) + bytes(payload)


def payload_offset(layers):
    """Where the payload starts in a blob of ``layers`` layers."""
    return 4 * (len(HEADER) + len(LAYER_FIELDS) * layers)


def working_bytes(blob):
    """The RAM (bytes) the runtime needs to run ``blob`` besides the blob itself: two activation buffers
    and the compressed layers' scratch memory."""
    words = struct.unpack_from(f"<{len(HEADER)}I", blob)
    return 4 * (2 * words[HEADER.index("max_activation")] + words[HEADER.index("scratch_words")])


def c_header():
    """``modelblob.h``: the blob's layout for the firmware."""
    out = ["/* Generated from insitu.soc.modelblob: do not edit. */", "#ifndef INSITU_MODELBLOB_H",
           "#define INSITU_MODELBLOB_H", "#include <stdint.h>", f"#define BLOB_MAGIC_VALUE {MAGIC:#x}u",
           f"#define BLOB_VERSION_VALUE {VERSION}u", f"#define BLOB_HEADER_WORDS {len(HEADER)}",
           f"#define BLOB_LAYER_WORDS {len(LAYER_FIELDS)}", f"#define IN_SHIFT_NONE {IN_SHIFT_NONE:#x}u"]
    out += [f"#define BLOB_{name.upper()} {n}" for n, name in enumerate(HEADER) if not name.startswith("reserved")]
    out += [f"#define KIND_{name.upper()} {code}" for name, code in KINDS.items()]
    out += [f"#define METHOD_{(name or 'none').upper()} {code}" for name, code in METHODS.items()]
    out += [f"#define FLAG_{name.upper()} {bit}" for name, bit in FLAGS.items()]
    out += ["#define POOL_SUM 0", "#define POOL_MAX 1"]
    out += ["struct blob_layer {", *[f"    uint32_t {f};" for f in LAYER_FIELDS], "};", "#endif", ""]
    return "\n".join(out)
