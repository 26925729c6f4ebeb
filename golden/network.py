"""Whole-network inference of any described network (:mod:`insitu.golden.description`), integer and float.

A :class:`Model` is an input shape, a sequence of :class:`Layer` (kinds ``conv2d``, ``linear``, ``pool``,
``relu``, ``flatten``) and number formats. Every weight layer is stored by one method of the registry
(:mod:`insitu.golden.methods`), so a model may mix them (a QGP convolution beside a circulant fully
connected layer).

Integer path (:func:`forward_int`), the contract every hardware path must equal bit for bit:

* the input is ``floor(raw · input_gain + 0.5)`` (``raw`` as the data set gives it, e.g. digits pixels
  0…16 with gain 7), which must fit in ``act_width``-bit signed integers;
* a weight layer computes exact integer accumulators with its method (plus its bias, an integer at the
  accumulator's scale);
* the ``relu`` and ``pool`` layers after it work on those accumulators: ``max`` pools take the maximum, ``sum``
  and ``avg`` pools both sum the window (an average pool's 1/k² is folded into the next requantisation);
* at the input of the next weight layer (or ``flatten`` before it) the values are requantised by the
  previous weight layer's ``shift`` (:func:`~insitu.golden.fixed.requantize`: round half up, saturate to
  ``act_width`` bits);
* the values after the last weight layer are the class scores: accumulators, not requantised.

Float path (:func:`forward_float`): the same layers on the dequantised weights and float biases in float64,
with ``raw · input_scale`` as input and no activation quantisation: the reference the integer model tracks,
and for a float model the network as trained or imported.
"""

from dataclasses import dataclass, field

import numpy as np

from . import description, fixed, methods
from .errors import InputError

__all__ = ["Layer", "Model", "FORMATS", "forward_int", "forward_float", "predict", "integer_weights",
           "float_weights", "layer_storage_bits", "accuracy", "calibrate_shifts", "digits_split",
           "quantise_input", "activation_scales", "check_accumulators", "from_description", "ACC_WIDTH"]

#: Number formats of the digits models: float input ``pixel / 16``, integer input ``pixel · 7``.
FORMATS = {"input_scale": 1 / 16, "input_gain": 7, "act_width": 8}
#: Accumulators (and biases) of the integer path are at most this wide, as in the hardware and firmware.
ACC_WIDTH = 32


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
    """One layer.

    ``attrs`` are the description's attributes (``c_out``, ``k``, ``stride``, ``padding``, ``bias``,
    ``features``, ``mode``). A weight layer also has a ``method`` and what that method stores in ``data``
    (e.g. ``codes`` + ``scale`` for ``dense``; a float ``bias`` and, once calibrated, its integer
    ``bias_q``), the method's ``params`` and the requantisation ``shift`` after it. ``shape`` (weight shape),
    ``in_shape`` and ``out_shape`` are filled in by :class:`Model`.
    """
    name: str
    kind: str
    attrs: dict = field(default_factory=dict)
    method: str = None
    data: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    shift: int = 0
    shape: tuple = None
    in_shape: tuple = None
    out_shape: tuple = None

    @property
    def is_weight(self):
        return self.kind in description.WEIGHT_KINDS

    @property
    def entry(self):
        """This layer's method registry entry."""
        return methods.get(self.method)

    def spec(self):
        """The layer as a description entry."""
        return {"kind": self.kind, "name": self.name, **self.attrs}


class Model:
    """An input shape, layers and number formats; shapes are inferred and checked on construction
    (:class:`~insitu.golden.description.DescriptionError` otherwise)."""

    def __init__(self, input_shape, layers, meta=None, formats=None):
        self.input_shape = tuple(input_shape)
        self.layers = list(layers)
        self.meta = dict(meta or {})
        self.formats = dict(FORMATS if formats is None else formats)
        specs = description.normalise([layer.spec() for layer in self.layers])
        for layer, spec, (i, o) in zip(self.layers, specs, description.infer_shapes(self.input_shape, specs)):
            layer.attrs = {k: v for k, v in spec.items() if k not in ("kind", "name")}
            layer.in_shape, layer.out_shape = i, o
            layer.shape = description.weight_shape(spec, i)
            if layer.is_weight:
                methods.get(layer.method)
            elif layer.method is not None:
                raise description.DescriptionError(f"Layer {layer.name} ({layer.kind}) has no weights, "
                                                   f"so no method")
        if not self.weight_layers:
            raise description.DescriptionError("A model needs at least one conv2d or linear layer")

    @property
    def weight_layers(self):
        return [layer for layer in self.layers if layer.is_weight]

    @property
    def output_shape(self):
        return self.layers[-1].out_shape

    def layer(self, name):
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"Model has no layer {name!r}; it has {', '.join(l.name for l in self.layers)}")

    def description(self):
        return description.to_dict(self.input_shape, [layer.spec() for layer in self.layers])

    def methods(self):
        """``{weight layer name: method}``."""
        return {layer.name: layer.method for layer in self.weight_layers}


