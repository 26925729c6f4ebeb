"""Parts every accelerator peripheral shares: the register descriptions, the input and output FIFOs with
their output formats, the weight address counter and indexed register files."""

from amaranth import Cat, Const, Mux, ResetInserter, Signal, signed
from amaranth.lib import data

from ...hdl.bram import BlockFIFO
from ..csr import Field, Register

__all__ = ["Ctrl", "Status", "Count", "Levels", "OutCfg", "WStage", "WCommit", "InData", "OutData", "DenseCtrl",
           "DenseStatus", "WAddr", "WData", "DecodeStatus", "Basis", "Element", "fifos", "output_words",
           "weight_address", "indexed_registers", "flat_count"]


class Ctrl(Register):
    """Accelerator control: start one frame, or clear FIFOs and error flags."""
    fields = [Field("start", 1, "w"), Field("clear", 1, "w")]


class Status(Register):
    """Accelerator status and error flags (errors stay set until ctrl.clear)."""
    fields = [Field("busy", 1, "r"), Field("done", 1, "r"), Field("in_full", 1, "r"), Field("out_valid", 1, "r"),
              Field("err_overflow", 1, "r"), Field("err_no_weights", 1, "r")]


class Count(Register):
    """Accumulators produced in the current (or last) frame."""
    fields = [Field("outputs", 24, "r")]


class Levels(Register):
    """FIFO fill: words the input FIFO can take, accumulators waiting in the output FIFO."""
    fields = [Field("in_free", 16, "r"), Field("out_level", 16, "r")]


class OutCfg(Register):
    """Output format: one accumulator per word, ReLU-requantised int8 four per word, or int16 two per word."""
    fields = [Field("pack", 1, "rw"), Field("shift", 5, "rw"), Field("pair", 1, "rw")]


class WStage(Register):
    """Shift one weight code into the staging register."""
    fields = [Field("code", 8, "w")]


class WCommit(Register):
    """Write the staged codes as the weight word of one output channel (group · parallel + lane)."""
    fields = [Field("group", 16, "w"), Field("lane", 8, "w")]


class InData(Register):
    """Four int8 channels of an input pixel."""
    fields = [Field("data", 32, "w")]


class OutData(Register):
    """Pop one accumulator."""
    fields = [Field("data", 32, "rc")]


class DenseCtrl(Register):
    """Layer control: clear FIFOs, partial vector and error flag."""
    fields = [Field("clear", 1, "w")]


class DenseStatus(Register):
    """FIFO state and the error flags (set until ctrl.clear)."""
    fields = [Field("in_full", 1, "r"), Field("out_valid", 1, "r"), Field("err_overflow", 1, "r"),
              Field("err_address", 1, "r")]


class WAddr(Register):
    """Address of the next weight word (increments after each w_data write)."""
    fields = [Field("addr", 16, "w")]


class WData(Register):
    """One weight word: ``lanes`` int8 weights of one column (fc), or one spectrum bin (circulant)."""
    fields = [Field("data", 32, "w")]


class DecodeStatus(Register):
    """Accelerator status and error flags (errors stay set until ctrl.clear)."""
    fields = [*Status.fields, Field("err_address", 1, "r")]


class Basis(Register):
    """One basis value: index ``(group · 3 + j) · 3 + c``, value in the low ``basis_bits`` of bits 16–31."""
    fields = [Field("index", 16, "w"), Field("value", 16, "w")]


class Element(Register):
    """One factor code: word ``addr``, element ``elem`` of it, the code in bits 16–31."""
    fields = [Field("addr", 8, "w"), Field("elem", 8, "w"), Field("value", 16, "w")]


