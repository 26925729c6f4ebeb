"""Buildable designs: each turns parameters into an Amaranth component with stream ports ``i``/``o``.

A design is a parameter dataclass (its fields become ``insitu build`` options, ``c_in`` → ``--c-in``), a
factory and a ``describe`` function giving the figures of merit for reports. Weights are generated from
the ``seed`` parameter, so every build is reproducible. Adding a block to ``insitu build`` means adding
one :class:`Design` to :data:`DESIGNS`.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..golden import conv, qgp
from ..hdl import Conv2d, DenseConv, MuxConv
from ..hdl.fft import FFT

__all__ = ["Design", "DESIGNS", "get_design", "UnknownDesign", "ConvParams", "FFTParams", "CirculantParams",
           "DenseMatVecParams", "Pow2DecoderParams", "InSituGenParams", "SoCParams", "describe"]


class UnknownDesign(ValueError):
    pass


def _param(default, help, kind="positive", choices=None):
    return field(default=default, metadata={"help": help, "kind": kind, "choices": choices})


class _Params:
    """Base of the parameter dataclasses: ``resolved()`` checks what no single option can (relations between
    options, named as on the command line) and fills in derived defaults, before anything is built."""

    def check(self):
        """Raise a one-line ValueError naming the options when they do not fit together."""

    def floor(self):
        """Lower bounds of what the design needs, from its parameters alone (nothing is built):
        ``{"logic": (cells, why), "memory": (bits, why)}``, either may be missing."""
        return {}

    def resolved(self):
        self.check()
        return self


def _divides(option, value, what, total):
    if value < 1 or total % value:
        raise ValueError(f"--{option} {value} must divide {what} ({total})")


@dataclass(frozen=True)
class ConvParams(_Params):
    c_in: int = _param(16, "input channels")
    c_out: int = _param(16, "output channels")
    k: int = _param(3, "kernel size, odd", "odd")
    parallel: int = _param(1, "output channels per clock")
    act_width: int = _param(8, "activation width in bits")
    width: int = _param(32, "image width in pixels")
    height: int = _param(32, "image height in pixels")
    padding: int = _param(None, "zero padding (default k // 2)", "non-negative")
    seed: int = _param(1, "seed of the generated weights and stimulus", "non-negative")

    def resolved(self):
        self.check()
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
class FFTParams(_Params):
    n: int = _param(64, "FFT size, a power of two")
    data_width: int = _param(16, "width of the real and imaginary parts")
    twiddle_width: int = _param(16, "twiddle width")
    inverse: bool = _param(False, "inverse transform", "flag")
    seed: int = _param(1, "seed of the stimulus", "non-negative")


@dataclass(frozen=True)
class CirculantParams(_Params):
    rows: int = _param(64, "rows (m) of the block-circulant matrix")
    cols: int = _param(64, "columns (n) of the block-circulant matrix")
    block: int = _param(16, "circulant block size k, a power of two")
    seed: int = _param(1, "seed of the generated weights and stimulus", "non-negative")


@dataclass(frozen=True)
class DenseMatVecParams(_Params):
    rows: int = _param(64, "rows (m) of the matrix")
    cols: int = _param(64, "columns (n) of the matrix")
    lanes: int = _param(4, "multiply-accumulates per clock")
    seed: int = _param(1, "seed of the generated weights and stimulus", "non-negative")

    def floor(self):
        return {"memory": (self.rows * self.cols * 8, f"a {self.rows}x{self.cols} int8 matrix")}


@dataclass(frozen=True)
class Pow2DecoderParams(_Params):
    basis_bits: int = _param(8, "basis width in bits")
    exp_range: int = _param(12, "e_max − e_min of the power-of-two coefficients", "non-negative")
    groups: int = _param(1, "bases held in registers")
    seed: int = _param(1, "seed of the generated basis and stimulus", "non-negative")


@dataclass(frozen=True)
class InSituGenParams(_Params):
    c_in: int = _param(16, "input channels")
    c_out: int = _param(16, "output channels")
    k: int = _param(3, "kernel size, odd", "odd")
    bi: int = _param(3, "level-1 rank (basis shapes per group)")
    bo: int = _param(4, "level-2 rank (groups)")
    lanes: int = _param(1, "taps generated per clock (divides k²)")
    seed: int = _param(1, "seed of the generated weights and stimulus", "non-negative")


@dataclass(frozen=True)
class StreamConvParams(_Params):
    c_in: int = _param(16, "input channels")
    c_out: int = _param(16, "output channels")
    act_width: int = _param(8, "activation width in bits")
    width: int = _param(32, "image width in pixels")
    height: int = _param(32, "image height in pixels")
    seed: int = _param(1, "seed of the generated weights and stimulus", "non-negative")


@dataclass(frozen=True)
class DenseStreamConvParams(StreamConvParams):
    lanes: int = _param(3, "weights per clock (divides 9)")

    def floor(self):
        return {"memory": (self.c_out * self.c_in * 9 * 8, f"{self.c_out}x{self.c_in} int8 3x3 kernels")}

    def check(self):
        _divides("lanes", self.lanes, "the taps of a 3x3 kernel", 9)


@dataclass(frozen=True)
class SmartDealConvParams(StreamConvParams):
    group_size: int = _param(16, "filters sharing one 3×3 basis")
    basis_bits: int = _param(7, "basis width in bits (weights are basis_bits + e_max − e_min + 2 bits)")
    e_min: int = _param(-7, "smallest power-of-two exponent", "integer")
    e_max: int = _param(0, "largest power-of-two exponent", "integer")
    threshold: float = _param(0.25, "zero coefficients below this fraction of the group's largest", "fraction")

    def check(self):
        _divides("group-size", self.group_size, "--c-out", self.c_out)
        if not 2 <= self.basis_bits <= 16:
            raise ValueError(f"--basis-bits must be in range [2, 16], not {self.basis_bits}")
        if self.e_min > self.e_max:
            raise ValueError(f"--e-min {self.e_min} must not exceed --e-max {self.e_max}")


@dataclass(frozen=True)
class MLGConvParams(StreamConvParams):
    bi: int = _param(3, "level-1 rank (basis shapes per group)")
    bo: int = _param(4, "level-2 rank (groups)")
    lanes: int = _param(1, "weights generated per clock (divides 9)")

    def check(self):
        _divides("lanes", self.lanes, "the taps of a 3x3 kernel", 9)
        if not 1 <= self.bi <= min(self.c_in, 9):
            raise ValueError(f"--bi must be in range [1, {min(self.c_in, 9)}] (at most --c-in and 9), not {self.bi}")
        if not 1 <= self.bo <= min(self.c_out, self.c_in * 9):
            raise ValueError(f"--bo must be in range [1, {min(self.c_out, self.c_in * 9)}] (at most --c-out and "
                             f"9 --c-in), not {self.bo}")


@dataclass(frozen=True)
class EscalateConvParams(StreamConvParams):
    bases: int = _param(2, "ESCALATE basis kernels per input channel (shared: in all)")
    per_channel: bool = _param(False, "a basis per input channel instead of one shared by all", "flag")
    coef_mode: str = _param("pow2", "ESCALATE coefficients: pow2 (shift-and-add) or int (small multipliers)",
                            "choice", choices=("pow2", "int"))
    coef_bits: int = _param(4, "ESCALATE coefficient bits (int) or exponent levels (pow2)")
    density: float = _param(0.3, "fraction of ESCALATE coefficients kept", "fraction")
    lanes: int = _param(9, "basis taps multiplied per clock (divides 9)")
    outputs: int = _param(None, "output channels accumulated at once (divides --c-out; default all)")

    def check(self):
        _divides("lanes", self.lanes, "the taps of a 3x3 kernel", 9)
        if self.outputs is not None:
            _divides("outputs", self.outputs, "--c-out", self.c_out)
        most = 9 if not self.per_channel else min(self.c_out, 9)
        if not 1 <= self.bases <= most:
            raise ValueError(f"--bases must be in range [1, {most}], not {self.bases}")
        top = 8 if self.coef_mode == "int" else 16
        if not 2 <= self.coef_bits <= top:
            raise ValueError(f"--coef-bits must be in range [2, {top}] with --coef-mode {self.coef_mode}, "
                             f"not {self.coef_bits}")
        if not self.density > 0:
            raise ValueError(f"--density must be above 0, not {self.density}")


def escalate_layer(p):
    from ..golden import escalate
    return escalate.decompose(sample_layer(p), p.bases, shared=not p.per_channel, mode=p.coef_mode,
                              coef_bits=p.coef_bits, density=p.density)


def escalate_conv(p):
    from ..golden import escalate
    from ..hdl import BasisFirstConv
    layer, error = escalate_layer(p)
    pe = BasisFirstConv(basis=layer.basis, coef=layer.coef, basis_bits=layer.basis_bits, coef_bits=layer.coef_bits,
                        mode=layer.mode, act_width=p.act_width, lanes=p.lanes, outputs=p.outputs)
    conv = Conv2d(pe, width=p.width, height=p.height, padding=1)
    conv.info = {"packed_weight_bits": escalate.storage_bits(layer), "relative_error": round(error, 4)}
    return conv


def describe_escalate_conv(component):
    pe = component.pe
    weights = pe.c_out * pe.c_in * pe.k * pe.k
    info = {"basis_kernels": pe.bases, "coefficient_mode": pe.mode, "multipliers": pe.multipliers,
            "basis_lanes": pe.lanes, "accumulators": pe.outputs, "passes": pe.passes,
            "clocks_per_output_pixel": pe.cycles_per_window, "latency": pe.latency,
            "accumulator_width": pe.acc_width, "dense_int8_weight_bits": weights * 8,
            "float32_weight_bits": weights * 32}
    info.update(getattr(component, "info", {}))
    info["weight_bits"] = info["packed_weight_bits"]
    return info


def sample_layer(p):
    """The float 3×3 layer a decode design compresses: Gaussian, from the design's seed."""
    return np.random.default_rng(p.seed).normal(size=(p.c_out, p.c_in, 3, 3))


