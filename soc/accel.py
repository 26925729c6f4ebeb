"""Accelerators as bus peripherals: a convolution layer (``Conv2d`` with a ``MuxConv`` or ``DenseConv`` PE),
a dense fully connected layer (``DenseMatVec``) and a block-circulant layer (``CirculantMatVec``, see
:class:`CirculantAccel`) behind registers.

ConvAccel
---------

The CPU writes the weight codes into the PE's weight memory, streams pixels into an input FIFO, starts
the layer and reads accumulators from an output FIFO. Registers (generated into the firmware header like
every other):

============ ======================================================================================
register     fields
============ ======================================================================================
``ctrl``     ``start`` (w): run one frame; ``clear`` (w): stop, empty the FIFOs, drop a partial frame, clear
             error flags (weights are kept)
``status``   ``busy``, ``done``, ``in_full``, ``out_valid``, ``err_overflow`` (a pixel word was
             written to a full input FIFO), ``err_no_weights`` (started before any weight was written)
``count``    ``outputs`` (r): accumulators produced in the current/last frame
``levels``   ``in_free`` (r): words the input FIFO can take; ``out_level`` (r): words waiting
``out_cfg``  ``pack`` (rw): ReLU and requantisation to [0, 127] (round half up at ``shift``), four
             outputs per word; ``pair`` (rw): accumulators saturated to int16, two per word; neither:
             one accumulator per word; ``shift`` (rw)
``w_stage``  ``code`` (w): shift one weight code (QGP) or one int8 weight (dense) into the staging
             register (input channel 0 first)
``w_commit`` ``group``, ``lane`` (w): write the staged codes as that output channel's word
``in_data``  ``data`` (w): four int8 channels of a pixel (channel 4n in bits 0–7); ``ceil(c_in/4)``
             words per pixel, pixels in raster order
``out_data`` ``data`` (rc): one accumulator (sign-extended) or four packed outputs, output channels in
             order per pixel
============ ======================================================================================

DenseAccel
----------
The CPU writes the int8 weights (``lanes`` per word) once, then streams each input vector (four int8
elements per word); every ``n`` elements the layer computes ``m`` accumulators into the output FIFO.

============ ======================================================================================
register     fields
============ ======================================================================================
``ctrl``     ``clear`` (w): empty the FIFOs, drop a partial vector, clear the error flag
``status``   ``in_full``, ``out_valid``, ``err_overflow`` (a word was written to a full input FIFO),
             ``err_address`` (``w_addr`` beyond the weight memory; the address is kept)
``levels``   ``in_free``, ``out_level`` (r): as for the convolution
``out_cfg``  ``pack``, ``shift``, ``pair`` (rw): output format, as for the convolution
``w_addr``   ``addr`` (w): next weight word; each ``w_data`` write stores there and increments it
             (wrapping to 0 after the last word).
             Word ``g·n + c`` holds column ``c`` of rows ``g·lanes …``
``w_data``   ``data`` (w): ``lanes`` int8 weights (lane 0 in bits 0–7); write only between vectors
``in_data``  ``data`` (w): four int8 elements (element 4k in bits 0–7)
``out_data`` ``data`` (rc): one accumulator or packed outputs, rows in order
============ ======================================================================================
"""

import numpy as np
from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In

from ..hdl import Conv2d, DenseConv, MuxConv
from ..hdl._params import check_int, validated
from ..hdl.bram import BlockFIFO
from ..hdl.circulant import CirculantMatVec
from ..hdl.decode import SmartDealWeights, basis_layout
from ..hdl.insitu import InSituGenerator
from ..hdl.densematvec import DenseMatVec
from ..hdl.streamconv import StreamConv
from .bus import wishbone_signature
from .csr import Field, Register, RegisterBank

__all__ = ["ConvAccel", "SmartDealConvAccel", "MLGConvAccel", "DenseAccel", "CirculantAccel"]


class _Ctrl(Register):
    """Accelerator control: start one frame, or clear FIFOs and error flags."""
    fields = [Field("start", 1, "w"), Field("clear", 1, "w")]


class _Status(Register):
    """Accelerator status and error flags (errors stay set until ctrl.clear)."""
    fields = [Field("busy", 1, "r"), Field("done", 1, "r"), Field("in_full", 1, "r"), Field("out_valid", 1, "r"),
              Field("err_overflow", 1, "r"), Field("err_no_weights", 1, "r")]


