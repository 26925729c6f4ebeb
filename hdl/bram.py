"""Block RAMs whose read-during-write collisions are ruled out by the design, and a FIFO built on one.

Amaranth gives every read port defined collision semantics (transparent or read-first). Yosys maps those
onto iCE40 block RAM, which has neither, by adding a bypass: a register per data bit and an address
comparator (for a 32-bit memory about 35–70 logic cells; for the 128-bit line buffer of a 3×3 window,
about 256). Where the design never reads and writes one address in the same clock, that logic is waste.

:func:`block_ram` builds one-write, one-read memories marked with the :data:`COLLISION_FREE` attribute;
the build runs :data:`YOSYS_SCRIPT` after reading the design, which declares read-during-write of those
memories undefined so that Yosys maps them without a bypass. Simulation keeps Amaranth's read-first
semantics, so a design whose claim were wrong would still simulate correctly: each caller documents why
its addresses never collide. :class:`BlockFIFO` replaces ``amaranth.lib.fifo.SyncFIFOBuffered`` (same
ports and timing) for this reason alone.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .params import check_int, validated

__all__ = ["COLLISION_FREE", "YOSYS_SCRIPT", "block_ram", "BlockFIFO"]

#: memory attribute: the design never reads an address in the clock it writes it
COLLISION_FREE = "insitu_collision_free"

#: Yosys commands, run after ``read_rtlil``: the marked memories' single read port gets undefined
#: read-during-write behaviour (no transparency, collision result ``x``). ``memory_collect`` (which
#: skips modules that still hold processes, hence ``proc``) turns each memory into one cell that carries
#: the attribute; synthesis runs both passes anyway.
YOSYS_SCRIPT = ("proc\nmemory_collect\n"
                f"setparam -set RD_TRANSPARENCY_MASK 1'0 -set RD_COLLISION_X_MASK 1'1 a:{COLLISION_FREE}")


def block_ram(m, name, *, shape, depth, init=(), granularity=None, collision_free=True):
    """Add a memory with one write port and one synchronous read port to ``m`` as submodule ``name``;
    returns ``(write_port, read_port)``.

    ``collision_free``: the caller guarantees that no clock reads the address it writes (the memory
    gets :data:`COLLISION_FREE`); otherwise the read port is transparent (a read of the address being
    written returns the new data), which costs a bypass on iCE40."""
    mem = memory.Memory(shape=shape, depth=depth, init=init,
                        attrs={COLLISION_FREE: 1} if collision_free else None)
    m.submodules[name] = mem
    wr = mem.write_port(granularity=granularity) if granularity else mem.write_port()
    rd = mem.read_port(transparent_for=() if collision_free else (wr,))
    return wr, rd


class BlockFIFO(wiring.Component):
    """Synchronous first-word-fall-through FIFO in block RAM: the ports and timing of
    ``amaranth.lib.fifo.SyncFIFOBuffered`` (``depth - 1`` words in the memory, one in its output
    register), without the read-during-write bypass.

    The memory is read at ``consume`` and written at ``produce``; they are equal only when it is empty
    (no read is issued) or full (no write is accepted), so no clock reads the address it writes.

    Parameters
    ----------
    width : int
    depth : int
        Words, ``>= 2``.

    Members
    -------
    w_data : In(width), w_en : In(1), w_rdy : Out(1)
    r_data : Out(width), r_en : In(1), r_rdy : Out(1)
        ``r_data`` is valid while ``r_rdy``; ``r_en`` pops it.
    level : Out(range(depth + 1))
    """

    @validated
    def __init__(self, *, width, depth):
        check_int(width, "FIFO width", 1)
        check_int(depth, "FIFO depth", 2)
        self.width, self.depth = width, depth
        super().__init__({"w_data": In(width), "w_en": In(1), "w_rdy": Out(1), "r_data": Out(width),
                          "r_en": In(1), "r_rdy": Out(1), "level": Out(range(depth + 1))})

    def elaborate(self, platform):
        m = Module()
        words = self.depth - 1
        wr, rd = block_ram(m, "storage", shape=self.width, depth=words)
        produce, consume = Signal(range(words)), Signal(range(words))
        stored = Signal(range(words + 1))         # words in the memory (not in the output register)
        write = Signal()
        refill = Signal()                         # move the oldest stored word to the output register
        m.d.comb += [
            self.w_rdy.eq(stored != words),
            write.eq(self.w_en & self.w_rdy),
            refill.eq((stored != 0) & (~self.r_rdy | self.r_en)),
            wr.addr.eq(produce), wr.data.eq(self.w_data), wr.en.eq(write),
            rd.addr.eq(consume), rd.en.eq(refill), self.r_data.eq(rd.data),
            self.level.eq(stored + self.r_rdy),
        ]
        with m.If(write):
            m.d.sync += produce.eq(Mux(produce == words - 1, 0, produce + 1))
        with m.If(refill):
            m.d.sync += [consume.eq(Mux(consume == words - 1, 0, consume + 1)), self.r_rdy.eq(1)]
        with m.Elif(self.r_en):
            m.d.sync += self.r_rdy.eq(0)
        with m.If(write & ~refill):
            m.d.sync += stored.eq(stored + 1)
        with m.Elif(refill & ~write):
            m.d.sync += stored.eq(stored - 1)
        return m