def _stream_conv(p, source):
    from ..hdl.streamconv import StreamConv
    return Conv2d(StreamConv(c_in=p.c_in, c_out=p.c_out, k=3, act_width=p.act_width, source=source),
                  width=p.width, height=p.height, padding=1)


def smartdeal_layer(p):
    from ..golden import smartdeal
    return smartdeal.decompose(sample_layer(p), group_size=p.group_size, basis_bits=p.basis_bits,
                               e_range=(p.e_min, p.e_max), threshold=p.threshold)


def smartdeal_conv(p):
    from ..golden import smartdeal
    from ..hdl.decode import SmartDealWeights
    layer, error = smartdeal_layer(p)
    source = SmartDealWeights(words=smartdeal.row_words(layer), rows=layer.zero.shape[1], c_out=p.c_out,
                              group_size=p.group_size, basis=layer.basis, basis_bits=layer.basis_bits,
                              exp_range=layer.e_max - layer.e_min)
    conv = _stream_conv(p, source)
    conv.info = {"packed_weight_bits": smartdeal.storage_bits(layer), "relative_error": round(error, 4)}
    return conv


def mlg_layer(p):
    from ..golden import mlg
    return mlg.decompose(sample_layer(p), p.bi, p.bo)


def mlg_conv(p):
    from ..golden import mlg
    from ..hdl.insitu import InSituGenerator
    layer, error = mlg_layer(p)
    source = InSituGenerator(basis=layer.basis, u=layer.u, v=layer.v, bits=layer.bits, lanes=p.lanes)
    conv = _stream_conv(p, source)
    conv.info = {"packed_weight_bits": mlg.storage_bits(layer), "relative_error": round(error, 4),
                 "multipliers_in_generator": source.multipliers}
    return conv


