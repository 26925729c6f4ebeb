"""The convolution peripheral: one layer (``Conv2d`` around a PE) behind registers, its weights written
through a weight source object.

A weight source is a plain object (nothing to elaborate until the peripheral is) with:

* ``registers``: the weight registers it adds to the bank, and ``status``: the status register class;
* ``k``, ``parallel``: the PE's kernel size and output channels per clock;
* ``restart_on_start``: whether each start also restarts the weights' stream (decoded sources);
* ``check(c_in, c_out)``: raise a one-line error for a layer it cannot serve (pure, before anything is built);
* ``build_pe(c_in, c_out)``: the PE, built once, at elaboration;
* ``connect(m, pe, regs, clear)``: drive the PE's weight ports from the registers; return a signal that is
  high once weights were written.

:class:`StagedWeights` (QGP codes or int8, :class:`~insitu.hdl.MuxConv` / :class:`~insitu.hdl.DenseConv`)
is here; the decoded sources (SmartDeal rows, MLG factors) are in :mod:`.decoded`.
"""

from amaranth import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ...hdl import Conv2d, DenseConv, MuxConv
from ...hdl.params import ParameterError, check_int, check_kernel, validated
from ..csr import attach_bank, bank_bus_signature
from .common import (Count, Ctrl, InData, Levels, OutCfg, OutData, Status, WCommit, WStage, fifos,
                     output_words)

__all__ = ["ConvAccel", "StagedWeights"]


class StagedWeights:
    """Weights written code by code into a staging register, then committed as one output channel's word.

    ``pe="qgp"``: :class:`~insitu.hdl.MuxConv`, one code per ``w_stage`` write, ``c_in`` per output channel.
    ``pe="dense"``: :class:`~insitu.hdl.DenseConv`, one int8 weight per write, ``c_in · k²`` per output
    channel, input channel-major, taps row-major.
    """

    restart_on_start = False
    status = Status
    _PES = {"qgp": MuxConv, "dense": DenseConv}

    def __init__(self, pe="qgp", *, k=3, parallel=1):
        if pe not in self._PES:
            raise ParameterError(f"PE must be one of {', '.join(map(repr, self._PES))}, not {pe!r}")
        self._pe, self._k = pe, check_kernel(k)
        self._parallel = check_int(parallel, "Parallel output channel count", 1)
        self.registers = [WStage("w_stage"), WCommit("w_commit")]

    pe = property(lambda self: self._pe)
    k = property(lambda self: self._k)
    parallel = property(lambda self: self._parallel)

    @property
    def code_width(self):
        """Bits of one (output, input) channel pair's weight code."""
        return (self._k * self._k - 1).bit_length() + 1 if self._pe == "qgp" else 8 * self._k * self._k

    @property
    def stage_bits(self):
        """Bits shifted into the staging register per ``w_stage`` write."""
        return min(self.code_width, 8)

    def stage_writes(self, c_in):
        """``w_stage`` writes per output channel."""
        return c_in * self.code_width // self.stage_bits

    def check(self, c_in, c_out):
        if c_out % self._parallel or self._parallel > c_out:
            raise ParameterError(f"Parallel output channel count must divide the output channel count ({c_out}), "
                                 f"not {self._parallel!r}")

    def build_pe(self, c_in, c_out):
        return self._PES[self._pe](c_in=c_in, c_out=c_out, k=self._k, parallel=self._parallel)

    def connect(self, m, pe, regs, clear):
        w_stage, w_commit = regs["w_stage"], regs["w_commit"]
        # A staging shift register of c_in codes, committed as one lane of one group.
        unit = self.stage_bits
        stage = Signal(pe.code_width * pe.c_in)
        have_weights = Signal()
        with m.If(w_stage.code_stb):
            m.d.sync += stage.eq(Cat(stage[unit:], w_stage.code[:unit]))
        lane_bits = max(1, (pe.parallel - 1).bit_length())
        m.d.comb += [pe.w_addr.eq(w_commit.group), pe.w_data.eq(Cat(*([stage] * pe.parallel))),
                     pe.w_en.eq(Mux(w_commit.group_stb, 1 << w_commit.lane[:lane_bits], 0))]
        with m.If(w_commit.group_stb):
            m.d.sync += have_weights.eq(1)
        return have_weights


