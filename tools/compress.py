"""Compress a float model (NumPy only): one method for the whole model, or a method per layer.

``--method M`` gives M to every weight layer it supports except the first and the last weight layers,
which stay int8 (``dense``): they are the smallest and the most sensitive (for the digits CNN, ``conv1`` has
one input channel, so one QGP tap per kernel would make each filter a shifted copy of the image, and
``fc2`` is the classifier). ``--layer-method conv2=qgp,fc1=circulant`` sets layers explicitly; a method
that cannot take a layer named there is refused in one line. Settings per layer come from the method's
defaults (:meth:`insitu.golden.methods.Method.defaults`) unless given. Requantisation shifts (and integer
biases) are calibrated on training images.
"""

import numpy as np

from ..golden import methods, network
from ..golden.description import DIGITS_CNN
from ..hdl.params import ParameterError

__all__ = ["METHODS", "compress_model", "plan", "parse_layer_methods", "project", "float_model",
           "compressed_layers", "layer_settings"]

#: The methods ``--method`` takes (every compressed one).
METHODS = methods.names(compressed=True)


def float_model(weights, meta=None, desc=DIGITS_CNN, biases=None):
    """A float model from ``{name: array}`` (and biases) for a description (the digits CNN by default)."""
    return network.from_description(desc, weights, biases, meta)


def parse_layer_methods(text):
    """``"conv2=qgp,fc1=circulant"`` → ``{"conv2": "qgp", "fc1": "circulant"}`` (ValueError otherwise)."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, method = item.partition("=")
        if not sep or not name.strip() or not method.strip():
            raise ParameterError(f"Layer methods must read LAYER=METHOD[,LAYER=METHOD...], not {item!r}")
        methods.get(method.strip())
        out[name.strip()] = method.strip()
    if not out:
        raise ParameterError("Layer methods must read LAYER=METHOD[,LAYER=METHOD...], not an empty string")
    return out


def plan(model, method=None, layer_methods=None, settings=None):
    """``{layer name: (method, settings)}`` for every weight layer (see the module docstring)."""
    layer_methods = dict(layer_methods or {})
    settings = settings or {}
    weights = model.weight_layers
    known = [layer.name for layer in weights]
    for name in list(layer_methods) + list(settings):
        if name not in known:
            raise ParameterError(f"Model has no weight layer {name!r}; its weight layers are {', '.join(known)}")
    if method is not None and method not in METHODS:
        raise ParameterError(f"Unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    out = {}
    for n, layer in enumerate(weights):
        explicit = layer.name in layer_methods
        chosen = layer_methods.get(layer.name) or (method if 0 < n < len(weights) - 1 else None) or "dense"
        entry = methods.get(chosen)
        chosen_settings = dict(entry.defaults(layer.kind, layer.shape), **settings.get(layer.name, {}))
        reason = entry.refuses(layer.kind, layer.shape, chosen_settings)
        if reason and explicit:
            raise ParameterError(f"Layer {layer.name}: {reason}")
        if reason:
            entry = methods.get("dense")
            chosen_settings = {}
        out[layer.name] = (entry.name, chosen_settings)
    return out


def layer_settings(model, method, layer_methods=None, settings=None):
    """The settings each layer would be compressed with (for reports and fine-tuning)."""
    return {name: s for name, (_, s) in plan(model, method, layer_methods, settings).items()}


def compressed_layers(model):
    """Names of the weight layers that are not int8 or float (all weight layers when none is)."""
    names = [layer.name for layer in model.weight_layers if layer.method not in ("dense", "float")]
    return names or [layer.name for layer in model.weight_layers]


def project(layer, w, method, settings, strength=1.0):
    """The float weights that ``method`` can represent nearest to ``w`` (for fine-tuning). ``strength`` in
    [0, 1] eases SmartDeal's sparsity in: its density goes from 1 to the layer's target."""
    return methods.get(method).project(np.asarray(w, dtype=np.float64), layer.kind, settings, strength)


def compress_model(model, method=None, calibration=None, *, layer_methods=None, settings=None, stored=None):
    """Compress every weight layer of a float ``model`` by :func:`plan` and calibrate the shifts.

    ``stored``: ``{layer name: (data, params)}`` already in a method's stored form (from fine-tuning its
    factors), used as they are."""
    if calibration is None:
        raise ParameterError("Compression needs calibration images")
    chosen = plan(model, method, layer_methods, settings)
    layers = []
    for layer in model.layers:
        if not layer.is_weight:
            layers.append(network.Layer(layer.name, layer.kind, dict(layer.attrs)))
            continue
        name, s = chosen[layer.name]
        if stored and layer.name in stored:
            data, params = stored[layer.name]
            data = dict(data)
        else:
            data, params = methods.get(name).compress(network.float_weights(layer), layer.kind, s)
        if "bias" in layer.data:
            data["bias"] = np.asarray(layer.data["bias"], dtype=np.float32)
        layers.append(network.Layer(layer.name, layer.kind, dict(layer.attrs), name, data, params))
    meta = {k: v for k, v in model.meta.items() if k not in ("method", "accuracy", "layer_methods")}
    label = method if method is not None and not layer_methods else "mixed"
    out = network.Model(model.input_shape, layers, dict(meta, method=label), model.formats)
    return network.calibrate_shifts(out, calibration)
