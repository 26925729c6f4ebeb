"""Requantisation: the hardware twin of :func:`insitu.golden.fixed.requantize`."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import check_int, validated

__all__ = ["Requantize", "round_saturate"]


def round_saturate(m, value, shift, width):
    """The requantisation expression, for blocks that requantise inside their own pipeline stage:
    ``sat((value + 2**(shift − 1)) >> shift, width)``, arithmetic shift, ties towards +infinity.

    Adds one comb signal to ``m`` and returns a ``width``-bit-range value; :class:`Requantize` is this
    in a registered stream stage.
    """
    rounded = Signal(signed(len(value) + 1))
    m.d.comb += rounded.eq((value + (1 << (shift - 1))) >> shift if shift else value)
    if len(rounded) <= width:
        return rounded
    # It fits iff the bits from width−1 up are all equal (a sign extension): AND/OR trees, not compares.
    top = rounded[width - 1:]
    fits = ~top.any() | top.all()
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    return Mux(fits, rounded[:width].as_signed(), Mux(rounded[-1], lo, hi))


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
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.ready):
            m.d.sync += self.o.valid.eq(self.i.valid)
            for lane in range(self.lanes):
                m.d.sync += self.o.payload[lane].eq(
                    round_saturate(m, self.i.payload[lane], self.shift, self.out_width))
        return m