def fifos(m, depth, clear, status, levels, in_data, out_data):
    """The input and output FIFOs every peripheral has (emptied by ``clear``), wired to the ``in_data`` and
    ``out_data`` registers, the ``in_full``/``out_valid``/``err_overflow`` status bits and ``levels``.
    The caller clears ``err_overflow`` with its other flags; returns ``(in_fifo, out_fifo)``."""
    m.submodules.in_fifo = in_fifo = ResetInserter(clear)(BlockFIFO(width=32, depth=depth))
    m.submodules.out_fifo = out_fifo = ResetInserter(clear)(BlockFIFO(width=32, depth=depth))
    m.d.comb += [in_fifo.w_data.eq(in_data.data), in_fifo.w_en.eq(in_data.data_stb),
                 out_data.data.eq(out_fifo.r_data), out_fifo.r_en.eq(out_data.data_rd),
                 status.in_full.eq(~in_fifo.w_rdy), status.out_valid.eq(out_fifo.r_rdy),
                 levels.in_free.eq(depth - in_fifo.level), levels.out_level.eq(out_fifo.level)]
    with m.If(in_data.data_stb & ~in_fifo.w_rdy):
        m.d.sync += status.err_overflow.eq(1)
    return in_fifo, out_fifo


def output_words(m, out_fifo, value, valid, cfg, *, restart):
    """Write ``value`` (a signed accumulator, offered while ``valid``) into ``out_fifo`` in the format of
    ``cfg`` (an :class:`OutCfg`): one accumulator per word; ``pack``: ReLU and requantisation to [0, 127]
    with round-half-up at ``cfg.shift``, four per word, the first in bits 0–7; ``pair``: saturated to
    int16, two per word, the first in bits 0–15. Returns ``room``: the value is taken when
    ``valid & room``. ``restart`` drops a partial word."""
    rounded = Signal(signed(len(value) + 1))
    m.d.comb += rounded.eq((value + ((Const(1, len(value)) << cfg.shift) >> 1)) >> cfg.shift)
    byte, half = Signal(8), Signal(16)
    m.d.comb += [byte.eq(Mux(rounded < 0, 0, Mux(rounded > 127, 127, rounded))),
                 half.eq(Mux(value < -(1 << 15), -(1 << 15), Mux(value > (1 << 15) - 1, (1 << 15) - 1, value)))]
    packed, count = Signal(24), Signal(2)
    pack, pair = cfg.pack, cfg.pair & ~cfg.pack
    last = Mux(pack, count == 3, Mux(pair, count[0], 1))
    room = Signal()
    m.d.comb += [room.eq(out_fifo.w_rdy | ~last),
                 out_fifo.w_data.eq(Mux(pack, Cat(packed, byte), Mux(pair, Cat(packed[8:], half), value))),
                 out_fifo.w_en.eq(valid & last)]
    with m.If(valid & room):
        with m.If(pack):
            m.d.sync += [packed.eq(Cat(packed[8:], byte)), count.eq(count + 1)]
        with m.Elif(pair):
            m.d.sync += [packed[8:].eq(half), count.eq(count ^ 1)]
    with m.If(restart):
        m.d.sync += count.eq(0)
    return room


def weight_address(m, words, w_addr, w_data, status):
    """The weight address counter of ``words`` words: set by ``w_addr`` (``status.err_address`` when
    beyond), moved on by each ``w_data`` write, wrapping after the last word."""
    addr = Signal(range(words))
    with m.If(w_addr.addr_stb):
        with m.If(w_addr.addr < words):
            m.d.sync += addr.eq(w_addr.addr)
        with m.Else():
            m.d.sync += status.err_address.eq(1)
    with m.Elif(w_data.data_stb):
        m.d.sync += addr.eq(Mux(addr == words - 1, 0, addr + 1))
    return addr


def indexed_registers(m, layout, reg, status):
    """Registers of ``layout`` (an array of equal-width values), written one value per ``reg`` write
    (``reg.index``, ``reg.value``); an index out of range sets ``status.err_address``. Returns them.
    They sit outside the convolution's reset domain, so a start or clear keeps them."""
    regs = Signal(layout)
    width = len(regs.as_value()) // flat_count(layout)
    with m.If(reg.index_stb):
        with m.If(reg.index < flat_count(layout)):
            m.d.sync += regs.as_value().word_select(reg.index, width).eq(reg.value)
        with m.Else():
            m.d.sync += status.err_address.eq(1)
    return regs


def flat_count(layout):
    """Number of scalar elements of nested array layouts."""
    count = 1
    while isinstance(layout, data.ArrayLayout):
        count, layout = count * layout.length, layout.elem_shape
    return count
