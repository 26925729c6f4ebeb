"""Whole-network integer inference of a compressed digits model, layer by layer.

The network (:data:`ARCH`) is small enough for an iCE40UP5K: ``conv1`` 1→8 3×3, ``conv2`` 8→16 3×3, a 2×2
sum pool (in both paths), ``fc1`` 256→64, ``fc2`` 64→10, ReLU after every layer but the last, no biases. Each layer is stored
by one method:

* ``dense``: int8 weights, one float scale;
* ``qgp``: :mod:`insitu.golden.qgp` codes (one ±1 tap per kernel), one scale per layer;
* ``circulant``: :mod:`insitu.golden.circulant` spectra (fully connected layers);
* ``smartdeal``: a :func:`insitu.golden.smartdeal.pack` image;
* ``mlg``: a :func:`insitu.golden.mlg.pack` image (``fc1`` as a (64, 16, 4, 4) kernel over the pooled maps).

Integer path: the input is ``pixel · 7`` (0…112). Every layer computes exact integer accumulators with its
method's golden function (:func:`~insitu.golden.qgp.muxconv2d`, :func:`~insitu.golden.circulant.matvec`,
:func:`~insitu.golden.conv.conv2d` or a matrix product on the reconstructed/generated integer weights),
then ReLU and :func:`~insitu.golden.fixed.requantize` by the layer's ``shift`` to 8 bits. The pool sums 2×2
windows before ``conv2``'s shift. ``fc2`` returns its accumulators: the class scores.

Float path (:func:`forward_float`): the same layers on the dequantised weights in float64, no activation
quantisation: the reference the integer model must track.
"""

from dataclasses import dataclass, field

import numpy as np

from . import circulant, conv, fixed, mlg, qgp, smartdeal

__all__ = ["ARCH", "Layer", "Model", "INPUT_GAIN", "ACT_WIDTH", "forward_int", "forward_float", "predict",
           "integer_weights", "float_weights", "layer_storage_bits", "accuracy", "calibrate_shifts",
           "digits_split"]

#: (name, kind, weight shape). Convolutions are 3×3, padding 1.
ARCH = (
    ("conv1", "conv", (8, 1, 3, 3)),
    ("conv2", "conv", (16, 8, 3, 3)),
    ("fc1", "fc", (64, 256)),
    ("fc2", "fc", (10, 64)),
)
INPUT_GAIN = 7          # integer input = pixel (0..16) · 7
ACT_WIDTH = 8
METHODS = ("float", "dense", "qgp", "circulant", "smartdeal", "mlg")


def digits_split():
    """scikit-learn's bundled digits, split 80/20 with ``train_test_split(random_state=0, stratify=y)``.

    Returns ``(x_train, y_train, x_test, y_test)``; images are pixel values 0…16, shaped ``(n, 1, 8, 8)``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = digits.images.astype(np.int64)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, digits.target, test_size=0.2, random_state=0, stratify=digits.target)
    return xtr, ytr, xte, yte


@dataclass
class Layer:
    """One layer: its method and what that method stores.

    ``data`` holds the method's arrays: ``weights`` (float, ``float``/any), ``codes`` + ``scale``
    (``dense``: int8 weights; ``qgp``: packed codes), ``spectra`` + ``vectors`` + shifts (``circulant``),
    ``image`` (uint8 packed bytes: ``smartdeal``/``mlg``). ``shift`` is the requantisation shift after it.
    """
    name: str
    kind: str
    shape: tuple
    method: str
    data: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    shift: int = 0


@dataclass
class Model:
    layers: list
    meta: dict = field(default_factory=dict)

    def layer(self, name):
        return next(layer for layer in self.layers if layer.name == name)


# ----------------------------------------------------------------------------------------------- weights

def _circulant_layer(layer):
    d = layer.data
    return circulant.CirculantLayer(vectors=d["vectors"], spectra=d["spectra_re"] + 1j * d["spectra_im"],
                                    spectrum_shift=int(layer.params["spectrum_shift"]),
                                    mid_shift=int(layer.params["mid_shift"]), k=int(layer.params["k"]),
                                    spectrum_width=int(layer.params["spectrum_width"]))


def _method_layer(layer):
    """The method's golden layer object (QGPLayer, SmartDealLayer, MLGLayer, CirculantLayer)."""
    if layer.method == "qgp":
        return qgp.unpack(layer.data["codes"], 3)
    if layer.method == "smartdeal":
        return smartdeal.unpack(layer.data["image"].tobytes())
    if layer.method == "mlg":
        return mlg.unpack(layer.data["image"].tobytes())
    if layer.method == "circulant":
        return _circulant_layer(layer)
    raise ValueError(f"Layer {layer.name}: method {layer.method} has no golden layer object")