class _Count(Register):
    """Accumulators produced in the current (or last) frame."""
    fields = [Field("outputs", 24, "r")]


class _Levels(Register):
    """FIFO fill: words the input FIFO can take, accumulators waiting in the output FIFO."""
    fields = [Field("in_free", 16, "r"), Field("out_level", 16, "r")]


class _OutCfg(Register):
    """Output format: one accumulator per word, ReLU-requantised int8 four per word, or int16 two per word."""
    fields = [Field("pack", 1, "rw"), Field("shift", 5, "rw"), Field("pair", 1, "rw")]


class _WStage(Register):
    """Shift one weight code into the staging register."""
    fields = [Field("code", 8, "w")]


class _WCommit(Register):
    """Write the staged codes as the weight word of one output channel (group · parallel + lane)."""
    fields = [Field("group", 16, "w"), Field("lane", 8, "w")]


class _InData(Register):
    """Four int8 channels of an input pixel."""
    fields = [Field("data", 32, "w")]


class _OutData(Register):
    """Pop one accumulator."""
    fields = [Field("data", 32, "rc")]


_PES = {"qgp": MuxConv, "dense": DenseConv}


def _fifos(m, depth, clear, status, levels, in_data, out_data):
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


def _output_words(m, out_fifo, value, valid, cfg, *, restart):
    """Write ``value`` (a signed accumulator, offered while ``valid``) into ``out_fifo`` in the format of
    ``cfg`` (an :class:`_OutCfg`): one accumulator per word; ``pack``: ReLU and requantisation to [0, 127]
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


class ConvAccel(wiring.Component):
    """A convolution layer (``c_in → c_out``, k×k, ``width × height``, zero padding ``k // 2``) as a peripheral.

    Parameters
    ----------
    c_in, c_out, k, width, height, parallel : int
    pe : ``"qgp"`` or ``"dense"``
        :class:`~insitu.hdl.MuxConv` (one code per ``w_stage`` write, ``c_in`` per output channel) or
        :class:`~insitu.hdl.DenseConv` (one int8 weight per write, ``c_in · k²`` per output channel,
        input channel-major, taps row-major).
    fifo_depth : int
        Depth of the input FIFO (pixel words) and of the output FIFO (accumulators).
    """

    @validated
    def __init__(self, *, c_in, c_out, k=3, width=8, height=8, parallel=1, pe="qgp", fifo_depth=64):
        if pe not in _PES:
            raise ValueError(f"PE must be one of {', '.join(map(repr, _PES))}, not {pe!r}")
        # The PE is built here to check the parameters, and again in elaborate (one instance per design).
        self._params = dict(c_in=c_in, c_out=c_out, k=k, parallel=parallel)
        self._pe = _PES[pe]
        probe = self._pe(**self._params)
        probe._MustUse__silence = True
        #: bits shifted into the staging register per ``w_stage`` write
        self.stage_bits = probe.code_width if probe.code_width <= 8 else 8
        self.stage_writes = c_in * probe.code_width // self.stage_bits
        self._setup(c_in=c_in, c_out=c_out, k=k, width=width, height=height, parallel=parallel,
                    fifo_depth=fifo_depth, status=_Status, weight_regs=[_WStage("w_stage"), _WCommit("w_commit")])

    def _setup(self, *, c_in, c_out, k, width, height, parallel, fifo_depth, status, weight_regs):
        self.c_in, self.c_out, self.k, self.parallel = c_in, c_out, k, parallel
        self._size = (width, height)
        self.words_per_pixel = -(-c_in // 4)
        self.outputs_per_frame = width * height * c_out       # zero padding k // 2 keeps the size
        self._fifo_depth = fifo_depth
        self.regs = [_Ctrl("ctrl"), status("status"), _Count("count"), _Levels("levels"), _OutCfg("out_cfg"),
                     *weight_regs, _InData("in_data"), _OutData("out_data")]
        self.bank = RegisterBank("conv", self.regs)
        super().__init__({"bus": In(wishbone_signature(len(self.bank.bus.adr)))})

    def _make_pe(self):
        return self._pe(**self._params)

    def _weights(self, m, pe, regs, clear):
        """Connect the weight registers to ``pe``; returns a signal that is high once weights were written."""
        w_stage, w_commit = regs["w_stage"], regs["w_commit"]
        # A staging shift register of c_in codes, committed as one lane of one group.
        cw, unit = pe.code_width, self.stage_bits
        stage = Signal(cw * self.c_in)
        have_weights = Signal()
        with m.If(w_stage.code_stb):
            m.d.sync += stage.eq(Cat(stage[unit:], w_stage.code[:unit]))
        m.d.comb += [pe.w_addr.eq(w_commit.group), pe.w_data.eq(Cat(*([stage] * pe.parallel))),
                     pe.w_en.eq(Mux(w_commit.group_stb, 1 << w_commit.lane[:max(1, (pe.parallel - 1).bit_length())], 0))]
        with m.If(w_commit.group_stb):
            m.d.sync += have_weights.eq(1)
        return have_weights

    #: the convolution (with its weight source) restarts at each frame's start
    _restart_on_start = False

    def elaborate(self, platform):
        m = Module()
        m.submodules.bank = self.bank
        wiring.connect(m, wiring.flipped(self.bus), self.bank.bus)
        regs = {reg.name: reg for reg in self.regs}
        ctrl, status, count, levels, out_cfg, in_data, out_data = (
            regs[name] for name in ("ctrl", "status", "count", "levels", "out_cfg", "in_data", "out_data"))
        pe, c_in = self._make_pe(), self.c_in
        conv = Conv2d(pe, width=self._size[0], height=self._size[1], padding=self.k // 2)

        start = ctrl.start_stb & ctrl.start      # a write strobes every field: act on the bits set
        clear = ctrl.clear_stb & ctrl.clear
        have_weights = self._weights(m, pe, regs, clear)
        # clear empties both FIFOs and drops a partial frame from the convolution's line buffers.
        restart = clear | (start & have_weights) if self._restart_on_start else clear
        m.submodules.conv = ResetInserter(restart)(conv)
        in_fifo, out_fifo = _fifos(m, self._fifo_depth, clear, status, levels, in_data, out_data)

        # Control: a frame runs from start until all its outputs are in the output FIFO.
        running = Signal()
        produced = Signal(range(self.outputs_per_frame + 1))
        with m.If(start & have_weights):
            m.d.sync += [running.eq(1), produced.eq(0)]
        with m.If(start & ~have_weights):
            m.d.sync += status.err_no_weights.eq(1)
        m.d.comb += [status.busy.eq(running), count.outputs.eq(produced),
                     status.done.eq(~running & (produced == self.outputs_per_frame))]

        # Input: CPU words into the FIFO; words_per_pixel of them make one pixel for the window. All but
        # the last word of a pixel wait in a register; the last goes from the FIFO's output to the window.
        held = self.words_per_pixel - 1
        pixel = Signal(32 * held)
        part = Signal(range(max(2, self.words_per_pixel)))
        conv_i = conv.i
        last = part == held
        m.d.comb += [conv_i.valid.eq(running & last & in_fifo.r_rdy),
                     conv_i.payload.eq(Cat(pixel, in_fifo.r_data)[:8 * c_in]),
                     in_fifo.r_en.eq(running & (~last | conv_i.ready))]
        with m.If(in_fifo.r_en & in_fifo.r_rdy):
            m.d.sync += part.eq(Mux(last, 0, part + 1))
            if held:
                with m.If(~last):
                    m.d.sync += pixel.eq(Cat(pixel[32:], in_fifo.r_data))

        # Output: lanes serialised into words in the format out_cfg selects.
        lane = Signal(range(max(2, pe.parallel)))
        conv_o = conv.o
        room = _output_words(m, out_fifo, conv_o.payload[lane].as_signed(), conv_o.valid, out_cfg,
                             restart=start & have_weights)
        last_lane = lane == pe.parallel - 1
        m.d.comb += conv_o.ready.eq(room & last_lane)
        with m.If(conv_o.valid & room):
            m.d.sync += [lane.eq(Mux(last_lane, 0, lane + 1)), produced.eq(produced + 1)]
            with m.If(produced == self.outputs_per_frame - 1):
                m.d.sync += running.eq(0)

        with m.If(clear):
            m.d.sync += [status.err_overflow.eq(0), status.err_no_weights.eq(0), part.eq(0), running.eq(0)]
        return m


class _DenseCtrl(Register):
    """Layer control: clear FIFOs, partial vector and error flag."""
    fields = [Field("clear", 1, "w")]


class _DenseStatus(Register):
    """FIFO state and the error flags (set until ctrl.clear)."""
    fields = [Field("in_full", 1, "r"), Field("out_valid", 1, "r"), Field("err_overflow", 1, "r"),
              Field("err_address", 1, "r")]


class _WAddr(Register):
    """Address of the next weight word (increments after each w_data write)."""
    fields = [Field("addr", 16, "w")]


class _WData(Register):
    """One weight word: ``lanes`` int8 weights of one column (fc), or one spectrum bin (circulant)."""
    fields = [Field("data", 32, "w")]


def _weight_address(m, words, w_addr, w_data, status):
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


class _MatVecAccel(wiring.Component):
    """Base of the matrix-vector peripherals: the registers of :class:`DenseAccel`, a weight address counter
    (set by ``w_addr``, ``status.err_address`` when beyond ``words``, moved on by each ``w_data`` write,
    wrapping after the last word: :func:`_weight_address`), input words fed into the layer one int8 element per clock (element 0
    first) and its outputs written in the format ``out_cfg`` selects. Subclasses build the layer
    (``_layer()``, a stream ``i``/``o`` component) and connect its weight write port
    (``_write_weights(m, layer, addr, w_data)``)."""

    @staticmethod
    def _check_columns(n):
        if not isinstance(n, int) or n < 4 or n % 4:
            raise ValueError(f"Column count must be a positive multiple of 4, not {n!r}")

    def __init__(self, bank_name, *, words, fifo_depth):
        self.words = words
        self._fifo_depth = fifo_depth
        self.regs = [_DenseCtrl("ctrl"), _DenseStatus("status"), _Levels("levels"), _OutCfg("out_cfg"),
                     _WAddr("w_addr"), _WData("w_data"), _InData("in_data"), _OutData("out_data")]
        self.bank = RegisterBank(bank_name, self.regs)
        super().__init__({"bus": In(wishbone_signature(len(self.bank.bus.adr)))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.bank = self.bank
        wiring.connect(m, wiring.flipped(self.bus), self.bank.bus)
        ctrl, status, levels, out_cfg, w_addr, w_data, in_data, out_data = self.regs
        clear = ctrl.clear_stb & ctrl.clear
        layer = self._layer()
        m.submodules.layer = ResetInserter(clear)(layer)
        in_fifo, out_fifo = _fifos(m, self._fifo_depth, clear, status, levels, in_data, out_data)

        self._write_weights(m, layer, _weight_address(m, self.words, w_addr, w_data, status), w_data)

        byte = Signal(2)
        m.d.comb += [layer.i.valid.eq(in_fifo.r_rdy), layer.i.payload.eq(in_fifo.r_data.word_select(byte, 8)),
                     in_fifo.r_en.eq(layer.i.ready & (byte == 3))]
        with m.If(layer.i.valid & layer.i.ready):
            m.d.sync += byte.eq(byte + 1)
        with m.If(clear):
            m.d.sync += [byte.eq(0), status.err_overflow.eq(0), status.err_address.eq(0)]

        room = _output_words(m, out_fifo, layer.o.payload, layer.o.valid, out_cfg, restart=clear)
        m.d.comb += layer.o.ready.eq(room)
        return m


class DenseAccel(_MatVecAccel):
    """A fully connected int8 layer ``y = W @ x`` (``m × n``) as a peripheral, ``lanes`` MACs per clock.

    Parameters
    ----------
    m, n, lanes : int
        ``n`` a multiple of 4 (inputs arrive four per word), ``lanes`` in [1, 4] dividing ``m``.
    fifo_depth : int
        Depth of the input FIFO (words) and the output FIFO (accumulators).
    """

    @validated
    def __init__(self, *, m, n, lanes=4, fifo_depth=64):
        self._check_columns(n)
        if not isinstance(lanes, int) or not 1 <= lanes <= 4:
            raise ValueError(f"Lane count must be an integer in range [1, 4], not {lanes!r}")
        self._params = dict(m=m, n=n, lanes=lanes)
        self._layer()._MustUse__silence = True      # checks m, lanes
        self.m, self.n, self.lanes = m, n, lanes
        super().__init__("fc", words=m // lanes * n, fifo_depth=fifo_depth)

    def _layer(self):
        return DenseMatVec(**self._params, writable=True)

    def _write_weights(self, m, layer, addr, w_data):
        m.d.comb += [layer.w_addr.eq(addr), layer.w_data.eq(w_data.data[:8 * self.lanes]),
                     layer.w_en.eq(w_data.data_stb)]


class CirculantAccel(_MatVecAccel):
    """A block-circulant int8 layer ``y = C @ x`` (``m × n``, ``k × k`` blocks, FFT-based:
    :class:`~insitu.hdl.circulant.CirculantMatVec`) as a peripheral.

    The CPU writes the weight half spectra (``k/2 + 1`` complex bins per block, as
    :func:`insitu.golden.circulant.compress` gives them) once, then streams each input vector (four int8
    elements per word); every ``n`` elements the layer emits ``m`` outputs (``fft_width``-bit, the golden
    model's ``matvec``) into the output FIFO. ``mid_shift`` is a property of the compressed layer and is
    fixed when the peripheral is built.

    Registers: as :class:`DenseAccel`, except that ``w_data`` is one spectrum bin (``re`` bits 0–15,
    ``im`` bits 16–31) and word ``(i · n/k + j) · (k/2 + 1) + bin`` holds bin ``bin`` of block ``(i, j)``.

    Parameters
    ----------
    m, n, k, mid_shift : int
        ``n`` a multiple of 4 and of ``k``.
    spectrum_width : int
        At most 16 (one bin per word).
    fifo_depth : int
    """

    @validated
    def __init__(self, *, m, n, k, mid_shift, spectrum_width=16, fifo_depth=64):
        self._check_columns(n)
        if not isinstance(spectrum_width, int) or not 4 <= spectrum_width <= 16:
            raise ValueError(f"Spectrum width must be an integer in range [4, 16], not {spectrum_width!r}")
        self._params = dict(m=m, n=n, k=k, mid_shift=mid_shift, spectrum_width=spectrum_width, writable=True)
        probe = self._layer()        # checks the rest
        for part in (probe, probe._fwd, probe._inv):
            part._MustUse__silence = True
        super().__init__("circ", words=(m // k) * (n // k) * (k // 2 + 1), fifo_depth=fifo_depth)
        self.m, self.n, self.k, self.mid_shift = m, n, k, mid_shift

    def _layer(self):
        return CirculantMatVec(spectra=None, **self._params)

    def _write_weights(self, m, layer, addr, w_data):
        sw = self._params["spectrum_width"]
        m.d.comb += [layer.s_addr.eq(addr), layer.s_data.re.eq(w_data.data[:sw]),
                     layer.s_data.im.eq(w_data.data[16:16 + sw]), layer.s_en.eq(w_data.data_stb)]


class _DecodeStatus(Register):
    """Accelerator status and error flags (errors stay set until ctrl.clear)."""
    fields = [*_Status.fields, Field("err_address", 1, "r")]


class _Basis(Register):
    """One basis value: index ``(group · 3 + j) · 3 + c``, value in the low ``basis_bits`` of bits 16–31."""
    fields = [Field("index", 16, "w"), Field("value", 16, "w")]


def _indexed_registers(m, layout, reg, status):
    """Registers of ``layout`` (an array of equal-width values), written one value per ``reg`` write
    (``reg.index``, ``reg.value``); an index out of range sets ``status.err_address``. Returns them.
    They sit outside the convolution's reset domain, so a start or clear keeps them."""
    regs = Signal(layout)
    width = len(regs.as_value()) // _flat_count(layout)
    with m.If(reg.index_stb):
        with m.If(reg.index < _flat_count(layout)):
            m.d.sync += regs.as_value().word_select(reg.index, width).eq(reg.value)
        with m.Else():
            m.d.sync += status.err_address.eq(1)
    return regs


def _flat_count(layout):
    """Number of scalar elements of nested array layouts."""
    count = 1
    while isinstance(layout, data.ArrayLayout):
        count, layout = count * layout.length, layout.elem_shape
    return count


class _DecodedConvAccel(ConvAccel):
    """Base of the convolution peripherals whose weights a decode unit (``_source_class``, built with
    ``_source_params``) regenerates into a :class:`~insitu.hdl.streamconv.StreamConv`. Each start restarts
    the source at the layer's first weight; ``status.err_address`` (cleared by ``ctrl.clear``) flags
    out-of-range weight writes."""

    _restart_on_start = True
    #: elaboratables the source builds in its constructor (silenced on the parameter-checking probe)
    _source_parts = ()

    def _init(self, *, c_in, c_out, width, height, fifo_depth, source_params, weight_regs):
        self._conv_params = dict(c_in=c_in, c_out=c_out, k=3)
        self._source_params = source_params
        probe = self._make_pe()                                  # checks the parameters
        for part in (probe, probe.source, *(getattr(probe.source, name) for name in self._source_parts)):
            part._MustUse__silence = True
        self._setup(c_in=c_in, c_out=c_out, k=3, width=width, height=height, parallel=1, fifo_depth=fifo_depth,
                    status=_DecodeStatus, weight_regs=weight_regs)

    def _make_pe(self):
        return StreamConv(**self._conv_params, source=self._source_class(**self._source_params))

    def _weights(self, m, pe, regs, clear):
        with m.If(clear):
            m.d.sync += regs["status"].err_address.eq(0)
        return self._source_weights(m, pe.source, regs, regs["status"])


class SmartDealConvAccel(_DecodedConvAccel):
    """A 3×3 convolution layer whose weights are decoded from SmartDeal's packed form on chip
    (:class:`~insitu.hdl.decode.SmartDealWeights` feeding a :class:`~insitu.hdl.streamconv.StreamConv`),
    as a peripheral: only the packed coefficient rows and the bases are stored.

    Registers: as :class:`ConvAccel` (``ctrl``, ``status``, ``count``, ``levels``, ``out_cfg``,
    ``in_data``, ``out_data``), with the weights written as:

    ============ ======================================================================================
    ``w_addr``   ``addr`` (w): next row word; each ``w_data`` write stores there and increments it
    ``w_data``   ``data`` (w): one 32-bit word of :func:`insitu.golden.smartdeal.row_words`
    ``basis``    ``index``, ``value`` (w): basis value ``basis[g][j][c]`` at index ``(g · 3 + j) · 3 + c``
    ============ ======================================================================================

    ``status.err_address`` is set by a ``w_addr`` or ``basis`` index out of range; ``err_no_weights`` by a
    start before any row word was written. Each start restarts the decoder at the first row (and clears
    the line buffers), so weights may be rewritten between frames.

    Parameters
    ----------
    c_in, c_out, width, height : int
    group_size : int
        Filters per basis (``c_out // group_size`` bases).
    basis_bits, exp_range : int
        As the compressed layer's (``layer.basis_bits``, ``layer.e_max − layer.e_min``).
    words : int or None
        Capacity of the row memory in 32-bit words (default: enough for rows with no zeros).
    fifo_depth : int
    """

    _source_class = SmartDealWeights
    _source_parts = ("reader", "decoder")

    @validated
    def __init__(self, *, c_in, c_out, width=8, height=8, group_size=1, basis_bits=8, exp_range=12,
                 words=None, fifo_depth=64):
        if words is not None and not isinstance(words, int):
            raise TypeError(f"Word capacity must be an integer or None, not {words!r}")
        check_int(c_in, "Input channel count", 1)
        check_int(c_out, "Output channel count", 1)
        check_int(group_size, "Group size", 1, c_out)
        if c_out % group_size:
            raise ValueError(f"Group size must divide the output channel count ({c_out}), not {group_size!r}")
        check_int(exp_range, "Exponent range", 0, 31)
        self._rows = 3 * c_in                                    # a 3×3 filter is c_in · 3 rows of 3
        groups = c_out // group_size
        if words is None:                                        # every row with three non-zero coefficients
            words = -(-c_out * self._rows * (1 + 3 * (2 + max(1, exp_range.bit_length()))) // 32)
        self.words, self.groups, self.basis_bits = words, groups, basis_bits
        self._init(c_in=c_in, c_out=c_out, width=width, height=height, fifo_depth=fifo_depth,
                   source_params=dict(words=[0] * words, rows=self._rows, c_out=c_out, group_size=group_size,
                                      basis=[[[0] * 3] * 3] * groups, basis_bits=basis_bits, exp_range=exp_range,
                                      writable=True),
                   weight_regs=[_WAddr("w_addr"), _WData("w_data"), _Basis("basis")])

    def _source_weights(self, m, source, regs, status):
        w_addr, w_data, basis = regs["w_addr"], regs["w_data"], regs["basis"]
        addr = _weight_address(m, self.words, w_addr, w_data, status)
        m.d.comb += [source.w_addr.eq(addr), source.w_data.eq(w_data.data), source.w_en.eq(w_data.data_stb)]
        m.d.comb += source.basis.eq(_indexed_registers(m, basis_layout(self.groups, self.basis_bits), basis, status))
        have_weights = Signal()
        with m.If(w_data.data_stb):
            m.d.sync += have_weights.eq(1)
        return have_weights


class _Element(Register):
    """One factor code: word ``addr``, element ``elem`` of it, the code in bits 16–31."""
    fields = [Field("addr", 8, "w"), Field("elem", 8, "w"), Field("value", 16, "w")]


class MLGConvAccel(_DecodedConvAccel):
    """A 3×3 convolution layer whose weights are generated on chip from MLG factors
    (:class:`~insitu.hdl.insitu.InSituGenerator` feeding a :class:`~insitu.hdl.streamconv.StreamConv`),
    as a peripheral: only the factor codes ``basis``, ``u`` and ``v`` of
    :func:`insitu.golden.mlg.decompose` are stored.

    Registers: as :class:`ConvAccel`, with the factors written one code per write:

    ============ ======================================================================================
    ``basis``    ``index``, ``value`` (w): ``basis[b, i, t]`` at index ``(b · bi + i) · 9 + t``
    ``u``        ``addr``, ``elem``, ``value`` (w): ``u[b, ci, i]`` at ``addr`` ``ci``, ``elem`` ``b · bi + i``
    ``v``        ``addr``, ``elem``, ``value`` (w): ``v[o, b]`` at ``addr`` ``o``, ``elem`` ``b``
    ============ ======================================================================================

    ``status.err_address`` is set by an index, address or element out of range; ``err_no_weights`` by a
    start before any ``v`` code was written. Each start restarts the generator at the first weight.

    Parameters
    ----------
    c_in, c_out, width, height : int
    bi, bo : int
        Factor ranks (``basis`` is ``bo × bi × 9``).
    bits : (int, int, int)
        Code widths of ``(basis, u, v)``, as the decomposed layer's.
    lanes : int
        Weights generated per clock (1, 3 or 9).
    fifo_depth : int
    """

    _source_class = InSituGenerator

    @validated
    def __init__(self, *, c_in, c_out, width=8, height=8, bi=3, bo=4, bits=(3, 6, 3), lanes=1, fifo_depth=64):
        check_int(c_in, "Input channel count", 1)
        check_int(c_out, "Output channel count", 1)
        check_int(bi, "Basis rank bi", 1, 255)
        check_int(bo, "Basis rank bo", 1, 255)
        self.bi, self.bo = bi, bo
        self._init(c_in=c_in, c_out=c_out, width=width, height=height, fifo_depth=fifo_depth,
                   source_params=dict(basis=np.ones((bo, bi, 9), int), u=np.ones((bo, c_in, bi), int),
                                      v=np.ones((c_out, bo), int), bits=bits, lanes=lanes, writable=True),
                   weight_regs=[_Basis("basis"), _Element("u"), _Element("v")])

    def _source_weights(self, m, source, regs, status):
        m.d.comb += source.basis.eq(_indexed_registers(m, source.basis.shape(), regs["basis"], status))
        have_weights = Signal()
        for name, words, elems in (("u", self.c_in, self.bo * self.bi), ("v", self.c_out, self.bo)):
            reg = regs[name]
            addr, data_, en = (getattr(source, f"{name}_{port}") for port in ("addr", "data", "en"))
            width = len(data_.as_value()) // elems
            ok = (reg.addr < words) & (reg.elem < elems)
            m.d.comb += [addr.eq(reg.addr), data_.eq(Cat(*[reg.value[:width]] * elems)),
                         en.eq(Mux(reg.value_stb & ok, 1 << reg.elem, 0))]
            with m.If(reg.value_stb & ~ok):
                m.d.sync += status.err_address.eq(1)
            if name == "v":
                with m.If(reg.value_stb & ok):
                    m.d.sync += have_weights.eq(1)
        return have_weights
