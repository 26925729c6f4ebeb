"""SoC peripherals: system registers, a cycle timer and a UART with FIFOs, each a register bank on the bus."""

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..hdl.bram import BlockFIFO
from .csr import Field, Register, attach_bank, bank_bus_signature

__all__ = ["System", "Timer", "UART", "SYSTEM_ID"]

SYSTEM_ID = 0x1A5170C0    # read back by firmware to check it runs on an insitu SoC


class _Id(Register):
    """SoC identification (constant)."""
    fields = [Field("value", 32, "r")]


class _BusError(Register):
    """Bus error: an access hit no window (sticky until reset)."""
    fields = [Field("unmapped", 1, "r")]


class _BusErrorAddr(Register):
    """Byte address of the latest unmapped access."""
    fields = [Field("addr", 32, "r")]


class _SimExit(Register):
    """Simulation only: writing ends the simulation with this code (ignored in hardware)."""
    fields = [Field("code", 32, "w")]


class System(wiring.Component):
    """System registers: ``id``, ``fault`` (bus error flags), ``fault_address``, ``sim_exit``.

    Members
    -------
    bus : subordinate bus of the bank
    unmapped, unmapped_addr : In, from the decoder
    exit_stb, exit_code : Out, the firmware's ``sim_exit`` write
    """

    REGISTERS = [_Id("id"), _BusError("fault"), _BusErrorAddr("fault_address"), _SimExit("sim_exit")]

    def __init__(self):
        self.registers = self.REGISTERS
        super().__init__({"bus": In(bank_bus_signature(self.registers)),
                          "unmapped": In(1), "unmapped_addr": In(32), "exit_stb": Out(1), "exit_code": Out(32)})

    def elaborate(self, platform):
        m = Module()
        ident, err, addr, sim_exit = attach_bank(m, "sys", self.registers, self.bus).values()
        m.d.comb += [ident.value.eq(SYSTEM_ID), err.unmapped.eq(self.unmapped), addr.addr.eq(self.unmapped_addr),
                     self.exit_stb.eq(sim_exit.code_stb), self.exit_code.eq(sim_exit.code)]
        return m


class _CyclesLo(Register):
    """Clock cycles since reset, low word; reading it latches the high word into cycles_hi."""
    fields = [Field("value", 32, "rc")]


class _CyclesHi(Register):
    """Clock cycles since reset, high word, as latched by the last cycles_lo read."""
    fields = [Field("value", 32, "r")]


class Timer(wiring.Component):
    """A free-running 64-bit cycle counter (read ``cycles_lo``, then ``cycles_hi``)."""

    REGISTERS = [_CyclesLo("cycles_lo"), _CyclesHi("cycles_hi")]

    def __init__(self):
        self.registers = self.REGISTERS
        super().__init__({"bus": In(bank_bus_signature(self.registers))})

    def elaborate(self, platform):
        m = Module()
        lo, hi = attach_bank(m, "timer", self.registers, self.bus).values()
        count = Signal(64)
        m.d.sync += count.eq(count + 1)
        m.d.comb += lo.value.eq(count[:32])
        with m.If(lo.value_rd):
            m.d.sync += hi.value.eq(count[32:])
        return m


class _Tx(Register):
    """Write a byte to the transmit FIFO (dropped, and tx_overflow set, when it is full)."""
    fields = [Field("data", 8, "w")]


class _Rx(Register):
    """Read a byte from the receive FIFO (valid when status.rx_valid)."""
    fields = [Field("data", 8, "rc")]


class _Status(Register):
    """UART status flags."""
    fields = [Field("tx_full", 1, "r"), Field("tx_empty", 1, "r"), Field("rx_valid", 1, "r"),
              Field("rx_overflow", 1, "r"), Field("tx_overflow", 1, "r")]


class _Divisor(Register):
    """Clocks per bit, minus one."""
    fields = [Field("value", 16, "rw")]


