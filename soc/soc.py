"""The insitu SoC: sentinel-cpu (RV32I) on a Wishbone bus with RAM, system registers, a timer and a UART.

Memory map (the single source: :func:`memory_map`; the firmware header and the host map are generated):

=============== ============ =====================================================
base            size         window
=============== ============ =====================================================
``0x00000000``  ``ram_size`` RAM: program and data; the CPU starts at address 0
``0x00000000``  ``rom_size`` or, with ``rom_size``, ROM (block RAM): the firmware image
``0x10000000``  ``ram_size`` and RAM (iCE40UP5K SPRAM): data and stack
``0x80000000``  ``0x10``     ``sys``: id, bus fault flag and address, simulation exit
``0x80001000``  ``0x8``      ``timer``: 64-bit cycle counter
``0x80002000``  ``0x10``     ``uart``: tx, rx, status, divisor
``0x80010000``  per bank     accelerators, ``0x1000`` apart, in the order given
=============== ============ =====================================================
"""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .bus import SPRAM, SRAM, Decoder
from .csr import MemoryMap
from .peripherals import SYSTEM_ID, UART, System, Timer

__all__ = ["SoC", "memory_map", "RAM_BASE", "ROM_BASE", "DATA_RAM_BASE", "SYS_BASE", "TIMER_BASE", "UART_BASE", "ACCEL_BASE"]

RAM_BASE = 0x0000_0000
ROM_BASE = 0x0000_0000
DATA_RAM_BASE = 0x1000_0000   # the RAM's base when a ROM holds the firmware
SYS_BASE = 0x8000_0000
TIMER_BASE = 0x8000_1000
UART_BASE = 0x8000_2000
ACCEL_BASE = 0x8001_0000


