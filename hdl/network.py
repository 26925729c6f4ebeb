"""Stream stages that join layer blocks into a whole-network pipeline (:mod:`insitu.tools.designs_network`).

Between two weight layers the values travel as *channel groups* (:mod:`insitu.hdl.groups`). The stages
here work on that format:

* :class:`BiasRelu`: adds a per-channel bias and/or clamps at zero;
* :class:`~insitu.hdl.pool.Pool` (in its own module, exported here too): non-overlapping ``k×k`` sum or max
  pooling, partial results in one block RAM;
* :class:`Gather`: the groups of a pixel into one transfer, the pixel format of
  :class:`~insitu.hdl.SlidingWindow`;
* :class:`Serialise`: one value per transfer, the input format of the matrix-vector blocks;
* :class:`Flatten`: reorders a feature map from arrival order ``(row, column, channel)`` into the
  ``(channel, row, column)`` order of the golden model's ``flatten``;
* :class:`Decimate`: keeps every ``stride``-th pixel of every ``stride``-th row (strided convolution);
* :class:`Scores`: the class scores out, with the index of the largest on the last one.

Each is one registered stage with valid/ready on both sides (no combinational path from ``o.ready`` to
``i.valid`` is assumed), so any chain of them is deadlock-free: every stage holds at most a bounded amount
of data and always drains when its output is taken.
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .groups import Counter, group_layout, scores_layout
from .params import ParameterError, check_int, signed_width, validated
from .pool import Pool

__all__ = ["BiasRelu", "Pool", "Gather", "Serialise", "Flatten", "Decimate", "Scores", "group_layout",
           "scores_layout"]


class BiasRelu(wiring.Component):
    """``o = max(i + bias[channel], 0)`` (without ``relu``: ``i + bias[channel]``); one registered stage.

    Parameters
    ----------
    width : int
        Signed input width; the output is one bit wider when there is a bias.
    lanes, groups : int
        The channel-group format: ``lanes · groups`` channels.
    bias : sequence of int or None
        One integer per channel.
    relu : bool
    """

    @validated
    def __init__(self, *, width, lanes, groups, bias=None, relu=False):
        check_int(width, "Width", 2, 64)
        check_int(lanes, "Lane count", 1)
        check_int(groups, "Group count", 1)
        if bias is not None:
            bias = [int(b) for b in bias]
            if len(bias) != lanes * groups:
                raise ParameterError(f"Bias must have one value per channel ({lanes * groups}), not {len(bias)}")
            out = max(width, signed_width(min(bias + [0]), max(bias + [0]))) + 1
        else:
            out = width
        self._width, self._out, self._lanes, self._groups = width, out, lanes, groups
        self._bias, self._relu = bias, bool(relu)
        super().__init__({"i": In(stream.Signature(group_layout(width, lanes))),
                          "o": Out(stream.Signature(group_layout(out, lanes)))})

    out_width = property(lambda self: self._out)

    def elaborate(self, platform):
        m = Module()
        group = Counter(m, self._groups, "group")
        take = self.i.valid & self.i.ready
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.ready):
            m.d.sync += self.o.valid.eq(self.i.valid)
        group.step(take)
        for lane in range(self._lanes):
            value = self.i.payload[lane]
            if self._bias is not None:
                bias = Signal(signed(self._out), name=f"bias{lane}")
                with m.Switch(group.value):
                    for g in range(self._groups):
                        with m.Case(g):
                            m.d.comb += bias.eq(self._bias[g * self._lanes + lane])
                value = value + bias
            if self._relu:
                value = Mux(value < 0, 0, value)
            with m.If(take):
                m.d.sync += self.o.payload[lane].eq(value)
        return m


class Gather(wiring.Component):
    """The ``groups`` transfers of a pixel into one transfer of ``lanes · groups`` channels.

    Members
    -------
    i : In(stream.Signature(group_layout(width, lanes)))
    o : Out(stream.Signature(ArrayLayout(signed(width), lanes · groups)))
    """

    @validated
    def __init__(self, *, width, lanes, groups):
        check_int(width, "Width", 2, 64)
        check_int(lanes, "Lane count", 1)
        check_int(groups, "Group count", 1)
        self._width, self._lanes, self._groups = width, lanes, groups
        super().__init__({"i": In(stream.Signature(group_layout(width, lanes))),
                          "o": Out(stream.Signature(group_layout(width, lanes * groups)))})

    def elaborate(self, platform):
        m = Module()
        lanes, groups = self._lanes, self._groups
        group = Counter(m, groups, "group")
        held = [Signal(signed(self._width), name=f"held{n}") for n in range((groups - 1) * lanes)]
        m.d.comb += self.i.ready.eq(~group.last | ~self.o.valid | self.o.ready)
        take = self.i.valid & self.i.ready
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        group.step(take)
        with m.If(take):
            with m.Switch(group.value):
                for g in range(groups - 1):
                    with m.Case(g):
                        m.d.sync += [held[g * lanes + l].eq(self.i.payload[l]) for l in range(lanes)]
                with m.Case(groups - 1):
                    m.d.sync += self.o.valid.eq(1)
                    m.d.sync += [self.o.payload[n].eq(held[n]) for n in range(len(held))]
                    m.d.sync += [self.o.payload[len(held) + l].eq(self.i.payload[l]) for l in range(lanes)]
        return m


class Serialise(wiring.Component):
    """``lanes`` values per transfer into one value per transfer, lane 0 first.

    Members
    -------
    i : In(stream.Signature(group_layout(width, lanes)))
    o : Out(stream.Signature(signed(width)))
    """

    @validated
    def __init__(self, *, width, lanes):
        check_int(width, "Width", 2, 64)
        check_int(lanes, "Lane count", 1)
        self._width, self._lanes = width, lanes
        super().__init__({"i": In(stream.Signature(group_layout(width, lanes))),
                          "o": Out(stream.Signature(signed(width)))})

    def elaborate(self, platform):
        m = Module()
        lanes = self._lanes
        lane = Counter(m, lanes, "lane")
        held = Signal(group_layout(self._width, lanes))
        full = Signal()
        m.d.comb += self.i.ready.eq(~full | (lane.last & self.o.ready))
        m.d.comb += [self.o.valid.eq(full), self.o.payload.eq(held[lane.value] if lanes > 1 else held[0])]
        lane.step(self.o.valid & self.o.ready)
        with m.If(self.o.valid & self.o.ready & lane.last):
            m.d.sync += full.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [full.eq(1), held.eq(self.i.payload)]
        return m


class Flatten(wiring.Component):
    """Reorder a ``channels × height × width`` feature map, one value per transfer, from arrival order
    (row, column, channel) to ``(channel, row, column)`` order (``numpy.reshape`` of ``(C, H, W)``).

    A single buffer of ``C·H·W`` words in block RAM: a whole map is written, then read out; the next map
    is taken once the last value has left. Per map: ``2·C·H·W`` clocks without stalls.
    """

    @validated
    def __init__(self, *, width, channels, height, image_width):
        check_int(width, "Width", 2, 64)
        check_int(channels, "Channel count", 1)
        check_int(height, "Height", 1)
        check_int(image_width, "Width", 1)
        self._width, self._c, self._h, self._w = width, channels, height, image_width
        super().__init__({"i": In(stream.Signature(signed(width))),
                          "o": Out(stream.Signature(signed(width)))})

    @property
    def cycles_per_map(self):
        return 2 * self._c * self._h * self._w

    def elaborate(self, platform):
        m = Module()
        c, h, w = self._c, self._h, self._w
        n, hw = c * h * w, h * w
        m.submodules.mem = mem = memory.Memory(shape=signed(self._width), depth=n, init=[])
        rd, wr = mem.read_port(), mem.write_port()
        reading = Signal()
        channel = Counter(m, c, "channel")
        base = Signal(range(max(hw, 2)))               # row·W + column of the arriving pixel
        offset = Signal(range(max(n, 2)))              # channel·H·W
        count = Signal(range(n + 1))
        take = self.i.valid & self.i.ready
        m.d.comb += [self.i.ready.eq(~reading), wr.addr.eq(offset + base), wr.data.eq(self.i.payload),
                     wr.en.eq(take)]
        with m.If(take):
            channel.step(1)
            with m.If(channel.last):
                m.d.sync += [offset.eq(0), base.eq(Mux(base == hw - 1, 0, base + 1))]
            with m.Else():
                m.d.sync += offset.eq(offset + hw)
            with m.If(count == n - 1):
                m.d.sync += [count.eq(0), reading.eq(1)]
            with m.Else():
                m.d.sync += count.eq(count + 1)

        advance = ~self.o.valid | self.o.ready
        m.d.comb += [rd.addr.eq(count), rd.en.eq(advance), self.o.payload.eq(rd.data)]
        with m.If(advance):
            m.d.sync += self.o.valid.eq(reading & (count != n))
            with m.If(reading):
                with m.If(count == n):
                    m.d.sync += [reading.eq(0), count.eq(0)]
                with m.Else():
                    m.d.sync += count.eq(count + 1)
        return m


class Decimate(wiring.Component):
    """Keep the pixels ``(y, x)`` with ``y % stride == 0`` and ``x % stride == 0`` of an
    ``image_width × image_height`` channel-group stream (a strided convolution's outputs)."""

    @validated
    def __init__(self, *, width, lanes, groups, image_width, image_height, stride):
        check_int(stride, "Stride", 1)
        self._lanes, self._groups, self._iw, self._ih, self._stride = lanes, groups, image_width, image_height, stride
        sig = stream.Signature(group_layout(width, lanes))
        super().__init__({"i": In(sig), "o": Out(sig)})

    def elaborate(self, platform):
        m = Module()
        group, xr, yr = Counter(m, self._groups, "group"), Counter(m, self._stride, "xr"), \
            Counter(m, self._stride, "yr")
        col = Counter(m, self._iw, "col")
        row = Counter(m, self._ih, "row")
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        take = self.i.valid & self.i.ready
        with m.If(self.i.ready):
            m.d.sync += self.o.valid.eq(self.i.valid & (xr.value == 0) & (yr.value == 0))
        with m.If(take):
            m.d.sync += self.o.payload.eq(self.i.payload)
            group.step(1)
            with m.If(group.last):
                col.step(1)
                with m.If(col.last):
                    xr.reset()
                    row.step(1)
                    with m.If(row.last):
                        yr.reset()
                    with m.Else():
                        yr.step(1)
                with m.Else():
                    xr.step(1)
        return m


class Scores(wiring.Component):
    """The ``classes`` scores of each image out, one per transfer, the last with the index of the largest.

    Members
    -------
    i : In(stream.Signature(signed(width)))
    o : Out(stream.Signature(scores_layout(width, classes)))
    """

    @validated
    def __init__(self, *, width, classes):
        check_int(width, "Width", 2, 64)
        check_int(classes, "Class count", 1)
        self._width, self._classes = width, classes
        super().__init__({"i": In(stream.Signature(signed(width))),
                          "o": Out(stream.Signature(scores_layout(width, classes)))})

    def elaborate(self, platform):
        m = Module()
        # One score per four clocks: load it with its index, compare its halves with the best so far's into
        # registers, combine them, then hand it out. Each comparison starts and ends at flip-flops and is
        # half the score's width (a long carry chain is the slowest path otherwise), and ``i.ready`` is a
        # flip-flop's output.
        index = Counter(m, self._classes, "index")
        score = Signal(signed(self._width))
        score_index = Signal.like(self.o.payload.klass)
        score_last = Signal()
        score_valid = Signal()
        step = Signal(2)                            # 0 loaded, 1 halves compared, 2 compared
        hi_gt, hi_eq, lo_gt = Signal(), Signal(), Signal()
        better = Signal()
        best = Signal(signed(self._width))
        best_index = Signal.like(self.o.payload.klass)
        half = self._width // 2
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(~score_valid)
        take = self.i.valid & self.i.ready
        index.step(take)
        done = score_valid & (step == 2) & advance
        with m.If(take):
            m.d.sync += [score_valid.eq(1), step.eq(0), score.eq(self.i.payload),
                         score_index.eq(index.value), score_last.eq(index.last)]
        with m.Elif(score_valid & (step == 0)):
            m.d.sync += [step.eq(1), hi_gt.eq(score[half:].as_signed() > best[half:].as_signed()),
                         hi_eq.eq(score[half:] == best[half:]), lo_gt.eq(score[:half] > best[:half])]
        with m.Elif(score_valid & (step == 1)):
            m.d.sync += [step.eq(2), better.eq((score_index == 0) | hi_gt | (hi_eq & lo_gt))]
        with m.If(advance):
            m.d.sync += self.o.valid.eq(done)
        with m.If(done):
            m.d.sync += score_valid.eq(0)
            with m.If(better):
                m.d.sync += [best.eq(score), best_index.eq(score_index)]
            m.d.sync += [self.o.payload.score.eq(score), self.o.payload.last.eq(score_last),
                         self.o.payload.klass.eq(Mux(better, score_index, best_index))]
        return m
