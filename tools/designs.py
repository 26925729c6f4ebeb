"""Buildable designs: each turns parameters into an Amaranth component with stream ports ``i``/``o``.

A design is a parameter dataclass (its fields become ``insitu build`` options, ``c_in`` → ``--c-in``), a
factory and a ``describe`` function giving the figures of merit for reports. Weights are generated from
the ``seed`` parameter, so every build is reproducible. Adding a block to ``insitu build`` means adding
one :class:`Design` to :data:`DESIGNS`.

A design names its parameters, factory and ``describe`` as ``"module:name"`` (a module of this package) when
they live in another module: that module is imported only when the design is used. A result records the
sources its process imported (:mod:`insitu.tools.provenance`), so building one design does not tie its
result to every other design's code.
"""

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..golden import conv, qgp
from ..hdl.params import ParameterError
from .design_params import Params, param

#: names of the other design modules, one namespace for the callers (imported on first use)
_ELSEWHERE = {**{name: "designs_stream" for name in (
                  "StreamConvParams", "DenseStreamConvParams", "SmartDealConvParams", "MLGConvParams",
                  "EscalateConvParams", "smartdeal_layer", "mlg_layer", "escalate_layer")},
              "SoCParams": "designs_soc", "SOC_ACCELS": "designs_soc", "NetworkParams": "designs_network"}

__all__ = ["Design", "DESIGNS", "get_design", "UnknownDesign", "instantiate", "ConvParams", "FFTParams",
           "CirculantParams", "DenseMatVecParams", "Pow2DecoderParams", "InSituGenParams", *_ELSEWHERE]