class ConvAccel(wiring.Component):
    """A convolution layer (``c_in → c_out``, k×k, ``width × height``, zero padding ``k // 2``) as a
    peripheral; the weights come in through ``weights`` (a weight source, see the module).

    Parameters
    ----------
    c_in, c_out, width, height : int
    weights : weight source
        :class:`StagedWeights` (default ``StagedWeights("qgp")``), :class:`~.decoded.SmartDealRows` or
        :class:`~.decoded.MLGFactors`.
    fifo_depth : int
        Depth of the input FIFO (pixel words) and of the output FIFO (accumulators), at least 2.

    Members
    -------
    bus : In(bank_bus_signature(registers))
    """

    @validated
    def __init__(self, *, c_in, c_out, width=8, height=8, weights=None, fifo_depth=64):
        weights = StagedWeights() if weights is None else weights
        check_int(c_in, "Input channel count", 1)
        check_int(c_out, "Output channel count", 1)
        check_int(width, "Image width", 1)
        check_int(height, "Image height", 1)
        check_int(fifo_depth, "FIFO depth", 2, 1 << 16)
        weights.check(c_in, c_out)
        self._c_in, self._c_out, self._size, self._weights = c_in, c_out, (width, height), weights
        self._fifo_depth = fifo_depth
        self._registers = [Ctrl("ctrl"), weights.status("status"), Count("count"), Levels("levels"),
                           OutCfg("out_cfg"), *weights.registers, InData("in_data"), OutData("out_data")]
        super().__init__({"bus": In(bank_bus_signature(self._registers))})

    c_in = property(lambda self: self._c_in)
    c_out = property(lambda self: self._c_out)
    k = property(lambda self: self._weights.k)
    parallel = property(lambda self: self._weights.parallel)
    width = property(lambda self: self._size[0])
    height = property(lambda self: self._size[1])
    weights = property(lambda self: self._weights)
    fifo_depth = property(lambda self: self._fifo_depth)
    registers = property(lambda self: list(self._registers))
    #: 32-bit ``in_data`` words per pixel (four int8 channels each)
    words_per_pixel = property(lambda self: -(-self._c_in // 4))
    #: accumulators per frame (zero padding ``k // 2`` keeps the size)
    outputs_per_frame = property(lambda self: self._size[0] * self._size[1] * self._c_out)

    def elaborate(self, platform):
        m = Module()
        regs = attach_bank(m, "conv", self._registers, self.bus)
        ctrl, status, count, levels, out_cfg, in_data, out_data = (
            regs[name] for name in ("ctrl", "status", "count", "levels", "out_cfg", "in_data", "out_data"))
        pe, c_in = self._weights.build_pe(self._c_in, self._c_out), self._c_in
        conv = Conv2d(pe, width=self.width, height=self.height, padding=self.k // 2)

        start = ctrl.start_stb & ctrl.start      # a write strobes every field: act on the bits set
        clear = ctrl.clear_stb & ctrl.clear
        have_weights = self._weights.connect(m, pe, regs, clear)
        # clear empties both FIFOs and drops a partial frame from the convolution's line buffers.
        restart = clear | (start & have_weights) if self._weights.restart_on_start else clear
        m.submodules.conv = ResetInserter(restart)(conv)
        in_fifo, out_fifo = fifos(m, self._fifo_depth, clear, status, levels, in_data, out_data)

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
        last = part == held
        m.d.comb += [conv.i.valid.eq(running & last & in_fifo.r_rdy),
                     conv.i.payload.eq(Cat(pixel, in_fifo.r_data)[:8 * c_in]),
                     in_fifo.r_en.eq(running & (~last | conv.i.ready))]
        with m.If(in_fifo.r_en & in_fifo.r_rdy):
            m.d.sync += part.eq(Mux(last, 0, part + 1))
            if held:
                with m.If(~last):
                    m.d.sync += pixel.eq(Cat(pixel[32:], in_fifo.r_data))

        # Output: lanes serialised into words in the format out_cfg selects.
        lane = Signal(range(max(2, pe.parallel)))
        room = output_words(m, out_fifo, conv.o.payload[lane].as_signed(), conv.o.valid, out_cfg,
                            restart=start & have_weights)
        last_lane = lane == pe.parallel - 1
        m.d.comb += conv.o.ready.eq(room & last_lane)
        with m.If(conv.o.valid & room):
            m.d.sync += [lane.eq(Mux(last_lane, 0, lane + 1)), produced.eq(produced + 1)]
            with m.If(produced == self.outputs_per_frame - 1):
                m.d.sync += running.eq(0)

        with m.If(clear):
            m.d.sync += [status.err_overflow.eq(0), status.err_no_weights.eq(0), part.eq(0), running.eq(0)]
        return m
