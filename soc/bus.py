"""A small Wishbone Classic bus: signature, address decoder and SRAM.

amaranth-soc is not published on PyPI (only a placeholder), so insitu carries this minimal glue. It follows
amaranth-soc's shapes (a ``Signature`` with the Wishbone member names, a decoder to which subordinates are
added with an address) so that it can be replaced when amaranth-soc is published. It supports what the
sentinel-cpu core issues: single classic transfers, 32-bit data, byte selects, 30-bit word addresses.

Unmapped addresses get a defined response: the transfer is acknowledged on the next clock, reads return
zero, writes are dropped, and the decoder latches ``unmapped`` (sticky) and the byte address, which the
system registers expose so that firmware can report the fault.
"""

from amaranth import Cat, ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..hdl.bram import block_ram
from ..hdl.params import ParameterError, validated

__all__ = ["wishbone_signature", "check_window", "Decoder", "SRAM", "SPRAM"]


def wishbone_signature(addr_width=30):
    """Wishbone Classic, 32-bit data, byte granularity, as seen from the initiator (CPU)."""
    return wiring.Signature({
        "adr": Out(addr_width), "dat_w": Out(32), "dat_r": In(32), "sel": Out(4),
        "cyc": Out(1), "stb": Out(1), "we": Out(1), "ack": In(1),
    })