def dense_stream_conv(p):
    from ..hdl.streamconv import WeightMemory
    weights = np.clip(np.round(sample_layer(p) * 32), -128, 127).astype(int)
    conv = _stream_conv(p, WeightMemory(weights=weights, lanes=p.lanes))
    conv.info = {"packed_weight_bits": weights.size * 8, "relative_error": None}
    return conv


def describe_stream_conv(component):
    pe = component.pe
    source = pe.source
    weights = pe.c_out * pe.c_in * pe.k * pe.k
    info = {
        "weights_per_clock": pe.lanes,
        "weight_width": pe.weight_width,
        "pe_multipliers": pe.lanes,
        "clocks_per_output_pixel": pe.cycles_per_window,
        "latency": pe.latency,
        "accumulator_width": pe.acc_width,
        "on_chip_weight_bits": source.stored_bits,
        "dense_int8_weight_bits": weights * 8,
        "float32_weight_bits": weights * 32,
    }
    info.update(getattr(component, "info", {}))
    info["weight_bits"] = info["packed_weight_bits"]
    return info


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


def describe_conv(component):
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
    return FFT(n=p.n, width=p.data_width, twiddle_width=p.twiddle_width, inverse=p.inverse)


def circulant(p):
    from ..golden import circulant as golden_circulant
    from ..hdl.circulant import CirculantMatVec
    rng = np.random.default_rng(p.seed)
    layer = golden_circulant.compress(rng.normal(size=(p.rows, p.cols)), p.block)
    return CirculantMatVec(m=p.rows, n=p.cols, k=p.block, spectra=layer.spectra, mid_shift=layer.mid_shift)


def describe_circulant(component):
    return {"weight_bits": component.weight_bits, "dense_int8_weight_bits": component.m * component.n * 8,
            "complex_macs_per_clock": 1}


