"""Dense int8 weights in a single-port RAM, written at run time and streamed row by row: SPRAM on the
iCE40UP5K (whose 1 Mbit of SPRAM no bitstream can initialise), block RAM elsewhere and in simulation."""

from amaranth import Cat, ClockSignal, Instance, Module, Mux, ResetInserter, Signal
from amaranth.lib import fifo, memory, wiring
from amaranth.lib.wiring import In, Out

from .params import ParameterError, check_int, validated
from .streamconv import weight_stream_signature

__all__ = ["RamWeights"]


class RamWeights(wiring.Component):
    """An ``m × n`` int8 matrix streamed as :class:`~insitu.hdl.streammatvec.StreamMatVec` consumes it:
    row by row, ``lanes`` weights per transfer, ``⌈n/lanes⌉`` transfers per row (a row's tail past ``n``
    is whatever was written there; StreamMatVec multiplies it by zero), one transfer per clock, the matrix
    repeating.

    The weights are loaded at run time, a byte per clock, through ``w_addr``/``w_data``/``w_en``: byte
    ``(row · ⌈n/lanes⌉ + t) · lanes + lane`` is weight ``(row, t · lanes + lane)`` (:meth:`image` is that
    layout). The memory has one port, so a clock that writes reads nothing and the stream pauses for it.
    Pulse ``restart`` after loading: the stream starts again at row 0, without the transfers it had
    prefetched.

    The words read go into a three-entry FIFO in front of ``o`` (two would halve the rate), so the
    memory's address depends on the FIFO's level (registers), not on the consumer's ``o.ready``.

    On an iCE40UP part each pair of lanes is one SB_SPRAM256KA (16,384 words of 16 bits), so
    ``m · ⌈n/lanes⌉`` must be at most 16,384 and ``⌈lanes/2⌉`` blocks are used.

    Parameters
    ----------
    m, n : int
        Rows and columns.
    lanes : int
        Weights per transfer: 1, 2, 4 or 8.

    Members
    -------
    o : Out(weight_stream_signature(8, lanes))
    w_addr : In(range(m · ⌈n/lanes⌉ · lanes)), w_data : In(8), w_en : In(1)
        The byte write port.
    restart : In(1)
    """

    #: words of one SB_SPRAM256KA
    SPRAM_WORDS = 16384

    @validated
    def __init__(self, *, m, n, lanes=2):
        check_int(m, "Row count", 1)
        check_int(n, "Column count", 1)
        check_int(lanes, "Weight lane count", 1, 8)
        if lanes & (lanes - 1):
            raise ParameterError(f"Weight lane count must be 1, 2, 4 or 8 (a byte address splits into word and "
                                 f"lane by bits), not {lanes!r}")
        self._m, self._n, self._lanes = m, n, lanes
        if self.words > self.SPRAM_WORDS:
            raise ParameterError(f"A {m}x{n} matrix at {lanes} lanes needs {self.words:,} words per lane pair; "
                                 f"an SPRAM holds {self.SPRAM_WORDS:,}: use more lanes")
        super().__init__({
            "o": Out(weight_stream_signature(8, lanes)),
            "w_addr": In(range(self.words * lanes)),
            "w_data": In(8),
            "w_en": In(1),
            "restart": In(1),
        })

    m = property(lambda self: self._m)
    n = property(lambda self: self._n)
    lanes = property(lambda self: self._lanes)

    @property
    def transfers_per_row(self):
        return -(-self._n // self._lanes)

    @property
    def words(self):
        """Transfers per pass over the matrix (words of each lane's memory)."""
        return self._m * self.transfers_per_row

    @property
    def spram_blocks(self):
        """SB_SPRAM256KA blocks on an iCE40UP part."""
        return -(-self._lanes // 2)

    @property
    def weight_bits(self):
        return self._m * self._n * 8

    def image(self, weights):
        """The bytes to write, in address order, for ``weights`` (``m × n`` integers in [-128, 127]); a
        row's padded tail is zero."""
        rows = [[int(v) for v in row] for row in weights]
        if len(rows) != self._m or any(len(row) != self._n for row in rows):
            raise ParameterError(f"Weights must be shaped ({self._m}, {self._n})")
        if any(not -128 <= v <= 127 for row in rows for v in row):
            raise ParameterError("Weights must be int8, in [-128, 127]")
        width = self.transfers_per_row * self._lanes
        return bytes(v & 0xff for row in rows for v in row + [0] * (width - self._n))

    def elaborate(self, platform):
        m = Module()
        lanes, words = self._lanes, self.words
        # ``addr`` is the transfer to offer next; the port reads it in every clock without a write, so
        # after such a clock ``data`` holds word ``addr`` (``primed``). A word is taken into the FIFO.
        m.submodules.queue = queue = ResetInserter(self.restart)(fifo.SyncFIFOBuffered(width=8 * lanes, depth=3))
        addr = Signal(range(words))
        nxt = Signal(range(words), init=1 % words)  # the transfer after ``addr``: a register, no carry
        primed = Signal()
        take = Signal()
        port_addr = Signal(range(words))
        shift = (lanes - 1).bit_length()
        word, lane = self.w_addr[shift:], self.w_addr[:shift] if shift else 0
        m.d.comb += [
            take.eq(primed & ~self.w_en & ~self.restart & queue.w_rdy),
            port_addr.eq(Mux(self.w_en, word, Mux(take, nxt, addr))),
            queue.w_en.eq(take),
            self.o.valid.eq(queue.r_rdy), self.o.payload.eq(queue.r_data), queue.r_en.eq(self.o.ready),
        ]
        m.d.sync += primed.eq(~self.w_en & ~self.restart)
        with m.If(self.restart):
            m.d.sync += [addr.eq(0), nxt.eq(1 % words)]
        with m.Elif(take):
            m.d.sync += [addr.eq(nxt), nxt.eq(Mux(nxt == words - 1, 0, nxt + 1))]

        data = Signal(8 * lanes)
        if getattr(platform, "device", "").startswith("iCE40UP"):
            outs, address = [], Signal(14)
            m.d.comb += address.eq(port_addr)
            for block in range(self.spram_blocks):
                out = Signal(16, name=f"spram{block}_out")
                m.submodules[f"spram{block}"] = Instance(
                    "SB_SPRAM256KA", i_ADDRESS=address, i_DATAIN=Cat(self.w_data, self.w_data),
                    i_MASKWREN=Mux(self.w_addr[0] if shift else 0, 0b1100, 0b0011),
                    i_WREN=self.w_en & ((lane >> 1) == block if shift > 1 else 1), i_CHIPSELECT=1, i_CLOCK=ClockSignal(),
                    i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1, o_DATAOUT=out)
                outs.append(out)
            m.d.comb += data.eq(Cat(*outs))
        else:
            m.submodules.mem = mem = memory.Memory(shape=8 * lanes, depth=words, init=[])
            wr = mem.write_port(granularity=8)
            rd = mem.read_port(transparent_for=())
            m.d.comb += [wr.addr.eq(port_addr), wr.data.eq(self.w_data.replicate(lanes)),
                         wr.en.eq(self.w_en << lane), rd.addr.eq(port_addr), data.eq(rd.data)]
        m.d.comb += queue.w_data.eq(data[:8 * lanes])
        return m
