"""Clock generation for board builds: a PLL from the board oscillator to the target frequency.

The ``sync`` domain runs from the PLL output and is held in reset until the PLL locks and a power-on
delay has passed (iCE40 block RAMs read as zero for ~3 µs after configuration).
"""

from amaranth import ClockDomain, ClockSignal, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.lib import io

from ..hdl.params import ParameterError

__all__ = ["ice40_pll_params", "ecp5_pll_params", "pll_plan", "PLL_RANGE", "ClockGenerator"]

#: Output frequencies (Hz) each family's PLL is specified for: iCE40 sysCLOCK PLLOUT 16–275 MHz
#: (iCE40 UltraPlus datasheet), ECP5 EHXPLLL CLKOP 3.125–400 MHz (ECP5 sysCLOCK guide).
PLL_RANGE = {"ice40": (16e6, 275e6), "ecp5": (3.125e6, 400e6)}


def pll_plan(family, f_in, f_out):
    """``(params, f_achieved)`` for a clock of ``f_out`` Hz from an ``f_in`` Hz oscillator: ``params`` is
    None when the oscillator is used directly. A ValueError (one line) for a frequency the PLL cannot make."""
    if family not in PLL_RANGE:
        raise ParameterError(f"FPGA family must be 'ice40' or 'ecp5', not {family!r}")
    if isinstance(f_out, bool) or not isinstance(f_out, (int, float)) or not f_out == f_out or f_out <= 0:
        raise ParameterError(f"Clock frequency must be a positive number, not {f_out!r}")
    if abs(f_in - f_out) < 1:
        return None, f_in
    lo, hi = PLL_RANGE[family]
    if not lo <= f_out <= hi:
        raise ParameterError(f"Clock frequency {f_out / 1e6:g} MHz is outside what the {family} PLL makes "
                             f"({lo / 1e6:g} to {hi / 1e6:g} MHz)")
    params = ice40_pll_params(f_in, f_out) if family == "ice40" else ecp5_pll_params(f_in, f_out)
    return params, params[-1]


def ice40_pll_params(f_in, f_out):
    """Best SB_PLL40 divider settings ``(divr, divf, divq, filter_range, f_achieved)`` for ``f_out`` Hz.

    Follows the iCE40 sysCLOCK PLL limits: PFD 10–133 MHz, VCO 533–1066 MHz.
    """
    best = None
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                f = f_vco / 2 ** divq
                if best is None or abs(f - f_out) < abs(best[4] - f_out):
                    filter_range = next(n for n, lim in enumerate((17e6, 26e6, 44e6, 66e6, 101e6), 1)
                                        if f_pfd < lim) if f_pfd < 101e6 else 6
                    best = (divr, divf, divq, filter_range, f)
    if best is None:
        raise ParameterError(f"No iCE40 PLL setting reaches {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    return best


def ecp5_pll_params(f_in, f_out):
    """Best EHXPLLL settings ``(clki_div, clkfb_div, clkop_div, f_achieved)``; VCO 400–800 MHz."""
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in / clki_div
        if f_pfd < 3.125e6:
            break
        for clkfb_div in range(1, 81):
            f = f_pfd * clkfb_div
            for clkop_div in range(1, 129):
                if 400e6 <= f * clkop_div <= 800e6:
                    if best is None or abs(f - f_out) < abs(best[3] - f_out):
                        best = (clki_div, clkfb_div, clkop_div, f)
                    break
    if best is None or not 3.125e6 <= best[3] <= 400e6:
        raise ParameterError(f"No ECP5 PLL setting reaches {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    return best


class ClockGenerator(Elaboratable):
    """Drive the ``sync`` domain (defined by the parent) at about ``frequency`` Hz from the board clock.

    :attr:`frequency` is the frequency the PLL settings achieve. No constraint is added on the PLL output:
    nextpnr derives it from the board oscillator's constraint and the PLL settings (a constraint on an
    internal net is dropped when synthesis renames the net), and the build report checks the derived
    target.
    """

    def __init__(self, platform, family, frequency):
        self._family = family
        self._params, self.frequency = pll_plan(family, platform.default_clk_frequency, frequency)

    def _input_clock(self, m, platform):
        if platform.default_clk == "SB_HFOSC":
            clk = Signal()
            m.submodules.hfosc = Instance("SB_HFOSC", i_CLKHFEN=1, i_CLKHFPU=1,
                                          p_CLKHF_DIV=f"0b{platform.hfosc_div:02b}", o_CLKHF=clk)
            return clk
        pad = platform.request(platform.default_clk, dir="-")
        m.submodules.clk_buf = buf = io.Buffer("i", pad)
        return buf.i

    def elaborate(self, platform):
        m = Module()
        clk, lock = Signal(name="pll_clk"), Signal(name="pll_lock")
        if self._params is None:
            m.d.comb += [clk.eq(self._input_clock(m, platform)), lock.eq(1)]
        elif self._family == "ice40" and platform.default_clk == "SB_HFOSC":
            divr, divf, divq, filter_range, _ = self._params
            m.submodules.pll = Instance(
                "SB_PLL40_CORE",
                p_FEEDBACK_PATH="SIMPLE", p_DIVR=divr, p_DIVF=divf, p_DIVQ=divq,
                p_FILTER_RANGE=filter_range,
                i_REFERENCECLK=self._input_clock(m, platform), i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=clk, o_LOCK=lock)
        elif self._family == "ice40":
            # The oscillator pin is the PLL's dedicated pad: the PLL must take it without an SB_IO.
            divr, divf, divq, filter_range, _ = self._params
            pad = platform.request(platform.default_clk, dir="-")
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_DIVR=divr, p_DIVF=divf, p_DIVQ=divq,
                p_FILTER_RANGE=filter_range,
                i_PACKAGEPIN=pad.io, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=clk, o_LOCK=lock)
        else:
            clk_in = self._input_clock(m, platform)
            clki_div, clkfb_div, clkop_div, f = self._params
            m.submodules.pll = Instance(
                "EHXPLLL",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                p_CLKOP_DIV=clkop_div, p_CLKOP_CPHASE=clkop_div - 1, p_CLKOP_FPHASE=0,
                p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=clkfb_div, p_CLKI_DIV=clki_div,
                i_CLKI=clk_in, i_CLKFB=clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0,
                i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
                o_CLKOP=clk, o_LOCK=lock,
                a_FREQUENCY_PIN_CLKI=f"{platform.default_clk_frequency / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{f / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2")

        # Power-on reset: hold ``sync`` in reset until the PLL has been locked for ~20 µs.
        m.domains.por = ClockDomain(reset_less=True, local=True)
        delay = int(20e-6 * self.frequency)
        timer = Signal(range(delay + 1))
        ready = Signal()
        m.d.comb += [ClockSignal("por").eq(clk), ClockSignal("sync").eq(clk), ResetSignal("sync").eq(~ready)]
        with m.If(~lock):
            m.d.por += [timer.eq(0), ready.eq(0)]
        with m.Elif(timer == delay):
            m.d.por += ready.eq(1)
        with m.Else():
            m.d.por += timer.eq(timer + 1)
        return m
