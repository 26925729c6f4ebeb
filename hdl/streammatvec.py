"""A fully connected layer whose weights arrive on a stream: the decode units' matrix-vector consumer.

:class:`StreamMatVec` stores the input vector, not the weights. A weight source (a SmartDeal decoder, an
MLG generator, or a testbench) streams the whole matrix once per vector, ``lanes`` weights at a time, row by
row; each row takes ``⌈n / lanes⌉`` transfers, and the weights of the last transfer past column ``n − 1``
are ignored (a SmartDeal row of ``n`` weights is stored padded to whole triples). So a fully connected layer
keeps only its compressed form on chip, as :class:`~insitu.hdl.streamconv.StreamConv` does for convolutions.
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .bram import block_ram
from .params import check_int, signed_width, validated
from .skid import Skid
from .slices import check_slices, sliced_product, sum_levels
from .streamconv import source_lanes, weight_stream_signature

__all__ = ["StreamMatVec"]


class StreamMatVec(wiring.Component):
    """``y = W @ x``, ``W`` (``m × n``) streamed ``lanes`` weights per clock, ``x`` held in block RAM.

    The ``n`` elements of ``x`` stream in and are kept; then the ``m · ⌈n/lanes⌉`` weight transfers of the
    matrix are consumed, one per clock, and the ``m`` exact accumulators stream out in row order. Golden
    twin: ``weights @ x`` in integers. Throughput: :attr:`cycles_per_vector` clocks per product.

    Pipeline: weights registered with the activation read; both registered again (block RAM outputs are
    slow); partial products of the weight's ``slices`` slices; their shifted sums, a pair per level (one
    level for two slices, two for four), the last one the product; the lanes' sum (``lanes > 1``); the
    accumulation. It moves on one enable; a :class:`~insitu.hdl.skid.Skid` keeps ``o.ready`` out of it.

    Parameters
    ----------
    m, n, act_width : int
    source : wiring.Component or None
        A component with an ``o`` port of :func:`~insitu.hdl.streamconv.weight_stream_signature` that
        streams the matrix, repeating; it becomes submodule ``source`` and sets the weight width and the
        lane count. ``None`` exposes the weight stream as port ``w``.
    weight_width, lanes : int
        Only when ``source`` is ``None``.
    slices : int
        2 or 4: the weight splits into that many slices, each multiplied by the activation in a clock of
        its own. Four shorten the carry chains of multipliers built in logic (an iCE40 without DSPs), at a
        clock of latency; two keep one multiplier per half for DSP blocks to take.

    Members
    -------
    i : In(stream.Signature(signed(act_width)))
    o : Out(stream.Signature(signed(acc_width)))
    w : In(weight_stream_signature(weight_width, lanes)), only without ``source``.
    """

    @validated
    def __init__(self, *, m, n, act_width=8, source=None, weight_width=8, lanes=1, slices=2):
        check_int(m, "Row count", 1)
        check_int(n, "Column count", 1)
        check_int(act_width, "Activation width", 2, 18)
        if source is not None:
            weight_width, lanes = source_lanes(source)
        check_int(weight_width, "Weight width", 2, 24)
        check_int(lanes, "Weight lane count", 1, 16)
        check_slices(slices, weight_width)
        self._slices = slices
        self._sum_levels = sum_levels(weight_width, slices)
        self._m, self._n, self._act_width = m, n, act_width
        self._source, self._weight_width, self._lanes = source, weight_width, lanes
        a, b = 1 << (act_width - 1), 1 << (weight_width - 1)
        self._acc_width = signed_width(-max(a * (b - 1), (a - 1) * b) * n, a * b * n)
        members = {
            "i": In(stream.Signature(signed(act_width))),
            "o": Out(stream.Signature(signed(self._acc_width))),
        }
        if source is None:
            members["w"] = In(weight_stream_signature(weight_width, lanes))
        super().__init__(members)

    m = property(lambda self: self._m)
    n = property(lambda self: self._n)
    act_width = property(lambda self: self._act_width)
    weight_width = property(lambda self: self._weight_width)
    lanes = property(lambda self: self._lanes)
    source = property(lambda self: self._source)
    acc_width = property(lambda self: self._acc_width)

    @property
    def transfers_per_row(self):
        return -(-self._n // self._lanes)

    @property
    def cycles_per_vector(self):
        """Clocks per product without stalls, vectors back to back: ``n`` to take the vector, then one weight
        transfer per clock."""
        return self._n + self._m * self.transfers_per_row

    @property
    def latency(self):
        """Clocks from a row's last weight transfer to its result's transfer (no stalls)."""
        return 4 + self._sum_levels + (self._lanes > 1)

    @property
    def multipliers(self):
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        if self._source is not None:
            m.submodules.source = self._source
            w = self._source.o
        else:
            w = self.w
        n, lanes, per_row, rows = self._n, self._lanes, self.transfers_per_row, self._m
        act, wgt = self._act_width, self._weight_width

        # The vector, ``lanes`` elements per word; elements past ``n`` stay zero, so the weights of a row's
        # padded tail multiply zero. Written only while loading, read only while computing: never both in
        # one clock.
        word = data.ArrayLayout(signed(act), lanes)
        wr, rd = block_ram(m, "xmem", shape=word, depth=per_row, init=[], granularity=1 if lanes > 1 else None)

        m.submodules.skid = skid = Skid(signed(self._acc_width))
        wiring.connect(m, skid.o, wiring.flipped(self.o))
        en = Signal()
        m.d.comb += en.eq(~skid.i.valid | skid.i.ready)

        # Loading: element ``loaded`` goes to lane ``load_lane`` of word ``load_word``.
        computing = Signal()
        loaded = Signal(range(n))
        load_word, load_lane = Signal(range(per_row)), Signal(range(lanes))
        take = self.i.valid & self.i.ready
        m.d.comb += [self.i.ready.eq(~computing), wr.addr.eq(load_word)]
        m.d.comb += [wr.data[lane].eq(self.i.payload) for lane in range(lanes)]
        if lanes > 1:
            m.d.comb += wr.en.eq(Mux(take, 1 << load_lane, 0))
        else:
            m.d.comb += wr.en.eq(take)
        with m.If(take):
            m.d.sync += loaded.eq(Mux(loaded == n - 1, 0, loaded + 1))
            with m.If(loaded == n - 1):
                m.d.sync += [computing.eq(1), load_word.eq(0), load_lane.eq(0)]
            with m.Elif(load_lane == lanes - 1):
                m.d.sync += [load_word.eq(load_word + 1), load_lane.eq(0)]
            with m.Else():
                m.d.sync += load_lane.eq(load_lane + 1)

        # Computing: transfer ``col`` of row ``row``; the flags are registers, updated with the counters.
        col, row = Signal(range(per_row)), Signal(range(rows))
        first_col = Signal(init=1)
        last_col, last_row = Signal(init=per_row == 1), Signal(init=rows == 1)
        issue = Signal()
        m.d.comb += [
            issue.eq(en & computing & w.valid),
            w.ready.eq(en & computing),
            rd.addr.eq(col),
            rd.en.eq(en & computing),
        ]
        with m.If(issue):
            with m.If(last_col):
                m.d.sync += [col.eq(0), first_col.eq(1), last_col.eq(per_row == 1)]
                with m.If(last_row):
                    m.d.sync += [row.eq(0), last_row.eq(rows == 1), computing.eq(0)]
                with m.Else():
                    m.d.sync += [row.eq(row + 1), last_row.eq(row == rows - 2)]
            with m.Else():
                m.d.sync += [col.eq(col + 1), first_col.eq(0), last_col.eq(col == per_row - 2)]

        # Stage flags: valid, first and last transfer of a row.
        stages = 3 + self._sum_levels + (lanes > 1)
        flags = [(issue, first_col, last_col)]
        for stage in range(stages):
            v, first, last = (Signal(name=f"{name}{stage + 1}") for name in ("v", "first", "last"))
            with m.If(en):
                m.d.sync += [v.eq(flags[-1][0]), first.eq(flags[-1][1]), last.eq(flags[-1][2])]
            flags.append((v, first, last))

        w1 = Signal.like(w.payload, name="w1")
        x2, w2 = Signal(word, name="x2"), Signal.like(w.payload, name="w2")
        with m.If(en):
            m.d.sync += [w1.eq(w.payload), x2.eq(rd.data), w2.eq(w1)]
        # Partial products of the weight's slices, registered, then summed a pair per level (hdl.slices).
        products = [sliced_product(m, x2[lane], w2[lane], slices=self._slices, name=str(lane), en=en)
                    for lane in range(lanes)]
        if lanes > 1:
            total = Signal(signed(signed_width(-(1 << (act + wgt - 2)) * lanes, (1 << (act + wgt - 2)) * lanes)),
                           name="psum")
            with m.If(en):
                m.d.sync += total.eq(sum(products))
        else:
            total = products[0]

        v, first, last = flags[-1]
        acc = Signal(signed(self._acc_width))
        out_valid = Signal()
        with m.If(en):
            m.d.sync += out_valid.eq(v & last)
            with m.If(v):
                m.d.sync += acc.eq(Mux(first, 0, acc) + total)
        m.d.comb += [skid.i.valid.eq(out_valid), skid.i.payload.eq(acc)]
        return m
