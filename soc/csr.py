"""Control/status registers: register classes with fields, a bank on the Wishbone bus, and the memory map.

The register map is written once, in Python (:class:`Register` subclasses listing :class:`Field` s); the
bank, the firmware's C header (:func:`c_header`) and the host's driver (:class:`insitu.soc.driver.Registers`)
are all generated from it, so no address is ever written twice. Shaped like amaranth-soc's ``csr``
(fields with an access mode, registers, a memory map) so that it can be swapped for it later.

Field access modes:

* ``"r"``: read-only, driven by the peripheral (``fields.<reg>.<field>`` is an input to the bank);
* ``"rw"``: storage written by firmware and read back (an output of the bank);
* ``"w"``: write-only strobe: the written value is presented with ``<field>_stb`` high for one clock,
  the clock that acknowledges the bus write (the value is the bus data, which the master holds until
  then, valid only with the strobe; reads return 0);
* ``"rc"``: read-only, and a read pulses ``<field>_rd`` for one clock (e.g. pop a FIFO).

Registers are 32-bit words at consecutive word offsets, fields packed from bit 0 in declaration order.
A register access is acknowledged one clock later; byte selects gate writes per byte. The bank drives
``dat_r`` to zero except in the clock it acknowledges a read, so a decoder can OR banks' read data
(:meth:`~insitu.soc.bus.Decoder.add` with ``idle_zero=True``).
"""

import keyword
import operator
from functools import reduce

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..hdl.params import ParameterError, ParameterTypeError, validated
from .bus import check_window, wishbone_signature

__all__ = ["Field", "Register", "RegisterBank", "MemoryMap", "attach_bank", "bank_size", "bank_bus_signature",
           "c_header"]

_ACCESS = ("r", "rw", "w", "rc")


def _check_name(kind, name):
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        raise ParameterError(f"{kind} name must be a Python identifier not starting with '_', not {name!r}")


class Field:
    """One field of a register: ``width`` bits, an access mode (see the module), a reset value (``rw``)."""

    def __init__(self, name, width, access, *, reset=0, doc=""):
        _check_name("Field", name)
        if access not in _ACCESS:
            raise ParameterError(f"Field {name!r}: access must be one of {', '.join(_ACCESS)}, not {access!r}")
        if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= 32:
            raise ParameterError(f"Field {name!r}: width must be an integer in range [1, 32], not {width!r}")
        _check_reset(name, width, reset)
        self.name, self.width, self.access, self.reset, self.doc = name, width, access, reset, doc


def _check_reset(name, width, value):
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << width:
        raise ParameterError(f"Field {name!r}: reset value must be an integer in range [0, {(1 << width) - 1}], "
                             f"not {value!r}")


class Register:
    """A register description. Subclass with ``fields = [Field(...), ...]`` and a docstring (it becomes the
    header's comment); an instance names the register and may override ``rw`` reset values.

    Its signals belong to the bank: :meth:`signature` is the register's member of
    :class:`RegisterBank`'s signature (``r``/``rc`` fields flow into the bank, ``rw``/``w`` fields and the
    ``<field>_stb``/``<field>_rd`` strobes out of it)."""
    fields = []

    def __init__(self, name, *, reset=None):
        _check_name("Register", name)
        self.name = name
        names = [f.name for f in self.fields]
        derived = [f.name + {"w": "_stb", "rc": "_rd"}[f.access] for f in self.fields if f.access in ("w", "rc")]
        clash = sorted({n for n in names + derived if (names + derived).count(n) > 1})
        if clash:
            raise ParameterError(f"Register {name!r}: field name {clash[0]!r} is used twice")
        self.layout, offset = [], 0
        for f in self.fields:
            self.layout.append((f, offset))
            offset += f.width
        if offset > 32:
            raise ParameterError(f"Register {name!r}: fields take {offset} bits, more than 32")
        reset = dict(reset or {})
        unknown = sorted(set(reset) - {f.name for f in self.fields if f.access == "rw"})
        if unknown:
            raise ParameterError(f"Register {name!r} has no read-write field {unknown[0]!r} to reset")
        for f in self.fields:
            if f.name in reset:
                _check_reset(f.name, f.width, reset[f.name])
        self.resets = {f.name: reset.get(f.name, f.reset) for f in self.fields}

    def signature(self):
        members = {}
        for f in self.fields:
            if f.access in ("r", "rc"):
                members[f.name] = In(f.width)
            else:
                members[f.name] = Out(f.width, init=self.resets[f.name] if f.access == "rw" else 0)
            if f.access == "w":
                members[f.name + "_stb"] = Out(1)
            if f.access == "rc":
                members[f.name + "_rd"] = Out(1)
        return wiring.Signature(members)


def _check_registers(name, registers):
    registers = list(registers)
    if not registers or not all(isinstance(r, Register) for r in registers):
        raise ParameterTypeError(f"Bank {name!r}: registers must be a non-empty list of Register, not {registers!r}")
    names = [r.name for r in registers]
    if len(set(names)) != len(names) or "bus" in names:
        raise ParameterError(f"Bank {name!r}: register names must be unique and not 'bus', not {names}")
    return registers