class UART(wiring.Component):
    """8N1 UART with transmit and receive FIFOs (``depth`` bytes each).

    Parameters
    ----------
    divisor : int
        Reset value of the clocks-per-bit-minus-one register (e.g. 12 MHz / 115200 − 1 = 103).
    depth : int

    Members
    -------
    bus : subordinate bus of the bank
    tx : Out(1), rx : In(1)
        Serial lines (idle high).
    sent_stb, sent_data : Out
        A byte left the transmit FIFO for the line (for simulation logs).
    """

    #: the register layout (the divisor's reset value is the instance's)
    REGISTERS = [_Tx("tx"), _Rx("rx"), _Status("status"), _Divisor("divisor", reset={"value": 103})]

    def __init__(self, *, divisor=103, depth=16):
        self._depth = depth
        self.registers = [_Tx("tx"), _Rx("rx"), _Status("status"), _Divisor("divisor", reset={"value": divisor})]
        super().__init__({"bus": In(bank_bus_signature(self.registers)), "tx": Out(1, init=1),
                          "rx": In(1, init=1), "sent_stb": Out(1), "sent_data": Out(8)})

    def elaborate(self, platform):
        m = Module()
        tx_reg, rx_reg, status, divisor = attach_bank(m, "uart", self.registers, self.bus).values()
        m.submodules.tx_fifo = tx_fifo = BlockFIFO(width=8, depth=self._depth)
        m.submodules.rx_fifo = rx_fifo = BlockFIFO(width=8, depth=self._depth)
        m.d.comb += [tx_fifo.w_data.eq(tx_reg.data), tx_fifo.w_en.eq(tx_reg.data_stb)]
        with m.If(tx_reg.data_stb & ~tx_fifo.w_rdy):
            m.d.sync += status.tx_overflow.eq(1)
        m.d.comb += [status.tx_full.eq(~tx_fifo.w_rdy), status.tx_empty.eq(~tx_fifo.r_rdy),
                     status.rx_valid.eq(rx_fifo.r_rdy), rx_reg.data.eq(rx_fifo.r_data),
                     rx_fifo.r_en.eq(rx_reg.data_rd)]

        # Transmitter: start bit, 8 data bits LSB first, stop bit.
        tx_shift = Signal(10, init=0x3FF)
        tx_bits = Signal(range(11))
        tx_timer = Signal(16)
        with m.If(tx_bits == 0):
            m.d.comb += tx_fifo.r_en.eq(1)
            with m.If(tx_fifo.r_rdy):
                m.d.sync += [tx_shift.eq((tx_fifo.r_data << 1) | (1 << 9)), tx_bits.eq(10),
                             tx_timer.eq(divisor.value)]
                m.d.comb += [self.sent_stb.eq(1), self.sent_data.eq(tx_fifo.r_data)]
        with m.Elif(tx_timer == 0):
            m.d.sync += [tx_shift.eq((tx_shift >> 1) | (1 << 9)), tx_bits.eq(tx_bits - 1),
                         tx_timer.eq(divisor.value)]
        with m.Else():
            m.d.sync += tx_timer.eq(tx_timer - 1)
        m.d.comb += self.tx.eq(Mux(tx_bits == 0, 1, tx_shift[0]))     # idle high between frames

        # Receiver: wait for a start bit, sample mid-bit.
        rx_sync = Signal(2, init=3)
        m.d.sync += rx_sync.eq((rx_sync << 1) | self.rx)
        line = rx_sync[1]
        rx_bits = Signal(range(11))     # 10: start bit, 9…2: data bits, 1: stop bit
        rx_timer = Signal(17)
        rx_shift = Signal(8)
        with m.If(rx_bits == 0):
            with m.If(~line):
                m.d.sync += [rx_bits.eq(10), rx_timer.eq(divisor.value >> 1)]
        with m.Elif(rx_timer == 0):
            m.d.sync += [rx_timer.eq(divisor.value), rx_bits.eq(rx_bits - 1)]
            with m.If(rx_bits == 10):
                with m.If(line):                      # a glitch, not a start bit
                    m.d.sync += rx_bits.eq(0)
            with m.Elif(rx_bits > 1):
                m.d.sync += rx_shift.eq((line << 7) | (rx_shift >> 1))
            with m.Else():                            # stop bit: deliver
                m.d.comb += [rx_fifo.w_data.eq(rx_shift), rx_fifo.w_en.eq(line)]
                with m.If(line & ~rx_fifo.w_rdy):
                    m.d.sync += status.rx_overflow.eq(1)
        with m.Else():
            m.d.sync += rx_timer.eq(rx_timer - 1)
        return m