def __getattr__(name):
    if name in _ELSEWHERE:
        return getattr(importlib.import_module(f"{__package__}.{_ELSEWHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _resolve(ref):
    """``ref`` itself, or the object a ``"module:name"`` string names in this package."""
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


class UnknownDesign(ParameterError):
    pass


@dataclass(frozen=True)
class ConvParams(Params):
    c_in: int = param(16, "input channels")
    c_out: int = param(16, "output channels")
    k: int = param(3, "kernel size, odd", "odd")
    parallel: int = param(1, "output channels per clock")
    act_width: int = param(8, "activation width in bits")
    width: int = param(32, "image width in pixels")
    height: int = param(32, "image height in pixels")
    padding: int = param(None, "zero padding (default k // 2)", "non-negative")
    seed: int = param(1, "seed of the generated weights and stimulus", "non-negative")

    def derived(self):
        pad = self.k // 2 if self.padding is None else self.padding
        return dataclasses.replace(self, padding=pad)

    def floor(self, *, dense=False):
        from ..golden.qgp import code_width
        terms = self.c_in * self.k ** 2 if dense else self.c_in
        bits = self.c_out * self.c_in * (self.k ** 2 * 8 if dense else code_width(self.k))
        return {"logic": (self.parallel * (terms - 1) * self.act_width,
                          f"{self.parallel} adder tree(s) of {terms} {self.act_width}-bit terms"),
                "memory": (bits, f"{self.c_out}x{self.c_in} kernels of weights")}


@dataclass(frozen=True)
class FFTParams(Params):
    n: int = param(64, "FFT size, a power of two")
    data_width: int = param(16, "width of the real and imaginary parts")
    twiddle_width: int = param(16, "twiddle width")
    inverse: bool = param(False, "inverse transform", "flag")
    seed: int = param(1, "seed of the stimulus", "non-negative")


@dataclass(frozen=True)
class CirculantParams(Params):
    rows: int = param(64, "rows (m) of the block-circulant matrix")
    cols: int = param(64, "columns (n) of the block-circulant matrix")
    block: int = param(16, "circulant block size k, a power of two")
    seed: int = param(1, "seed of the generated weights and stimulus", "non-negative")


@dataclass(frozen=True)
class DenseMatVecParams(Params):
    rows: int = param(64, "rows (m) of the matrix")
    cols: int = param(64, "columns (n) of the matrix")
    lanes: int = param(4, "multiply-accumulates per clock")
    seed: int = param(1, "seed of the generated weights and stimulus", "non-negative")

    def floor(self):
        return {"memory": (self.rows * self.cols * 8, f"a {self.rows}x{self.cols} int8 matrix")}


@dataclass(frozen=True)
class Pow2DecoderParams(Params):
    basis_bits: int = param(8, "basis width in bits")
    exp_range: int = param(12, "e_max − e_min of the power-of-two coefficients", "non-negative")
    groups: int = param(1, "bases held in registers")
    seed: int = param(1, "seed of the generated basis and stimulus", "non-negative")


@dataclass(frozen=True)
class InSituGenParams(Params):
    c_in: int = param(16, "input channels")
    c_out: int = param(16, "output channels")
    k: int = param(3, "kernel size, odd", "odd")
    bi: int = param(3, "level-1 rank (basis shapes per group)")
    bo: int = param(4, "level-2 rank (groups)")
    lanes: int = param(1, "taps generated per clock (divides k²)")
    seed: int = param(1, "seed of the generated weights and stimulus", "non-negative")


def _pe_args(p):
    return dict(c_in=p.c_in, c_out=p.c_out, k=p.k, parallel=p.parallel, act_width=p.act_width)


def muxconv(p):
    from ..hdl.conv import Conv2d
    from ..hdl.muxconv import MuxConv
    rng = np.random.default_rng(p.seed)
    layer = qgp.compress(rng.normal(size=(p.c_out, p.c_in, p.k, p.k)))
    pe = MuxConv(**_pe_args(p), init=qgp.pack(layer))
    return Conv2d(pe, width=p.width, height=p.height, padding=p.padding)


def denseconv(p):
    from ..hdl.conv import Conv2d
    from ..hdl.denseconv import DenseConv
    rng = np.random.default_rng(p.seed)
    weights = rng.integers(-128, 128, size=(p.c_out, p.c_in, p.k, p.k))
    pe = DenseConv(**_pe_args(p), init=conv.pack(weights))
    return Conv2d(pe, width=p.width, height=p.height, padding=p.padding)


def describe_conv(component, extra):
    pe = component.pe
    return {
        "kernel_ops_per_clock": pe.parallel * pe.c_in,
        "weight_bits": pe.weight_bits,
        "weight_bits_per_kernel": pe.code_width,
        "latency": pe.latency,
        "clocks_per_output_pixel": pe.groups,
        "accumulator_width": pe.acc_width,
    }


def fft(p):
    from ..hdl.fft import FFT
    return FFT(n=p.n, width=p.data_width, twiddle_width=p.twiddle_width, inverse=p.inverse)


def circulant(p):
    from ..golden import circulant as golden_circulant
    from ..hdl.circulant import CirculantMatVec
    rng = np.random.default_rng(p.seed)
    layer = golden_circulant.compress(rng.normal(size=(p.rows, p.cols)), p.block)
    return CirculantMatVec(m=p.rows, n=p.cols, k=p.block, spectra=layer.spectra, mid_shift=layer.mid_shift)


def describe_circulant(component, extra):
    return {"weight_bits": component.weight_bits, "dense_int8_weight_bits": component.m * component.n * 8,
            "complex_macs_per_clock": 1}


def densematvec(p):
    from ..hdl.densematvec import DenseMatVec
    rng = np.random.default_rng(p.seed)
    weights = rng.integers(-128, 128, size=(p.rows, p.cols))
    return DenseMatVec(m=p.rows, n=p.cols, weights=weights, lanes=p.lanes)


def describe_densematvec(component, extra):
    return {"weight_bits": component.weight_bits, "dense_int8_weight_bits": component.m * component.n * 8,
            "macs_per_clock": component.lanes}


def pow2decoder(p):
    from ..hdl.decode import Pow2Decoder
    rng = np.random.default_rng(p.seed)
    limit = (1 << (p.basis_bits - 1)) - 1
    basis = rng.integers(-limit, limit + 1, size=(p.groups, 3, 3))
    return Pow2Decoder(basis=basis, basis_bits=p.basis_bits, exp_range=p.exp_range)


def describe_pow2decoder(component, extra):
    return {"weight_rows_per_clock": 1, "weights_per_clock": 3, "latency": component.latency,
            "output_width": component.out_width}


def insitu_gen(p):
    from ..golden import mlg
    from ..hdl.insitu import InSituGenerator
    rng = np.random.default_rng(p.seed)
    layer, _ = mlg.decompose(rng.normal(size=(p.c_out, p.c_in, p.k, p.k)), p.bi, p.bo, iterations=5)
    return InSituGenerator(basis=layer.basis, u=layer.u, v=layer.v, bits=layer.bits, lanes=p.lanes)


def describe_insitu_gen(component, extra):
    return {"weights_per_clock": component.lanes, "stored_bits": component.stored_bits,
            "multipliers": component.multipliers, "latency": component.latency}


def describe_fft(component, extra):
    return {"samples_per_clock": 1, "latency": component.latency, "stages": component.stages,
            "real_multipliers": component.multipliers}


@dataclass(frozen=True)
class Design:
    """One buildable design. ``params_ref``, ``make_ref`` and ``describe_ref`` are the objects or
    ``"module:name"`` references to them (see the module's notes); :attr:`params`, :attr:`make` and
    :attr:`describe` are the objects."""
    name: str
    params_ref: object
    make_ref: object
    describe_ref: object
    help: str
    #: ``make(params, frequency=Hz)`` instead of ``make(params)`` (designs that depend on the clock; they
    #: also get ``board=``, the :class:`~insitu.boards.Board`, or None outside a build)
    needs_clock: bool = False
    #: ``make`` also takes ``dsp=``: whether the iCE40 build maps multipliers to DSP blocks (``--dsp``),
    #: for designs that plan their resources
    takes_dsp: bool = False
    #: default clock per FPGA family in MHz, where it differs from the board's default
    default_mhz: dict = field(default_factory=dict)
    #: board top that wraps the component (default: the stream :class:`~insitu.boards.harness.Harness`)
    harness: str = "stream"
    #: lower bounds of the resources it needs (default: its parameters' :meth:`Params.floor`)
    floor: Callable = lambda p: p.floor()
    #: for a build report of resources per part (:func:`insitu.tools.build.breakdown`): ``"module:name"``
    #: of a function that takes the component and returns ``groups(path)``, the part a submodule belongs
    #: to; None: no breakdown
    breakdown_ref: object = None

    @property
    def breakdown(self):
        return None if self.breakdown_ref is None else _resolve(self.breakdown_ref)

    @property
    def params(self):
        """The parameter dataclass (its fields are the design's ``insitu build`` options)."""
        return _resolve(self.params_ref)

    @property
    def make(self):
        return _resolve(self.make_ref)

    @property
    def describe(self):
        return _resolve(self.describe_ref)


DESIGNS = {d.name: d for d in [
    Design("muxconv", ConvParams, muxconv, describe_conv, "QGP multiplexer convolution layer"),
    Design("denseconv", ConvParams, denseconv, describe_conv, "dense int8 convolution layer (baseline)",
           floor=lambda p: p.floor(dense=True)),
    Design("fft", FFTParams, fft, describe_fft, "streaming radix-2² SDF FFT"),
    Design("circulant", CirculantParams, circulant, describe_circulant, "block-circulant matrix-vector product"),
    Design("densematvec", DenseMatVecParams, densematvec, describe_densematvec,
           "dense int8 matrix-vector product (baseline)"),
    Design("pow2decoder", Pow2DecoderParams, pow2decoder, describe_pow2decoder,
           "SmartDeal power-of-two weight decoder"),
    Design("insitu-gen", InSituGenParams, insitu_gen, describe_insitu_gen, "MLG in-situ weight generator"),
    Design("smartdeal-conv", "designs_stream:SmartDealConvParams", "designs_stream:smartdeal_conv",
           "designs_stream:describe_stream_conv", "3×3 conv layer, weights decoded from packed SmartDeal rows"),
    Design("mlg-conv", "designs_stream:MLGConvParams", "designs_stream:mlg_conv", "designs_stream:describe_stream_conv",
           "3×3 conv layer, weights generated from MLG factors"),
    Design("escalate-conv", "designs_stream:EscalateConvParams", "designs_stream:escalate_conv",
           "designs_stream:describe_escalate_conv", "ESCALATE basis-first convolution layer (BasisFirstConv)"),
    Design("dense-stream-conv", "designs_stream:DenseStreamConvParams", "designs_stream:dense_stream_conv",
           "designs_stream:describe_stream_conv",
           "3×3 conv layer, int8 weights streamed from block RAM (decode baseline)"),
    Design("soc", "designs_soc:SoCParams", "designs_soc:soc", "designs_soc:describe_soc", "RISC-V SoC (sentinel-cpu, RAM, UART, timer), optionally with the "
           "accelerator peripheral named by --accel", needs_clock=True, default_mhz={"ice40": 12, "ecp5": 50}, harness="soc",
           breakdown_ref="designs_soc:parts"),
    Design("network", "designs_network:NetworkParams", "designs_network:network", "designs_network:describe_network",
           "a whole model (--model) as one layer-pipelined "
           "circuit, every weight on chip, no processor", needs_clock=True, takes_dsp=True,
           breakdown_ref="designs_network:parts"),
]}


def get_design(name):
    try:
        return DESIGNS[name]
    except KeyError:
        raise UnknownDesign(f"Unknown design {name!r}; choose one of: {', '.join(DESIGNS)}") from None


def instantiate(design, params, *, frequency=None, board=None, dsp=False):
    """``(component, info)``: ``design``'s component for ``params`` (at ``frequency`` Hz for designs that
    depend on the clock) and its figures of merit for reports. Factories return the component, or the
    component and the figures only they know (e.g. the packed weight bits of the layer they compressed)."""
    if not design.needs_clock:
        made = design.make(params)
    elif design.takes_dsp:
        made = design.make(params, frequency=frequency, board=board, dsp=dsp)
    else:
        made = design.make(params, frequency=frequency, board=board)
    component, extra = made if isinstance(made, tuple) else (made, {})
    info = design.describe(component, extra)
    for key, value in extra.items():
        info.setdefault(key, value)
    return component, info