def check_window(name, base, size, windows):
    """Raise a one-line ValueError unless ``size`` is a power of two ≥ 4 bytes, ``base`` is aligned to it,
    the window fits in 32 bits and overlaps none of ``windows`` (``(name, base, size)``)."""
    if size < 4 or size & (size - 1):
        raise ParameterError(f"Window {name!r}: size must be a power of two >= 4 bytes, not {size:#x}")
    if base % size:
        raise ParameterError(f"Window {name!r}: base {base:#x} is not aligned to its size {size:#x}")
    if base + size > 1 << 32:
        raise ParameterError(f"Window {name!r}: {base:#x} + {size:#x} is outside the 32-bit address space")
    for other, obase, osize in windows:
        if base < obase + osize and obase < base + size:
            raise ParameterError(f"Window {name!r} at {base:#x} overlaps {other!r} at {obase:#x}")


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
        self._windows = []     # (name, base, size, subordinate bus, idle_zero)

    @property
    def windows(self):
        return [(name, base, size) for name, base, size, *_ in self._windows]

    def add(self, name, sub_bus, *, base, size, idle_zero=False):
        """Map ``sub_bus`` (a subordinate-side bus, ``flipped(wishbone_signature(w))``) at byte ``base``.

        ``idle_zero``: the subordinate drives ``dat_r`` to zero except when it acknowledges a read (as
        :class:`~insitu.soc.csr.RegisterBank` does), so its read data is ORed in without a multiplexer."""
        check_window(name, base, size, self.windows)
        need = (size // 4 - 1).bit_length()
        if len(sub_bus.adr) < need:
            raise ParameterError(f"Window {name!r}: its bus has {len(sub_bus.adr)} address bits, "
                                 f"the window needs {need}")
        self._windows.append((name, base, size, sub_bus, idle_zero))

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        hits = []
        for name, base, size, sub, idle_zero in self._windows:
            words = size // 4
            hit = Signal(name=f"hit_{name}")
            m.d.comb += hit.eq((bus.adr >> (words - 1).bit_length()) == (base // 4) >> (words - 1).bit_length())
            m.d.comb += [
                sub.adr.eq(bus.adr[:len(sub.adr)] & (words - 1)),
                sub.dat_w.eq(bus.dat_w), sub.sel.eq(bus.sel), sub.we.eq(bus.we),
                sub.cyc.eq(bus.cyc & hit), sub.stb.eq(bus.stb & hit),
            ]
            hits.append((hit, sub, idle_zero))
        any_hit = Signal()
        m.d.comb += any_hit.eq(sum(hit for hit, *_ in hits) != 0 if hits else 0)

        # Unmapped: acknowledge on the next clock with zero data.
        miss_ack = Signal()
        miss = bus.cyc & bus.stb & ~any_hit
        m.d.sync += miss_ack.eq(miss & ~miss_ack)
        with m.If(miss & ~miss_ack):
            m.d.sync += [self.unmapped.eq(1), self.unmapped_addr.eq(bus.adr << 2)]

        ack, dat_r = miss_ack, 0
        for hit, sub, idle_zero in hits:      # idle-zero subordinates first: they are ORed together
            ack = ack | (sub.ack & hit)
            if idle_zero:
                dat_r = dat_r | sub.dat_r
        for hit, sub, idle_zero in hits:
            if not idle_zero:
                dat_r = Mux(hit, sub.dat_r, dat_r)
        m.d.comb += [bus.ack.eq(ack), bus.dat_r.eq(dat_r)]
        return m


class SRAM(wiring.Component):
    """Word-organised RAM (or ROM) in block RAM on the bus, byte writes through ``sel``, one wait state
    (ack one clock later).

    Parameters
    ----------
    size : int
        Bytes: a power of two; a ROM may also be any multiple of 1024 (its bus window is then the next power
        of two, and reads past the end return unspecified data).
    init : bytes or None
        Initial contents (little-endian words), e.g. a firmware image; at most ``size`` bytes.
    writable : bool
        ``False`` makes a ROM: writes are acknowledged and dropped.

    Members
    -------
    bus : In(wishbone_signature(addr_width))
    """

    #: the name of the memory inside (a compiled simulation finds the RAM by it)
    MEMORY = "mem"

    @staticmethod
    def check_size(size, image_bytes=0, writable=True):
        """Raise a one-line ValueError unless ``size`` is a power of two ≥ 4 (or, for a ROM, a multiple of
        1024) holding ``image_bytes``."""
        if not isinstance(size, int) or isinstance(size, bool) or size < 4 or \
                (size & (size - 1) and (writable or size % 1024)):
            raise ParameterError(f"{'SRAM size must be a power of two' if writable else 'ROM size must be a power of two or a multiple of 1024'} >= 4 bytes, "
                                 f"not {size!r}")
        if image_bytes > size:
            raise ParameterError(f"Image of {image_bytes} bytes does not fit in {size} bytes of "
                                 f"{'RAM' if writable else 'ROM'}")

    @validated
    def __init__(self, *, size, init=None, writable=True):
        init = bytes(init or b"")
        self.check_size(size, len(init), writable)
        init = init + bytes(-len(init) % 4)
        self._size, self._writable = size, writable
        self._init = [int.from_bytes(init[i:i + 4], "little") for i in range(0, len(init), 4)]
        super().__init__({"bus": In(wishbone_signature(max(1, (size // 4 - 1).bit_length())))})

    size = property(lambda self: self._size)
    writable = property(lambda self: self._writable)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        ack = Signal()
        m.d.sync += ack.eq(bus.cyc & bus.stb & ~ack)
        if self._writable:
            # Synchronous read (block RAM): data arrives with ack, one clock later. A write cycle also
            # reads the address it writes, but its read data is never used, so the memory is collision-free.
            wr, rd = block_ram(m, "mem", shape=32, depth=self._size // 4, init=self._init, granularity=8)
            m.d.comb += [wr.addr.eq(bus.adr), wr.data.eq(bus.dat_w),
                         wr.en.eq(Mux(bus.cyc & bus.stb & bus.we & ~ack, bus.sel, 0))]
        else:
            m.submodules[self.MEMORY] = mem = memory.Memory(shape=32, depth=self._size // 4, init=self._init)
            rd = mem.read_port()
        m.d.comb += [rd.addr.eq(bus.adr), bus.dat_r.eq(rd.data), bus.ack.eq(ack)]
        return m


class SPRAM(wiring.Component):
    """RAM in the iCE40UP5K's single-port RAM blocks (SB_SPRAM256KA, 16K × 16 bits each): two blocks side by
    side per 64 KB, byte writes through ``sel`` (the blocks' nibble masks), one wait state.

    SPRAM has no initial contents (it powers up undefined), so it holds data, not the firmware: see
    :class:`~insitu.soc.soc.SoC`'s ``rom_size``. On other platforms, and in simulation, it is an :class:`SRAM`
    of the same size and timing, initially zero.

    Parameters
    ----------
    size : int
        65536 or 131072 bytes (two or all four blocks).

    Members
    -------
    bus : In(wishbone_signature(14 or 15))
    """

    SIZES = (65536, 131072)

    @staticmethod
    def check_size(size):
        """Raise a one-line ValueError unless ``size`` is one an SPRAM can have (call before building)."""
        if size not in SPRAM.SIZES:
            raise ParameterError(f"SPRAM size must be 65536 or 131072 bytes (2 or 4 of the iCE40UP5K's blocks), "
                                 f"not {size!r}")

    @validated
    def __init__(self, *, size=65536):
        self.check_size(size)
        self._size = size
        super().__init__({"bus": In(wishbone_signature((size // 4 - 1).bit_length()))})

    size = property(lambda self: self._size)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        if not getattr(platform, "device", "").startswith("iCE40UP"):
            m.submodules.mem = sram = SRAM(size=self._size)     # same size and timing
            wiring.connect(m, wiring.flipped(bus), sram.bus)
            return m
        ack = Signal()
        write = bus.cyc & bus.stb & bus.we & ~ack
        m.d.sync += ack.eq(bus.cyc & bus.stb & ~ack)
        m.d.comb += bus.ack.eq(ack)
        banks = self._size // 65536
        bank = bus.adr[14:] if banks > 1 else 0
        bank_q = Signal(range(banks))           # the bank whose word arrives next clock
        m.d.sync += bank_q.eq(bank)
        outs = []
        for b in range(banks):
            halves = []
            for half in range(2):
                out = Signal(16, name=f"spram{b}_{half}_out")
                sel = bus.sel[2 * half:2 * half + 2]
                m.submodules[f"spram{b}_{half}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=bus.adr[:14], i_DATAIN=bus.dat_w[16 * half:16 * half + 16],
                    i_MASKWREN=Cat(sel[0], sel[0], sel[1], sel[1]), i_WREN=write & (bank == b),
                    i_CHIPSELECT=1, i_CLOCK=ClockSignal(), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                    o_DATAOUT=out)
                halves.append(out)
            outs.append(Cat(*halves))
        m.d.comb += bus.dat_r.eq(outs[0] if banks == 1 else Mux(bank_q, outs[1], outs[0]))
        return m