def integer_weights(layer):
    """``(w_int, scale)``: integer weights in the layer's shape and the float scale they stand for
    (``None`` for circulant layers, which have no integer dense form)."""
    m = layer.method
    if m == "dense":
        return layer.data["codes"].astype(np.int64), float(layer.data["scale"])
    if m == "qgp":
        return qgp.expand(_method_layer(layer)), float(layer.data["scale"])
    if m == "smartdeal":
        sd = _method_layer(layer)
        return smartdeal.reconstruct(sd).reshape(layer.shape), sd.scale
    if m == "mlg":
        g = _method_layer(layer)
        return mlg.generate(g).reshape(layer.shape), g.scale
    return None, None


def float_weights(layer):
    """The float weights the layer stands for (dequantised)."""
    if layer.method == "float":
        return layer.data["weights"].astype(np.float64)
    if layer.method == "circulant":
        return circulant.expand_quantised(_method_layer(layer))
    w, scale = integer_weights(layer)
    return w * scale


def layer_storage_bits(layer):
    """Bits of this layer's stored weights, counted from its packed arrays."""
    m = layer.method
    if m == "float":
        return layer.data["weights"].size * 32
    if m == "dense":
        return layer.data["codes"].size * 8      # the scale is folded into the calibrated shifts
    if m == "qgp":
        return layer.data["codes"].size * qgp.code_width(3)
    if m == "circulant":
        return circulant.storage_bits(_method_layer(layer))
    return layer.data["image"].size * 8


# ----------------------------------------------------------------------------------------------- inference

def _accumulate(layer, x):
    """Exact integer accumulators of one layer for a batch ``x`` (``(n, c, h, w)`` or ``(n, features)``)."""
    if layer.kind == "conv":
        if layer.method == "qgp":
            g = _method_layer(layer)
            return np.stack([qgp.muxconv2d(img, g, 1) for img in x])
        w, _ = integer_weights(layer)
        return np.stack([conv.conv2d(img, w, 1) for img in x])
    if layer.method == "circulant":
        return circulant.matvec(_method_layer(layer), x)
    w, _ = integer_weights(layer)
    return x @ w.T


def _pool(acc):
    n, c, h, w = acc.shape
    return acc.reshape(n, c, h // 2, 2, w // 2, 2).sum(axis=(3, 5))


def forward_int(model, images, *, trace=None):
    """Class scores (integer, ``(n, 10)``) of pixel images ``(n, 1, 8, 8)`` (0…16), integer arithmetic only.

    ``trace``: a dict that receives each layer's accumulators (for calibration)."""
    x = np.asarray(images, dtype=np.int64) * INPUT_GAIN
    for n, layer in enumerate(model.layers):
        acc = _accumulate(layer, x)
        if layer.name == "conv2":
            acc = _pool(acc)
        if trace is not None:
            trace[layer.name] = acc
        if n == len(model.layers) - 1:
            return acc
        x = fixed.requantize(np.maximum(acc, 0), layer.shift, ACT_WIDTH)
        if layer.name == "conv2":
            x = x.reshape(len(x), -1)


def forward_float(model, images):
    """Class scores (float) of the dequantised weights, float activations: the reference path."""
    x = np.asarray(images, dtype=np.float64) / 16.0
    for n, layer in enumerate(model.layers):
        w = float_weights(layer)
        if layer.kind == "conv":
            x = np.stack([_conv_float(img, w) for img in x])
        else:
            x = x @ w.T
        if layer.name == "conv2":
            x = _pool(x)
        if n < len(model.layers) - 1:
            x = np.maximum(x, 0)
        if layer.name == "conv2":
            x = x.reshape(len(x), -1)
    return x


def _conv_float(img, w):
    win = conv.windows(img, 3, 1)                                   # (h, w, 9, c_in)
    return np.einsum("yxtc,oct->oyx", win, w.reshape(w.shape[0], w.shape[1], 9))


def predict(model, images, *, integer=True):
    scores = forward_int(model, images) if integer else forward_float(model, images)
    return np.argmax(scores, axis=1)


def accuracy(model, images, labels, *, integer=True):
    return float(np.mean(predict(model, images, integer=integer) == np.asarray(labels)))


def calibrate_shifts(model, images, *, percentile=99.99):
    """Choose each layer's requantisation shift on calibration images, layer by layer: the smallest shift
    that maps the ``percentile`` of the layer's positive accumulators into 8 bits."""
    for layer in model.layers[:-1]:
        layer.shift = 0
        trace = {}
        forward_int(model, images, trace=trace)
        acc = trace[layer.name]
        peak = np.percentile(acc[acc > 0], percentile) if np.any(acc > 0) else 1
        shift = 0
        while (peak + (1 << shift >> 1)) / (1 << shift) > (1 << (ACT_WIDTH - 1)) - 1:
            shift += 1
        layer.shift = shift
    return model
