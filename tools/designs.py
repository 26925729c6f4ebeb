"""Buildable designs: each turns CLI parameters into an Amaranth component with stream ports ``i``/``o``.

Weights are generated from a seed so that every build is reproducible; hardware never sees a file.
"""

from dataclasses import dataclass

import numpy as np

from ..golden import conv, qgp
from ..hdl import Conv2d, DenseConv, MuxConv

__all__ = ["DESIGNS", "get_design", "UnknownDesign", "ConvParams"]


class UnknownDesign(ValueError):
    pass


@dataclass(frozen=True)
class ConvParams:
    c_in: int = 16
    c_out: int = 16
    k: int = 3
    parallel: int = 1
    act_width: int = 8
    width: int = 32
    height: int = 32
    padding: int = None     # default: k // 2 ("same")
    seed: int = 1

    def resolved(self):
        pad = self.k // 2 if self.padding is None else self.padding
        return ConvParams(**{**self.__dict__, "padding": pad})


def _pe_args(p):
    return dict(c_in=p.c_in, c_out=p.c_out, k=p.k, parallel=p.parallel, act_width=p.act_width)


def muxconv(p):
    rng = np.random.default_rng(p.seed)
    layer = qgp.compress(rng.normal(size=(p.c_out, p.c_in, p.k, p.k)))
    pe = MuxConv(**_pe_args(p), init=qgp.pack(layer))
    return Conv2d(pe, width=p.width, height=p.height, padding=p.padding)


def denseconv(p):
    rng = np.random.default_rng(p.seed)
    weights = rng.integers(-128, 128, size=(p.c_out, p.c_in, p.k, p.k))
    pe = DenseConv(**_pe_args(p), init=conv.pack(weights))
    return Conv2d(pe, width=p.width, height=p.height, padding=p.padding)


def describe(component):
    """Figures of merit of a design, for reports."""
    pe = component.pe
    return {
        "kernel_ops_per_clock": pe.parallel * pe.c_in,
        "weight_bits": pe.weight_bits,
        "weight_bits_per_kernel": pe.code_width,
        "latency": pe.latency,
        "clocks_per_output_pixel": pe.groups,
        "accumulator_width": pe.acc_width,
    }


DESIGNS = {"muxconv": muxconv, "denseconv": denseconv}


def get_design(name):
    try:
        return DESIGNS[name]
    except KeyError:
        raise UnknownDesign(f"Unknown design {name!r}; choose one of: {', '.join(DESIGNS)}") from None
