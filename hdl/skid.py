"""A skid register: a stream stage whose ``i.ready`` is a flip-flop, with no added latency."""

from amaranth import Module, Mux, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Skid"]


class Skid(wiring.Component):
    """Cut a stream's ready path: ``i.ready`` comes from a register, ``o.ready`` goes only into registers.

    A payload offered on ``i`` passes straight through to ``o`` (same clock, no latency) while the skid
    register is empty. A payload that ``o`` does not take is held in the register, which then drops
    ``i.ready`` until ``o`` takes it. Throughput is one transfer per clock. The cost is one payload's
    worth of flip-flops and a multiplexer.

    Parameters
    ----------
    shape : shape-castable
        The payload.

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    """

    def __init__(self, shape):
        Shape.cast(shape)
        self._shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    shape = property(lambda self: self._shape)

    def elaborate(self, platform):
        m = Module()
        held = Signal.like(self.i.payload)
        full = Signal()
        m.d.comb += [
            self.i.ready.eq(~full),
            self.o.valid.eq(self.i.valid | full),
            self.o.payload.eq(Mux(full, held, self.i.payload)),
        ]
        with m.If(self.o.ready):
            m.d.sync += full.eq(0)
        with m.Elif(self.i.valid & ~full):
            m.d.sync += full.eq(1)
        # The register follows the input while empty: its enable is ``~full`` (a flip-flop), so ``o.ready``
        # drives only ``full``, not every bit of the payload.
        with m.If(~full):
            m.d.sync += held.eq(self.i.payload)
        return m
