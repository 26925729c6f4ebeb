"""Control/status registers: register classes with fields, a bank on the Wishbone bus, and the memory map.

The register map is written once, in Python (:class:`Register` subclasses listing :class:`Field` s); the
bank, the firmware's C header and the host's Python map are all generated from it
(:func:`c_header`, :func:`python_map`), so no address is ever written twice. Shaped like amaranth-soc's
``csr`` (fields with an access mode, registers, a memory map) so that it can be swapped for it later.

Field access modes:

* ``"r"``: read-only, driven by the peripheral (``fields.<reg>.<field>`` is an input to the bank);
* ``"rw"``: storage written by firmware and read back (an output of the bank);
* ``"w"``: write-only strobe: the written value is presented with ``<field>_stb`` high for one clock,
  the clock of the bus write (the value is the bus data, valid only with the strobe; reads return 0);
* ``"rc"``: read-only, and a read pulses ``<field>_rd`` for one clock (e.g. pop a FIFO).

Registers are 32-bit words at consecutive word offsets, fields packed from bit 0 in declaration order.
A register access is acknowledged one clock later; byte selects gate writes per byte. The bank drives
``dat_r`` to zero except in the clock it acknowledges a read, so a decoder can OR banks' read data
(:meth:`~insitu.soc.bus.Decoder.add` with ``idle_zero=True``).
"""

import operator
from functools import reduce

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from .bus import wishbone_signature

__all__ = ["Field", "Register", "RegisterBank", "MemoryMap", "c_header", "python_map"]

_ACCESS = ("r", "rw", "w", "rc")


class Field:
    def __init__(self, name, width, access, *, reset=0, doc=""):
        if access not in _ACCESS:
            raise ValueError(f"Field {name!r}: access must be one of {', '.join(_ACCESS)}, not {access!r}")
        if not 1 <= width <= 32:
            raise ValueError(f"Field {name!r}: width must be in range [1, 32], not {width}")
        self.name, self.width, self.access, self.reset, self.doc = name, width, access, reset, doc


class Register:
    """Subclass with ``fields = [Field(...), ...]`` and a docstring; instances hold the field signals."""
    fields = []

    def __init__(self, name, *, reset=None):
        self.name = name
        reset = dict(reset or {})
        offset = 0
        self.layout = []
        for f in self.fields:
            self.layout.append((f, offset))
            offset += f.width
        if offset > 32:
            raise ValueError(f"Register {name!r}: fields take {offset} bits, more than 32")
        if reset and not set(reset) <= {f.name for f in self.fields}:
            raise ValueError(f"Register {name!r} has no field {sorted(set(reset) - {f.name for f in self.fields})[0]!r}")
        for f, _ in self.layout:
            setattr(self, f.name, Signal(f.width, name=f"{name}_{f.name}", init=reset.pop(f.name, f.reset)))
            if f.access == "w":
                setattr(self, f.name + "_stb", Signal(name=f"{name}_{f.name}_stb"))
            if f.access == "rc":
                setattr(self, f.name + "_rd", Signal(name=f"{name}_{f.name}_rd"))


