"""Multi-level in-situ weight generation with level 1 decoded once into block RAM: few multipliers."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, memory

from .insitu import InSituGenerator

__all__ = ["CachedGenerator"]


class CachedGenerator(InSituGenerator):
    """:class:`~insitu.hdl.insitu.InSituGenerator`'s weight stream (same parameters, ports and order) from
    ``bo · lanes + 1`` multipliers instead of ``bo · (bi + 1) · lanes``.

    Level 1 does not depend on the output channel, so it is not recomputed for each one: after reset a fill
    unit decodes ``W1[b, ci, t] = Σ_i u[b, ci, i] · basis[b, i, t]``, one product per clock
    (:attr:`fill_cycles` clocks), into a block RAM of ``c_in · k² / lanes`` words of ``lanes · bo`` values.
    Then each weight is ``w = Σ_b v[o, b] · W1[b, ci, t]``: one word and one ``v`` word per transfer. The
    factors stay the stored weights; the table is a cache of them, rebuilt at every reset. With
    ``writable``, write the factors while the generator is held in reset, or reset it afterwards (a
    peripheral restarts it): the fill reads them once.

    On the iCE40UP5K, whose 8 DSP blocks the full generator's ``bo · (bi + 1)`` products overflow, this
    is the form that fits: the ``mlg-conv`` layer (rank 4 × 3) takes 5 multipliers here, 16 there; the digits
    model's conv2 (rank 8 × 3) 9 against 32.
    """

    @property
    def multipliers(self):
        return self._bo * self._lanes + 1

    @property
    def fill_cycles(self):
        """Clocks from reset until the stream reads the table: one product per clock, one clock for the
        first ``u`` read, two to write the last sum (a read of the address written in the same clock
        would see the old word)."""
        return self._bo * self._c_in * self._taps * self._bi + 3

    @property
    def latency(self):
        """Clocks from the table's first word to the first weight: the read, the products, the adder tree."""
        return 3 + max(1, (self._bo - 1).bit_length())

    def elaborate(self, platform):
        m = Module()
        bo, bi, taps, lanes = self._bo, self._bi, self._taps, self._lanes
        c_in, c_out = self._c_in, self._c_out
        bb, ub, vb = self._bits
        blocks = taps // lanes
        words = c_in * blocks
        w1w = self._w1_width

        basis_layout, u_word, v_word = self._layouts
        basis = self.basis if self._writable else Signal(basis_layout, init=self._basis)
        m.submodules.umem = umem = memory.Memory(
            shape=u_word, depth=c_in,
            init=[[self._u[b][ci][i] for b in range(bo) for i in range(bi)] for ci in range(c_in)])
        m.submodules.vmem = vmem = memory.Memory(shape=v_word, depth=c_out, init=self._v)
        # W1 word ``ci · blocks + blk``: element ``lane · bo + b`` is W1[b, ci, blk · lanes + lane]
        table_word = data.ArrayLayout(signed(w1w), lanes * bo)
        m.submodules.table = table = memory.Memory(shape=table_word, depth=words, init=[])
        u_rd, v_rd, t_rd = umem.read_port(), vmem.read_port(), table.read_port()
        t_wr = table.write_port(granularity=1)
        if self._writable:
            u_wr, v_wr = umem.write_port(granularity=1), vmem.write_port(granularity=1)
            m.d.comb += [u_wr.addr.eq(self.u_addr), u_wr.data.eq(self.u_data), u_wr.en.eq(self.u_en),
                         v_wr.addr.eq(self.v_addr), v_wr.data.eq(self.v_data), v_wr.en.eq(self.v_en)]

        # --- the fill: per word (ci, blk), per element (lane, b), the sum over i; flat counters (no products
        # of counters): ``f_ui`` = b · bi + i, ``f_elem`` = lane · bo + b, ``f_tap`` = blk · lanes + lane.
        # The u read port prefetches the next ci.
        primed = Signal()
        m.d.sync += primed.eq(1)
        filling = Signal(init=1)
        advance = filling & primed
        f_i, f_ui = Signal(range(bi)), Signal(range(bo * bi))
        f_elem, f_tap = Signal(range(lanes * bo)), Signal(range(taps))
        f_ci, f_word = Signal(range(c_in)), Signal(range(words))
        last_i = f_i == bi - 1
        next_b = last_i & (f_ui == bo * bi - 1)             # the last (b, i) of a lane
        word_done = last_i & (f_elem == lanes * bo - 1)
        ci_done = word_done & (f_tap == taps - 1)
        m.d.comb += u_rd.addr.eq(Mux(advance & ci_done, Mux(f_ci == c_in - 1, 0, f_ci + 1), f_ci))
        with m.If(advance):
            m.d.sync += [f_i.eq(Mux(last_i, 0, f_i + 1)), f_ui.eq(Mux(next_b, 0, f_ui + 1))]
            with m.If(last_i):
                m.d.sync += f_elem.eq(Mux(word_done, 0, f_elem + 1))
            with m.If(next_b):
                m.d.sync += f_tap.eq(Mux(ci_done, 0, f_tap + 1))
            with m.If(word_done):
                m.d.sync += f_word.eq(f_word + 1)
            with m.If(ci_done):
                m.d.sync += f_ci.eq(f_ci + 1)
                with m.If(f_ci == c_in - 1):
                    m.d.sync += filling.eq(0)

        # Stage 1: the two codes, selected and registered. Stage 2: the running sum of their products.
        # Stage 3: the finished sum into its element of the table.
        def pick(view, index, count):
            return view[0] if count == 1 else view[index]     # no select on a zero-width index
        flat_basis = data.View(data.ArrayLayout(data.ArrayLayout(signed(bb + 1), taps), bo * bi), basis.as_value())
        u_elems = Signal(u_word)
        m.d.comb += u_elems.eq(u_rd.data)
        f_u, f_basis = Signal(signed(ub + 1)), Signal(signed(bb + 1))
        s1_valid, s1_first, s1_last = Signal(), Signal(), Signal()
        s1_word, s1_elem = Signal(range(words)), Signal(range(lanes * bo))
        m.d.sync += [s1_valid.eq(advance), s1_first.eq(f_i == 0), s1_last.eq(last_i), s1_word.eq(f_word),
                     s1_elem.eq(f_elem), f_u.eq(pick(u_elems, f_ui, bo * bi)),
                     f_basis.eq(pick(pick(flat_basis, f_ui, bo * bi), f_tap, taps))]
        acc = Signal(signed(w1w))
        acc_next = Signal(signed(w1w))
        m.d.comb += acc_next.eq(Mux(s1_first, 0, acc) + f_u * f_basis)
        s2_write = Signal()
        s2_word, s2_elem, s2_value = Signal(range(words)), Signal(range(lanes * bo)), Signal(signed(w1w))
        with m.If(s1_valid):
            m.d.sync += acc.eq(acc_next)
        m.d.sync += [s2_write.eq(s1_valid & s1_last), s2_word.eq(s1_word), s2_elem.eq(s1_elem),
                     s2_value.eq(acc_next)]
        m.d.comb += [t_wr.addr.eq(s2_word), t_wr.en.eq(Mux(s2_write, 1 << s2_elem, 0))]
        m.d.comb += [t_wr.data[e].eq(s2_value) for e in range(lanes * bo)]
        # ready once the last element is written, and one clock more (a read of the address written in
        # the same clock would see the old word)
        drained = Signal(range(4))
        m.d.sync += drained.eq(Mux(filling, 0, Mux(drained == 3, 3, drained + 1)))
        ready = drained == 3

        # --- the stream: (o, word), word innermost; both read ports prefetch the next position -----------
        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        issue = en & ready
        o, word = Signal(range(c_out)), Signal(range(words))
        last_word, last_o = word == words - 1, o == c_out - 1
        next_word = Mux(last_word, 0, word + 1)
        next_o = Mux(last_word, Mux(last_o, 0, o + 1), o)
        m.d.comb += [t_rd.addr.eq(Mux(issue, next_word, word)), v_rd.addr.eq(Mux(issue, next_o, o))]
        with m.If(issue):
            m.d.sync += [word.eq(next_word), o.eq(next_o)]

        # Stage 1: the table word and the v word. Stage 2: the products. Then the sum over b, a registered
        # adder tree, the last level into the output register.
        w1 = Signal(table_word, name="w1_read")
        vr = Signal(v_word, name="v_read")
        valid = Signal()
        with m.If(en):
            m.d.sync += [valid.eq(issue), w1.eq(t_rd.data), vr.eq(v_rd.data)]
        prods = [[Signal(signed(w1w + vb + 1), name=f"vw_{b}_{lane}") for lane in range(lanes)] for b in range(bo)]
        next_valid = Signal(name="valid_prod")
        with m.If(en):
            m.d.sync += next_valid.eq(valid)
            for b in range(bo):
                for lane in range(lanes):
                    m.d.sync += prods[b][lane].eq(vr[b] * w1[lane * bo + b])
        valid = next_valid
        self._sum_to_output(m, en, valid, prods)
        return m
