"""The network description: an input shape and a sequence of layers, with every shape inferred.

A description is plain data (it round-trips through JSON, see :func:`from_dict` / :func:`to_dict`)::

    {"input": [1, 8, 8],
     "layers": [{"kind": "conv2d", "name": "conv1", "c_out": 8, "k": 3, "padding": 1},
                {"kind": "relu"},
                {"kind": "pool", "mode": "sum", "k": 2},
                {"kind": "flatten"},
                {"kind": "linear", "name": "fc1", "features": 10, "bias": true}]}

Layer kinds and their attributes (defaults in brackets):

=========== ========================================================================================
``conv2d``  ``c_out``, ``k`` (odd), ``stride`` [1], ``padding`` [0], ``bias`` [false]; input ``(c, h, w)``
``linear``  ``features``, ``bias`` [false]; input ``(n,)``
``pool``    ``mode`` (``sum``, ``avg`` or ``max``), ``k``, ``stride`` [k]; input ``(c, h, w)``
``relu``    –
``flatten`` ``(c, h, w)`` → ``(c·h·w,)``
=========== ========================================================================================

Unnamed layers are named ``<kind><index>`` (``relu1``, ``pool3``…); names are unique. Every problem is a
one-line :class:`DescriptionError` naming the layer.
"""

import json
import math

from .errors import InputError

__all__ = ["BUILTIN", "DescriptionError", "KINDS", "WEIGHT_KINDS", "POOL_MODES", "normalise", "infer_shapes",
           "weight_shape", "from_dict", "to_dict", "load_json", "DIGITS_CNN", "DIGITS_DEEP", "DIGITS_MLP",
           "CIFAR_VGG"]

KINDS = ("conv2d", "linear", "pool", "relu", "flatten")
WEIGHT_KINDS = ("conv2d", "linear")
POOL_MODES = ("sum", "avg", "max")

_ATTRS = {      # kind -> {attribute: default}; ``...`` marks a required attribute
    "conv2d": {"c_out": ..., "k": ..., "stride": 1, "padding": 0, "bias": False},
    "linear": {"features": ..., "bias": False},
    "pool": {"mode": ..., "k": ..., "stride": None},
    "relu": {},
    "flatten": {},
}
#: Largest dimension a description may have (channels, pixels, features): keeps every shape, array and
#: header field within what the packed formats and the firmware tables can hold.
MAX_DIM = 65535


class DescriptionError(InputError):
    """A network description that cannot be built: unknown kind, bad attribute, shapes that do not chain."""


