"""Amaranth components of insitu: convolution PEs, window generation, FFT, block-circulant layers,
requantisation.

The names below are imported on first use (``from insitu.hdl import FFT`` loads ``hdl/fft.py`` only), so a
program loads, and a result's provenance records, only the blocks it uses."""

import importlib

#: the public name -> the module of this package that defines it
_WHERE = {
    "BasisFirstConv": "basisfirst",
    "CirculantMatVec": "circulant",
    "Conv2d": "conv",
    "DenseConv": "denseconv",
    "DenseMatVec": "densematvec",
    "FFT": "fft",
    "MuxConv": "muxconv",
    "Requantize": "requantize",
    "SlidingWindow": "window",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