def from_description(desc, weights, biases=None, meta=None, formats=None):
    """A float model from a description dict and ``{layer name: weights}`` (and biases)."""
    input_shape, specs = description.from_dict(desc)
    biases = biases or {}
    layers = []
    for spec, (i, _) in zip(specs, description.infer_shapes(input_shape, specs)):
        attrs = {k: v for k, v in spec.items() if k not in ("kind", "name")}
        layer = Layer(spec["name"], spec["kind"], attrs)
        shape = description.weight_shape(spec, i)
        if shape is not None:
            if spec["name"] not in weights:
                raise InputError(f"Float model has no weights for layer {spec['name']!r}")
            w = _finite(weights[spec["name"]], f"Layer {spec['name']} weights")
            if w.shape != shape:
                raise InputError(f"Layer {spec['name']} weights must be shaped {shape}, not {w.shape}")
            layer.method, layer.data = "float", {"weights": w.astype(np.float32)}
            if spec.get("bias"):
                b = _finite(biases.get(spec["name"], np.zeros(shape[0])), f"Layer {spec['name']} bias")
                if b.shape != (shape[0],):
                    raise InputError(f"Layer {spec['name']} bias must be shaped ({shape[0]},), not {b.shape}")
                layer.data["bias"] = b.astype(np.float32)
        layers.append(layer)
    return Model(input_shape, layers, dict(meta or {}, method="float"), formats)


def _finite(value, what):
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a numeric array, not {type(value).__name__}") from None
    if not np.all(np.isfinite(array)):
        raise InputError(f"{what} contain NaN or infinite values")
    return array


# ----------------------------------------------------------------------------------------------- weights

def integer_weights(layer):
    """``(w_int, scale)``: integer weights in the layer's shape and the float scale they stand for
    (``(None, None)`` for float and circulant layers, which have no integer dense form)."""
    return layer.entry.integer_weights(layer)


def float_weights(layer):
    """The float weights the layer stands for (dequantised)."""
    return layer.entry.float_weights(layer)


def layer_storage_bits(layer):
    """Bits of this layer's stored weights, counted from its packed arrays (biases not included)."""
    return layer.entry.storage_bits(layer)


# ----------------------------------------------------------------------------------------------- inference

