"""The SoC design: sentinel-cpu with RAM, UART, timer and optionally one accelerator peripheral."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..hdl.params import ParameterError
from .design_params import Params, param
from .designs_stream import MLGConvParams, SmartDealConvParams

__all__ = ["SOC_ACCELS", "SoCParams", "soc_accelerator", "soc", "describe_soc"]


SOC_ACCELS = ("qgp-conv", "dense-conv", "smartdeal-conv", "mlg-conv", "fc", "circulant")


@dataclass(frozen=True)
class SoCParams(Params):
    ram_size: int = param(None, "RAM bytes, a power of two (default 8192 of block RAM holding program and data; "
                                 "with --rom-size, 65536 of SPRAM for data)")
    rom_size: int = param(None, "iCE40UP5K layout: the firmware in a ROM of this many bytes of block RAM, the RAM in "
                                 "SPRAM (65536 or 131072 bytes)")
    accel: str = param(None, "add one accelerator peripheral: qgp-conv, dense-conv, smartdeal-conv or mlg-conv (a "
                              "c_in → c_out 3×3 layer on a width × height image; smartdeal-conv decodes one 7-bit "
                              "basis and exponents −7…0, mlg-conv generates from bi 3, bo 4 factors, as the "
                              "smartdeal-conv and mlg-conv designs do), fc (dense c_out × 4·c_in int8 layer, 4 "
                              "lanes), circulant (c_out × 4·c_in block-circulant layer, --block k)", "choice",
                        SOC_ACCELS)
    c_in: int = param(8, "input channels")
    c_out: int = param(16, "output channels")
    block: int = param(16, "circulant block size")
    parallel: int = param(2, "output channels per clock")
    width: int = param(8, "image width in pixels")
    height: int = param(8, "image height in pixels")
    baud: int = param(115200, "UART bit rate")
    seed: int = param(1, "placement seed", "non-negative")
    firmware: tuple = param(None, "C sources baked into the memory image instead of the smoke test hello.c "
                                  "(the runtime and start-up code are added)", "files")

    def derived(self):
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
    """The SoC with firmware baked into its RAM (or ROM): ``p.firmware``'s C sources, else the smoke test
    ``hello.c``."""
    import tempfile

    from ..soc.firmware import FIRMWARE_DIR, build_firmware
    from ..hdl.params import abandon
    from ..soc.soc import SoC, check_layout
    if p.rom_size is None and (p.ram_size & (p.ram_size - 1) or not 1024 <= p.ram_size <= 1 << 20):
        raise ParameterError(f"RAM size must be a power of two in range [1024, 1048576], not {p.ram_size}")
    if p.rom_size is not None and (p.rom_size & (p.rom_size - 1) or not 256 <= p.rom_size <= 1 << 16):
        raise ParameterError(f"ROM size must be a power of two in range [256, 65536], not {p.rom_size}")
    check_layout(p.ram_size, p.rom_size)
    divisor = round(frequency / p.baud) - 1
    if divisor < 1:
        raise ParameterError(f"{p.baud} baud is too fast for a {frequency / 1e6:g} MHz clock")

    accels = {} if p.accel is None else {p.accel.replace("-", "_"): soc_accelerator(p)}
    top = SoC(ram_size=p.ram_size, rom_size=p.rom_size, uart_divisor=divisor, accelerators=accels)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sources = list(p.firmware) if p.firmware else [FIRMWARE_DIR / "hello.c"]
            top.firmware = build_firmware(sources, tmp, memory_map=top.memory_map(), ram_size=p.ram_size,
                                          stack=256 if not p.firmware else 1024)
    except Exception:
        abandon(top, *accels.values())           # refused: nothing was built as far as the user is concerned
        raise
    import hashlib
    return top, {"firmware": [Path(s).name for s in sources], "firmware_bytes": len(top.firmware),
                 "firmware_sha256": hashlib.sha256(top.firmware).hexdigest(),
                 "uart_baud_at_target_clock": round(frequency / (divisor + 1))}


def describe_soc(component, extra):
    return {"ram_bytes": component.ram_size, "ram": "block RAM" if component.rom_size is None else "SPRAM",
            "rom_bytes": component.rom_size or 0, **extra,
            "accelerators": list(component.accelerators)}
