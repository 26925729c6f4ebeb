"""SmartDeal decode units: the packed coefficient rows are read from block RAM (:class:`RowReader`) and
decoded to weight rows by shift-and-add (:class:`Pow2Decoder`); :class:`SmartDealWeights` is both, the
weight source of a :class:`~insitu.hdl.streamconv.StreamConv`."""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import ParameterError, ParameterTypeError, check_int, validated, validating

__all__ = ["Pow2Decoder", "RowReader", "SmartDealWeights", "basis_layout", "coefficient_row_layout"]


def basis_layout(groups, basis_bits):
    """``groups`` 3×3 bases of signed ``basis_bits`` values, ``[group][j][c]``."""
    return data.ArrayLayout(data.ArrayLayout(data.ArrayLayout(signed(basis_bits), 3), 3), groups)


def coefficient_row_layout(exp_bits, groups):
    """One row's codes: a skip flag, the basis group, and per coefficient a zero flag, sign and exponent code."""
    coef = data.StructLayout({"zero": unsigned(1), "sign": unsigned(1), "exp": unsigned(exp_bits)})
    return data.StructLayout({"skip": unsigned(1), "group": unsigned(max(1, (groups - 1).bit_length())),
                              "coef": data.ArrayLayout(coef, 3)})


class Pow2Decoder(wiring.Component):
    """Decode one weight row per clock: ``row = Σ_j ±(basis[g][j, :] << exp_j)`` (golden twin:
    :func:`insitu.golden.smartdeal.reconstruct`, which produces the same rows in order).

    Exponent codes are ``e − e_min``. A skipped row (or zero coefficient) contributes nothing; a skipped
    row still produces its all-zero output row, so the consumer sees every row in order. The bases live
    in registers (``groups`` of 3×3 signed ``basis_bits`` values). Barrel shifts and adders only, no DSP.
    Latency: 3 clocks (shifted rows, signed terms, their sum).

    Parameters
    ----------
    basis : (groups, 3, 3) array of int
    basis_bits : int
    exp_range : int
        ``e_max − e_min``; exponent codes are ``0 … exp_range``.
    external_basis : bool
        Take the bases from the ``basis`` port (e.g. registers a CPU writes) instead of ``basis``, which
        then only gives their number and shape.

    Members
    -------
    i : In(stream.Signature(coefficient_row_layout(exp_bits, groups)))
    o : Out(stream.Signature(ArrayLayout(signed(out_width), 3)))
    basis : In(basis_layout(groups, basis_bits)), only with ``external_basis``
    """

    latency = 3

    @validated
    def __init__(self, *, basis, basis_bits, exp_range, external_basis=False):
        check_int(basis_bits, "Basis bits", 2, 16)
        check_int(exp_range, "Exponent range", 0, 31)
        lo, hi = -(1 << (basis_bits - 1)), (1 << (basis_bits - 1)) - 1
        try:
            self._basis = [[[int(v) for v in row] for row in group] for group in basis]
        except TypeError:
            raise ParameterTypeError("Basis must be a (groups, 3, 3) array of integers") from None
        if not self._basis or any(len(g) != 3 or any(len(r) != 3 for r in g) for g in self._basis):
            raise ParameterError("Basis must be shaped (groups, 3, 3)")
        if any(not lo <= v <= hi for g in self._basis for r in g for v in r):
            raise ParameterError(f"Basis values must fit in signed {basis_bits}-bit integers [{lo}, {hi}]")
        self._basis_bits, self._exp_range = basis_bits, exp_range
        self._exp_bits = max(1, exp_range.bit_length())
        self._out_width = basis_bits + exp_range + 2     # three terms of basis_bits + exp_range bits
        members = {
            "i": In(stream.Signature(coefficient_row_layout(self._exp_bits, len(self._basis)))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(self._out_width), 3))),
        }
        if external_basis:
            members["basis"] = In(basis_layout(len(self._basis), basis_bits))
        self._external = external_basis
        super().__init__(members)

    exp_bits = property(lambda self: self._exp_bits)
    out_width = property(lambda self: self._out_width)
    groups = property(lambda self: len(self._basis))

    def elaborate(self, platform):
        m = Module()
        bb, width = self._basis_bits, self._out_width
        basis = self.basis if self._external else Signal(basis_layout(self.groups, bb), init=self._basis)

        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]

        # Stage 1: each coefficient's basis row, shifted (barrel shifter), with its sign and off flags.
        shifted = [[Signal(signed(width - 1), name=f"shifted{j}_{c}") for c in range(3)] for j in range(3)]
        negate = [Signal(name=f"negate{j}") for j in range(3)]
        off = [Signal(name=f"off{j}") for j in range(3)]
        valid1 = Signal()
        payload = self.i.payload
        chosen = basis[payload.group] if self.groups > 1 else basis[0]
        with m.If(en):
            m.d.sync += valid1.eq(self.i.valid)
            for j in range(3):
                coef = payload.coef[j]
                m.d.sync += [off[j].eq(payload.skip | coef.zero), negate[j].eq(coef.sign)]
                for c in range(3):
                    m.d.sync += shifted[j][c].eq(chosen[j][c] << coef.exp)
        # Stage 2: signed terms (0 for zero or skipped coefficients).
        terms = [[Signal(signed(width - 1), name=f"term{j}_{c}") for c in range(3)] for j in range(3)]
        valid2 = Signal()
        with m.If(en):
            m.d.sync += valid2.eq(valid1)
            for j in range(3):
                for c in range(3):
                    m.d.sync += terms[j][c].eq(Mux(off[j], 0, Mux(negate[j], -shifted[j][c], shifted[j][c])))
        # Stage 3: the sums.
        with m.If(en):
            m.d.sync += self.o.valid.eq(valid2)
            for c in range(3):
                m.d.sync += self.o.payload[c].eq(terms[0][c] + terms[1][c] + terms[2][c])
        return m


