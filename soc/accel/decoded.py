"""Weight sources whose weights a decode unit regenerates on chip into a
:class:`~insitu.hdl.streamconv.StreamConv`: SmartDeal rows (:class:`SmartDealRows`) and MLG factors
(:class:`MLGFactors`), and the peripherals built from them (:func:`SmartDealConvAccel`,
:func:`MLGConvAccel`). Each start restarts the source at the layer's first weight; ``status.err_address``
(cleared by ``ctrl.clear``) flags out-of-range weight writes.

SmartDeal registers (besides :class:`~.conv.ConvAccel`'s ``ctrl``, ``status``, ``count``, ``levels``,
``out_cfg``, ``in_data``, ``out_data``):

============ ======================================================================================
``w_addr``   ``addr`` (w): next row word; each ``w_data`` write stores there and increments it
``w_data``   ``data`` (w): one 32-bit word of :func:`insitu.golden.smartdeal.row_words`
``basis``    ``index``, ``value`` (w): basis value ``basis[g][j][c]`` at index ``(g · 3 + j) · 3 + c``
============ ======================================================================================

``err_no_weights`` is set by a start before any row word was written.

MLG registers, one factor code per write:

============ ======================================================================================
``basis``    ``index``, ``value`` (w): ``basis[b, i, t]`` at index ``(b · bi + i) · 9 + t``
``u``        ``addr``, ``elem``, ``value`` (w): ``u[b, ci, i]`` at ``addr`` ``ci``, ``elem`` ``b · bi + i``
``v``        ``addr``, ``elem``, ``value`` (w): ``v[o, b]`` at ``addr`` ``o``, ``elem`` ``b``
============ ======================================================================================

``err_no_weights`` is set by a start before any ``v`` code was written.
"""

import numpy as np
from amaranth import Cat, Mux, Signal

from ...hdl.decode import SmartDealWeights, basis_layout
from ...hdl.insitu_cached import CachedGenerator
from ...hdl.params import ParameterError, ParameterTypeError, check_int
from ...hdl.streamconv import StreamConv
from ...hdl.streammatvec import StreamMatVec
from .common import Basis, DecodeStatus, Element, WAddr, WData, indexed_registers, weight_address
from .conv import ConvAccel
from .matvec import MatVecAccel, check_columns

__all__ = ["SmartDealRows", "MLGFactors", "SmartDealConvAccel", "MLGConvAccel", "SmartDealDenseAccel",
           "MLGDenseAccel"]


class _Decoded:
    """What the decoded sources share: a 3×3 :class:`StreamConv` fed by the source, restarted at each start."""

    restart_on_start = True
    status = DecodeStatus
    k = 3
    parallel = 1

    def build_pe(self, c_in, c_out):
        # At the SoC's clock the one-step activation select is fast enough, and its cells are what the
        # iCE40UP5K SoC with the SmartDeal peripheral needs to fit.
        return StreamConv(c_in=c_in, c_out=c_out, k=3, source=self._source(c_in, c_out), split_select=False)

    def connect(self, m, pe, regs, clear):
        with m.If(clear):
            m.d.sync += regs["status"].err_address.eq(0)
        return self._connect(m, pe.source, pe.c_in, pe.c_out, regs, regs["status"])


