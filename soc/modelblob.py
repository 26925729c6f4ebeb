"""The model blob: a model file as data for the firmware's layer interpreter (``interp.c``).

The blob is little-endian 32-bit words: a header of :data:`HEADER` fields, one record of
:data:`LAYER_FIELDS` per layer, then each weight layer's stored weights and biases at the offsets its
record gives (from the blob's start, 4-byte aligned). Weights stay in the method's stored form:
``dense`` as int8 (``c_out × c_in × k × k`` or ``out × in``), ``qgp`` as one code byte per kernel
(``c_out × c_in``, the index of the kept tap and a sign bit above it, as :func:`insitu.golden.qgp.pack`).
Biases are int32. A weight layer's ``in_shift`` is the shift of the weight layer before it: its input is
requantised with it first, as :func:`insitu.golden.network.forward_int` does.

The header for the firmware (``modelblob.h``) is generated from the same tables (:func:`c_header`); a
model file becomes a blob in :func:`insitu.tools.blob.pack_model`.
"""

import struct

__all__ = ["pack", "payload_offset", "c_header", "HEADER", "LAYER_FIELDS", "KINDS", "METHODS", "RUNTIME_METHODS",
           "MAGIC", "VERSION", "FLAGS", "POOL_MODES", "IN_SHIFT_NONE"]

MAGIC = 0x4D534E49                          # "INSM"
VERSION = 1
HEADER = ("magic", "version", "layers", "in_c", "in_h", "in_w", "act_width", "outputs", "max_activation",
          "total_bytes", "reserved0", "reserved1", "reserved2", "reserved3", "reserved4", "reserved5")
LAYER_FIELDS = ("kind", "method", "c_in", "h_in", "w_in", "c_out", "h_out", "w_out", "k", "stride", "padding",
                "in_shift", "flags", "w_off", "b_off", "aux")
KINDS = {"conv2d": 1, "linear": 2, "relu": 3, "pool": 4, "flatten": 5}
METHODS = {None: 0, "dense": 1, "qgp": 2}
#: the methods the interpreter runs; the others are refused by name
RUNTIME_METHODS = ("dense", "qgp")
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
