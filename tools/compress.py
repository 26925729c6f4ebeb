"""Compress a float digits model with one method (NumPy only): which layers each method takes, and how.

=========== ============================================ =========================================
method      compressed layers                            settings
=========== ============================================ =========================================
dense       all (int8 weights, one scale per layer)      –
qgp         conv2 (one ±1 tap per kernel)                one scale per layer
circulant   fc1 (block-circulant, k = 16)                8-bit spectra
smartdeal   conv2, fc1 (power-of-two coefficients × basis) one basis per layer, e in [−6, 1], 6-bit
                                                         basis, densities 25 % (conv2), 6 % (fc1)
mlg         conv2 (bi 3, bo 8), fc1 as 1×1 (bi 1, bo 6)     bits (3, 6, 3)
=========== ============================================ =========================================

Layers a method does not take stay int8 (``dense``). Requantisation shifts are calibrated on training images.
QGP leaves ``conv1`` in int8: with one input channel, one tap per kernel would make each of its filters a
shifted copy of the image (72 weights, 576 bits, are not worth that).
"""

import numpy as np

from ..golden import circulant, mlg, network, qgp, smartdeal

__all__ = ["METHODS", "compress_model", "project", "float_model", "compressed_layers"]

METHODS = ("dense", "qgp", "circulant", "smartdeal", "mlg")
_TAKES = {"dense": (), "qgp": ("conv2",), "circulant": ("fc1",),
          "smartdeal": ("conv2", "fc1"), "mlg": ("conv2", "fc1")}
_SD_DENSITY = {"conv2": 0.25, "fc1": 0.08}
_SD_GROUP = {"conv2": 16, "fc1": 16}          # filters (rows of fc1) per 3×3 basis
_MLG_RANKS = {"conv2": (3, 8), "fc1": (1, 6)}


def _mlg_view(w):
    """MLG factors 4-D kernels: fully connected layers are 1×1 kernels."""
    return w if w.ndim == 4 else w[:, :, None, None]


def compressed_layers(method):
    """Names of the layers ``method`` compresses (the others are int8)."""
    return _TAKES[method]


def float_model(weights, meta=None):
    """A float model from ``{name: array}``; shapes are checked against :data:`network.ARCH`."""
    layers = []
    for name, kind, shape in network.ARCH:
        if name not in weights:
            raise ValueError(f"Float model has no weights for layer {name!r}")
        w = np.asarray(weights[name], dtype=np.float32)
        if w.shape != shape:
            raise ValueError(f"Layer {name} weights must be shaped {shape}, not {w.shape}")
        layers.append(network.Layer(name, kind, shape, "float", {"weights": w}))
    return network.Model(layers, dict(meta or {}, method="float"))


def _layer(name, kind, shape, w, method):
    """One layer compressed with ``method`` from float weights ``w``."""
    if method == "dense":
        scale = max(float(np.abs(w).max()), 1e-12) / 127
        codes = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        return network.Layer(name, kind, shape, "dense", {"codes": codes, "scale": np.float64(scale)})
    if method == "qgp":
        g = qgp.compress(w)
        return network.Layer(name, kind, shape, "qgp", {"codes": qgp.pack(g).astype(np.uint8),
                                                       "scale": np.float64(g.scale.mean())})
    if method == "circulant":
        c = circulant.compress(w, 16, spectrum_width=8)
        return network.Layer(name, kind, shape, "circulant",
                             {"vectors": c.vectors, "spectra_re": c.spectra.real.astype(np.int64),
                              "spectra_im": c.spectra.imag.astype(np.int64)},
                             {"k": 16, "spectrum_width": 8, "spectrum_shift": int(c.spectrum_shift),
                              "mid_shift": int(c.mid_shift)})
    if method == "smartdeal":
        sd = _smartdeal(name, w)
        return network.Layer(name, kind, shape, "smartdeal",
                             {"image": np.frombuffer(smartdeal.pack(sd), dtype=np.uint8)},
                             {"group_size": _SD_GROUP[name], "basis_bits": 6, "e_range": [-6, 1],
                              "density": _SD_DENSITY[name]})
    if method == "mlg":
        bi, bo = _MLG_RANKS[name]
        g, _ = mlg.decompose(_mlg_view(w), bi, bo, bits=(3, 6, 3), iterations=30)
        return network.Layer(name, kind, shape, "mlg", {"image": np.frombuffer(mlg.pack(g), dtype=np.uint8)},
                             {"bi": bi, "bo": bo, "bits": [3, 6, 3]})
    raise ValueError(f"Unknown method {method!r}; choose one of: {', '.join(METHODS)}")


def _smartdeal(name, w, strength=1.0):
    density = 1.0 - strength * (1.0 - _SD_DENSITY[name])
    sd, _ = smartdeal.decompose(w, group_size=_SD_GROUP[name], basis_bits=6, e_range=(-6, 1), density=density)
    return sd


def project(name, w, method, strength=1.0):
    """The float weights that ``method`` can represent nearest to ``w`` (for fine-tuning). ``strength`` in
    [0, 1] eases SmartDeal's sparsity in: its density goes from 1 to the layer's target."""
    kind, shape = next((k, s) for n, k, s in network.ARCH if n == name)
    w = np.asarray(w, dtype=np.float64)
    method = method if name in _TAKES[method] else "dense"
    if method == "smartdeal":      # the same decomposition as _layer, without packing the image
        sd = _smartdeal(name, w, strength)
        return smartdeal.reconstruct(sd) * sd.scale
    if method == "mlg":
        bi, bo = _MLG_RANKS[name]
        g, _ = mlg.decompose(_mlg_view(w), bi, bo, bits=(3, 6, 3), iterations=10)
        return mlg.dequantize(g).reshape(shape)
    return network.float_weights(_layer(name, kind, shape, w, method)).reshape(shape)


def compress_model(model, method, calibration):
    """Compress every layer ``method`` takes (the others to int8) and calibrate the shifts."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    layers = []
    for layer in model.layers:
        w = network.float_weights(layer)
        layers.append(_layer(layer.name, layer.kind, layer.shape, w,
                             method if layer.name in _TAKES[method] else "dense"))
    meta = {k: v for k, v in model.meta.items() if k not in ("method", "accuracy")}
    out = network.Model(layers, dict(meta, method=method))
    return network.calibrate_shifts(out, calibration)