class RegisterBank(wiring.Component):
    """A list of registers on a Wishbone subordinate port; register ``n`` is at byte offset ``4·n``."""

    def __init__(self, name, registers):
        self.name = name
        self.registers = list(registers)
        names = [r.name for r in self.registers]
        if len(set(names)) != len(names):
            raise ValueError(f"Bank {name!r}: register names must be unique, not {names}")
        self.size = 4 << max(0, (len(self.registers) - 1).bit_length())
        super().__init__({"bus": In(wishbone_signature(max(1, (self.size // 4 - 1).bit_length())))})
        self._MustUse__silence = True        # banks also describe the memory map without being elaborated

    def offset(self, register_name):
        return 4 * next(n for n, r in enumerate(self.registers) if r.name == register_name)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        ack = Signal()
        access = bus.cyc & bus.stb & ~ack
        m.d.sync += ack.eq(access)
        dat_r = Signal(32)
        reads = []
        for n, reg in enumerate(self.registers):
            sel = access & (bus.adr == n)
            word = 0
            for f, offset in reg.layout:
                sig = getattr(reg, f.name)
                if f.access in ("r", "rw", "rc"):
                    word = word | (sig.as_unsigned() << offset)
                if f.access in ("rw", "w"):
                    if f.access == "rw":
                        bits = [Mux(bus.sel[(offset + b) // 8], bus.dat_w[offset + b], sig[b])
                                for b in range(f.width)]
                        with m.If(sel & bus.we):
                            for b in range(f.width):
                                m.d.sync += sig[b].eq(bits[b])
                    else:       # combinational: no storage for write-only values
                        stb = getattr(reg, f.name + "_stb")
                        m.d.comb += [stb.eq(sel & bus.we & bus.sel[offset // 8]),
                                     sig.eq(bus.dat_w[offset:offset + f.width])]
                if f.access == "rc":
                    m.d.sync += getattr(reg, f.name + "_rd").eq(sel & ~bus.we)
            reads.append((sel & ~bus.we, word))
        # Read data only in the acknowledging clock, zero otherwise (an OR of the selected words).
        m.d.sync += dat_r.eq(reduce(operator.or_, (Mux(read, word, 0) for read, word in reads), 0))
        m.d.comb += [bus.ack.eq(ack), bus.dat_r.eq(dat_r)]
        return m


class MemoryMap:
    """Named windows of the SoC's address space: register banks and plain memories."""

    def __init__(self):
        self.entries = []     # (name, base, size, bank or None, doc)
        self.constants = {}   # name → int, emitted into the header too

    def add(self, name, base, size, bank=None, doc=""):
        self.entries.append((name, base, size, bank, doc))

    def registers(self):
        """``(peripheral, register, byte address, [(field, offset, width, access)])`` for every register."""
        for name, base, _, bank, _ in self.entries:
            if bank is None:
                continue
            for n, reg in enumerate(bank.registers):
                yield name, reg, base + 4 * n, [(f.name, off, f.width, f.access) for f, off in reg.layout]


def c_header(memmap, guard="INSITU_SOC_REGS_H"):
    """The firmware's register header (``#define`` addresses, field offsets and masks)."""
    lines = ["/* Generated from insitu.soc register map: do not edit. */", f"#ifndef {guard}", f"#define {guard}",
             "", "#include <stdint.h>", "",
             "#define INSITU_REG(addr) (*(volatile uint32_t *)(addr))", ""]
    for name, value in memmap.constants.items():
        lines.append(f"#define {name.upper()} 0x{value:08x}u")
    for name, base, size, bank, doc in memmap.entries:
        up = name.upper()
        lines.append(f"#define {up}_BASE 0x{base:08x}u")
        lines.append(f"#define {up}_SIZE 0x{size:x}u")
    lines.append("")
    for periph, reg, addr, fields in memmap.registers():
        up = f"{periph}_{reg.name}".upper()
        doc = (type(reg).__doc__ or "").strip().splitlines()
        if doc:
            lines.append(f"/* {doc[0]} */")
        lines.append(f"#define {up}_ADDR 0x{addr:08x}u")
        lines.append(f"#define {up} INSITU_REG({up}_ADDR)")
        for fname, off, width, access in fields:
            fup = f"{up}_{fname.upper()}"
            lines.append(f"#define {fup}_SHIFT {off}u")
            lines.append(f"#define {fup}_MASK 0x{((1 << width) - 1) << off:08x}u")
        lines.append("")
    names = [line.split()[1] for line in lines if line.startswith("#define ")]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"Register map gives clashing C names: {', '.join(clash)}")
    lines.append(f"#endif /* {guard} */")
    return "\n".join(lines) + "\n"


def python_map(memmap):
    """The host's view: ``{"<periph>.<register>": {"addr": int, "fields": {name: (offset, width, access)}}}``."""
    return {f"{periph}.{reg.name}": {"addr": addr, "fields": {f: (o, w, a) for f, o, w, a in fields}}
            for periph, reg, addr, fields in memmap.registers()}
