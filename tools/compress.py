"""Compress a float digits model with one method (NumPy only): which layers each method takes, and how.

=========== ============================================ =========================================
method      compressed layers                            settings
=========== ============================================ =========================================
dense       all (int8 weights, one scale per layer)      –
qgp         conv1, conv2 (one ±1 tap per kernel)         one scale per layer
circulant   fc1 (block-circulant, k = 16)                8-bit spectra
smartdeal   all (power-of-two coefficients × 3×3 basis)  one basis per layer, e in [−6, 1], 6-bit basis
mlg         conv2 (bi 3, bo 4), fc1 as 1×1 (bi 1, bo 6)  bits (3, 6, 3)
=========== ============================================ =========================================

Layers a method does not take stay int8 (``dense``). Requantisation shifts are calibrated on training images.
"""

import numpy as np

from ..golden import circulant, mlg, network, qgp, smartdeal

__all__ = ["METHODS", "compress_model", "project", "float_model", "compressed_layers"]

METHODS = ("dense", "qgp", "circulant", "smartdeal", "mlg")
_TAKES = {"dense": (), "qgp": ("conv1", "conv2"), "circulant": ("fc1",),
          "smartdeal": ("conv1", "conv2", "fc1", "fc2"), "mlg": ("conv2", "fc1")}
_MLG_RANKS = {"conv2": (3, 4), "fc1": (1, 6)}


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
        c_out = shape[0]
        sd, _ = smartdeal.decompose(w, group_size=c_out, basis_bits=6, e_range=(-6, 1), threshold=0.0)
        return network.Layer(name, kind, shape, "smartdeal",
                             {"image": np.frombuffer(smartdeal.pack(sd), dtype=np.uint8)},
                             {"group_size": c_out, "basis_bits": 6, "e_range": [-6, 1]})
    if method == "mlg":
        bi, bo = _MLG_RANKS[name]
        w4 = w if w.ndim == 4 else w[:, :, None, None]
        g, _ = mlg.decompose(w4, bi, bo, bits=(3, 6, 3), iterations=30)
        return network.Layer(name, kind, shape, "mlg", {"image": np.frombuffer(mlg.pack(g), dtype=np.uint8)},
                             {"bi": bi, "bo": bo, "bits": [3, 6, 3]})
    raise ValueError(f"Unknown method {method!r}; choose one of: {', '.join(METHODS)}")


def project(name, w, method):
    """The float weights that ``method`` can represent nearest to ``w`` (for fine-tuning)."""
    kind, shape = next((k, s) for n, k, s in network.ARCH if n == name)
    layer = _layer(name, kind, shape, np.asarray(w, dtype=np.float64), method if name in _TAKES[method]
                   or method == "dense" else "dense")
    return network.float_weights(layer).reshape(shape)


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
