"""An 8N1 UART as two stream components: :class:`UARTRx` (line → bytes) and :class:`UARTTx` (bytes → line)."""

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .params import check_int, validated

__all__ = ["UARTRx", "UARTTx"]


class UARTRx(wiring.Component):
    """8N1 receiver: each byte is offered on ``o`` for one clock (a byte not taken then is lost, as on a
    wire; ``dropped`` counts such bytes, saturating).

    Members
    -------
    rx : In(1) (idle high), o : Out(stream.Signature(8)), dropped : Out(8)
    """

    @validated
    def __init__(self, *, clocks_per_bit):
        check_int(clocks_per_bit, "Clocks per bit", 4, 1 << 16)
        self._cpb = clocks_per_bit
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)), "dropped": Out(8)})

    def elaborate(self, platform):
        m = Module()
        sync = Signal(2, init=3)
        m.d.sync += sync.eq(Cat(self.rx, sync[0]))
        line = sync[1]
        bits = Signal(range(11))            # 10: start bit, 9…2: data bits, 1: stop bit, 0: idle
        timer = Signal(range(self._cpb))
        shift = Signal(8)
        m.d.sync += self.o.valid.eq(0)
        with m.If(self.o.valid & ~self.o.ready & (self.dropped != 255)):
            m.d.sync += self.dropped.eq(self.dropped + 1)
        with m.If(bits == 0):
            with m.If(~line):
                m.d.sync += [bits.eq(10), timer.eq(self._cpb // 2)]
        with m.Elif(timer == 0):
            m.d.sync += [timer.eq(self._cpb - 1), bits.eq(bits - 1)]
            with m.If((bits == 10) & line):         # a glitch, not a start bit
                m.d.sync += bits.eq(0)
            with m.Elif((bits > 1) & (bits < 10)):
                m.d.sync += shift.eq(Cat(shift[1:], line))
            with m.Elif(bits == 1):                 # stop bit: deliver (a framing error is dropped)
                m.d.sync += [self.o.valid.eq(line), self.o.payload.eq(shift)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter: takes a byte from ``i`` whenever the line is idle.

    Members
    -------
    i : In(stream.Signature(8)), tx : Out(1) (idle high)
    """

    @validated
    def __init__(self, *, clocks_per_bit):
        check_int(clocks_per_bit, "Clocks per bit", 4, 1 << 16)
        self._cpb = clocks_per_bit
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        shift = Signal(10, init=0x3FF)
        bits = Signal(range(11))
        timer = Signal(range(self._cpb))
        m.d.comb += [self.i.ready.eq(bits == 0), self.tx.eq(shift[0])]
        with m.If(bits == 0):
            with m.If(self.i.valid):
                m.d.sync += [shift.eq(Cat(0, self.i.payload, 1)), bits.eq(10), timer.eq(self._cpb - 1)]
        with m.Elif(timer == 0):
            m.d.sync += [shift.eq(Cat(shift[1:], 1)), bits.eq(bits - 1), timer.eq(self._cpb - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m
