"""The model blob: a model file as data for the firmware's layer interpreter (``interp.c``).

The blob is little-endian 32-bit words: a header of :data:`HEADER` fields, one record of
:data:`LAYER_FIELDS` per layer, then each weight layer's stored weights and biases at the offsets its
record gives (from the blob's start, 4-byte aligned). Weights stay in the method's stored form:
``dense`` as int8 (``c_out × c_in × k × k`` or ``out × in``), ``qgp`` as one code byte per kernel
(``c_out × c_in``, the index of the kept tap and a sign bit above it, as :func:`insitu.golden.qgp.pack`).
Biases are int32. A weight layer's ``in_shift`` is the shift of the weight layer before it: its input is
requantised with it first, as :func:`insitu.golden.network.forward_int` does.

The header for the firmware (``modelblob.h``) is generated from the same tables (:func:`c_header`).
"""

import struct

import numpy as np

from ..golden.errors import InputError

__all__ = ["pack_model", "c_header", "HEADER", "LAYER_FIELDS", "KINDS", "METHODS", "RUNTIME_METHODS"]

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


def _dims(shape):
    """``(c, h, w)`` of an activation shape (a feature vector is ``(n, 1, 1)``)."""
    return (shape[0], 1, 1) if len(shape) == 1 else tuple(shape)


def pack_model(model):
    """The blob of ``model`` (bytes). An :class:`~insitu.golden.errors.InputError` names the first layer
    the runtime cannot run."""
    from ..golden import qgp
    if model.formats.get("act_width") != 8:
        raise InputError(f"The firmware runtime runs 8-bit activations, not act_width "
                         f"{model.formats.get('act_width')}")
    records, payload = [], bytearray()
    offset = 4 * (len(HEADER) + len(LAYER_FIELDS) * len(model.layers))
    pending_shift, int8_input, max_act = None, True, int(np.prod(model.input_shape))

    def place(data):
        nonlocal payload
        at = offset + len(payload)
        payload += data + bytes(-len(data) % 4)
        return at

    for layer in model.layers:
        (ci, hi, wi), (co, ho, wo) = _dims(layer.in_shape), _dims(layer.out_shape)
        rec = dict.fromkeys(LAYER_FIELDS, 0)
        rec.update(kind=KINDS[layer.kind], c_in=ci, h_in=hi, w_in=wi, c_out=co, h_out=ho, w_out=wo)
        max_act = max(max_act, co * ho * wo)
        if layer.is_weight:
            if layer.method not in RUNTIME_METHODS:
                raise InputError(f"Layer {layer.name} is {layer.method}: the firmware runtime runs "
                                 f"{' and '.join(RUNTIME_METHODS)} layers so far")
            if layer.kind == "linear" and layer.method != "dense":
                raise InputError(f"Layer {layer.name}: linear layers run as dense")
            a = layer.attrs
            rec.update(method=METHODS[layer.method], k=a.get("k", 1), stride=a.get("stride", 1),
                       padding=a.get("padding", 0),
                       in_shift=IN_SHIFT_NONE if pending_shift is None else pending_shift)
            if pending_shift is not None or int8_input:
                rec["flags"] |= FLAGS["int8_input"]
            codes = np.asarray(layer.data["codes"])
            if layer.method == "qgp":
                rec["aux"] = qgp.code_width(a["k"]) - 1
                rec["w_off"] = place(codes.astype(np.uint8).tobytes())
            else:
                if codes.min(initial=0) < -128 or codes.max(initial=0) > 127:
                    raise InputError(f"Layer {layer.name}: dense codes must be int8")
                rec["w_off"] = place(codes.astype(np.int8).tobytes())
            if "bias_q" in layer.data:
                bias = np.asarray(layer.data["bias_q"], dtype=np.int64)
                if bias.min(initial=0) < -(1 << 31) or bias.max(initial=0) >= 1 << 31:
                    raise InputError(f"Layer {layer.name}: the integer bias does not fit 32 bits")
                rec["flags"] |= FLAGS["bias"]
                rec["b_off"] = place(bias.astype("<i4").tobytes())
            if not 0 <= layer.shift <= 31:
                raise InputError(f"Layer {layer.name}: shift {layer.shift} is outside [0, 31]")
            pending_shift, int8_input = int(layer.shift), False
        elif layer.kind == "pool":
            rec.update(k=layer.attrs["k"], stride=layer.attrs["stride"], aux=POOL_MODES[layer.attrs["mode"]])
            if layer.attrs["mode"] != "max":
                int8_input = False if pending_shift is None else int8_input   # a sum of inputs leaves int8
        records.append(rec)
    header = dict.fromkeys(HEADER, 0)
    total = offset + len(payload)
    header.update(magic=MAGIC, version=VERSION, layers=len(model.layers), act_width=8,
                  outputs=int(np.prod(model.output_shape)), max_activation=max_act, total_bytes=total)
    header["in_c"], header["in_h"], header["in_w"] = _dims(model.input_shape)
    words = [header[f] for f in HEADER] + [r[f] for r in records for f in LAYER_FIELDS]
    return struct.pack(f"<{len(words)}I", *words) + bytes(payload)


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
