"""Dense integer matrix-vector product: the baseline of the block-circulant layer."""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import ParameterError, ParameterTypeError, check_int, signed_width, validated
from .slices import check_slices, sliced_product, sum_levels

__all__ = ["DenseMatVec"]


class DenseMatVec(wiring.Component):
    """``y = W @ x`` with ``W`` stored dense (``weight_width``-bit integers) in block RAM.

    The ``n`` elements of ``x`` stream in and are kept; then ``lanes`` rows are computed at a time, one
    column per clock (``lanes`` multiply-accumulates per clock), and their exact accumulators stream out,
    ``m`` per vector, in row order. Golden twin: ``weights @ x`` in integers.

    Parameters
    ----------
    m, n : int
        Matrix size; ``lanes`` divides ``m``.
    weights : (m, n) array of int
    act_width, weight_width : int
    lanes : int
        Rows computed in parallel.
    slices : int
        2 or 4: each product is computed as that many partial products of the weight's slices
        (:mod:`insitu.hdl.slices`); two keep one multiplier per half for DSP blocks to take, four give
        multipliers in logic shorter carry chains for one clock more of latency.
    writable : bool
        Add a weight write port (e.g. for a CPU): ``weights`` may then be ``None`` (all zero at reset).
        Word ``g·n + c`` holds column ``c`` of rows ``g·lanes … g·lanes + lanes − 1`` (lane ``l`` in bits
        ``l·weight_width …``). Write only between vectors (while the block waits for input).

    Members
    -------
    i : In(stream.Signature(signed(act_width)))
    o : Out(stream.Signature(signed(acc_width)))
    w_addr, w_data, w_en : In (only when ``writable``)
    """

    @validated
    def __init__(self, *, m, n, weights=None, act_width=8, weight_width=8, lanes=4, writable=False, slices=2):
        check_int(m, "Row count", 1)
        check_int(n, "Column count", 1)
        check_int(act_width, "Activation width", 2, 18)
        check_int(weight_width, "Weight width", 2, 18)
        check_int(lanes, "Lane count", 1, m)
        check_slices(slices, weight_width)
        self._slices = slices
        if m % lanes:
            raise ParameterError(f"Lane count must divide the row count ({m}), not {lanes!r}")
        lo, hi = -(1 << (weight_width - 1)), (1 << (weight_width - 1)) - 1
        if weights is None:
            if not writable:
                raise ParameterError("Weights are required unless the weight memory is writable")
            weights = [[0] * n for _ in range(m)]
        try:
            rows = [[int(v) for v in row] for row in weights]
        except TypeError:
            raise ParameterTypeError(f"Weights must be a 2-D sequence of integers shaped ({m}, {n})") from None
        if len(rows) != m or any(len(row) != n for row in rows):
            raise ParameterError(f"Weights must be shaped ({m}, {n})")
        if any(not lo <= v <= hi for row in rows for v in row):
            raise ParameterError(f"Weights must fit in signed {weight_width}-bit integers [{lo}, {hi}]")
        self._m, self._n, self._lanes = m, n, lanes
        self._act_width, self._weight_width = act_width, weight_width
        self._word = data.ArrayLayout(signed(weight_width), lanes)
        self._init = [[rows[g * lanes + lane][c] for lane in range(lanes)]
                      for g in range(m // lanes) for c in range(n)]
        a, w = 1 << (act_width - 1), 1 << (weight_width - 1)
        self._acc_width = signed_width(-max(a * (w - 1), (a - 1) * w) * n, a * w * n)
        members = {
            "i": In(stream.Signature(signed(act_width))),
            "o": Out(stream.Signature(signed(self._acc_width))),
        }
        if writable:
            members.update(w_addr=In(range(m // lanes * n)), w_data=In(self._word), w_en=In(1))
        self._writable = writable
        super().__init__(members)

    m = property(lambda self: self._m)
    n = property(lambda self: self._n)
    lanes = property(lambda self: self._lanes)
    acc_width = property(lambda self: self._acc_width)

    @property
    def cycles_per_vector(self):
        """Clocks per product without stalls, vectors back to back: ``n`` to take the vector, then per group
        of ``lanes`` rows ``n`` clocks of multiply-accumulate, the pipeline's drain (5 clocks with two
        slices, 6 with four) and ``lanes`` of output."""
        return self._n + (self._m // self._lanes) * (self._n + self._stages + 1 + self._lanes)

    @property
    def _stages(self):
        """Pipeline stages before the accumulators: memory data, its register, the slices' partial products
        and their sums."""
        return 3 + sum_levels(self._weight_width, self._slices)

    @property
    def weight_bits(self):
        return self._m * self._n * self._weight_width

    def elaborate(self, platform):
        m = Module()
        n, lanes, groups = self._n, self._lanes, self._m // self._lanes
        m.submodules.xmem = xmem = memory.Memory(shape=signed(self._act_width), depth=n, init=[])
        m.submodules.wmem = wmem = memory.Memory(shape=self._word, depth=groups * n, init=self._init)
        x_wr, x_rd, w_rd = xmem.write_port(), xmem.read_port(), wmem.read_port()
        if self._writable:
            w_wr = wmem.write_port()
            m.d.comb += [w_wr.addr.eq(self.w_addr), w_wr.data.eq(self.w_data), w_wr.en.eq(self.w_en)]

        taken = Signal(range(n))
        group = Signal(range(groups))
        col = Signal(range(n))
        issuing = Signal()
        # Registered copies of the counters' end tests, updated with the counters: the control path then
        # starts from flip-flops rather than from comparators.
        taken_last = Signal(init=n == 1)
        col_first, col_last = Signal(init=1), Signal(init=n == 1)
        group_last = Signal(init=groups == 1)
        w_addr = Signal(range(groups * n))   # group * n + col: the weights are read in order
        m.d.comb += [x_wr.addr.eq(taken), x_wr.data.eq(self.i.payload), x_wr.en.eq(self.i.valid & self.i.ready),
                     x_rd.addr.eq(col), w_rd.addr.eq(w_addr)]

        # Pipeline: 1 = memory data, 2 = the data registered (block RAM outputs are slow), 3 = partial
        # products of the weights' slices, then their sums, a pair per level (the last one the products),
        # then the accumulators.
        flags = [(issuing, col_first, col_last)]
        for stage in range(self._stages):
            v, first, last = (Signal(name=f"{name}{stage + 1}") for name in ("v", "first", "last"))
            m.d.sync += [v.eq(flags[-1][0]), first.eq(flags[-1][1]), last.eq(flags[-1][2])]
            flags.append((v, first, last))
        # The pipeline is empty when no stage holds a valid product: the flags shift every clock, so that is
        # the registered OR of this clock's flags but the last (no added latency, and the WAIT state below
        # tests one flip-flop instead of an OR over the stages).
        empty = Signal(init=1)
        m.d.sync += empty.eq(~Cat(v for v, _, _ in flags[:-1]).any())
        xd, wd = Signal.like(x_rd.data, name="x_data"), Signal.like(w_rd.data, name="w_data")
        m.d.sync += [xd.eq(x_rd.data), wd.eq(w_rd.data)]
        products = [sliced_product(m, xd, wd[lane], slices=self._slices, name=str(lane)) for lane in range(lanes)]
        last_valid, last_first, last_last = flags[-1]
        accs = [Signal(signed(self._acc_width), name=f"acc{lane}") for lane in range(lanes)]
        ready_out = Signal()                      # accumulators hold a finished group
        with m.If(last_valid):
            m.d.sync += [acc.eq(Mux(last_first, 0, acc) + p) for acc, p in zip(accs, products)]
            with m.If(last_last):
                m.d.sync += ready_out.eq(1)

        emit = Signal(range(lanes))
        m.d.comb += [self.o.valid.eq(ready_out), self.o.payload.eq(accs[0])]
        with m.Switch(emit):
            for lane in range(lanes):
                with m.Case(lane):
                    m.d.comb += self.o.payload.eq(accs[lane])
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += emit.eq(Mux(emit == lanes - 1, 0, emit + 1))
            with m.If(emit == lanes - 1):
                m.d.sync += ready_out.eq(0)

        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [taken.eq(Mux(taken_last, 0, taken + 1)),
                                 taken_last.eq(Mux(taken_last, n == 1, taken == n - 2))]
                    with m.If(taken_last):
                        m.d.sync += [group.eq(0), group_last.eq(groups == 1),
                                     col.eq(0), col_first.eq(1), col_last.eq(n == 1), w_addr.eq(0)]
                        m.next = "MAC"
            with m.State("MAC"):
                m.d.comb += issuing.eq(1)
                m.d.sync += [col.eq(Mux(col_last, 0, col + 1)),
                             col_first.eq(col_last),
                             col_last.eq(Mux(col_last, n == 1, col == n - 2)),
                             w_addr.eq(Mux(w_addr == groups * n - 1, 0, w_addr + 1))]   # stays in range
                with m.If(col_last):
                    m.next = "WAIT"
            with m.State("WAIT"):
                # The group's accumulators must be emitted before the next group overwrites them.
                with m.If(empty & ~ready_out):
                    with m.If(group_last):
                        m.next = "LOAD"
                    with m.Else():
                        m.d.sync += [group.eq(group + 1), group_last.eq(group == groups - 2)]
                        m.next = "MAC"
        return m
