"""Stream-weight convolution designs: the decoded (SmartDeal, MLG), ESCALATE and int8-streamed 3×3 layers."""

from dataclasses import dataclass

import numpy as np

from ..hdl import Conv2d
from ..hdl.params import ParameterError
from .design_params import Params, divides, param

__all__ = ["StreamConvParams", "DenseStreamConvParams", "SmartDealConvParams", "MLGConvParams",
           "EscalateConvParams", "escalate_layer", "escalate_conv", "describe_escalate_conv", "sample_layer",
           "smartdeal_layer", "smartdeal_conv", "mlg_layer", "mlg_conv", "dense_stream_conv",
           "describe_stream_conv"]


@dataclass(frozen=True)
class StreamConvParams(Params):
    c_in: int = param(16, "input channels")
    c_out: int = param(16, "output channels")
    act_width: int = param(8, "activation width in bits")
    width: int = param(32, "image width in pixels")
    height: int = param(32, "image height in pixels")
    seed: int = param(1, "seed of the generated weights and stimulus", "non-negative")


@dataclass(frozen=True)
class DenseStreamConvParams(StreamConvParams):
    lanes: int = param(3, "weights per clock (divides 9)")

    def floor(self):
        return {"memory": (self.c_out * self.c_in * 9 * 8, f"{self.c_out}x{self.c_in} int8 3x3 kernels")}

    def check(self):
        divides("lanes", self.lanes, "the taps of a 3x3 kernel", 9)


@dataclass(frozen=True)
class SmartDealConvParams(StreamConvParams):
    group_size: int = param(16, "filters sharing one 3×3 basis")
    basis_bits: int = param(7, "basis width in bits (weights are basis_bits + e_max − e_min + 2 bits)")
    e_min: int = param(-7, "smallest power-of-two exponent", "integer")
    e_max: int = param(0, "largest power-of-two exponent", "integer")
    threshold: float = param(0.25, "zero coefficients below this fraction of the group's largest", "fraction")

    def check(self):
        divides("group-size", self.group_size, "--c-out", self.c_out)
        if not 2 <= self.basis_bits <= 16:
            raise ParameterError(f"--basis-bits must be in range [2, 16], not {self.basis_bits}")
        if self.e_min > self.e_max:
            raise ParameterError(f"--e-min {self.e_min} must not exceed --e-max {self.e_max}")


@dataclass(frozen=True)
class MLGConvParams(StreamConvParams):
    bi: int = param(3, "level-1 rank (basis shapes per group)")
    bo: int = param(4, "level-2 rank (groups)")
    lanes: int = param(1, "weights generated per clock (divides 9)")

    def check(self):
        divides("lanes", self.lanes, "the taps of a 3x3 kernel", 9)
        if not 1 <= self.bi <= min(self.c_in, 9):
            raise ParameterError(f"--bi must be in range [1, {min(self.c_in, 9)}] (at most --c-in and 9), not {self.bi}")
        if not 1 <= self.bo <= min(self.c_out, self.c_in * 9):
            raise ParameterError(f"--bo must be in range [1, {min(self.c_out, self.c_in * 9)}] (at most --c-out and "
                                 f"9 --c-in), not {self.bo}")


@dataclass(frozen=True)
class EscalateConvParams(StreamConvParams):
    bases: int = param(2, "ESCALATE basis kernels per input channel (shared: in all)")
    per_channel: bool = param(False, "a basis per input channel instead of one shared by all", "flag")
    coef_mode: str = param("pow2", "ESCALATE coefficients: pow2 (shift-and-add) or int (small multipliers)",
                            "choice", choices=("pow2", "int"))
    coef_bits: int = param(4, "ESCALATE coefficient bits (int) or exponent levels (pow2)")
    density: float = param(0.3, "fraction of ESCALATE coefficients kept", "fraction")
    lanes: int = param(9, "basis taps multiplied per clock (divides 9)")
    outputs: int = param(None, "output channels accumulated at once (divides --c-out; default all)")

    def check(self):
        divides("lanes", self.lanes, "the taps of a 3x3 kernel", 9)
        if self.outputs is not None:
            divides("outputs", self.outputs, "--c-out", self.c_out)
        most = 9 if not self.per_channel else min(self.c_out, 9)
        if not 1 <= self.bases <= most:
            raise ParameterError(f"--bases must be in range [1, {most}], not {self.bases}")
        top = 8 if self.coef_mode == "int" else 16
        if not 2 <= self.coef_bits <= top:
            raise ParameterError(f"--coef-bits must be in range [2, {top}] with --coef-mode {self.coef_mode}, "
                                 f"not {self.coef_bits}")
        if not self.density > 0:
            raise ParameterError(f"--density must be above 0, not {self.density}")


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
    return conv, {"packed_weight_bits": escalate.storage_bits(layer), "relative_error": round(error, 4)}


def describe_escalate_conv(component, extra):
    pe = component.pe
    weights = pe.c_out * pe.c_in * pe.k * pe.k
    info = {"basis_kernels": pe.bases, "coefficient_mode": pe.mode, "multipliers": pe.multipliers,
            "basis_lanes": pe.lanes, "accumulators": pe.outputs, "passes": pe.passes,
            "clocks_per_output_pixel": pe.cycles_per_window, "latency": pe.latency,
            "accumulator_width": pe.acc_width, "dense_int8_weight_bits": weights * 8,
            "float32_weight_bits": weights * 32}
    info.update(extra)
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
    return _stream_conv(p, source), {"packed_weight_bits": smartdeal.storage_bits(layer),
                                     "relative_error": round(error, 4)}


def mlg_layer(p):
    from ..golden import mlg
    return mlg.decompose(sample_layer(p), p.bi, p.bo)


def mlg_conv(p):
    from ..golden import mlg
    from ..hdl.insitu import InSituGenerator
    layer, error = mlg_layer(p)
    source = InSituGenerator(basis=layer.basis, u=layer.u, v=layer.v, bits=layer.bits, lanes=p.lanes)
    return _stream_conv(p, source), {"packed_weight_bits": mlg.storage_bits(layer),
                                     "relative_error": round(error, 4), "multipliers_in_generator": source.multipliers}


def dense_stream_conv(p):
    from ..hdl.streamconv import WeightMemory
    weights = np.clip(np.round(sample_layer(p) * 32), -128, 127).astype(int)
    return (_stream_conv(p, WeightMemory(weights=weights, lanes=p.lanes)),
            {"packed_weight_bits": weights.size * 8, "relative_error": None})


def describe_stream_conv(component, extra):
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
    info.update(extra)
    info["weight_bits"] = info["packed_weight_bits"]
    return info