class SoC(wiring.Component):
    """CPU + RAM + peripherals. The CPU core is created at elaboration (it holds memories built in its
    constructor), so a fresh :class:`SoC` is needed per simulation or build.

    Parameters
    ----------
    firmware : bytes
        The RAM's (or, with ``rom_size``, the ROM's) initial contents: a flat binary linked by
        :func:`~insitu.soc.firmware.build_firmware` for this SoC's memory map.
    ram_size : int
        Bytes of RAM, a power of two (with ``rom_size``: 65536 or 131072, see :class:`~insitu.soc.bus.SPRAM`).
    rom_size : int or None
        The iCE40UP5K layout: the firmware in a ROM of this many bytes of block RAM at address 0, which
        the CPU runs from, and the RAM in SPRAM (which has no initial contents) at ``0x10000000`` for
        data and stack. ``None``: one RAM in block RAM holds both.
    uart_divisor : int
        Clocks per UART bit, minus one, at reset.
    accelerators : dict of name → peripheral
        Components with a ``bank`` (:class:`~insitu.soc.csr.RegisterBank`) and a ``bus`` port, e.g.
        :class:`~insitu.soc.accel.ConvAccel`.

    Members
    -------
    uart_tx : Out(1), uart_rx : In(1)
    exit_stb, exit_code : Out
        The firmware wrote ``sys.sim_exit`` (simulation end).
    uart_sent_stb, uart_sent_data : Out
        A byte left the UART's transmit FIFO.
    """

    def __init__(self, *, firmware=b"", ram_size=16384, uart_divisor=103, accelerators=None, rom_size=None):
        if rom_size is None:
            self.rom = None
            self.ram = SRAM(size=ram_size, init=firmware)
        else:
            self.ram = SPRAM(size=ram_size)         # checked first: nothing else is built for a bad size
            self.rom = SRAM(size=rom_size, init=firmware, writable=False)
        self.decoder = Decoder()
        if rom_size is None:
            self.decoder.add("ram", self.ram.bus, base=RAM_BASE, size=ram_size)
        else:
            self.decoder.add("rom", self.rom.bus, base=ROM_BASE, size=rom_size)
            self.decoder.add("ram", self.ram.bus, base=DATA_RAM_BASE, size=ram_size)
        self.system = System()
        self.timer = Timer()
        self.uart = UART(divisor=uart_divisor)
        self.decoder.add("sys", self.system.bus, base=SYS_BASE, size=self.system.bank.size, idle_zero=True)
        self.decoder.add("timer", self.timer.bus, base=TIMER_BASE, size=self.timer.bank.size, idle_zero=True)
        self.decoder.add("uart", self.uart.bus, base=UART_BASE, size=self.uart.bank.size, idle_zero=True)
        self.accelerators = dict(accelerators or {})
        for n, (name, accel) in enumerate(self.accelerators.items()):
            self.decoder.add(name, accel.bus, base=ACCEL_BASE + 0x1000 * n, size=accel.bank.size, idle_zero=True)
        super().__init__({"uart_tx": Out(1, init=1), "uart_rx": In(1, init=1), "exit_stb": Out(1),
                          "exit_code": Out(32), "uart_sent_stb": Out(1), "uart_sent_data": Out(8)})

    ram_size = property(lambda self: self.ram.size)
    rom_size = property(lambda self: None if self.rom is None else self.rom.size)
    ram_base = property(lambda self: RAM_BASE if self.rom is None else DATA_RAM_BASE)

    def memory_map(self):
        return memory_map(self)

    def elaborate(self, platform):
        from sentinel_cpu.top import Top
        m = Module()
        m.submodules.cpu = cpu = Top()
        m.submodules.decoder = self.decoder
        m.submodules.ram = self.ram
        if self.rom is not None:
            m.submodules.rom = self.rom
        m.submodules.system = self.system
        m.submodules.timer = self.timer
        m.submodules.uart = self.uart
        for name, accel in self.accelerators.items():
            m.submodules[f"accel_{name}"] = accel
        # sentinel's bus is a plain Signature with the Wishbone member names: connect member by member.
        for name in ("adr", "dat_w", "sel", "cyc", "stb", "we"):
            m.d.comb += getattr(self.decoder.bus, name).eq(getattr(cpu.bus, name))
        m.d.comb += [cpu.bus.dat_r.eq(self.decoder.bus.dat_r), cpu.bus.ack.eq(self.decoder.bus.ack)]
        m.d.comb += [
            self.system.unmapped.eq(self.decoder.unmapped), self.system.unmapped_addr.eq(self.decoder.unmapped_addr),
            self.exit_stb.eq(self.system.exit_stb), self.exit_code.eq(self.system.exit_code),
            self.uart_tx.eq(self.uart.tx), self.uart.rx.eq(self.uart_rx),
            self.uart_sent_stb.eq(self.uart.sent_stb), self.uart_sent_data.eq(self.uart.sent_data),
        ]
        return m


def check_layout(ram_size, rom_size=None):
    """Raise a one-line ValueError for a RAM/ROM layout :class:`SoC` cannot build, before anything is built."""
    if rom_size is not None:
        SPRAM.check_size(ram_size)


def memory_map(soc=None):
    """The SoC's memory map (from a :class:`SoC`, or a default one)."""
    if soc is None:
        soc = SoC()
    # Read for its layout, maybe never elaborated (e.g. to generate the header): do not warn about that.
    for part in (soc, soc.ram, *([soc.rom] if soc.rom is not None else []), soc.system, soc.timer, soc.uart, soc.decoder, soc.system.bank, soc.timer.bank,
                 soc.uart.bank, *soc.accelerators.values()):
        part._MustUse__used = True
    mm = MemoryMap()
    mm.constants["SYSTEM_ID"] = SYSTEM_ID
    if soc.rom is None:
        mm.add("ram", RAM_BASE, soc.ram_size, doc="program and data")
    else:
        mm.add("rom", ROM_BASE, soc.rom_size, doc="program (read-only)")
        mm.add("ram", DATA_RAM_BASE, soc.ram_size, doc="data and stack")
    mm.add("sys", SYS_BASE, soc.system.bank.size, soc.system.bank, doc="system registers")
    mm.add("timer", TIMER_BASE, soc.timer.bank.size, soc.timer.bank, doc="cycle counter")
    mm.add("uart", UART_BASE, soc.uart.bank.size, soc.uart.bank, doc="UART")
    for n, (name, accel) in enumerate(soc.accelerators.items()):
        mm.add(name, ACCEL_BASE + 0x1000 * n, accel.bank.size, accel.bank, doc="accelerator")
    return mm
