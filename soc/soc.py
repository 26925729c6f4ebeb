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

from ..hdl.params import ParameterError, check_int
from .bus import SPRAM, SRAM, Decoder
from .csr import MemoryMap, bank_size
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
    uart_depth : int
        Bytes in each of the UART's FIFOs (a power of two, 16…4096). The host protocol's frames must fit
        in the receive FIFO when the firmware cannot read a byte per bit time (see :mod:`insitu.soc.link`).
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

    #: the hierarchical name of the RAM's memory (as CXXRTL spells it: one space per level), for tools that
    #: load a firmware image into a compiled simulation
    RAM_MEMORY = ("ram", SRAM.MEMORY)
    #: the same for the firmware image: the RAM's memory in the one-RAM layout
    IMAGE_MEMORY = RAM_MEMORY
    #: the ROM's memory in the ROM + SPRAM layout (the one the firmware image goes into)
    ROM_MEMORY = ("rom", SRAM.MEMORY)

    def __init__(self, *, firmware=b"", ram_size=16384, uart_divisor=103, accelerators=None, rom_size=None,
                 uart_depth=16):
        check_layout(ram_size, rom_size, len(firmware))
        check_int(uart_divisor, "UART divisor", 1, 0xFFFF)
        check_int(uart_depth, "UART FIFO depth", 16, 4096)
        if uart_depth & (uart_depth - 1):
            raise ParameterError(f"UART FIFO depth must be a power of two, not {uart_depth}")
        self._uart_depth = uart_depth
        self._firmware, self._ram_size, self._rom_size = bytes(firmware), ram_size, rom_size
        self._uart_divisor = uart_divisor
        self.accelerators = dict(accelerators or {})
        # The one memory map: the decoder is built from it at elaboration, the header and host map from it.
        self._map = memory_map(ram_size=ram_size, rom_size=rom_size, accelerators={
            name: accel.registers for name, accel in self.accelerators.items()})
        super().__init__({"uart_tx": Out(1, init=1), "uart_rx": In(1, init=1), "exit_stb": Out(1),
                          "exit_code": Out(32), "uart_sent_stb": Out(1), "uart_sent_data": Out(8)})

    @property
    def firmware(self):
        """The memory image the RAM (or ROM) starts with. Settable until elaboration, so that firmware
        linked for this SoC's own memory map can be loaded into it."""
        return self._firmware

    @firmware.setter
    def firmware(self, image):
        check_layout(self._ram_size, self._rom_size, len(image))
        self._firmware = bytes(image)

    ram_size = property(lambda self: self._ram_size)
    rom_size = property(lambda self: self._rom_size)
    ram_base = property(lambda self: RAM_BASE if self._rom_size is None else DATA_RAM_BASE)
    uart_divisor = property(lambda self: self._uart_divisor)
    uart_depth = property(lambda self: self._uart_depth)

    def memory_map(self):
        return self._map

    def elaborate(self, platform):
        from sentinel_cpu.top import Top
        m = Module()
        m.submodules.cpu = cpu = Top()
        # The children, built here (once per elaboration), each serving its window of the map.
        if self._rom_size is None:
            m.submodules[self.RAM_MEMORY[0]] = ram = SRAM(size=self._ram_size, init=self._firmware)
            windows = {"ram": ram.bus}
        else:
            m.submodules.rom = rom = SRAM(size=self._rom_size, init=self._firmware, writable=False)
            m.submodules.ram = ram = SPRAM(size=self._ram_size)
            windows = {"rom": rom.bus, "ram": ram.bus}
        m.submodules.system = system = System()
        m.submodules.timer = timer = Timer()
        m.submodules.uart = uart = UART(divisor=self._uart_divisor, depth=self._uart_depth)
        windows.update(sys=system.bus, timer=timer.bus, uart=uart.bus)
        for name, accel in self.accelerators.items():
            m.submodules[f"accel_{name}"] = accel
            windows[name] = accel.bus
        m.submodules.decoder = decoder = Decoder()
        for name, base, size, registers, _ in self._map.entries:
            decoder.add(name, windows[name], base=base, size=size, idle_zero=registers is not None)
        # sentinel's bus is a plain Signature with the Wishbone member names: connect member by member.
        for name in ("adr", "dat_w", "sel", "cyc", "stb", "we"):
            m.d.comb += getattr(decoder.bus, name).eq(getattr(cpu.bus, name))
        m.d.comb += [cpu.bus.dat_r.eq(decoder.bus.dat_r), cpu.bus.ack.eq(decoder.bus.ack)]
        m.d.comb += [
            system.unmapped.eq(decoder.unmapped), system.unmapped_addr.eq(decoder.unmapped_addr),
            self.exit_stb.eq(system.exit_stb), self.exit_code.eq(system.exit_code),
            self.uart_tx.eq(uart.tx), uart.rx.eq(self.uart_rx),
            self.uart_sent_stb.eq(uart.sent_stb), self.uart_sent_data.eq(uart.sent_data),
        ]
        return m


def check_layout(ram_size, rom_size=None, firmware_bytes=0):
    """Raise a one-line ValueError for a RAM/ROM layout :class:`SoC` cannot build, before anything is built."""
    if rom_size is None:
        SRAM.check_size(ram_size, firmware_bytes)
    else:
        SPRAM.check_size(ram_size)
        SRAM.check_size(rom_size, firmware_bytes, writable=False)


def memory_map(soc=None, *, ram_size=16384, rom_size=None, accelerators=None):
    """The SoC's memory map: ``soc``'s, or the one of that layout, with ``accelerators`` (name → register
    list) ``0x1000`` apart from :data:`ACCEL_BASE`. Pure: nothing is built."""
    if soc is not None:
        return soc.memory_map()
    mm = MemoryMap()
    mm.constants["SYSTEM_ID"] = SYSTEM_ID
    if rom_size is None:
        mm.add("ram", RAM_BASE, ram_size, doc="program and data")
    else:
        mm.add("rom", ROM_BASE, 1 << (rom_size - 1).bit_length(), doc="program (read-only)")
        mm.constants["ROM_BYTES"] = rom_size          # the ROM itself, where its window is larger
        mm.add("ram", DATA_RAM_BASE, ram_size, doc="data and stack")
    for name, base, registers, doc in (("sys", SYS_BASE, System.REGISTERS, "system registers"),
                                       ("timer", TIMER_BASE, Timer.REGISTERS, "cycle counter"),
                                       ("uart", UART_BASE, UART.REGISTERS, "UART")):
        mm.add(name, base, bank_size(registers), registers, doc=doc)
    for n, (name, registers) in enumerate((accelerators or {}).items()):
        mm.add(name, ACCEL_BASE + 0x1000 * n, bank_size(registers), registers, doc="accelerator")
    return mm