def bank_size(registers):
    """Bytes of address space a bank of ``registers`` takes: a power of two, 4 per register."""
    return 4 << max(0, (len(registers) - 1).bit_length())


def bank_bus_signature(registers):
    """The (subordinate-side) Wishbone signature of a bank of ``registers``."""
    return wishbone_signature(max(1, (bank_size(registers) // 4 - 1).bit_length()))


class RegisterBank(wiring.Component):
    """A list of registers on a Wishbone subordinate port; register ``n`` is at byte offset ``4·n``.

    Members
    -------
    bus : In(bank_bus_signature(registers))
    <register> : Out(register.signature())
        One member per register: ``bank.<register>.<field>``.
    """

    @validated
    def __init__(self, name, registers):
        self.name = name
        self.registers = _check_registers(name, registers)
        self.size = bank_size(self.registers)
        super().__init__({"bus": In(bank_bus_signature(self.registers)),
                          **{r.name: Out(r.signature()) for r in self.registers}})

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
            port = getattr(self, reg.name)
            word = 0
            for f, offset in reg.layout:
                sig = getattr(port, f.name)
                if f.access in ("r", "rw", "rc"):
                    word = word | (sig.as_unsigned() << offset)
                if f.access == "rw":
                    bits = [Mux(bus.sel[(offset + b) // 8], bus.dat_w[offset + b], sig[b]) for b in range(f.width)]
                    with m.If(sel & bus.we):
                        for b in range(f.width):
                            m.d.sync += sig[b].eq(bits[b])
                elif f.access == "w":
                    # The strobe is a register, high in the acknowledging clock: the master still holds
                    # the data then (it waits for ``ack``), so the value needs no storage, and the
                    # peripheral's logic behind the strobe starts from a flip-flop, not the bus decode.
                    stb = Signal(name=f"{reg.name}_{f.name}_stb")
                    m.d.sync += stb.eq(sel & bus.we & bus.sel[offset // 8])
                    m.d.comb += [getattr(port, f.name + "_stb").eq(stb),
                                 sig.eq(bus.dat_w[offset:offset + f.width])]
                elif f.access == "rc":
                    m.d.sync += getattr(port, f.name + "_rd").eq(sel & ~bus.we)
            reads.append((sel & ~bus.we, word))
        # Read data only in the acknowledging clock, zero otherwise (an OR of the selected words).
        m.d.sync += dat_r.eq(reduce(operator.or_, (Mux(read, word, 0) for read, word in reads), 0))
        m.d.comb += [bus.ack.eq(ack), bus.dat_r.eq(dat_r)]
        return m


def attach_bank(m, name, registers, bus):
    """Build the bank of ``registers`` as submodule ``bank`` of ``m``, serving ``bus`` (a peripheral's
    ``bus`` member, ``In(bank_bus_signature(registers))``); return ``{register name: its port}``."""
    m.submodules.bank = bank = RegisterBank(name, registers)
    wiring.connect(m, wiring.flipped(bus), bank.bus)
    return {r.name: getattr(bank, r.name) for r in bank.registers}


class MemoryMap:
    """Named windows of the SoC's address space: register banks (their :class:`Register` lists) and plain
    memories. Windows are checked as they are added (power-of-two size, aligned, no overlap)."""

    def __init__(self):
        self.entries = []     # (name, base, size, registers or None, doc)
        self.constants = {}   # name → int, emitted into the header too

    def add(self, name, base, size, registers=None, doc=""):
        check_window(name, base, size, [(n, b, s) for n, b, s, *_ in self.entries])
        if registers is not None:
            registers = _check_registers(name, registers)
        self.entries.append((name, base, size, registers, doc))

    def registers(self):
        """``(peripheral, register, byte address, [(field, offset, width, access)])`` for every register."""
        for name, base, _, registers, _ in self.entries:
            for n, reg in enumerate(registers or ()):
                yield name, reg, base + 4 * n, [(f.name, off, f.width, f.access) for f, off in reg.layout]


def c_header(memmap, guard="INSITU_SOC_REGS_H"):
    """The firmware's register header (``#define`` addresses, field offsets and masks)."""
    lines = ["/* Generated from insitu.soc register map: do not edit. */", f"#ifndef {guard}", f"#define {guard}",
             "", "#include <stdint.h>", "",
             "#define INSITU_REG(addr) (*(volatile uint32_t *)(addr))", ""]
    for name, value in memmap.constants.items():
        lines.append(f"#define {name.upper()} 0x{value:08x}u")
    for name, base, size, _, doc in memmap.entries:
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
        raise ParameterError(f"Register map gives clashing C names: {', '.join(clash)}")
    lines.append(f"#endif /* {guard} */")
    return "\n".join(lines) + "\n"