def _int(where, key, value, lo, hi=MAX_DIM):
    if isinstance(value, bool) or not isinstance(value, int):
        raise DescriptionError(f"{where}: {key} must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise DescriptionError(f"{where}: {key} must be in range [{lo}, {hi}], not {value}")
    return value


def normalise(layers):
    """Layers as a list of dicts with every attribute present and checked, and a unique name each."""
    if not isinstance(layers, (list, tuple)) or not layers:
        raise DescriptionError("A description needs a non-empty list of layers")
    out, names = [], set()
    for index, spec in enumerate(layers):
        if not isinstance(spec, dict):
            raise DescriptionError(f"Layer {index}: must be an object with a 'kind', not {spec!r}")
        kind = spec.get("kind")
        if kind not in _ATTRS:
            raise DescriptionError(f"Layer {index}: unknown kind {kind!r}; choose one of: {', '.join(KINDS)}")
        name = spec.get("name", f"{kind}{index}")
        if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
            raise DescriptionError(f"Layer {index}: name must be a non-empty identifier, not {name!r}")
        if name in names:
            raise DescriptionError(f"Layer {index}: name {name!r} is used twice")
        names.add(name)
        where = f"Layer {name} ({kind})"
        extra = set(spec) - set(_ATTRS[kind]) - {"kind", "name"}
        if extra:
            raise DescriptionError(f"{where}: unknown attribute {sorted(extra)[0]!r}; {kind} takes "
                                   f"{', '.join(_ATTRS[kind]) or 'none'}")
        entry = {"kind": kind, "name": name}
        for key, default in _ATTRS[kind].items():
            if key not in spec and default is ...:
                raise DescriptionError(f"{where}: missing attribute {key!r}")
            entry[key] = spec.get(key, default)
        if kind == "conv2d":
            _int(where, "c_out", entry["c_out"], 1)
            if _int(where, "k", entry["k"], 1, 15) % 2 == 0:
                raise DescriptionError(f"{where}: k must be odd, not {entry['k']}")
            _int(where, "stride", entry["stride"], 1, 15)
            _int(where, "padding", entry["padding"], 0, entry["k"] // 2)
        elif kind == "linear":
            _int(where, "features", entry["features"], 1)
        elif kind == "pool":
            if entry["mode"] not in POOL_MODES:
                raise DescriptionError(f"{where}: mode must be one of {', '.join(POOL_MODES)}, "
                                       f"not {entry['mode']!r}")
            _int(where, "k", entry["k"], 1, 15)
            entry["stride"] = entry["k"] if entry["stride"] is None else entry["stride"]
            _int(where, "stride", entry["stride"], 1, 15)
        if "bias" in entry and not isinstance(entry["bias"], bool):
            raise DescriptionError(f"{where}: bias must be true or false, not {entry['bias']!r}")
        out.append(entry)
    return out


def _check_input(input_shape):
    shape = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else None
    if shape is None or len(shape) not in (1, 3):
        raise DescriptionError(f"Input shape must be (channels, height, width) or (features,), not "
                               f"{input_shape!r}")
    for d in shape:
        _int("Input", "every dimension", d, 1)
    return shape


def infer_shapes(input_shape, layers):
    """``[(in_shape, out_shape), ...]`` for normalised ``layers``; raise :class:`DescriptionError` where
    shapes do not chain."""
    shape = _check_input(input_shape)
    shapes = []
    for spec in layers:
        kind, where = spec["kind"], f"Layer {spec['name']} ({spec['kind']})"
        if kind in ("conv2d", "pool") and len(shape) != 3:
            raise DescriptionError(f"{where}: needs a (channels, height, width) input, not {shape}; "
                                   f"a {kind} cannot follow a flatten or linear layer")
        if kind == "linear" and len(shape) != 1:
            raise DescriptionError(f"{where}: needs a flat input, not {shape}; add a flatten layer before it")
        if kind == "conv2d":
            c, h, w = shape
            span_h, span_w = h + 2 * spec["padding"] - spec["k"], w + 2 * spec["padding"] - spec["k"]
            if span_h < 0 or span_w < 0:
                raise DescriptionError(f"{where}: a {h}x{w} input with padding {spec['padding']} is smaller "
                                       f"than the {spec['k']}x{spec['k']} kernel")
            out = (spec["c_out"], span_h // spec["stride"] + 1, span_w // spec["stride"] + 1)
        elif kind == "pool":
            c, h, w = shape
            if h < spec["k"] or w < spec["k"]:
                raise DescriptionError(f"{where}: a {h}x{w} input is smaller than the {spec['k']}x{spec['k']} "
                                       f"window")
            out = (c, (h - spec["k"]) // spec["stride"] + 1, (w - spec["k"]) // spec["stride"] + 1)
        elif kind == "linear":
            out = (spec["features"],)
        elif kind == "flatten":
            out = (math.prod(shape),)
        else:
            out = shape
        shapes.append((shape, out))
        shape = out
    return shapes


def weight_shape(spec, in_shape):
    """The weight array's shape of a weight layer (``(c_out, c_in, k, k)`` or ``(out, in)``), else None."""
    if spec["kind"] == "conv2d":
        return (spec["c_out"], in_shape[0], spec["k"], spec["k"])
    if spec["kind"] == "linear":
        return (spec["features"], in_shape[0])
    return None


def from_dict(obj):
    """``(input_shape, layers)`` of a description dict (see the module docstring), checked."""
    if not isinstance(obj, dict):
        raise DescriptionError("A description must be a JSON object with 'input' and 'layers'")
    unknown = set(obj) - {"input", "layers", "name"}
    if unknown:
        raise DescriptionError(f"Unknown description key {sorted(unknown)[0]!r}; a description has "
                               f"'input', 'layers' and optionally 'name'")
    if "input" not in obj:
        raise DescriptionError("A description needs an 'input' shape")
    shape = _check_input(obj["input"])
    layers = normalise(obj.get("layers"))
    infer_shapes(shape, layers)
    return shape, layers


def to_dict(input_shape, layers):
    return {"input": list(input_shape), "layers": [dict(spec) for spec in layers]}


def load_json(path):
    """Read a description from a JSON file; every problem is one :class:`DescriptionError` line."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except OSError as error:
        raise DescriptionError(f"Cannot read description {path}: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DescriptionError(f"{path}: not a JSON description ({error})") from None
    try:
        return from_dict(obj)
    except DescriptionError as error:
        raise DescriptionError(f"{path}: {error}") from None


def _conv(name, c_out, k=3, stride=1, padding=1, bias=False):
    return {"kind": "conv2d", "name": name, "c_out": c_out, "k": k, "stride": stride, "padding": padding,
            "bias": bias}


#: The digits CNN the committed models use: conv 1→8, conv 8→16, 2×2 sum pool, fc 256→64, fc 64→10.
DIGITS_CNN = {"input": [1, 8, 8], "layers": [
    _conv("conv1", 8), {"kind": "relu", "name": "relu1"},
    _conv("conv2", 16), {"kind": "pool", "name": "pool2", "mode": "sum", "k": 2},
    {"kind": "relu", "name": "relu2"}, {"kind": "flatten", "name": "flatten"},
    {"kind": "linear", "name": "fc1", "features": 64}, {"kind": "relu", "name": "relu3"},
    {"kind": "linear", "name": "fc2", "features": 10}]}

#: A deeper digits CNN with a strided convolution, max pooling and biases.
DIGITS_DEEP = {"input": [1, 8, 8], "layers": [
    _conv("conv1", 16, bias=True), {"kind": "relu"},
    _conv("conv2", 16, bias=True), {"kind": "relu"},
    _conv("conv3", 32, stride=2, bias=True), {"kind": "relu"},
    {"kind": "pool", "mode": "max", "k": 2}, {"kind": "flatten"},
    {"kind": "linear", "name": "fc1", "features": 64, "bias": True}, {"kind": "relu"},
    {"kind": "linear", "name": "fc2", "features": 10, "bias": True}]}

#: A multilayer perceptron on the flattened digits.
DIGITS_MLP = {"input": [1, 8, 8], "layers": [
    {"kind": "flatten"},
    {"kind": "linear", "name": "fc1", "features": 128, "bias": True}, {"kind": "relu"},
    {"kind": "linear", "name": "fc2", "features": 64, "bias": True}, {"kind": "relu"},
    {"kind": "linear", "name": "fc3", "features": 10, "bias": True}]}

#: A small VGG-style network for 32×32 RGB images (CIFAR-10).
CIFAR_VGG = {"input": [3, 32, 32], "layers": [
    _conv("conv1", 16, bias=True), {"kind": "relu"},
    _conv("conv2", 16, bias=True), {"kind": "relu"}, {"kind": "pool", "mode": "max", "k": 2},
    _conv("conv3", 32, bias=True), {"kind": "relu"},
    _conv("conv4", 32, bias=True), {"kind": "relu"}, {"kind": "pool", "mode": "max", "k": 2},
    _conv("conv5", 64, bias=True), {"kind": "relu"}, {"kind": "pool", "mode": "max", "k": 2},
    {"kind": "flatten"},
    {"kind": "linear", "name": "fc1", "features": 128, "bias": True}, {"kind": "relu"},
    {"kind": "linear", "name": "fc2", "features": 10, "bias": True}]}

#: The descriptions that ship with insitu, by the name ``--arch`` accepts.
BUILTIN = {"digits-cnn": DIGITS_CNN, "digits-deep": DIGITS_DEEP, "digits-mlp": DIGITS_MLP, "cifar-vgg": CIFAR_VGG}
