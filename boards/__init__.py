"""Board definitions: amaranth-boards platforms plus what insitu needs to build and flash them."""

from dataclasses import dataclass, field

from ..hdl.params import ParameterError

__all__ = ["Board", "BOARDS", "get_board", "UnknownBoard"]


class UnknownBoard(ParameterError):
    pass


@dataclass(frozen=True)
class Board:
    """One supported board.

    ``target_mhz`` is the default clock of the ``sync`` domain (a PLL from the board oscillator);
    ``programmer`` is the flashing tool and the environment variable that overrides it.
    """
    name: str
    platform_path: str          # "module:Class" in amaranth_boards
    family: str                 # "ice40" or "ecp5"
    target_mhz: float
    programmer: tuple           # (env var, default program)
    build_tools: dict = field(default_factory=dict)   # env var -> (program, where to get it), at build time
    #: (logic cells, their name, bits of RAM: block RAM and SPRAM, plus LUT RAM on ECP5) for the estimate a
    #: build checks before elaborating anything
    capacity: tuple = None
    #: DSP blocks (iCE40UP5K SB_MAC16, used only with synth -dsp; ECP5 MULT18X18D) and block RAMs (iCE40 EBR of
    #: 4 kbit, ECP5 DP16KD of 18 kbit)
    dsp: int = 0
    blocks: int = 0

    def platform(self):
        import importlib
        module, cls = self.platform_path.split(":")
        return getattr(importlib.import_module(f"amaranth_boards.{module}"), cls)()


#: iCE40UP5K: 5,280 LCs, 30 EBR of 4 kbit, 4 SPRAM of 256 kbit.
_UP5K = (5280, "LC", 30 * 4096 + 4 * 262144)


def _ecp5(luts, ebr):
    """ECP5: LUT4s, EBR of 18 kbit, and LUT RAM (16 bits per LUT at most)."""
    return (luts, "LUT", ebr * 18432 + 16 * luts)


BOARDS = {b.name: b for b in [
    Board("icebreaker", "icebreaker:ICEBreakerPlatform", "ice40", 48, ("ICEPROG", "iceprog"),
          capacity=_UP5K, dsp=8, blocks=30),
    Board("upduino", "upduino_v3:UpduinoV3Platform", "ice40", 48, ("ICEPROG", "iceprog"), capacity=_UP5K,
          dsp=8, blocks=30),
    Board("ulx3s-85f", "ulx3s:ULX3S_85F_Platform", "ecp5", 100, ("OPENFPGALOADER", "openFPGALoader"),
          capacity=_ecp5(83640, 208), dsp=156, blocks=208),
    Board("ulx3s-12f", "ulx3s:ULX3S_12F_Platform", "ecp5", 100, ("OPENFPGALOADER", "openFPGALoader"),
          capacity=_ecp5(12096, 32), dsp=28, blocks=32),
    Board("orangecrab", "orangecrab_r0_2:OrangeCrabR0_2_25FPlatform", "ecp5", 100, ("DFU_UTIL", "dfu-util"),
          build_tools={"DFU_SUFFIX": ("insitu-dfu-suffix", "insitu itself (pip install -e .), or set DFU_SUFFIX "
                                                         "to dfu-util's dfu-suffix")}, capacity=_ecp5(24288, 56), dsp=28, blocks=56),
]}


def get_board(name):
    try:
        return BOARDS[name]
    except KeyError:
        raise UnknownBoard(f"Unknown board {name!r}; choose one of: {', '.join(BOARDS)}") from None