def quantise_input(model, images):
    """The integer input of raw ``images``; a ValueError when they are not finite, misshapen, or do not fit
    ``act_width`` bits at the model's input gain."""
    x = np.asarray(images)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise TypeError(f"Images must be a numeric array, not {x.dtype}")
    if x.ndim != len(model.input_shape) + 1 or x.shape[1:] != model.input_shape:
        raise InputError(f"Images must be shaped (n, {', '.join(map(str, model.input_shape))}), not {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("Images contain NaN or infinite values")
    q = np.floor(x.astype(np.float64) * model.formats["input_gain"] + 0.5)
    lo, hi = fixed.signed_range(model.formats["act_width"])
    if q.size and (q.min() < lo or q.max() > hi):
        bad = x.min() if q.min() < lo else x.max()
        raise InputError(f"Image value {bad} is out of range: at input gain {model.formats['input_gain']} "
                         f"the integer input must fit in [{lo}, {hi}]")
    return q.astype(np.int64)


def _pool(x, spec, *, average):
    n, c, h, w = x.shape
    k, s = spec["k"], spec["stride"]
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    taps = [x[:, :, r:r + s * (ho - 1) + 1:s, q:q + s * (wo - 1) + 1:s] for r in range(k) for q in range(k)]
    if spec["mode"] == "max":
        return np.max(taps, axis=0)
    total = np.sum(taps, axis=0)
    return total / (k * k) if average and spec["mode"] == "avg" else total


def forward_int(model, images, *, trace=None):
    """Class scores (integer accumulators) of raw ``images``, integer arithmetic only (see the module
    docstring). ``trace``: a dict that receives, per weight layer but the last, the values its shift
    requantises."""
    x = quantise_input(model, images)
    width = model.formats["act_width"]
    pending = None                        # the weight layer whose accumulators are flowing
    for layer in model.layers:
        if layer.is_weight:
            if pending is not None:
                if trace is not None:
                    trace[pending.name] = x
                x = fixed.requantize(x, pending.shift, width)
            x = layer.entry.accumulate(layer, x.reshape(len(x), *layer.in_shape), width)
            if "bias_q" in layer.data:
                bias = layer.data["bias_q"].astype(np.int64)
                x = x + (bias[:, None, None] if layer.kind == "conv2d" else bias)
            pending = layer
        elif layer.kind == "relu":
            x = np.maximum(x, 0)
        elif layer.kind == "pool":
            x = _pool(x, layer.attrs, average=False)
        elif layer.kind == "flatten":
            x = x.reshape(len(x), -1)
    return x


def forward_float(model, images):
    """Outputs (float) of the dequantised weights, float activations: the reference path."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != len(model.input_shape) + 1 or x.shape[1:] != model.input_shape:
        raise InputError(f"Images must be shaped (n, {', '.join(map(str, model.input_shape))}), not {x.shape}")
    x = x * model.formats["input_scale"]
    for layer in model.layers:
        if layer.is_weight:
            w = float_weights(layer)
            if layer.kind == "conv2d":
                x = np.stack([_conv_float(img, w, layer.attrs) for img in x])
            else:
                x = x @ w.T
            if "bias" in layer.data:
                b = layer.data["bias"].astype(np.float64)
                x = x + (b[:, None, None] if layer.kind == "conv2d" else b)
        elif layer.kind == "relu":
            x = np.maximum(x, 0)
        elif layer.kind == "pool":
            x = _pool(x, layer.attrs, average=True)
        elif layer.kind == "flatten":
            x = x.reshape(len(x), -1)
    return x


def _conv_float(img, w, attrs):
    from .conv import windows
    k = w.shape[2]
    win = windows(img, k, attrs["padding"])                           # (h, w, k², c_in)
    out = np.einsum("yxtc,oct->oyx", win, w.reshape(w.shape[0], w.shape[1], k * k))
    return methods.conv_stride(out, attrs["stride"])


def predict(model, images, *, integer=True):
    scores = forward_int(model, images) if integer else forward_float(model, images)
    return np.argmax(scores.reshape(len(scores), -1), axis=1)


def accuracy(model, images, labels, *, integer=True):
    return float(np.mean(predict(model, images, integer=integer) == np.asarray(labels)))


# ----------------------------------------------------------------------------------------------- calibration

def activation_scales(model):
    """Per weight layer, ``(input LSB, accumulator LSB)``: the float value of one integer unit of its input
    activations and of its accumulators (the scale chain the integer path follows)."""
    scales = {}
    lsb = model.formats["input_scale"] / model.formats["input_gain"]
    pending = None
    for layer in model.layers:
        if layer.is_weight:
            if pending is not None:
                lsb = lsb * 2.0 ** pending.shift
            acc = lsb * layer.entry.output_scale(layer)
            scales[layer.name] = (lsb, acc)
            lsb, pending = acc, layer
        elif layer.kind == "pool" and layer.attrs["mode"] == "avg":
            lsb = lsb / layer.attrs["k"] ** 2            # the integer path sums: each unit is 1/k² of a mean
    return scales


def _quantise_bias(model, layer):
    if "bias" not in layer.data:
        return
    _, acc_lsb = activation_scales(model)[layer.name]
    lo, hi = fixed.signed_range(ACC_WIDTH)
    q = np.floor(layer.data["bias"].astype(np.float64) / acc_lsb + 0.5)
    layer.data["bias_q"] = np.clip(q, lo, hi).astype(np.int32)


def check_accumulators(model):
    """Raise a one-line ValueError when a weight layer's worst-case accumulator (any input, after the sum
    pools that follow it) does not fit :data:`ACC_WIDTH` bits."""
    lo, hi = fixed.signed_range(ACC_WIDTH)
    act = 1 << (model.formats["act_width"] - 1)
    worst, name = None, None
    for layer in model.layers:
        if layer.is_weight:
            worst, name = layer.entry.weight_bound(layer) * act, layer.name
            if "bias_q" in layer.data:
                worst += int(np.abs(layer.data["bias_q"].astype(np.int64)).max(initial=0))
        elif layer.kind == "pool" and layer.attrs["mode"] != "max":
            worst *= layer.attrs["k"] ** 2
        else:
            continue
        if worst > hi:
            raise InputError(f"Layer {name}: accumulators may reach {worst}, more than {ACC_WIDTH} bits hold "
                             f"({hi}); use fewer inputs per output or a smaller pooling window")


def calibrate_shifts(model, images, *, percentile=99.99):
    """Choose each weight layer's requantisation shift on calibration images, layer by layer: the smallest
    shift that maps the ``percentile`` of the magnitudes it requantises into ``act_width`` bits. Biases are
    quantised to each layer's accumulator scale as the shifts before it are settled."""
    top = (1 << (model.formats["act_width"] - 1)) - 1
    weights = model.weight_layers
    for layer in weights:
        layer.shift = 0
        layer.data.pop("bias_q", None)
    check_accumulators(model)                   # before any work: the weights alone may be too wide
    for layer in weights[:-1]:
        _quantise_bias(model, layer)
        trace = {}
        forward_int(model, images, trace=trace)
        values = np.abs(trace[layer.name])
        peak = np.percentile(values[values > 0], percentile) if np.any(values > 0) else 1
        shift = 0
        while (peak + (1 << shift >> 1)) / (1 << shift) > top:
            shift += 1
        layer.shift = shift
    _quantise_bias(model, weights[-1])
    check_accumulators(model)
    return model
