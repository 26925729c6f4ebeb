"""A small Wishbone Classic bus: signature, address decoder and SRAM.

amaranth-soc is not published on PyPI (only a placeholder), so insitu carries this minimal glue. It follows
amaranth-soc's shapes (a ``Signature`` with the Wishbone member names, a decoder to which subordinates are
added with an address) so that it can be replaced when amaranth-soc is published. It supports what the
sentinel-cpu core issues: single classic transfers, 32-bit data, byte selects, 30-bit word addresses.

Unmapped addresses get a defined response: the transfer is acknowledged on the next clock, reads return
zero, writes are dropped, and the decoder latches ``unmapped`` (sticky) and the byte address, which the
system registers expose so that firmware can report the fault.
"""

from amaranth import Module, Signal, Mux
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..hdl._params import validated

__all__ = ["wishbone_signature", "Decoder", "SRAM"]


def wishbone_signature(addr_width=30):
    """Wishbone Classic, 32-bit data, byte granularity, as seen from the initiator (CPU)."""
    return wiring.Signature({
        "adr": Out(addr_width), "dat_w": Out(32), "dat_r": In(32), "sel": Out(4),
        "cyc": Out(1), "stb": Out(1), "we": Out(1), "ack": In(1),
    })


class Decoder(wiring.Component):
    """Route the initiator bus ``bus`` to the subordinate whose window holds the address.

    Subordinates are added with :meth:`add` before elaboration; each window is a power-of-two number of
    bytes, aligned to its size. The subordinate sees word addresses relative to its window.

    Members
    -------
    bus : In(wishbone_signature())
    unmapped : Out(1)
        Sticky: an access hit no window.
    unmapped_addr : Out(32)
        The byte address of the latest unmapped access.
    """

    def __init__(self):
        super().__init__({"bus": In(wishbone_signature()), "unmapped": Out(1), "unmapped_addr": Out(32)})
        self._windows = []     # (name, base, size, subordinate bus)

    @property
    def windows(self):
        return [(name, base, size) for name, base, size, _ in self._windows]

    def add(self, name, sub_bus, *, base, size):
        """Map ``sub_bus`` (a subordinate-side bus, ``flipped(wishbone_signature(w))``) at byte ``base``."""
        if size < 4 or size & (size - 1):
            raise ValueError(f"Window {name!r}: size must be a power of two >= 4 bytes, not {size:#x}")
        if base % size:
            raise ValueError(f"Window {name!r}: base {base:#x} is not aligned to its size {size:#x}")
        if base + size > 1 << 32:
            raise ValueError(f"Window {name!r}: {base:#x} + {size:#x} is outside the 32-bit address space")
        for other, obase, osize, _ in self._windows:
            if base < obase + osize and obase < base + size:
                raise ValueError(f"Window {name!r} at {base:#x} overlaps {other!r} at {obase:#x}")
        need = (size // 4 - 1).bit_length()
        if len(sub_bus.adr) < need:
            raise ValueError(f"Window {name!r}: its bus has {len(sub_bus.adr)} address bits, the window needs {need}")
        self._windows.append((name, base, size, sub_bus))

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        hits = []
        for name, base, size, sub in self._windows:
            words = size // 4
            hit = Signal(name=f"hit_{name}")
            m.d.comb += hit.eq((bus.adr >> (words - 1).bit_length()) == (base // 4) >> (words - 1).bit_length())
            m.d.comb += [
                sub.adr.eq(bus.adr[:len(sub.adr)] & (words - 1)),
                sub.dat_w.eq(bus.dat_w), sub.sel.eq(bus.sel), sub.we.eq(bus.we),
                sub.cyc.eq(bus.cyc & hit), sub.stb.eq(bus.stb & hit),
            ]
            hits.append((hit, sub))
        any_hit = Signal()
        m.d.comb += any_hit.eq(sum(hit for hit, _ in hits) != 0 if hits else 0)

        # Unmapped: acknowledge on the next clock with zero data.
        miss_ack = Signal()
        miss = bus.cyc & bus.stb & ~any_hit
        m.d.sync += miss_ack.eq(miss & ~miss_ack)
        with m.If(miss & ~miss_ack):
            m.d.sync += [self.unmapped.eq(1), self.unmapped_addr.eq(bus.adr << 2)]

        ack, dat_r = miss_ack, 0
        for hit, sub in hits:
            ack = ack | (sub.ack & hit)
            dat_r = Mux(hit, sub.dat_r, dat_r)
        m.d.comb += [bus.ack.eq(ack), bus.dat_r.eq(dat_r)]
        return m


class SRAM(wiring.Component):
    """Word-organised RAM on the bus, byte writes through ``sel``, one wait state (ack one clock later).

    Parameters
    ----------
    size : int
        Bytes, a power of two.
    init : bytes or None
        Initial contents (little-endian words), e.g. a firmware image; at most ``size`` bytes.

    Members
    -------
    bus : In(wishbone_signature(addr_width))
    """

    @validated
    def __init__(self, *, size, init=None):
        if size < 4 or size & (size - 1):
            raise ValueError(f"SRAM size must be a power of two >= 4 bytes, not {size}")
        init = bytes(init or b"")
        if len(init) > size:
            raise ValueError(f"Image of {len(init)} bytes does not fit in {size} bytes of RAM")
        init = init + bytes(-len(init) % 4)
        self._size = size
        self._init = [int.from_bytes(init[i:i + 4], "little") for i in range(0, len(init), 4)]
        super().__init__({"bus": In(wishbone_signature(max(1, (size // 4 - 1).bit_length())))})

    size = property(lambda self: self._size)

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=32, depth=self._size // 4, init=self._init)
        rd = mem.read_port()          # synchronous (block RAM): data arrives with ack, one clock later
        wr = mem.write_port(granularity=8)
        bus = self.bus
        ack = Signal()
        m.d.sync += ack.eq(bus.cyc & bus.stb & ~ack)
        m.d.comb += [
            rd.addr.eq(bus.adr), wr.addr.eq(bus.adr), wr.data.eq(bus.dat_w),
            wr.en.eq(Mux(bus.cyc & bus.stb & bus.we & ~ack, bus.sel, 0)),
            bus.dat_r.eq(rd.data), bus.ack.eq(ack),
        ]
        return m
