"""Model files as the firmware runtime runs them: the model blob (:func:`pack_model`, in the layout of
:mod:`insitu.soc.modelblob`) and the peripherals that can run its layers (:func:`model_accelerators`)."""

import numpy as np

from ..golden import escalate, fft, mlg, network, qgp, smartdeal
from ..golden.errors import InputError
from ..soc.modelblob import (FLAGS, HEADER, IN_SHIFT_NONE, KINDS, LAYER_FIELDS, MAGIC, METHODS, POOL_MODES,
                             RUNTIME_METHODS, VERSION, pack, payload_offset)

__all__ = ["pack_model", "model_accelerators"]


def _dims(shape):
    """``(c, h, w)`` of an activation shape (a feature vector is ``(n, 1, 1)``)."""
    return (shape[0], 1, 1) if len(shape) == 1 else tuple(shape)


def _weights(layer, rec):
    """The stored weights of ``layer`` as the runtime reads them (bytes), its record fields filled, and the
    working memory (32-bit words) the interpreter needs for it; see :mod:`insitu.soc.modelblob`. Returns
    ``(weights, extra, scratch)``; ``extra`` goes at ``x_off`` (or None)."""
    codes = layer.data.get("codes")
    if layer.method == "qgp":
        rec["aux"] = qgp.code_width(layer.attrs["k"]) - 1
        return np.asarray(codes).astype(np.uint8).tobytes(), None, 0
    if layer.method == "dense":
        codes = np.asarray(codes)
        if codes.min(initial=0) < -128 or codes.max(initial=0) > 127:
            raise InputError(f"Layer {layer.name}: dense codes must be int8")
        return codes.astype(np.int8).tobytes(), None, 0
    c_in = rec["c_in"]
    kk = rec["k"] * rec["k"]
    image = bytes(np.asarray(layer.data["image"]).astype(np.uint8)) if "image" in layer.data else None
    if layer.method == "smartdeal":
        sd = smartdeal.unpack(image)
        payload, bits = smartdeal.bit_stream(image)
        rows = -(-c_in * kk // 3)
        rec.update(aux=bits, p0=sd.group_size, p1=sd.basis_bits | sd.exp_bits << 8, p2=rows)
        return payload, None, 9 * (rec["c_out"] // sd.group_size) + 3 * rows
    if layer.method == "mlg":
        g = mlg.unpack(image)
        payload, _ = mlg.bit_stream(image)
        rec.update(k=g.k, p0=g.bo | g.bi << 16, p1=g.bits[0] | g.bits[1] << 8 | g.bits[2] << 16)
        return payload, None, ((g.bo + 1) * g.c_in * g.k * g.k + g.bo * g.bi * g.k * g.k
                               + g.bo * rec["h_out"] * rec["w_out"])      # + the level-1 outputs (factored)
    if layer.method == "escalate":
        e = escalate.unpack(image)
        payload, _ = escalate.bit_stream(image)
        rec.update(p0=e.bases, p1=int(e.shared) | (e.mode == "pow2") << 1 | e.basis_bits << 8 | e.coef_bits << 16)
        # the basis, a stream cursor per filter and one input channel's basis maps (basis first)
        return payload, None, e.basis.size + rec["c_out"] + e.bases * rec["h_out"] * rec["w_out"]
    if layer.method == "circulant":
        c = layer.entry.decode(layer)
        if (c.act_width, c.fft_width, c.twiddle_width) != (8, 16, 16) or c.spectrum_width > 16:
            raise InputError(f"Layer {layer.name}: the firmware runtime runs circulant layers with 8-bit "
                             f"activations, 16-bit transforms and spectra of at most 16 bits")
        if (1 << 15) * int((np.abs(c.spectra.real) + np.abs(c.spectra.imag)).sum(axis=1).max()) >= 1 << 31:
            raise InputError(f"Layer {layer.name}: its spectrum products may overflow the runtime's 32-bit "
                             f"accumulators; use a narrower spectrum_width or a smaller block grid")
        k, half = c.k, c.k // 2
        blocks = np.concatenate([c.spectra.real, c.spectra.imag[..., 1:half]], axis=-1)      # (p, q, k)
        twiddles = [np.stack(fft.pair_twiddles(k, s, 16, inverse), axis=-1).ravel()
                    for inverse in (False, True) for kind, s in fft.stage_plan(k) if kind == "twiddle"]
        extra = np.concatenate(twiddles or [np.zeros(0)]).astype("<i2").tobytes()
        rec.update(aux=k.bit_length() - 1, p0=k | c.spectrum_width << 16, p1=c.mid_shift, p2=c.pre_shift)
        return blocks.astype("<i2").tobytes(), extra, (c_in // k) * (k + 2) + 2 * k
    raise InputError(f"Layer {layer.name} is {layer.method}: the firmware runtime runs "
                     f"{', '.join(RUNTIME_METHODS)} layers")


def pack_model(model):
    """The blob of ``model`` (bytes). An :class:`~insitu.golden.errors.InputError` names the first layer
    the runtime cannot run."""
    if model.formats.get("act_width") != 8:
        raise InputError(f"The firmware runtime runs 8-bit activations, not act_width "
                         f"{model.formats.get('act_width')}")
    records, payload = [], bytearray()
    offset = payload_offset(len(model.layers))
    pending_shift, int8_input, max_act, scratch = None, True, int(np.prod(model.input_shape)), 0

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
                                 f"{', '.join(RUNTIME_METHODS)} layers (compress the model first)")
            a = layer.attrs
            rec.update(method=METHODS[layer.method], k=a.get("k", 1), stride=a.get("stride", 1),
                       padding=a.get("padding", 0),
                       in_shift=IN_SHIFT_NONE if pending_shift is None else pending_shift)
            if pending_shift is not None or int8_input:
                rec["flags"] |= FLAGS["int8_input"]
            elif layer.method == "circulant":
                raise InputError(f"Layer {layer.name}: a circulant layer needs 8-bit inputs (a weight layer "
                                 f"or the model's input before it, not a sum pool)")
            weights, extra, need = _weights(layer, rec)
            rec["w_off"], rec["w_bytes"] = place(weights), len(weights)
            if extra is not None:
                rec["x_off"], rec["x_bytes"] = place(extra), len(extra)
            scratch = max(scratch, need)
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
    network.check_accumulators(model)               # the runtime's accumulators are 32-bit too
    header = dict.fromkeys(HEADER, 0)
    total = offset + len(payload)
    header.update(magic=MAGIC, version=VERSION, layers=len(model.layers), act_width=8,
                  outputs=int(np.prod(model.output_shape)), max_activation=max_act, total_bytes=total,
                  scratch_words=scratch)
    header["in_c"], header["in_h"], header["in_w"] = _dims(model.input_shape)
    return pack(header, records, payload)


def model_accelerators(model, *, parallel=2):
    """Peripherals for ``model``'s layers that the runtime can drive, named after the layers:

    * a convolution peripheral (:class:`~insitu.soc.accel.ConvAccel`) for each conv2d layer with stride 1
      and padding ``k // 2``: dense or QGP (any k > 1; ``parallel`` output channels per clock where that
      divides the layer's, else one), SmartDeal rows or MLG factors (3×3, decoded on chip);
    * for each linear layer with a multiple of 4 inputs: a :class:`~insitu.soc.accel.DenseAccel` (dense), a
      :class:`~insitu.soc.accel.CirculantAccel` (circulant), or one whose weights are decoded on chip
      (:class:`~insitu.soc.accel.SmartDealDenseAccel`, :class:`~insitu.soc.accel.MLGDenseAccel`: at most
      256 inputs and outputs)."""
    from ..soc.accel import (CirculantAccel, ConvAccel, DenseAccel, MLGConvAccel, MLGDenseAccel, SmartDealConvAccel,
                             SmartDealDenseAccel, StagedWeights)
    out = {}
    for layer in model.weight_layers:
        a = layer.attrs
        conv = layer.kind == "conv2d" and a["stride"] == 1 and a["padding"] == a["k"] // 2 and a["k"] > 1
        if conv:
            c_in, h, w = layer.in_shape
            shape = dict(c_in=c_in, c_out=a["c_out"], width=w, height=h)
        if conv and layer.method in ("dense", "qgp"):
            lanes = parallel if a["c_out"] % parallel == 0 else 1
            out[layer.name] = ConvAccel(**shape, weights=StagedWeights(layer.method, k=a["k"], parallel=lanes))
        elif conv and layer.method == "smartdeal" and a["k"] == 3:
            sd = layer.entry.decode(layer)
            out[layer.name] = SmartDealConvAccel(**shape, group_size=sd.group_size, basis_bits=sd.basis_bits,
                                                 exp_range=sd.e_max - sd.e_min,
                                                 words=len(smartdeal.row_words(sd)))
        elif conv and layer.method == "mlg" and a["k"] == 3 and max(shape["c_in"], shape["c_out"]) <= 256:
            g = layer.entry.decode(layer)
            out[layer.name] = MLGConvAccel(**shape, bi=g.bi, bo=g.bo, bits=g.bits)
        elif layer.kind == "linear" and layer.method == "dense" and layer.in_shape[0] % 4 == 0:
            m = a["features"]
            lanes = next(n for n in (4, 2, 1) if m % n == 0)
            out[layer.name] = DenseAccel(m=m, n=layer.in_shape[0], lanes=lanes)
        elif layer.kind == "linear" and layer.method == "smartdeal" and layer.in_shape[0] % 4 == 0:
            sd = layer.entry.decode(layer)
            out[layer.name] = SmartDealDenseAccel(m=a["features"], n=layer.in_shape[0], group_size=sd.group_size,
                                                  basis_bits=sd.basis_bits, exp_range=sd.e_max - sd.e_min,
                                                  words=len(smartdeal.row_words(sd)))
        elif (layer.kind == "linear" and layer.method == "mlg" and layer.in_shape[0] % 4 == 0
              and max(layer.in_shape[0], a["features"]) <= 256):
            g = layer.entry.decode(layer)
            out[layer.name] = MLGDenseAccel(m=a["features"], n=layer.in_shape[0], bi=g.bi, bo=g.bo, bits=g.bits)
        elif layer.kind == "linear" and layer.method == "circulant" and layer.in_shape[0] % 4 == 0:
            c = layer.entry.decode(layer)
            if c.k >= 4 and c.spectrum_width <= 16:
                out[layer.name] = CirculantAccel(m=a["features"], n=layer.in_shape[0], k=c.k, mid_shift=c.mid_shift,
                                                 spectrum_width=c.spectrum_width)
    return out