def _rows(c_in, k):
    """SmartDeal rows (of three weights) of one filter: a ``k × k`` filter is ``c_in · k²`` weights."""
    return -(-c_in * k * k // 3)


class SmartDealRows(_Decoded):
    """SmartDeal's packed coefficient rows and bases (:class:`~insitu.hdl.decode.SmartDealWeights`): only
    they are stored.

    Parameters
    ----------
    group_size : int
        Filters per basis (``c_out // group_size`` bases).
    basis_bits, exp_range : int
        As the compressed layer's (``layer.basis_bits``, ``layer.e_max − layer.e_min``).
    words : int or None
        Capacity of the row memory in 32-bit words (default: enough for rows with no zeros).
    """

    def __init__(self, *, group_size=1, basis_bits=8, exp_range=12, words=None):
        if words is not None:
            check_int(words, "Word capacity", 1, 1 << 16, what="an integer or None")
        self._group_size = check_int(group_size, "Group size", 1)
        self._basis_bits = check_int(basis_bits, "Basis bits", 2, 16)
        self._exp_range = check_int(exp_range, "Exponent range", 0, 31)
        self._words = words
        self.registers = [WAddr("w_addr"), WData("w_data"), Basis("basis")]

    group_size = property(lambda self: self._group_size)
    basis_bits = property(lambda self: self._basis_bits)
    exp_range = property(lambda self: self._exp_range)

    def words(self, c_in, c_out, k=3):
        """The row memory's capacity for a ``c_in → c_out`` layer of ``k × k`` filters (``k`` 1: fully
        connected)."""
        if self._words is not None:
            return self._words
        rows = _rows(c_in, k)
        return -(-c_out * rows * (1 + 3 * (2 + max(1, self._exp_range.bit_length()))) // 32)

    def describe(self, c_in, c_out, k=3):
        """``(method, (p0, p1, p2))`` of the firmware's peripheral table (:func:`insitu.soc.runtime._describe`):
        group size | basis bits << 16, exponent bits, row words."""
        return "smartdeal", (self._group_size | self._basis_bits << 16, max(1, self._exp_range.bit_length()),
                             self.words(c_in, c_out, k))

    def check(self, c_in, c_out):
        if self._group_size > c_out or c_out % self._group_size:
            raise ParameterError(f"Group size must divide the output channel count ({c_out}), not {self._group_size!r}")

    def _source(self, c_in, c_out, k=3):
        groups, words = c_out // self._group_size, self.words(c_in, c_out, k)
        return SmartDealWeights(words=[0] * words, rows=_rows(c_in, k), c_out=c_out, group_size=self._group_size,
                                basis=[[[0] * 3] * 3] * groups, basis_bits=self._basis_bits,
                                exp_range=self._exp_range, writable=True)

    def _connect(self, m, source, c_in, c_out, regs, status, k=3):
        groups, words = c_out // self._group_size, self.words(c_in, c_out, k)
        w_addr, w_data, basis = regs["w_addr"], regs["w_data"], regs["basis"]
        addr = weight_address(m, words, w_addr, w_data, status)
        m.d.comb += [source.w_addr.eq(addr), source.w_data.eq(w_data.data), source.w_en.eq(w_data.data_stb)]
        m.d.comb += source.basis.eq(indexed_registers(m, basis_layout(groups, self._basis_bits), basis, status))
        have_weights = Signal()
        with m.If(w_data.data_stb):
            m.d.sync += have_weights.eq(1)
        return have_weights


class MLGFactors(_Decoded):
    """MLG factor codes ``basis``, ``u``, ``v`` of :func:`insitu.golden.mlg.decompose`
    (:class:`~insitu.hdl.insitu_cached.CachedGenerator`, level 1 decoded into block RAM at each start):
    only they are stored.

    Parameters
    ----------
    bi, bo : int
        Factor ranks (``basis`` is ``bo × bi × 9``).
    bits : (int, int, int)
        Code widths of ``(basis, u, v)``, as the decomposed layer's.
    lanes : int
        Weights generated per clock (1, 3 or 9).
    """

    def __init__(self, *, bi=3, bo=4, bits=(3, 6, 3), lanes=1):
        self._bi = check_int(bi, "Basis rank bi", 1, 255)
        self._bo = check_int(bo, "Basis rank bo", 1, 255)
        if not isinstance(bits, (tuple, list)) or len(bits) != 3:
            raise ParameterTypeError(f"Bits must be a (basis, u, v) triple of integers, not {bits!r}")
        for b in bits:
            check_int(b, "Code width", 1, 16)
        check_int(lanes, "Lane count", 1, 9)
        if 9 % lanes:
            raise ParameterError(f"Lane count must divide k² (9), not {lanes!r}")
        self._bits, self._lanes = tuple(bits), lanes
        self.registers = [Basis("basis"), Element("u"), Element("v")]

    bi = property(lambda self: self._bi)
    bo = property(lambda self: self._bo)
    bits = property(lambda self: self._bits)
    lanes = property(lambda self: self._lanes)

    def check(self, c_in, c_out):
        # the u and v registers' 8-bit address field: channels 0 … 255
        if c_in > 256 or c_out > 256:
            raise ParameterError(f"MLG factors address at most 256 channels, not {c_in} → {c_out}")

    def describe(self, c_in, c_out, k=3):
        """``(method, (p0, p1, p2))`` of the firmware's peripheral table: bo | bi << 16, the three code
        widths."""
        return "mlg", (self._bo | self._bi << 16, self._bits[0] | self._bits[1] << 8 | self._bits[2] << 16, 0)

    def _source(self, c_in, c_out, k=3):
        bo, bi = self._bo, self._bi
        # level 1 decoded once per start into block RAM: bo · lanes + 1 multipliers, not bo · (bi + 1) · lanes
        return CachedGenerator(basis=np.ones((bo, bi, k * k), int), u=np.ones((bo, c_in, bi), int),
                               v=np.ones((c_out, bo), int), bits=self._bits, lanes=self._lanes, writable=True)

    def _connect(self, m, source, c_in, c_out, regs, status, k=3):
        m.d.comb += source.basis.eq(indexed_registers(m, source.basis.shape(), regs["basis"], status))
        have_weights = Signal()
        for name, words, elems in (("u", c_in, self._bo * self._bi), ("v", c_out, self._bo)):
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


def SmartDealConvAccel(*, c_in, c_out, width=8, height=8, group_size=1, basis_bits=8, exp_range=12, words=None,
                       fifo_depth=64):
    """A 3×3 convolution layer whose weights are decoded from SmartDeal's packed form on chip:
    ``ConvAccel(weights=SmartDealRows(...))``."""
    return ConvAccel(c_in=c_in, c_out=c_out, width=width, height=height, fifo_depth=fifo_depth,
                     weights=SmartDealRows(group_size=group_size, basis_bits=basis_bits, exp_range=exp_range,
                                           words=words))


def MLGConvAccel(*, c_in, c_out, width=8, height=8, bi=3, bo=4, bits=(3, 6, 3), lanes=1, fifo_depth=64):
    """A 3×3 convolution layer whose weights are generated on chip from MLG factors:
    ``ConvAccel(weights=MLGFactors(...))``."""
    return ConvAccel(c_in=c_in, c_out=c_out, width=width, height=height, fifo_depth=fifo_depth,
                     weights=MLGFactors(bi=bi, bo=bo, bits=bits, lanes=lanes))


class _DecodedLinear:
    """A fully connected layer (``m × n``) whose weights a decode unit regenerates on chip and streams, row
    by row, into a :class:`~insitu.hdl.streammatvec.StreamMatVec`: the layer description
    :class:`~.matvec.MatVecAccel` takes. Only the compressed form is stored; the registers are those of the
    weight source (``weights``: :class:`SmartDealRows` or :class:`MLGFactors`, as a 1×1 filter of ``n``
    channels). Any write to them restarts the source at the first weight (write them between vectors)."""

    def __init__(self, weights, m, n):
        check_int(m, "Row count", 1)
        check_columns(n)
        weights.check(n, m)
        self.weights, self.m, self.n = weights, m, n
        self.method, _ = weights.describe(n, m, 1)
        self.bank = {"smartdeal": "sdfc", "mlg": "mlgfc"}[self.method]
        self.registers = weights.registers
        self.words = weights.words(n, m, 1) if isinstance(weights, SmartDealRows) else 0     # row words

    def build(self):
        return StreamMatVec(m=self.m, n=self.n, act_width=8, source=self.weights._source(self.n, self.m, 1))

    def connect(self, m, layer, regs, status):
        self.weights._connect(m, layer.source, self.n, self.m, regs, status, 1)
        return _any_strobe(regs, self.registers)


def _any_strobe(regs, registers):
    """1 in a clock that writes any of ``registers`` (a write strobes every field of its register)."""
    strobes = [getattr(regs[r.name], f"{r.fields[0].name}_stb") for r in registers]
    hit = strobes[0]
    for strobe in strobes[1:]:
        hit = hit | strobe
    return hit


def SmartDealDenseAccel(*, m, n, group_size=1, basis_bits=8, exp_range=12, words=None, fifo_depth=64):
    """A fully connected layer ``y = W @ x`` (``m × n``, ``n`` a multiple of 4) whose weights are decoded
    from SmartDeal's packed rows on chip: the matrix-vector registers (:mod:`.matvec`) with ``w_addr``,
    ``w_data`` (row words, as for :func:`SmartDealConvAccel`) and ``basis``. Rows of ``n`` weights are
    stored in triples (:func:`insitu.golden.smartdeal.row_words` of the layer as an ``m × n × 1 × 1``
    filter bank)."""
    return MatVecAccel(_DecodedLinear(SmartDealRows(group_size=group_size, basis_bits=basis_bits,
                                                    exp_range=exp_range, words=words), m, n),
                       fifo_depth=fifo_depth)


def MLGDenseAccel(*, m, n, bi=1, bo=4, bits=(3, 6, 3), fifo_depth=64):
    """A fully connected layer ``y = W @ x`` (``m × n``, ``n`` a multiple of 4, at most 256 each) whose
    weights are generated on chip from MLG factors, one per clock: the matrix-vector registers
    (:mod:`.matvec`) with ``basis``, ``u`` and ``v`` as for :func:`MLGConvAccel` (``k`` 1: ``basis`` is
    ``bo × bi``)."""
    return MatVecAccel(_DecodedLinear(MLGFactors(bi=bi, bo=bo, bits=bits), m, n), fifo_depth=fifo_depth)