class RowReader(wiring.Component):
    """Stream the coefficient rows of a packed SmartDeal row section, one row per clock, the layer repeating.

    The memory holds :func:`insitu.golden.smartdeal.row_words`: variable-length rows (a skip bit, then per
    coefficient a zero flag and, unless zero, a sign bit and an exponent code), so a skipped row costs one
    bit and a zero coefficient one bit of block RAM. A bit buffer of ``row_bits + 31`` bits is refilled with
    one 32-bit word whenever fewer than ``row_bits`` (the longest row) bits would remain, so one row
    leaves per clock; after the layer's last row the buffer restarts at word 0 (one idle clock).

    Parameters
    ----------
    words : list of int
        The 32-bit words of the row section.
    rows : int
        Rows per filter (``s``).
    c_out, group_size : int
        Filters, and filters per basis group (the ``group`` field of each row).
    exp_bits : int
    writable : bool
        Add a write port to the word memory (``words`` then gives its size and initial contents).

    Members
    -------
    o : Out(stream.Signature(coefficient_row_layout(exp_bits, c_out // group_size)))
    w_addr, w_data, w_en : In, only with ``writable``
        Write word ``w_addr``; reset the reader afterwards, so that it starts again at word 0.
    """

    @validated
    def __init__(self, *, words, rows, c_out, group_size, exp_bits, writable=False):
        check_int(rows, "Rows per filter", 1)
        check_int(c_out, "Output channel count", 1)
        check_int(group_size, "Group size", 1, c_out)
        if c_out % group_size:
            raise ParameterError(f"Group size must divide the output channel count ({c_out}), not {group_size!r}")
        check_int(exp_bits, "Exponent code width", 1, 8)
        try:
            words = [int(w) for w in words]
        except (TypeError, ValueError):
            raise ParameterTypeError("Words must be a sequence of 32-bit integers") from None
        if not words or any(not 0 <= w < 1 << 32 for w in words):
            raise ParameterError("Words must be a non-empty sequence of integers in range [0, 2**32 - 1]")
        if len(words) * 32 < rows * c_out:
            raise ParameterError(f"{len(words)} words cannot hold {rows * c_out} rows (at least one bit each)")
        self._words, self._rows, self._c_out, self._group_size = words, rows, c_out, group_size
        self._exp_bits = exp_bits
        members = {"o": Out(stream.Signature(coefficient_row_layout(exp_bits, c_out // group_size)))}
        if writable:
            members.update(w_addr=In(range(len(words))), w_data=In(32), w_en=In(1))
        self._writable = writable
        super().__init__(members)

    groups = property(lambda self: self._c_out // self._group_size)
    #: clocks after reset before the first row is offered (the first word is read, then loaded)
    startup = 2

    @property
    def cycles_per_layer(self):
        """Clocks per pass over the layer with the consumer always ready: one row per clock, then one
        idle clock while the buffer restarts at word 0."""
        return self._c_out * self._rows + 1

    @property
    def row_bits(self):
        """Bits of the longest row: skip bit and three non-zero coefficients."""
        return 1 + 3 * (2 + self._exp_bits)

    @property
    def memory_bits(self):
        """Block RAM bits holding the rows: the words plus one zero word read past the end."""
        return 32 * (len(self._words) + 1)

    def elaborate(self, platform):
        m = Module()
        cb = 2 + self._exp_bits                    # bits of a non-zero coefficient
        most = self.row_bits
        width = most + 31
        depth = len(self._words) + 1               # a zero word so the end of the layer can be read past
        m.submodules.mem = mem = memory.Memory(shape=32, depth=depth, init=self._words + [0])
        rd = mem.read_port()
        if self._writable:
            wr = mem.write_port()
            m.d.comb += [wr.addr.eq(self.w_addr), wr.data.eq(self.w_data), wr.en.eq(self.w_en)]

        buf = Signal(width)
        fill = Signal(range(width + 1))
        ptr = Signal(range(depth))
        primed = Signal()                          # rd.data shows mem[ptr]
        m.d.sync += primed.eq(1)

        # The row at the head of the buffer: where its coefficients start and how long it is.
        skip = buf[0]
        z0 = buf[1]
        off1 = Mux(z0, 2, 1 + cb)
        z1 = Mux(z0, buf[2], buf[1 + cb])
        off2 = Mux(z0, Mux(z1, 3, 2 + cb), Mux(z1, 2 + cb, 1 + 2 * cb))
        z2 = buf.bit_select(off2, 1)
        length = Signal(range(most + 1))
        m.d.comb += length.eq(Mux(skip, 1, off2 + Mux(z2, 1, cb)))

        en = Signal()
        take = Signal()
        wrap = Signal()
        r = Signal(range(self._rows))
        f = Signal(range(self._group_size))
        g = Signal(range(self.groups))
        last_r, last_f, last_g = r == self._rows - 1, f == self._group_size - 1, g == self.groups - 1
        m.d.comb += [
            en.eq(~self.o.valid | self.o.ready),
            take.eq(en & primed & (fill >= most)),
            wrap.eq(take & last_r & last_f & last_g),
        ]
        with m.If(take):
            m.d.sync += r.eq(Mux(last_r, 0, r + 1))
            with m.If(last_r):
                m.d.sync += f.eq(Mux(last_f, 0, f + 1))
                with m.If(last_f):
                    m.d.sync += g.eq(Mux(last_g, 0, g + 1))

        rem = Signal(range(width + 1))
        shifted = Signal(width)
        m.d.comb += [rem.eq(fill - Mux(take, length, 0)), shifted.eq(buf >> Mux(take, length, 0))]
        append = primed & (rem < most) & ~wrap
        ptr_next = Mux(wrap, 0, Mux(append & (ptr != depth - 1), ptr + 1, ptr))
        m.d.comb += rd.addr.eq(ptr_next)
        m.d.sync += ptr.eq(ptr_next)
        with m.If(wrap):
            m.d.sync += [buf.eq(0), fill.eq(0)]
        with m.Elif(append):
            m.d.sync += [buf.eq(shifted | (rd.data << rem)), fill.eq(rem + 32)]
        with m.Else():
            m.d.sync += [buf.eq(shifted), fill.eq(rem)]

        with m.If(en):
            m.d.sync += self.o.valid.eq(take)
            p = self.o.payload
            m.d.sync += [p.skip.eq(skip), p.group.eq(g)]
            for j, off in enumerate((1, off1, off2)):
                fld = buf.bit_select(off, cb)
                m.d.sync += [p.coef[j].zero.eq(fld[0]), p.coef[j].sign.eq(fld[1]), p.coef[j].exp.eq(fld[2:])]
        return m


class SmartDealWeights(wiring.Component):
    """A SmartDeal layer's weight rows, streamed from its packed form: :class:`RowReader` → :class:`Pow2Decoder`.

    Block RAM holds only the packed rows; the bases are registers. Rows stream in the order of
    ``reconstruct(layer).reshape(c_out, -1, 3)``, the layer repeating, one row (3 weights) per clock.

    Parameters
    ----------
    words, rows, c_out, group_size : see :class:`RowReader`
    basis, basis_bits, exp_range : see :class:`Pow2Decoder`
    writable : bool
        The row words are written through ``w_addr``/``w_data``/``w_en`` (see :class:`RowReader`) and the
        bases come from the ``basis`` port (see :class:`Pow2Decoder`).

    Members
    -------
    o : Out(stream.Signature(ArrayLayout(signed(out_width), 3)))
    w_addr, w_data, w_en, basis : In, only with ``writable``
    """

    @validated
    def __init__(self, *, words, rows, c_out, group_size, basis, basis_bits, exp_range, writable=False):
        self._decoder = Pow2Decoder(basis=basis, basis_bits=basis_bits, exp_range=exp_range,
                                    external_basis=writable)
        with validating(self._decoder):                  # a refused reader abandons the decoder too
            if self._decoder.groups * group_size != c_out:
                raise ParameterError(f"Basis holds {self._decoder.groups} groups; {c_out} output channels in groups "
                                     f"of {group_size} need {c_out // group_size}")
            self._reader = RowReader(words=words, rows=rows, c_out=c_out, group_size=group_size,
                                     exp_bits=self._decoder.exp_bits, writable=writable)
        members = {"o": self._decoder.signature.members["o"]}
        if writable:
            members.update({name: self._reader.signature.members[name] for name in ("w_addr", "w_data", "w_en")})
            members["basis"] = self._decoder.signature.members["basis"]
        self._writable = writable
        super().__init__(members)

    reader = property(lambda self: self._reader)
    decoder = property(lambda self: self._decoder)
    out_width = property(lambda self: self._decoder.out_width)

    @property
    def stored_bits(self):
        """On-chip bits: the row memory and the basis registers."""
        return self._reader.memory_bits + self._decoder.groups * 9 * self._decoder._basis_bits

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = self._reader
        m.submodules.decoder = self._decoder
        wiring.connect(m, self._reader.o, self._decoder.i)
        wiring.connect(m, self._decoder.o, wiring.flipped(self.o))
        if self._writable:
            m.d.comb += [self._reader.w_addr.eq(self.w_addr), self._reader.w_data.eq(self.w_data),
                         self._reader.w_en.eq(self.w_en), self._decoder.basis.eq(self.basis)]
        return m
