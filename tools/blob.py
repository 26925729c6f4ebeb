"""Model files as the firmware runtime runs them: the model blob (:func:`pack_model`, in the layout of
:mod:`insitu.soc.modelblob`) and the peripherals that can run its layers (:func:`model_accelerators`)."""

import numpy as np

from ..golden import qgp
from ..golden.errors import InputError
from ..soc.modelblob import (FLAGS, HEADER, IN_SHIFT_NONE, KINDS, LAYER_FIELDS, MAGIC, METHODS, POOL_MODES,
                             RUNTIME_METHODS, VERSION, pack, payload_offset)

__all__ = ["pack_model", "model_accelerators"]


def _dims(shape):
    """``(c, h, w)`` of an activation shape (a feature vector is ``(n, 1, 1)``)."""
    return (shape[0], 1, 1) if len(shape) == 1 else tuple(shape)


def pack_model(model):
    """The blob of ``model`` (bytes). An :class:`~insitu.golden.errors.InputError` names the first layer
    the runtime cannot run."""
    if model.formats.get("act_width") != 8:
        raise InputError(f"The firmware runtime runs 8-bit activations, not act_width "
                         f"{model.formats.get('act_width')}")
    records, payload = [], bytearray()
    offset = payload_offset(len(model.layers))
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
    return pack(header, records, payload)



def model_accelerators(model, *, parallel=2):
    """Peripherals for ``model``'s layers that the runtime can drive: a convolution peripheral
    (:class:`~insitu.soc.accel.ConvAccel`, QGP or int8) for each dense or QGP conv2d layer with stride 1
    and padding ``k // 2``, a :class:`~insitu.soc.accel.DenseAccel` for each dense linear layer with a
    multiple of 4 inputs. Name → peripheral, named after the layers; conv peripherals compute ``parallel``
    output channels per clock where that divides the layer's (else one)."""
    from ..soc.accel import ConvAccel, DenseAccel, StagedWeights
    out = {}
    for layer in model.weight_layers:
        a = layer.attrs
        if layer.kind == "conv2d" and layer.method in ("dense", "qgp") and a["stride"] == 1 and \
                a["padding"] == a["k"] // 2 and a["k"] > 1:
            c_in, h, w = layer.in_shape
            lanes = parallel if a["c_out"] % parallel == 0 else 1
            out[layer.name] = ConvAccel(c_in=c_in, c_out=a["c_out"], width=w, height=h,
                                        weights=StagedWeights(layer.method, k=a["k"], parallel=lanes))
        elif layer.kind == "linear" and layer.method == "dense" and layer.in_shape[0] % 4 == 0:
            m = a["features"]
            lanes = next(n for n in (4, 2, 1) if m % n == 0)
            out[layer.name] = DenseAccel(m=m, n=layer.in_shape[0], lanes=lanes)
    return out
