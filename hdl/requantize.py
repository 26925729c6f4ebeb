"""Requantisation: the hardware twin of :func:`insitu.golden.fixed.requantize`."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ._params import check_int, validated

__all__ = ["Requantize"]


class Requantize(wiring.Component):
    """Shift right with round-half-up, then saturate; ``lanes`` values per transfer, one transfer per clock.

    ``o = clamp((i + 2**(shift - 1)) >> shift, -2**(out_width - 1), 2**(out_width - 1) - 1)``, the shift
    being arithmetic, so ties round towards +infinity. This is the one requantiser every insitu layer uses;
    its golden twin is :func:`insitu.golden.fixed.requantize`. Latency is one clock (a registered stage).

    Parameters
    ----------
    in_width : int
        Signed input (accumulator) width.
    out_width : int
        Signed output width.
    shift : int
        Right shift, ``0 <= shift < in_width``.
    lanes : int
        Values per transfer.

    Members
    -------
    i : In(stream.Signature(ArrayLayout(signed(in_width), lanes)))
    o : Out(stream.Signature(ArrayLayout(signed(out_width), lanes)))
    """

    @validated
    def __init__(self, in_width, out_width, shift, lanes=1):
        check_int(in_width, "Input width", 1)
        check_int(out_width, "Output width", 1)
        check_int(shift, "Shift", 0, in_width - 1)
        check_int(lanes, "Lane count", 1)
        self._in_width, self._out_width, self._shift, self._lanes = in_width, out_width, shift, lanes
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(in_width), lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(out_width), lanes))),
        })

    in_width = property(lambda self: self._in_width)
    out_width = property(lambda self: self._out_width)
    shift = property(lambda self: self._shift)
    lanes = property(lambda self: self._lanes)
    latency = property(lambda self: 1)

    def elaborate(self, platform):
        m = Module()
        lo, hi = -(1 << (self.out_width - 1)), (1 << (self.out_width - 1)) - 1
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.ready):
            m.d.sync += self.o.valid.eq(self.i.valid)
            for lane in range(self.lanes):
                x = self.i.payload[lane]
                if self.shift:
                    x = (x + (1 << (self.shift - 1))) >> self.shift
                rounded = Signal(signed(self.in_width + 1), name=f"rounded{lane}")
                m.d.comb += rounded.eq(x)
                m.d.sync += self.o.payload[lane].eq(
                    Mux(rounded > hi, hi, Mux(rounded < lo, lo, rounded)))
        return m
