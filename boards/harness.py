"""A board top that keeps any stream block alive through synthesis.

The block's input stream is fed from a pseudo-random source (a 32-bit Galois LFSR shifting into a
register as wide as the payload), its output stream is always ready, and every output bit is folded
into one register that drives an LED. Nothing can be optimised away, and the harness itself costs one
flip-flop per input payload bit plus a small XOR tree on the output.
"""

from amaranth import Cat, ClockDomain, Elaboratable, Module, Signal, Value
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer

from ..hdl.params import ParameterError
from .clocks import ClockGenerator

__all__ = ["Harness", "SoCHarness", "request_led"]


def request_led(platform):
    """The first LED of the board (``led`` or the red channel of ``rgb_led``), as an output buffer."""
    for name, sub in (("led", None), ("rgb_led", "r")):
        try:
            res = platform.request(name, 0, dir="-")
        except Exception:
            continue
        return res if sub is None else getattr(res, sub)
    raise ParameterError(f"{type(platform).__name__} has no LED resource")


class Harness(Elaboratable):
    """Wrap ``dut`` (a component with stream ports ``o`` and, usually, ``i``) for a ``family`` board at
    ``frequency`` Hz."""

    def __init__(self, dut, family, frequency, *, seed=1):
        self.dut = dut
        self.family = family
        self.frequency = frequency
        self.seed = seed

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain()
        m.submodules.clocks = ClockGenerator(platform, self.family, self.frequency)
        m.submodules.dut = dut = self.dut

        lfsr = Signal(32, init=(self.seed * 0x9E3779B9) & 0xFFFFFFFF or 1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], 0) ^ (0x80200003 * lfsr[0]))
        if "i" in dut.signature.members:     # generators (e.g. InSituGenerator) have no input stream
            payload_bits = len(Value.cast(dut.i.payload))
            stimulus = Signal(payload_bits)
            m.d.sync += stimulus.eq(Cat(lfsr[0], stimulus[:-1]) if payload_bits > 1 else lfsr[0])
            m.d.comb += [dut.i.valid.eq(1), dut.i.payload.eq(stimulus)]
        m.d.comb += dut.o.ready.eq(1)

        folded = Signal()
        with m.If(dut.o.valid):
            m.d.sync += folded.eq(folded ^ Value.cast(dut.o.payload).xor())

        led = request_led(platform)
        m.submodules.led = led_buf = io.Buffer("o", led)
        m.d.comb += led_buf.o.eq(folded)
        return m


class SoCHarness(Elaboratable):
    """Board top of an :class:`~insitu.soc.SoC`: clock and reset from the PLL, the board's UART pins
    (receive through a two-flop synchroniser), and the first LED lit once the firmware has exited."""

    def __init__(self, soc, family, frequency, *, seed=1):
        self.dut = soc
        self.family = family
        self.frequency = frequency

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain()
        m.submodules.clocks = ClockGenerator(platform, self.family, self.frequency)
        m.submodules.soc = soc = self.dut
        try:
            uart = platform.request("uart", 0, dir={"tx": "-", "rx": "-"})
        except Exception:
            raise ParameterError(f"{type(platform).__name__} has no UART resource for the SoC") from None
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.d.comb += tx.o.eq(soc.uart_tx)
        m.submodules.rx_sync = FFSynchronizer(rx.i, soc.uart_rx, init=1)
        exited = Signal()
        with m.If(soc.exit_stb):
            m.d.sync += exited.eq(1)
        m.submodules.led = led = io.Buffer("o", request_led(platform))
        m.d.comb += led.o.eq(exited)
        return m
