"""A byte-wide single-port memory with registered requests and read data: SPRAM on the iCE40UP5K, block RAM
elsewhere."""

from amaranth import Array, Cat, ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .params import check_int, validated

__all__ = ["ByteMemory"]


class ByteMemory(wiring.Component):
    """A byte-wide single-port memory with registers on both sides: a request (``addr``, and ``w_en`` with
    ``w_data`` for a write) is registered, the memory acts on it the next clock, and the byte read (the
    one at the request's address, before a write) is registered again: ``r_data`` holds it
    :attr:`LATENCY` clocks after the request. Requests are served in order, one per clock. Neither side
    has logic between the memory and a flip-flop, which a byte-at-a-time state machine around it needs to
    make its clock.

    On an iCE40UP part it is built from SB_SPRAM256KA blocks (32 KB each, at most four); elsewhere, and
    in simulation, from block RAM (``amaranth.lib.memory``), initially zero.

    Members
    -------
    addr : In(range(size)), w_data : In(8), w_en : In(1), r_data : Out(8)
    """

    #: clocks from a read request to its byte on ``r_data``
    LATENCY = 3

    @validated
    def __init__(self, *, size):
        check_int(size, "Memory size", 1, 4 * 32768)
        self._size = size
        super().__init__({"addr": In(range(size)), "w_data": In(8), "w_en": In(1), "r_data": Out(8)})

    size = property(lambda self: self._size)

    def elaborate(self, platform):
        m = Module()
        addr, w_data, w_en = Signal(17), Signal(8), Signal()
        m.d.sync += [addr.eq(self.addr), w_data.eq(self.w_data), w_en.eq(self.w_en)]
        if not getattr(platform, "device", "").startswith("iCE40UP"):
            m.submodules.mem = mem = memory.Memory(shape=8, depth=self._size, init=[])
            wr, rd = mem.write_port(), mem.read_port(transparent_for=())
            m.d.comb += [wr.addr.eq(addr), wr.data.eq(w_data), wr.en.eq(w_en), rd.addr.eq(addr)]
            m.d.sync += self.r_data.eq(rd.data)
            return m
        odd, bank = Signal(), Signal(2)
        m.d.sync += [odd.eq(addr[0]), bank.eq(addr[15:17])]
        outs = []
        for b in range(-(-self._size // 32768)):
            out = Signal(16, name=f"spram{b}_out")
            m.submodules[f"spram{b}"] = Instance(
                "SB_SPRAM256KA", i_ADDRESS=addr[1:15], i_DATAIN=Cat(w_data, w_data),
                i_MASKWREN=Mux(addr[0], 0b1100, 0b0011), i_WREN=w_en & (addr[15:17] == b),
                i_CHIPSELECT=1, i_CLOCK=ClockSignal(), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1, o_DATAOUT=out)
            outs.append(out)
        word = Array(outs)[bank] if len(outs) > 1 else outs[0]
        m.d.sync += self.r_data.eq(Mux(odd, word[8:], word[:8]))
        return m
