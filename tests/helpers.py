"""Helpers shared by test files (plain functions; fixtures live in conftest.py)."""

import numpy as np

from insitu.golden import description, methods, network
from insitu.tools import compress

#: a description with every layer kind and odd shapes: stride 2, padding, biases, sum and max pooling
ODD = {"input": [2, 9, 7], "layers": [
    {"kind": "conv2d", "name": "c1", "c_out": 6, "k": 3, "stride": 2, "padding": 1, "bias": True},
    {"kind": "relu"}, {"kind": "pool", "mode": "avg", "k": 2, "stride": 1},
    {"kind": "conv2d", "name": "c2", "c_out": 8, "k": 3, "padding": 1, "bias": True},
    {"kind": "pool", "mode": "max", "k": 2}, {"kind": "flatten"},
    {"kind": "linear", "name": "f1", "features": 5, "bias": True}]}

#: fully connected layers a block-circulant method can take: blocks of 8 (odd log2: a final radix-2 stage)
#: and 16, each after 8-bit activations
CIRCULANT = {"input": [2, 8, 8], "layers": [
    {"kind": "conv2d", "name": "c1", "c_out": 4, "k": 3, "padding": 1, "bias": True}, {"kind": "relu"},
    {"kind": "pool", "mode": "max", "k": 2}, {"kind": "flatten"},
    {"kind": "linear", "name": "f1", "features": 32, "bias": True}, {"kind": "relu"},
    {"kind": "linear", "name": "f2", "features": 16, "bias": True}]}
CIRCULANT_SETTINGS = {"f1": {"k": 8, "spectrum_width": 12}, "f2": {"k": 16, "spectrum_width": 8}}


def random_weights(desc, seed, *, bias_scale=0.2, dtype=np.float64):
    """Seeded He-scaled weights of ``desc``'s weight layers and biases (scale ``bias_scale``) of those that
    have one: ``(weights, biases)``, name → array."""
    rng = np.random.default_rng(seed)
    shape, specs = description.from_dict(desc)
    weights, biases = {}, {}
    for spec, (i, _) in zip(specs, description.infer_shapes(shape, specs)):
        w = description.weight_shape(spec, i)
        if w is not None:
            weights[spec["name"]] = (rng.normal(size=w) * np.sqrt(2 / np.prod(w[1:]))).astype(dtype)
            if spec.get("bias"):
                biases[spec["name"]] = (rng.normal(size=w[0]) * bias_scale).astype(dtype)
    return weights, biases


def random_model(desc, seed):
    """A float model of ``desc`` with :func:`random_weights` (input gain 3, 8-bit activations)."""
    weights, biases = random_weights(desc, seed)
    return network.from_description(desc, weights, biases, formats={"input_scale": 0.1, "input_gain": 3,
                                                                    "act_width": 8})


def odd_model(method, seed=2):
    """The odd-shaped description, compressed with ``method`` where it applies (dense elsewhere); for
    ``circulant``, the description of fully connected layers it can take."""
    rng = np.random.default_rng(seed)
    model = random_model(CIRCULANT if method == "circulant" else ODD, seed)
    raw = rng.integers(-12, 13, size=(16, *model.input_shape))
    kinds = methods.get(method).kinds
    return compress.compress_model(model, "dense", raw, layer_methods={
        layer.name: method for layer in model.weight_layers if layer.kind in kinds},
        settings=CIRCULANT_SETTINGS if method == "circulant" else None)
