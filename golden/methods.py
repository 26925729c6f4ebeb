"""The registry of compression methods: one entry per method, and nothing else compares method names.

An entry knows, for one weight layer (a :class:`insitu.golden.network.Layer`):

* which layer kinds (``conv2d``, ``linear``) and shapes it takes (:meth:`Method.refuses`),
  and its default settings (:meth:`Method.defaults`);
* how to compress float weights (:meth:`Method.compress`: the arrays stored in the model file and the
  parameters recorded with them) and the float weights it can represent nearest to given ones
  (:meth:`Method.project`, for fine-tuning);
* how to decode what it stored (:meth:`Method.decode`), its integer weights and their float scale
  (:meth:`Method.integer_weights`), its exact integer accumulators (:meth:`Method.accumulate`), the
  float weights it stands for (:meth:`Method.float_weights`) and its stored bits (:meth:`Method.storage_bits`).

Adding a method is one :class:`Method` subclass here, registered in :data:`METHODS`, plus its golden module.
"""

import numpy as np

from . import circulant, conv, escalate, mlg, qgp, smartdeal
from .errors import InputError

__all__ = ["Method", "METHODS", "get", "names", "conv_stride"]


def conv_stride(acc, stride):
    """A stride-``s`` convolution is the stride-1 one sampled every ``s`` pixels from the first."""
    return acc if stride == 1 else acc[..., ::stride, ::stride]


class Method:
    """A compression method (see the module docstring). Subclasses set :attr:`name`, :attr:`kinds` and
    :attr:`arrays` and override what differs from the integer-weights default."""
    name = None
    kinds = ("conv2d", "linear")
    #: Arrays a layer of this method stores in the model file.
    arrays = ()
    #: Whether the layer has an integer (dense) form; float layers and circulant ones have none.
    integer = True
    help = ""
    #: Fine-tuning schedule: (epochs, Adam learning rate).
    finetune = (30, 2e-3)

    # -- what it takes
    def defaults(self, kind, shape):
        """Default settings for a layer of ``kind`` and weight ``shape``."""
        return {}

    def refuses(self, kind, shape, settings=None):
        """Why this method cannot take the layer (one line), or None."""
        if kind not in self.kinds:
            return f"{self.name} compresses {' and '.join(self.kinds)} layers, not {kind}"
        return None

    def array_shapes(self, layer):
        """``{array: shape}`` that a stored layer of weight shape ``layer.shape`` must have (checked on load)."""
        return {}

    # -- compression
    def compress(self, w, kind, settings):
        """``(data, params)`` for float weights ``w``."""
        raise NotImplementedError

    def project(self, w, kind, settings, strength=1.0):
        """The float weights the method represents nearest to ``w`` (for fine-tuning)."""
        data, params = self.compress(w, kind, settings)
        return self.float_weights(_Stored(kind, w.shape, data, params)).reshape(w.shape)

    # -- decoding
    def decode(self, layer):
        """The method's golden layer object, or None."""
        return None

    def integer_weights(self, layer):
        """``(w_int, scale)`` in the layer's weight shape, or ``(None, None)``."""
        raise NotImplementedError

    def float_weights(self, layer):
        w, scale = self.integer_weights(layer)
        return w * scale

    def output_scale(self, layer):
        """The float value of one accumulator LSB per unit of input LSB."""
        return self.integer_weights(layer)[1]

    def accumulate(self, layer, x, act_width=8):
        """Exact integer accumulators (no bias) for a batch ``x`` of ``act_width``-bit activations:
        ``(n, c, h, w)`` or ``(n, features)``."""
        w, _ = self.integer_weights(layer)
        if layer.kind == "linear":
            return x @ w.T
        a = layer.attrs
        return conv_stride(np.stack([conv.conv2d(img, w, a["padding"], act_width=act_width) for img in x]),
                           a["stride"])

    def storage_bits(self, layer):
        raise NotImplementedError

    def weight_bound(self, layer):
        """The largest sum of integer weight magnitudes over one output (for the accumulator width)."""
        w, _ = self.integer_weights(layer)
        return int(np.abs(w.reshape(len(w), -1)).sum(axis=1).max())


class _Stored:
    """A layer-like view of freshly compressed arrays (for :meth:`Method.project`)."""
    def __init__(self, kind, shape, data, params):
        self.kind, self.shape, self.data, self.params = kind, tuple(shape), data, params
        self.name = "layer"


class Float(Method):
    name, arrays, integer = "float", ("weights",), False
    help = "float32 weights (the trained model; no integer path)"

    def array_shapes(self, layer):
        return {"weights": layer.shape}

    def compress(self, w, kind, settings):
        return {"weights": np.asarray(w, dtype=np.float32)}, {}

    def integer_weights(self, layer):
        return None, None

    def float_weights(self, layer):
        return np.asarray(layer.data["weights"], dtype=np.float64)

    def storage_bits(self, layer):
        return layer.data["weights"].size * 32

    def accumulate(self, layer, x, act_width=8):
        raise InputError(f"Layer {layer.name} is float: compress the model before integer inference")


