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
    rom_size: int = param(None, "iCE40UP5K layout: the firmware in a ROM of this many bytes of block RAM (a power "
                                 "of two or a multiple of 1024), the RAM in SPRAM (65536 or 131072 bytes)")
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
    model: str = param(None, "model file: the firmware runtime (host protocol, layer interpreter) with the model "
                             "baked in, and peripherals for its layers (--accel-layers)", "text")
    accel_layers: str = param("auto", "with --model: layers that get a peripheral: auto (those that fit the board "
                                      "best, by estimated logic and block RAM), none, or a comma-separated list",
                              "text")

    def check(self):
        if self.model and (self.firmware or self.accel):
            raise ParameterError(f"--model builds the firmware runtime with the model's own peripherals: leave out "
                                 f"{'--firmware' if self.firmware else '--accel'}")

    def derived(self):
        if self.ram_size is None:
            default = 65536 if self.model or self.rom_size is not None else 8192
            return dataclasses.replace(self, ram_size=default)
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


def soc(p, *, frequency, board=None):
    """The SoC with firmware baked into its RAM (or ROM): ``p.firmware``'s C sources, else the smoke test
    ``hello.c``."""
    import tempfile

    from ..soc.firmware import FIRMWARE_DIR, build_firmware
    from ..hdl.params import abandon
    from ..soc.soc import SoC, check_layout
    if p.rom_size is None and (p.ram_size & (p.ram_size - 1) or not 1024 <= p.ram_size <= 1 << 20):
        raise ParameterError(f"RAM size must be a power of two in range [1024, 1048576], not {p.ram_size}")
    if p.rom_size is not None and ((p.rom_size & (p.rom_size - 1) and p.rom_size % 1024) or
                                   not 256 <= p.rom_size <= 1 << 16):
        raise ParameterError(f"ROM size must be a power of two or a multiple of 1024 in range [256, 65536], not "
                             f"{p.rom_size}")
    check_layout(p.ram_size, p.rom_size)
    divisor = round(frequency / p.baud) - 1
    if divisor < 1:
        raise ParameterError(f"{p.baud} baud is too fast for a {frequency / 1e6:g} MHz clock")

    if p.model:
        return _runtime_soc(p, divisor, frequency, board)
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


def parts(component):
    """The parts of a SoC build's resource breakdown (:func:`insitu.tools.build.breakdown`): the CPU, its
    memories, the bus, the system peripherals (system registers, timer, UART) and each accelerator."""
    named = {"cpu": "cpu", "ram": "memory", "rom": "memory", "decoder": "bus", "system": "peripherals",
             "timer": "peripherals", "uart": "peripherals"}
    return lambda path: "soc" if not path else named.get(path[0], path[0])


#: Estimated logic (LCs on iCE40, LUTs on ECP5) and iCE40 block RAMs (4 kbit each; every small memory
#: takes a whole one) of the SoC without peripherals and of each peripheral, from the committed SoC builds
#: (docs/results/build-soc-ice*.json: the SoC 1,700 LC and 8 blocks besides its ROM; a conv peripheral
#: with 8 input channels ~1,900 LC and 15 blocks at one output channel per clock, 750 LC and 2 blocks more
#: per further one; a dense one with 4 lanes ~1,700 LC and 9 blocks). The build reports what was used.
SOC_BASE_LOGIC, SOC_BASE_BLOCKS = 1700, 8