def densematvec(p):
    from ..hdl.densematvec import DenseMatVec
    rng = np.random.default_rng(p.seed)
    weights = rng.integers(-128, 128, size=(p.rows, p.cols))
    return DenseMatVec(m=p.rows, n=p.cols, weights=weights, lanes=p.lanes)


def describe_densematvec(component):
    return {"weight_bits": component.weight_bits, "dense_int8_weight_bits": component.m * component.n * 8,
            "macs_per_clock": component.lanes}


def pow2decoder(p):
    from ..hdl.decode import Pow2Decoder
    rng = np.random.default_rng(p.seed)
    limit = (1 << (p.basis_bits - 1)) - 1
    basis = rng.integers(-limit, limit + 1, size=(p.groups, 3, 3))
    return Pow2Decoder(basis=basis, basis_bits=p.basis_bits, exp_range=p.exp_range)


def describe_pow2decoder(component):
    return {"weight_rows_per_clock": 1, "weights_per_clock": 3, "latency": component.latency,
            "output_width": component.out_width}


def insitu_gen(p):
    from ..golden import mlg
    from ..hdl.insitu import InSituGenerator
    rng = np.random.default_rng(p.seed)
    layer, _ = mlg.decompose(rng.normal(size=(p.c_out, p.c_in, p.k, p.k)), p.bi, p.bo, iterations=5)
    return InSituGenerator(basis=layer.basis, u=layer.u, v=layer.v, bits=layer.bits, lanes=p.lanes)


def describe_insitu_gen(component):
    return {"weights_per_clock": component.lanes, "stored_bits": component.stored_bits,
            "multipliers": component.multipliers, "latency": component.latency}


def describe_fft(component):
    return {"samples_per_clock": 1, "latency": component.latency, "stages": component.stages,
            "real_multipliers": component.multipliers}


SOC_ACCELS = ("qgp-conv", "dense-conv", "smartdeal-conv", "mlg-conv", "fc", "circulant")


@dataclass(frozen=True)
class SoCParams(_Params):
    ram_size: int = _param(None, "RAM bytes, a power of two (default 8192 of block RAM holding program and data; "
                                 "with --rom-size, 65536 of SPRAM for data)")
    rom_size: int = _param(None, "iCE40UP5K layout: the firmware in a ROM of this many bytes of block RAM, the RAM in "
                                 "SPRAM (65536 or 131072 bytes)")
    accel: str = _param(None, "add one accelerator peripheral: qgp-conv, dense-conv, smartdeal-conv or mlg-conv (a "
                              "c_in → c_out 3×3 layer on a width × height image; smartdeal-conv decodes one 7-bit "
                              "basis and exponents −7…0, mlg-conv generates from bi 3, bo 4 factors, as the "
                              "smartdeal-conv and mlg-conv designs do), fc (dense c_out × 4·c_in int8 layer, 4 "
                              "lanes), circulant (c_out × 4·c_in block-circulant layer, --block k)", "choice",
                        SOC_ACCELS)
    c_in: int = _param(8, "input channels")
    c_out: int = _param(16, "output channels")
    block: int = _param(16, "circulant block size")
    parallel: int = _param(2, "output channels per clock")
    width: int = _param(8, "image width in pixels")
    height: int = _param(8, "image height in pixels")
    baud: int = _param(115200, "UART bit rate")
    seed: int = _param(1, "placement seed", "non-negative")

    def resolved(self):
        if self.ram_size is None:
            return dataclasses.replace(self, ram_size=8192 if self.rom_size is None else 65536)
        return self


def soc_accelerator(p):
    """The peripheral that ``--accel`` names, sized by the SoC parameters."""
    from ..soc.accel import CirculantAccel, ConvAccel, DenseAccel, MLGConvAccel, SmartDealConvAccel, StagedWeights
    if p.accel == "smartdeal-conv":
        defaults = SmartDealConvParams()
        return SmartDealConvAccel(c_in=p.c_in, c_out=p.c_out, width=p.width, height=p.height, group_size=p.c_out,
                                  basis_bits=defaults.basis_bits, exp_range=defaults.e_max - defaults.e_min)
    if p.accel == "mlg-conv":
        defaults = MLGConvParams()
        return MLGConvAccel(c_in=p.c_in, c_out=p.c_out, width=p.width, height=p.height, bi=defaults.bi,
                            bo=defaults.bo, lanes=defaults.lanes)
    if p.accel in ("qgp-conv", "dense-conv"):
        return ConvAccel(c_in=p.c_in, c_out=p.c_out, width=p.width, height=p.height,
                         weights=StagedWeights("qgp" if p.accel == "qgp-conv" else "dense", parallel=p.parallel))
    if p.accel == "fc":
        return DenseAccel(m=p.c_out, n=4 * p.c_in, lanes=4)
    # A compressed random layer gives the spectra's scale (mid_shift); the CPU writes the spectra.
    from ..golden import circulant
    layer = circulant.compress(np.random.default_rng(p.seed).normal(size=(p.c_out, 4 * p.c_in)), p.block)
    return CirculantAccel(m=p.c_out, n=4 * p.c_in, k=p.block, mid_shift=layer.mid_shift)