class Dense(Method):
    name, arrays = "dense", ("codes", "scale")
    help = "int8 weights, one scale per layer (the baseline)"

    def array_shapes(self, layer):
        return {"codes": layer.shape, "scale": ()}

    def compress(self, w, kind, settings):
        scale = max(float(np.abs(w).max()), 1e-12) / 127
        codes = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        return {"codes": codes, "scale": np.float64(scale)}, {}

    def integer_weights(self, layer):
        return layer.data["codes"].astype(np.int64), float(layer.data["scale"])

    def storage_bits(self, layer):
        return layer.data["codes"].size * 8      # the scale is folded into the calibrated shifts


class QGP(Method):
    name, arrays, kinds = "qgp", ("codes", "scale"), ("conv2d",)
    help = "one +-1 tap per k x k kernel (Quantized Guided Pruning), convolutions"
    finetune = (60, 2e-3)              # pruned progressively: 3 taps, 1 tap, then binarised

    def refuses(self, kind, shape, settings=None):
        return super().refuses(kind, shape) or (
            "qgp needs kernels of more than one tap (k > 1)" if shape[2] == 1 else None)

    def array_shapes(self, layer):
        return {"codes": layer.shape[:2], "scale": ()}

    def compress(self, w, kind, settings):
        g = qgp.compress(w)
        return {"codes": qgp.pack(g).astype(np.uint8), "scale": np.float64(g.scale.mean())}, {}

    def decode(self, layer):
        return qgp.unpack(layer.data["codes"], layer.shape[2])

    def integer_weights(self, layer):
        return qgp.expand(self.decode(layer)), float(layer.data["scale"])

    def accumulate(self, layer, x, act_width=8):
        g, a = self.decode(layer), layer.attrs
        return conv_stride(np.stack([qgp.muxconv2d(img, g, a["padding"], act_width=act_width) for img in x]),
                           a["stride"])

    def storage_bits(self, layer):
        return layer.data["codes"].size * qgp.code_width(layer.shape[2])


class Circulant(Method):
    name, arrays, kinds, integer = "circulant", ("vectors", "spectra_re", "spectra_im"), ("linear",), False
    help = "block-circulant fully connected layers (CirCNN), FFT-domain weights"
    finetune = (100, 3e-3)             # the projection loses most at first and needs the longest recovery

    def defaults(self, kind, shape):
        return {"k": 16, "spectrum_width": 8}

    def refuses(self, kind, shape, settings=None):
        k = (settings or self.defaults(kind, shape))["k"]
        return super().refuses(kind, shape) or (
            f"circulant block size {k} must divide both dimensions of the {shape[0]}x{shape[1]} matrix"
            if shape[0] % k or shape[1] % k else None)

    def compress(self, w, kind, settings):
        c = circulant.compress(w, settings["k"], spectrum_width=settings["spectrum_width"])
        return ({"vectors": c.vectors, "spectra_re": c.spectra.real.astype(np.int64),
                 "spectra_im": c.spectra.imag.astype(np.int64)},
                {"k": settings["k"], "spectrum_width": settings["spectrum_width"],
                 "spectrum_shift": int(c.spectrum_shift), "mid_shift": int(c.mid_shift)})

    def decode(self, layer):
        d, p = layer.data, layer.params
        return circulant.CirculantLayer(vectors=d["vectors"], spectra=d["spectra_re"] + 1j * d["spectra_im"],
                                        spectrum_shift=int(p["spectrum_shift"]), mid_shift=int(p["mid_shift"]),
                                        k=int(p["k"]), spectrum_width=int(p["spectrum_width"]))

    def integer_weights(self, layer):
        return None, None

    def float_weights(self, layer):
        return circulant.expand_quantised(self.decode(layer))

    def output_scale(self, layer):
        return circulant.output_scale(self.decode(layer))

    def accumulate(self, layer, x, act_width=8):
        return circulant.matvec(self.decode(layer), x)

    def storage_bits(self, layer):
        return circulant.storage_bits(self.decode(layer))

    def weight_bound(self, layer):
        return 1 << (self.decode(layer).fft_width - 1)       # matvec's outputs are fft_width-bit