def peripheral_cost(accel, family="ecp5"):
    """``(logic, iCE40 block RAMs, block RAM bits)`` estimated for a peripheral on ``family``. The decoded
    and circulant ones from their committed SoC builds (build-soc-*-smartdeal-conv, -mlg-conv, -circulant:
    SmartDeal ~3,100 LUT / 3,550 LC and 14 blocks; MLG ~2,800 LUT with its multipliers
    (:func:`peripheral_dsp`) and 7 blocks (with CachedGenerator: an iCE40 build of the SoC with mlg-conv
    takes 5,360 LC and 32 blocks, just over the UP5K), circulant ~4,600 LUT and 12 multipliers; on the
    iCE40 (no DSPs without -dsp) the multipliers become logic)."""
    from ..soc.accel import ConvAccel, SmartDealRows, StagedWeights
    fifo_bits = 2 * 64 * 32
    if isinstance(accel, ConvAccel) and isinstance(accel.weights, StagedWeights):
        bits = accel.c_out * accel.c_in * accel.weights.code_width + fifo_bits + 2 * 8 * accel.width * accel.c_in
        return 1150 + 750 * accel.parallel, 5 + accel.c_in + 2 * accel.parallel, bits
    if isinstance(accel, ConvAccel):
        lines = 2 * 8 * accel.width * accel.c_in
        if isinstance(accel.weights, SmartDealRows):
            words = accel.weights.words(accel.c_in, accel.c_out)
            return (3550 if family == "ice40" else 3100), 14, 32 * words + fifo_bits + lines
        multipliers = _mlg_multipliers(accel.weights)
        return (2800 + multipliers * 150 if family == "ice40" else 2800), 7, fifo_bits + lines
    layer = accel.layer
    if layer.bank == "circ":
        return (4600 + 12 * 150 if family == "ice40" else 4600), 10, 32 * layer.words + fifo_bits
    if layer.bank in ("sdfc", "mlgfc"):
        # the decoded fully connected stage of the network compiler (tools/network_stages.linear_stage,
        # fitted to the pipelines' builds) plus the register bank and FIFOs of a dense peripheral (~300)
        lanes, width, decoder, words = _decoded_linear(layer.weights, layer.words, family)
        logic = 300 + 150 + decoder + (_mult_pieces(lanes, width) * 145 if family == "ice40" else 0)
        return logic, 5 + -(-words // 128) + 1, 32 * words + fifo_bits + 8 * layer.n
    weight_blocks = layer.lanes * -(-(layer.m // layer.lanes) * layer.n // 512)
    return 300 + 350 * layer.lanes, 5 + weight_blocks, layer.m * layer.n * 8 + fifo_bits


def _mlg_multipliers(weights):
    """An MLG convolution peripheral's multipliers: its CachedGenerator's ``bo · lanes + 1`` and the PE's."""
    return weights.bo * weights.lanes + 2


def _decoded_linear(weights, words, family):
    """``(weights per clock, weight width, decoder logic, row words)`` of a decoded fully connected layer."""
    from ..soc.accel import SmartDealRows
    if isinstance(weights, SmartDealRows):
        return 3, weights.basis_bits + weights.exp_range + 2, 600 if family == "ice40" else 1260, words
    tb, ub, vb = ((1 << b) - 1 for b in weights.bits)
    return 1, (weights.bo * weights.bi * tb * ub * vb).bit_length() + 1, 25 * weights.bo * (weights.bi + 1) + 100, 0


def _mult_pieces(lanes, width):
    """Multipliers of a StreamMatVec: two partial products per lane, per 8 bits of the weight."""
    return 2 * lanes * max(1, -(-width // 8))


def peripheral_dsp(accel, family="ecp5"):
    """MULT18X18D blocks a peripheral takes on the ECP5 (synthesis maps every multiplier to one; none on
    the iCE40, built without ``-dsp``): an int8 convolution ``c_in · k² · parallel``, a fully connected
    layer two per lane (half-depth products), MLG's generator and PE ``bo · lanes + 2`` (CachedGenerator's
    ``bo · lanes + 1`` and the PE's one: 6 SB_MAC16 in an iCE40 build of the SoC with mlg-conv) and
    circulant's FFTs and MAC 12 (their committed SoC builds); a decoded fully connected layer two per lane and 8 bits of its weights
    (the network compiler's estimate)."""
    from ..soc.accel import ConvAccel, SmartDealRows, StagedWeights
    if family != "ecp5":
        return 0
    if isinstance(accel, ConvAccel):
        weights = accel.weights
        if isinstance(weights, StagedWeights):
            return 0 if weights.pe == "qgp" else accel.c_in * weights.k ** 2 * weights.parallel
        return 1 if isinstance(weights, SmartDealRows) else _mlg_multipliers(weights)
    layer = accel.layer
    if layer.bank in ("sdfc", "mlgfc"):
        lanes, width, _, _ = _decoded_linear(layer.weights, layer.words, family)
        return _mult_pieces(lanes, width)
    return 12 if layer.bank == "circ" else 2 * layer.lanes


def choose_peripherals(model, spec, board, rom_bytes=0):
    """The peripherals for ``model``'s layers that ``spec`` names ("auto", "none", a comma-separated list).
    auto: greedily by estimated multiply-accumulates saved per unit of logic, while the estimated logic
    stays within 90 % of the board's, the block RAM within its capacity (after a ROM of ``rom_bytes``) and
    the DSPs within the board's (:func:`peripheral_dsp`)."""
    from .blob import model_accelerators
    from ..hdl.params import abandon
    family = board.family if board else "ecp5"
    accels = model_accelerators(model, parallel=1 if family == "ice40" else 2)
    if spec == "none":
        abandon(*accels.values())
        return {}
    if spec != "auto":
        names = [n.strip() for n in spec.split(",") if n.strip()]
        unknown = [n for n in names if n not in accels]
        if unknown:
            abandon(*accels.values())
            raise ParameterError(f"--accel-layers: no peripheral can run {', '.join(unknown)} (the layers that "
                                 f"match one: {', '.join(accels) or 'none'})")
        abandon(*(a for n, a in accels.items() if n not in names))
        return {n: accels[n] for n in names}
    cells, _, memory_bits = board.capacity if board and board.capacity else (10 ** 9, "", 10 ** 12)
    logic, blocks, bits = SOC_BASE_LOGIC, SOC_BASE_BLOCKS + -(-rom_bytes // 512), 8 * rom_bytes
    dsp, dsp_have = 0, board.dsp if board and board.dsp else 10 ** 6
    layers = {layer.name: layer for layer in model.weight_layers}

    def benefit(name):
        layer = layers[name]
        return int(np.prod(layer.shape)) * (int(np.prod(layer.out_shape[1:])) if layer.kind == "conv2d" else 1)
    chosen = {}
    for name in sorted(accels, key=lambda n: -benefit(n) / peripheral_cost(accels[n], family)[0]):
        cost, more_blocks, more_bits = peripheral_cost(accels[name], family)
        more_dsp = peripheral_dsp(accels[name], family)
        fits = logic + cost <= 0.9 * cells and (blocks + more_blocks <= 30 if family == "ice40" else
                                                bits + more_bits <= memory_bits) and dsp + more_dsp <= dsp_have
        if fits:
            chosen[name] = accels[name]
            logic, blocks, bits, dsp = logic + cost, blocks + more_blocks, bits + more_bits, dsp + more_dsp
        else:
            abandon(accels[name])
    return chosen


def _runtime_soc(p, divisor, frequency, board):
    """The SoC running the firmware runtime for ``p.model``, with peripherals for its layers.

    On ECP5 (one RAM in block RAM) the model is baked into the image. On the iCE40UP5K the 15 KB of
    block RAM hold only the runtime's code: it runs from a ROM just large enough (a multiple of 1 KB),
    the RAM is SPRAM, and the model is loaded over the UART into it at run time (``insitu run --port``)."""
    import hashlib
    import tempfile

    from ..golden import modelfile
    from ..hdl.params import abandon
    from ..soc.runtime import build_runtime
    from ..soc.soc import SoC, memory_map
    model = modelfile.load(p.model)
    ice40 = board is not None and board.family == "ice40"
    rom_size, ram_size = p.rom_size, p.ram_size
    if ice40 and rom_size is None:
        rom_size = 10240                    # the runtime's code with two peripherals is about 9.9 KB (-Os)
    accels = choose_peripherals(model, p.accel_layers, board, rom_bytes=rom_size or 0)
    registers = {name: a.registers for name, a in accels.items()}
    from .blob import pack_model
    bake = None if ice40 else pack_model(model)
    methods = sorted({layer.method for layer in model.weight_layers})     # only their decoders are compiled in
    try:
        with tempfile.TemporaryDirectory() as tmp:
            image = build_runtime(tmp, memory_map=memory_map(ram_size=ram_size, rom_size=rom_size,
                                                             accelerators=registers),
                                  ram_size=ram_size, rom_size=rom_size, blob=bake, accelerators=accels, methods=methods,
                                  opt="-Os")
            if ice40 and p.rom_size is None:          # the smallest ROM that holds it
                rom_size = -(-len(image) // 1024) * 1024
                image = build_runtime(tmp, memory_map=memory_map(ram_size=ram_size, rom_size=rom_size,
                                                                 accelerators=registers),
                                      ram_size=ram_size, rom_size=rom_size, blob=None, accelerators=accels,
                                      methods=methods, opt="-Os")
        top = SoC(ram_size=ram_size, rom_size=rom_size, uart_divisor=divisor, accelerators=accels, uart_depth=512,
                  firmware=image)
    except Exception:
        abandon(*accels.values())
        raise
    return top, {"firmware": "insitu runtime (server.c, link.c, interp.c, accel.c)", "model": Path(p.model).name,
                 "model_delivery": "baked into the image" if bake else "loaded over the UART into SPRAM at run time",
                 "firmware_bytes": len(image), "firmware_sha256": hashlib.sha256(image).hexdigest(),
                 "methods_compiled_in": methods, "peripherals_for_layers": list(accels), "uart_baud_at_target_clock": round(frequency / (divisor + 1))}


def describe_soc(component, extra):
    return {"ram_bytes": component.ram_size, "ram": "block RAM" if component.rom_size is None else "SPRAM",
            "rom_bytes": component.rom_size or 0, **extra, "accelerators": list(component.accelerators)}
