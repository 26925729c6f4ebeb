"""Multi-level in-situ weight generation: weights regenerated from quantised factors, streamed out."""

import numpy as np
from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import ParameterError, ParameterTypeError, check_int, signed_width, validated

__all__ = ["InSituGenerator"]


def _codes(a, shape, bits, name):
    """Validate an array of odd codes of ``bits`` bits and return it as nested lists."""
    if not np.issubdtype(a.dtype, np.integer):
        raise ParameterTypeError(f"{name} must be an array of integers, not {a.dtype}")
    if a.shape != shape:
        raise ParameterError(f"{name} must be shaped {shape}, not {a.shape}")
    top = (1 << bits) - 1
    if a.size and (np.abs(a).max() > top or not np.all(a % 2 == 1)):
        raise ParameterError(f"{name} codes must be odd integers in [-{top}, {top}]")
    return a.astype(int).tolist()


class InSituGenerator(wiring.Component):
    """Stream the weights ``W = v @ (u @ basis)`` of a ``(c_out, c_in, k, k)`` layer, ``lanes`` taps per clock.

    The factors (golden twin :mod:`insitu.golden.mlg`) are the only weights stored: ``basis``
    ``[bo, bi, k²]`` in registers, ``u`` ``[bo, c_in, bi]`` and ``v`` ``[c_out, bo]`` in small memories. Per
    transfer, for output channel ``o``, input channel ``ci`` and ``lanes`` consecutive taps ``t``, it computes
    ``W1[b, ci, t] = Σ_i u[b, ci, i]·basis[b, i, t]`` and ``w = Σ_b v[o, b]·W1[b, ci, t]`` with
    ``bo·(bi + 1)·lanes`` small multipliers (LUTs, or DSP blocks where the tools choose). Weights stream
    in the order of ``generate(layer).reshape(c_out, c_in·k²)``, row by row; the whole layer repeats.
    Latency: :attr:`latency` clocks (``5 + ⌈log2 bo⌉``, at least 6).

    Parameters
    ----------
    basis, u, v : arrays of odd int codes
    bits : (int, int, int)
        Code widths of ``(basis, u, v)``.
    lanes : int
        Taps per transfer; divides ``k²``.
    writable : bool
        Take the basis from the ``basis`` port (e.g. registers a CPU writes) and add write ports to the
        ``u`` and ``v`` memories; the arrays given then only set the shapes and initial contents. Write
        while the generator is held in reset (or reset it afterwards), as it prefetches from the memories.

    Members
    -------
    o : Out(stream.Signature(ArrayLayout(signed(weight_width), lanes)))
    basis : In(ArrayLayout(ArrayLayout(ArrayLayout(signed(bits[0] + 1), k²), bi), bo)), only if ``writable``
    u_addr, u_data, u_en : In, only if ``writable``
        Input channel ``ci``'s word: ``u[b, ci, i]`` at element ``b · bi + i``, one enable bit per element.
    v_addr, v_data, v_en : In, only if ``writable``
        Output channel ``o``'s word: ``v[o, b]`` at element ``b``, one enable bit per element.
    """

    @validated
    def __init__(self, *, basis, u, v, bits=(3, 6, 3), lanes=1, writable=False):
        basis, u, v = np.asarray(basis), np.asarray(u), np.asarray(v)
        if basis.ndim != 3 or u.ndim != 3 or v.ndim != 2:
            raise ParameterError("Factors must be shaped basis (bo, bi, k²), u (bo, c_in, bi), v (c_out, bo)")
        bo, bi, taps = basis.shape
        k = int(round(taps ** 0.5))
        if k * k != taps:
            raise ParameterError(f"Basis must hold k² taps, not {taps}")
        c_in, c_out = u.shape[1], v.shape[0]
        if not isinstance(bits, (tuple, list)) or len(bits) != 3:
            raise ParameterTypeError(f"Bits must be a (basis, u, v) triple of integers, not {bits!r}")
        for b in bits:
            check_int(b, "Code width", 1, 16)
        self._basis = _codes(basis, (bo, bi, taps), bits[0], "Basis")
        self._u = _codes(u, (bo, c_in, bi), bits[1], "U")
        self._v = _codes(v, (c_out, bo), bits[2], "V")
        check_int(lanes, "Lane count", 1, taps)
        if taps % lanes:
            raise ParameterError(f"Lane count must divide k² ({taps}), not {lanes!r}")
        self._bo, self._bi, self._taps, self._k = bo, bi, taps, k
        self._c_in, self._c_out, self._bits, self._lanes = c_in, c_out, tuple(bits), lanes
        tb, ub, vb = ((1 << b) - 1 for b in bits)
        self._w1_width = signed_width(-bi * tb * ub, bi * tb * ub)
        self._weight_width = signed_width(-bo * bi * tb * ub * vb, bo * bi * tb * ub * vb)
        bb, ub, vb = bits
        self._layouts = (data.ArrayLayout(data.ArrayLayout(data.ArrayLayout(signed(bb + 1), taps), bi), bo),
                         data.ArrayLayout(signed(ub + 1), bo * bi),     # u[:, ci, :], element b·bi + i
                         data.ArrayLayout(signed(vb + 1), bo))                            # v[o, :]
        members = {"o": Out(stream.Signature(data.ArrayLayout(signed(self._weight_width), lanes)))}
        if writable:
            members.update(basis=In(self._layouts[0]),
                           u_addr=In(range(c_in)), u_data=In(self._layouts[1]), u_en=In(bo * bi),
                           v_addr=In(range(c_out)), v_data=In(self._layouts[2]), v_en=In(bo))
        self._writable = writable
        super().__init__(members)

    weight_width = property(lambda self: self._weight_width)
    lanes = property(lambda self: self._lanes)

    @property
    def _sum_levels(self):
        return max(1, (self._bo - 1).bit_length())

    @property
    def latency(self):
        """Clocks from a memory word to its weights: 5 stages, then the level-2 adder tree."""
        return 5 + self._sum_levels

    @property
    def multipliers(self):
        return self._bo * (self._bi + 1) * self._lanes

    @property
    def stored_bits(self):
        """Bits of the factors: every code at its width."""
        b, u, v = self._bits
        return (self._bo * self._bi * self._taps * b + self._bo * self._c_in * self._bi * u
                + self._c_out * self._bo * v)

    def _sum_to_output(self, m, en, valid, prods):
        """Drive :attr:`o` with ``Σ_b prods[b][lane]``: a registered adder tree (pairs per level,
        ``_sum_levels - 1`` levels), the last sum into the output register; ``valid`` follows the data."""
        lanes = self._lanes
        level = prods
        for depth in range(self._sum_levels - 1):
            pairs = [level[n:n + 2] for n in range(0, len(level), 2)]
            level = [[Signal(signed(self._weight_width), name=f"vsum{depth}_{n}_{lane}") for lane in range(lanes)]
                     for n in range(len(pairs))]
            next_valid = Signal(name=f"valid_sum{depth}")
            with m.If(en):
                m.d.sync += next_valid.eq(valid)
                for n, pair in enumerate(pairs):
                    for lane in range(lanes):
                        m.d.sync += level[n][lane].eq(sum(p[lane] for p in pair))
            valid = next_valid
        with m.If(en):
            m.d.sync += self.o.valid.eq(valid)
            for lane in range(lanes):
                m.d.sync += self.o.payload[lane].eq(sum(p[lane] for p in level))

    def elaborate(self, platform):
        m = Module()
        bo, bi, taps, lanes = self._bo, self._bi, self._taps, self._lanes
        bb, ub, vb = self._bits
        blocks = taps // lanes

        basis_layout, u_word, v_word = self._layouts
        basis = self.basis if self._writable else Signal(basis_layout, init=self._basis)
        m.submodules.umem = umem = memory.Memory(
            shape=u_word, depth=self._c_in,
            init=[[self._u[b][ci][i] for b in range(bo) for i in range(bi)] for ci in range(self._c_in)])
        m.submodules.vmem = vmem = memory.Memory(shape=v_word, depth=self._c_out, init=self._v)
        u_rd, v_rd = umem.read_port(), vmem.read_port()
        if self._writable:
            u_wr, v_wr = umem.write_port(granularity=1), vmem.write_port(granularity=1)   # one code per bit
            m.d.comb += [u_wr.addr.eq(self.u_addr), u_wr.data.eq(self.u_data), u_wr.en.eq(self.u_en),
                         v_wr.addr.eq(self.v_addr), v_wr.data.eq(self.v_data), v_wr.en.eq(self.v_en)]

        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        # Counters of the position being issued: output channel, input channel, tap block. The read
        # ports prefetch: they are enabled with the pipeline and addressed by the next position.
        o, ci, blk = Signal(range(self._c_out)), Signal(range(self._c_in)), Signal(range(blocks))
        last_blk, last_ci = blk == blocks - 1, ci == self._c_in - 1
        next_blk = Mux(last_blk, 0, blk + 1)
        next_ci = Mux(last_blk, Mux(last_ci, 0, ci + 1), ci)
        next_o = Mux(last_blk & last_ci, Mux(o == self._c_out - 1, 0, o + 1), o)
        primed = Signal()
        m.d.sync += primed.eq(1)
        issue = en & primed
        m.d.comb += [u_rd.addr.eq(Mux(issue, next_ci, ci)), v_rd.addr.eq(Mux(issue, next_o, o))]
        with m.If(issue):
            m.d.sync += [blk.eq(next_blk), ci.eq(next_ci), o.eq(next_o)]

        # Stage 1: the read words and this tap block's basis values, registered. Stage 2: the products
        # u[b, ci, i]·basis[b, i, t]. Stage 3: their sums, W1[b, ci, t].
        u0 = Signal(u_word, name="u_read")
        bsel = [[[Signal(signed(bb + 1), name=f"bsel_{b}_{i}_{lane}") for lane in range(lanes)]
                 for i in range(bi)] for b in range(bo)]
        vr = Signal(data.ArrayLayout(signed(vb + 1), bo), name="v_read0")
        valid_r = Signal()
        with m.If(en):
            m.d.sync += [valid_r.eq(issue), u0.eq(u_rd.data), vr.eq(v_rd.data)]
            for b in range(bo):
                for i in range(bi):
                    for lane in range(lanes):
                        tap = blk * lanes + lane if blocks > 1 else lane
                        m.d.sync += bsel[b][i][lane].eq(basis[b][i][tap])
        ub_prods = [[[Signal(signed(ub + bb + 2), name=f"ub_{b}_{i}_{lane}") for lane in range(lanes)]
                     for i in range(bi)] for b in range(bo)]
        v0 = Signal(data.ArrayLayout(signed(vb + 1), bo), name="v_read")
        valid0 = Signal()
        with m.If(en):
            m.d.sync += [valid0.eq(valid_r), v0.eq(vr)]
            for b in range(bo):
                for i in range(bi):
                    for lane in range(lanes):
                        m.d.sync += ub_prods[b][i][lane].eq(u0[b * bi + i] * bsel[b][i][lane])
        w1 = [[Signal(signed(self._w1_width), name=f"w1_{b}_{lane}") for lane in range(lanes)] for b in range(bo)]
        v1 = Signal(data.ArrayLayout(signed(vb + 1), bo), name="v_held")
        valid1 = Signal()
        with m.If(en):
            m.d.sync += [valid1.eq(valid0), v1.eq(v0)]
            for b in range(bo):
                for lane in range(lanes):
                    m.d.sync += w1[b][lane].eq(sum(ub_prods[b][i][lane] for i in range(bi)))
        # Stages 4 and 5: products with v, as two partial products (the low two bits of v, unsigned, and
        # the rest, signed) that are summed in the next stage: half the logic depth of one multiplier.
        # Then the sum over b, a registered adder tree (pairs per level).
        parts = [[(Signal(signed(self._w1_width + 3), name=f"vwlo_{b}_{lane}"),
                   Signal(signed(self._w1_width + vb), name=f"vwhi_{b}_{lane}")) for lane in range(lanes)]
                 for b in range(bo)]
        valid_parts = Signal()
        with m.If(en):
            m.d.sync += valid_parts.eq(valid1)
            for b in range(bo):
                for lane in range(lanes):
                    lo, hi = parts[b][lane]
                    if vb == 1:     # a 2-bit v: one small product
                        m.d.sync += lo.eq(v1[b] * w1[b][lane])
                    else:
                        m.d.sync += [lo.eq(v1[b][:2] * w1[b][lane]),
                                     hi.eq(v1[b][2:].as_signed() * w1[b][lane])]
        prods = [[Signal(signed(self._w1_width + vb + 1), name=f"vw_{b}_{lane}") for lane in range(lanes)]
                 for b in range(bo)]
        valid = Signal()
        with m.If(en):
            m.d.sync += valid.eq(valid_parts)
            for b in range(bo):
                for lane in range(lanes):
                    lo, hi = parts[b][lane]
                    m.d.sync += prods[b][lane].eq(lo + (hi << 2))
        self._sum_to_output(m, en, valid, prods)
        return m