def soc(p, *, frequency):
    """The SoC with the smoke-test firmware (``hello.c``) baked into RAM."""
    import tempfile

    from ..soc.firmware import FIRMWARE_DIR, build_firmware
    from ..hdl.params import abandon
    from ..soc.soc import SoC, check_layout
    if p.rom_size is None and (p.ram_size & (p.ram_size - 1) or not 1024 <= p.ram_size <= 1 << 20):
        raise ValueError(f"RAM size must be a power of two in range [1024, 1048576], not {p.ram_size}")
    if p.rom_size is not None and (p.rom_size & (p.rom_size - 1) or not 256 <= p.rom_size <= 1 << 16):
        raise ValueError(f"ROM size must be a power of two in range [256, 65536], not {p.rom_size}")
    check_layout(p.ram_size, p.rom_size)
    divisor = round(frequency / p.baud) - 1
    if divisor < 1:
        raise ValueError(f"{p.baud} baud is too fast for a {frequency / 1e6:g} MHz clock")

    accels = {} if p.accel is None else {p.accel.replace("-", "_"): soc_accelerator(p)}
    top = SoC(ram_size=p.ram_size, rom_size=p.rom_size, uart_divisor=divisor, accelerators=accels)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            top.firmware = build_firmware([FIRMWARE_DIR / "hello.c"], tmp, memory_map=top.memory_map(),
                                          ram_size=p.ram_size, stack=256)
    except Exception:
        abandon(top, *accels.values())           # refused: nothing was built as far as the user is concerned
        raise
    image = top.firmware
    top.firmware_bytes = len(image)
    top.baud = frequency / (divisor + 1)
    return top


def describe_soc(component):
    return {"ram_bytes": component.ram_size, "ram": "block RAM" if component.rom_size is None else "SPRAM",
            "rom_bytes": component.rom_size or 0, "firmware": "hello.c", "firmware_bytes": component.firmware_bytes,
            "accelerators": list(component.accelerators), "uart_baud_at_target_clock": round(component.baud)}


@dataclass(frozen=True)
class Design:
    name: str
    params: type
    make: Callable
    describe: Callable
    help: str
    #: ``make(params, frequency=Hz)`` instead of ``make(params)`` (designs that depend on the clock)
    needs_clock: bool = False
    #: default clock per FPGA family in MHz, where it differs from the board's default
    default_mhz: dict = field(default_factory=dict)
    #: board top that wraps the component (default: the stream :class:`~insitu.boards.harness.Harness`)
    harness: str = "stream"
    #: lower bounds of the resources it needs (default: its parameters' :meth:`_Params.floor`)
    floor: Callable = lambda p: p.floor()


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
    Design("smartdeal-conv", SmartDealConvParams, smartdeal_conv, describe_stream_conv,
           "3×3 conv layer, weights decoded from packed SmartDeal rows"),
    Design("mlg-conv", MLGConvParams, mlg_conv, describe_stream_conv,
           "3×3 conv layer, weights generated from MLG factors"),
    Design("escalate-conv", EscalateConvParams, escalate_conv, describe_escalate_conv,
           "ESCALATE basis-first convolution layer (BasisFirstConv)"),
    Design("dense-stream-conv", DenseStreamConvParams, dense_stream_conv, describe_stream_conv,
           "3×3 conv layer, int8 weights streamed from block RAM (decode baseline)"),
    Design("soc", SoCParams, soc, describe_soc, "RISC-V SoC (sentinel-cpu, RAM, UART, timer), optionally with the "
           "accelerator peripheral named by --accel", needs_clock=True, default_mhz={"ice40": 12, "ecp5": 50}, harness="soc"),
]}


def get_design(name):
    try:
        return DESIGNS[name]
    except KeyError:
        raise UnknownDesign(f"Unknown design {name!r}; choose one of: {', '.join(DESIGNS)}") from None


def describe(design_name, component):
    return get_design(design_name).describe(component)
