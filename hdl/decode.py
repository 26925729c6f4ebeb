"""SmartDeal decoder: power-of-two coefficient codes × a 3×3 basis → weight rows, shift-and-add only."""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ._params import check_int, validated

__all__ = ["Pow2Decoder", "coefficient_row_layout"]


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

    Members
    -------
    i : In(stream.Signature(coefficient_row_layout(exp_bits, groups)))
    o : Out(stream.Signature(ArrayLayout(signed(out_width), 3)))
    """

    latency = 3

    @validated
    def __init__(self, *, basis, basis_bits, exp_range):
        check_int(basis_bits, "Basis bits", 2, 16)
        check_int(exp_range, "Exponent range", 0, 31)
        lo, hi = -(1 << (basis_bits - 1)), (1 << (basis_bits - 1)) - 1
        try:
            self._basis = [[[int(v) for v in row] for row in group] for group in basis]
        except TypeError:
            raise TypeError("Basis must be a (groups, 3, 3) array of integers") from None
        if not self._basis or any(len(g) != 3 or any(len(r) != 3 for r in g) for g in self._basis):
            raise ValueError("Basis must be shaped (groups, 3, 3)")
        if any(not lo <= v <= hi for g in self._basis for r in g for v in r):
            raise ValueError(f"Basis values must fit in signed {basis_bits}-bit integers [{lo}, {hi}]")
        self._basis_bits, self._exp_range = basis_bits, exp_range
        self._exp_bits = max(1, exp_range.bit_length())
        self._out_width = basis_bits + exp_range + 2     # three terms of basis_bits + exp_range bits
        super().__init__({
            "i": In(stream.Signature(coefficient_row_layout(self._exp_bits, len(self._basis)))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(self._out_width), 3))),
        })

    exp_bits = property(lambda self: self._exp_bits)
    out_width = property(lambda self: self._out_width)
    groups = property(lambda self: len(self._basis))

    def elaborate(self, platform):
        m = Module()
        bb, width = self._basis_bits, self._out_width
        basis = Signal(data.ArrayLayout(data.ArrayLayout(data.ArrayLayout(signed(bb), 3), 3), self.groups),
                       init=self._basis)

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