class SmartDeal(Method):
    name, arrays = "smartdeal", ("image",)
    help = "sparse power-of-two coefficients x a small basis (shift-and-add)"
    finetune = (60, 5e-3)              # trained through its factors (tools/qat.py)
    #: Default fraction of non-zero coefficients per kind (fully connected layers are more redundant).
    DENSITY = {"conv2d": 0.25, "linear": 0.08}

    def defaults(self, kind, shape):
        group = max(g for g in range(1, 17) if shape[0] % g == 0)       # filters sharing one 3×3 basis
        return {"group_size": group, "basis_bits": 6, "e_range": [-6, 1], "density": self.DENSITY[kind]}

    def _decompose(self, w, settings, strength=1.0):
        density = 1.0 - strength * (1.0 - settings["density"])
        sd, _ = smartdeal.decompose(w, group_size=settings["group_size"], basis_bits=settings["basis_bits"],
                                    e_range=tuple(settings["e_range"]), density=density)
        return sd

    def compress(self, w, kind, settings):
        sd = self._decompose(w, settings)
        return {"image": np.frombuffer(smartdeal.pack(sd), dtype=np.uint8)}, dict(settings)

    def project(self, w, kind, settings, strength=1.0):
        sd = self._decompose(np.asarray(w, dtype=np.float64), settings, strength)
        return smartdeal.reconstruct(sd) * sd.scale

    def decode(self, layer):
        return smartdeal.unpack(layer.data["image"].tobytes())

    def integer_weights(self, layer):
        sd = self.decode(layer)
        return smartdeal.reconstruct(sd).reshape(layer.shape), sd.scale

    def storage_bits(self, layer):
        return layer.data["image"].size * 8


class MLG(Method):
    name, arrays = "mlg", ("image",)
    help = "weights generated on chip from low-rank quantised factors (multi-level in-situ generation)"
    finetune = (60, 5e-3)              # trained through its factors (tools/qat.py)
    #: Default ranks (bi, bo) per kind; fully connected layers are factored as 1×1 kernels.
    RANKS = {"conv2d": (3, 8), "linear": (1, 6)}

    @staticmethod
    def _view(w):
        return w if w.ndim == 4 else w[:, :, None, None]

    def defaults(self, kind, shape):
        c_out, c_in = shape[:2]
        kk = shape[2] * shape[3] if kind == "conv2d" else 1
        bi, bo = self.RANKS[kind]
        return {"bi": min(bi, c_in, kk), "bo": min(bo, c_out, c_in * kk), "bits": [3, 6, 3]}

    def _decompose(self, w, settings, iterations):
        g, _ = mlg.decompose(self._view(np.asarray(w, dtype=np.float64)), settings["bi"], settings["bo"],
                             bits=tuple(settings["bits"]), iterations=iterations)
        return g

    def compress(self, w, kind, settings):
        g = self._decompose(w, settings, 30)
        return {"image": np.frombuffer(mlg.pack(g), dtype=np.uint8)}, dict(settings)

    def project(self, w, kind, settings, strength=1.0):
        return mlg.dequantize(self._decompose(w, settings, 10)).reshape(np.shape(w))

    def decode(self, layer):
        return mlg.unpack(layer.data["image"].tobytes())

    def integer_weights(self, layer):
        g = self.decode(layer)
        return mlg.generate(g).reshape(layer.shape), g.scale

    def storage_bits(self, layer):
        return layer.data["image"].size * 8


class Escalate(Method):
    name, arrays, kinds = "escalate", ("image",), ("conv2d",)
    help = "basis-first decomposed convolution (ESCALATE): a few basis kernels, sparse power-of-two coefficients"
    finetune = (60, 5e-3)              # trained through its factors (tools/qat.py)

    def defaults(self, kind, shape):
        if kind != "conv2d":
            return {}
        return {"bases": min(2, shape[2] * shape[3]), "shared": True, "basis_bits": 8, "mode": "pow2",
                "coef_bits": 4, "density": 0.3}

    def refuses(self, kind, shape, settings=None):
        return super().refuses(kind, shape) or (
            "escalate needs kernels of more than one tap (k > 1)" if shape[2] == 1 else None)

    def _decompose(self, w, s):
        return escalate.decompose(w, s["bases"], shared=s["shared"], basis_bits=s["basis_bits"], mode=s["mode"],
                                  coef_bits=s["coef_bits"], density=s["density"])[0]

    def compress(self, w, kind, settings):
        return {"image": np.frombuffer(escalate.pack(self._decompose(w, settings)), dtype=np.uint8)}, dict(settings)

    def project(self, w, kind, settings, strength=1.0):
        s = dict(settings, density=1.0 - strength * (1.0 - settings["density"]))
        e = self._decompose(np.asarray(w, dtype=np.float64), s)
        return escalate.weights(e) * e.scale

    def decode(self, layer):
        return escalate.unpack(layer.data["image"].tobytes())

    def integer_weights(self, layer):
        e = self.decode(layer)
        return escalate.weights(e), e.scale

    def accumulate(self, layer, x, act_width=8):
        e, a = self.decode(layer), layer.attrs          # basis first: the contract the hardware follows
        return conv_stride(np.stack([escalate.conv2d(img, e, a["padding"], act_width=act_width) for img in x]),
                           a["stride"])

    def storage_bits(self, layer):
        return layer.data["image"].size * 8


#: Every method, by name.
METHODS = {m.name: m for m in (Float(), Dense(), QGP(), Circulant(), SmartDeal(), MLG(), Escalate())}


def names(*, compressed=False):
    """Method names (``compressed``: without ``float``)."""
    return tuple(n for n in METHODS if not (compressed and n == "float"))


def get(name):
    """The registry entry of ``name``; a ValueError lists the methods otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise InputError(f"Unknown method {name!r}; choose one of: {', '.join(METHODS)}") from None
