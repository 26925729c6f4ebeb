"""Non-overlapping pooling of a channel-group stream (:mod:`insitu.hdl.groups`), a stage of the
whole-network pipeline."""

from amaranth import Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .groups import group_layout
from .params import ParameterError, check_int, validated

__all__ = ["Pool"]


class Pool(wiring.Component):
    """Non-overlapping ``k×k`` pooling (stride ``k``) of a channel-group stream: sum or max.

    Output pixel ``(y, x)`` combines input pixels ``(k·y + r, k·x + c)``; rows and columns past the last
    whole window are dropped, as :func:`insitu.golden.network.forward_int` does. Partial results of one
    row of output pixels sit in a block RAM of ``(width // k) · groups`` words; a read-modify-write over
    three pipeline stages, with forwarding, takes one transfer per clock.

    Members
    -------
    i : In(stream.Signature(group_layout(width, lanes)))
    o : Out(stream.Signature(group_layout(out_width, lanes))), ``out_width = width + ⌈log2 k²⌉`` for a sum.
    """

    @validated
    def __init__(self, *, width, lanes, groups, image_width, image_height, k, mode):
        check_int(width, "Width", 2, 64)
        check_int(lanes, "Lane count", 1)
        check_int(groups, "Group count", 1)
        check_int(k, "Pool size", 1)
        check_int(image_width, "Image width", k)
        check_int(image_height, "Image height", k)
        if mode not in ("max", "sum"):
            raise ParameterError(f"Pool mode must be 'max' or 'sum', not {mode!r}")
        self._width, self._lanes, self._groups, self._k, self._mode = width, lanes, groups, k, mode
        self._iw, self._ih = image_width, image_height
        self._out = width + ((k * k - 1).bit_length() if mode == "sum" else 0)
        super().__init__({"i": In(stream.Signature(group_layout(width, lanes))),
                          "o": Out(stream.Signature(group_layout(self._out, lanes)))})

    out_width = property(lambda self: self._out)

    def elaborate(self, platform):
        m = Module()
        k, groups, lanes = self._k, self._groups, self._lanes
        wo, ho = self._iw // k, self._ih // k
        word = group_layout(self._out, lanes)
        m.submodules.mem = mem = memory.Memory(shape=word, depth=wo * groups, init=[])
        rd, wr = mem.read_port(), mem.write_port()

        # input raster position: group fastest, then column, then row. Each register's next value is a
        # function of registers only and all of them load on ``take``, so their enables are ``take`` and
        # at most one gate more (``end_row``, the last group of a row's last column, and the counters'
        # ``_last`` flags are registers themselves).
        iw, ih = self._iw, self._ih
        group, col, row = (Signal(range(max(n, 2)), name=name) for n, name in ((groups, "group"), (iw, "col"),
                                                                                (ih, "row")))
        group_last, col_last = Signal(init=groups == 1), Signal(init=iw == 1)
        row_last, end_row = Signal(init=ih == 1), Signal(init=(groups == 1) & (iw == 1))
        xr, yr = Signal(range(max(k, 2)), name="xr"), Signal(range(max(k, 2)), name="yr")     # col % k, row % k
        xq, yq = Signal(range(self._iw // k + 1), name="xq"), Signal(range(self._ih // k + 1), name="yq")
        take = self.i.valid & self.i.ready
        group_last_next = Mux(group_last, groups == 1, group == groups - 2)
        col_last_next = Mux(group_last, Mux(col_last, iw == 1, col == iw - 2), col_last)
        with m.If(take):
            m.d.sync += [
                group.eq(Mux(group_last, 0, group + 1)), group_last.eq(group_last_next),
                col.eq(Mux(group_last, Mux(col_last, 0, col + 1), col)), col_last.eq(col_last_next),
                row.eq(Mux(end_row, Mux(row_last, 0, row + 1), row)),
                row_last.eq(Mux(end_row, Mux(row_last, ih == 1, row == ih - 2), row_last)),
                end_row.eq(group_last_next & col_last_next),
                xr.eq(Mux(end_row, 0, Mux(group_last, Mux(xr == k - 1, 0, xr + 1), xr))),
                xq.eq(Mux(end_row, 0, Mux(group_last & (xr == k - 1), xq + 1, xq))),
                yr.eq(Mux(end_row, Mux(row_last | (yr == k - 1), 0, yr + 1), yr)),
                yq.eq(Mux(end_row, Mux(row_last, 0, Mux(yr == k - 1, yq + 1, yq)), yq)),
            ]

        # Three stages move together, whenever the output is not stuck (``i.ready``):
        # 1. the input: its partial result's address goes to the memory's read port;
        # 2. the memory's word arrives and is registered, corrected by forwarding (below). Nothing but a
        #    3:1 multiplexer lies between the block RAM and a register;
        # 3. the word combines with the transfer (the sum's adder or the max's comparator, from registers
        #    only) and is written back and, at a window's last pixel, sent.
        # The word read in stage 1 misses the writes of the two transfers ahead of it: the one in stage 3
        # as stage 2 receives it (it writes at the next move) and the one that wrote at the move that
        # brought it into stage 2 (read-first: the read happened in that clock). Stage 2 takes their
        # results instead when their addresses match (compared a stage earlier, into registers).
        s_valid = Signal()
        s_value = Signal(word)
        s_addr = Signal(range(max(wo * groups, 2)))
        s_first, s_emit, s_keep = Signal(), Signal(), Signal()
        s_from_t, s_from_u = Signal(), Signal()     # forward stage 3's result, or the one written last move

        t_valid, t_first, t_keep, t_emitting = Signal(), Signal(), Signal(), Signal()
        t_value, t_old = Signal(word), Signal(word)
        t_addr = Signal.like(s_addr)
        u_value = Signal(word)                      # the result written at the last move

        combined = Signal(word)
        for lane in range(lanes):
            a, b = t_old[lane], t_value[lane]
            if self._mode == "sum":
                m.d.comb += combined[lane].eq(Mux(t_first, b, a + b))
            else:
                m.d.comb += combined[lane].eq(Mux(t_first | (b > a), b, a))

        stuck = t_emitting & self.o.valid & ~self.o.ready           # an output waits for the slot
        move = Signal()
        m.d.comb += [move.eq(~stuck), self.i.ready.eq(move)]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        writes = t_valid & t_keep
        with m.If(move):
            m.d.comb += [wr.addr.eq(t_addr), wr.data.eq(combined), wr.en.eq(writes)]
            with m.If(t_emitting):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(combined)]

        addr = Signal.like(s_addr)
        m.d.comb += addr.eq(xq * groups + group)
        keep = (xq < wo) & (yq < ho)
        # Every stage loads whenever the pipeline moves (``i.ready``: registers and one gate), whether or
        # not a transfer arrives; ``s_valid`` says whether it did. Only the position counters wait for
        # ``take``, so the input's ``valid`` reaches a few enables, not every register of the stages.
        m.d.comb += [rd.addr.eq(addr), rd.en.eq(move)]
        emit = keep & (xr == k - 1) & (yr == k - 1)
        with m.If(move):
            m.d.sync += [
                s_valid.eq(self.i.valid),
                s_addr.eq(addr),
                s_first.eq((xr == 0) & (yr == 0)),
                s_keep.eq(keep),
                s_emit.eq(emit),
                # the transfer now in stage 2 is in stage 3 next, and the one in stage 3 writes now
                s_from_t.eq(s_valid & s_keep & (s_addr == addr)),
                s_from_u.eq(t_valid & t_keep & (t_addr == addr)),
                t_valid.eq(s_valid), t_first.eq(s_first), t_keep.eq(s_keep), t_addr.eq(s_addr),
                t_emitting.eq(s_valid & s_emit), t_value.eq(s_value),
                t_old.eq(Mux(s_from_t, combined, Mux(s_from_u, u_value, rd.data))),
                u_value.eq(combined),
            ]
            for lane in range(lanes):
                m.d.sync += s_value[lane].eq(self.i.payload[lane])
        return m
