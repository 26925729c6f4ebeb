"""Register drivers generated from the register map: one :class:`Registers` per peripheral (its
:class:`~insitu.soc.csr.Register` list), which encodes and decodes field values, so that no caller writes a
bit position by hand; :class:`SimDriver` drives them over a Wishbone bus in an Amaranth testbench.

The firmware's C header is generated from the same register lists (:func:`insitu.soc.csr.c_header`)."""

from ..hdl.params import ParameterError

__all__ = ["Registers", "SimDriver", "wb_read", "wb_write"]


class Registers:
    """Addresses and field codecs of a bank of ``registers`` at byte address ``base``."""

    def __init__(self, registers, base=0):
        self._base = base
        self._regs = {reg.name: (4 * n, {f.name: (offset, f) for f, offset in reg.layout})
                      for n, reg in enumerate(registers)}

    def _reg(self, name):
        try:
            return self._regs[name]
        except KeyError:
            raise KeyError(f"No register {name!r}; the bank has {', '.join(self._regs)}") from None

    def address(self, name):
        return self._base + self._reg(name)[0]

    def encode(self, name, **values):
        """The word that writes ``values`` (field name → int; signed values are taken modulo the width)."""
        fields, word = self._reg(name)[1], 0
        for field, value in values.items():
            if field not in fields:
                raise KeyError(f"Register {name!r} has no field {field!r}; it has {', '.join(fields)}")
            offset, f = fields[field]
            if not -(1 << f.width) < value < 1 << f.width:
                raise ParameterError(f"{name}.{field}: {value} does not fit in {f.width} bits")
            word |= (value & ((1 << f.width) - 1)) << offset
        return word

    def decode(self, name, word):
        """Field name → value of a word read from the register."""
        return {field: (word >> offset) & ((1 << f.width) - 1) for field, (offset, f) in self._reg(name)[1].items()}

    def mask(self, name, *fields):
        """The bits of ``fields`` in the register's word."""
        entries = self._reg(name)[1]
        return sum(((1 << entries[f][1].width) - 1) << entries[f][0] for f in fields)


async def wb_write(ctx, bus, addr, data, sel=0xF):
    """One Wishbone write from a testbench (``ctx``); returns once it is acknowledged."""
    ctx.set(bus.adr, addr >> 2)
    ctx.set(bus.dat_w, data)
    ctx.set(bus.sel, sel)
    ctx.set(bus.we, 1)
    ctx.set(bus.cyc, 1)
    ctx.set(bus.stb, 1)
    await ctx.tick().until(bus.ack)
    ctx.set(bus.cyc, 0)
    ctx.set(bus.stb, 0)
    await ctx.tick()


async def wb_read(ctx, bus, addr):
    """One Wishbone read from a testbench; returns the data word."""
    ctx.set(bus.adr, addr >> 2)
    ctx.set(bus.sel, 0xF)
    ctx.set(bus.we, 0)
    ctx.set(bus.cyc, 1)
    ctx.set(bus.stb, 1)
    _, data = await ctx.tick().sample(bus.ack, bus.dat_r).until(bus.ack)
    ctx.set(bus.cyc, 0)
    ctx.set(bus.stb, 0)
    await ctx.tick()
    return data


class SimDriver:
    """A peripheral's registers driven over its bus from a testbench: ``await drv.write("w_commit", group=1,
    lane=0)``, ``(await drv.read("status"))["busy"]``, ``await drv.read_word("out_data")``."""

    def __init__(self, ctx, bus, registers, base=0):
        self.ctx, self.bus, self.regs = ctx, bus, Registers(registers, base)

    async def write(self, name, word=None, **values):
        await wb_write(self.ctx, self.bus, self.regs.address(name),
                       self.regs.encode(name, **values) if word is None else word)

    async def read_word(self, name):
        return await wb_read(self.ctx, self.bus, self.regs.address(name))

    async def read(self, name):
        return self.regs.decode(name, await self.read_word(name))
