"""The matrix-vector peripherals: a dense int8 layer (:class:`DenseAccel`, :class:`~insitu.hdl.DenseMatVec`)
and a block-circulant one (:class:`CirculantAccel`, :class:`~insitu.hdl.circulant.CirculantMatVec`); the
decoded ones (SmartDeal rows, MLG factors) are in :mod:`.decoded` and have that weight source's registers
in place of ``w_addr`` and ``w_data``.

The CPU writes the weights once, then streams each input vector (four int8 elements per word); every ``n``
elements the layer computes ``m`` outputs into the output FIFO.

============ ======================================================================================
register     fields
============ ======================================================================================
``ctrl``     ``clear`` (w): empty the FIFOs, drop a partial vector, clear the error flag
``status``   ``in_full``, ``out_valid``, ``err_overflow`` (a word was written to a full input FIFO),
             ``err_address`` (``w_addr`` beyond the weight memory; the address is kept)
``levels``   ``in_free``, ``out_level`` (r): as for the convolution
``out_cfg``  ``pack``, ``shift``, ``pair`` (rw): output format, as for the convolution
``w_addr``   ``addr`` (w): next weight word; each ``w_data`` write stores there and increments it
             (wrapping to 0 after the last word).
``w_data``   ``data`` (w): one weight word (see each peripheral); write only between vectors
``in_data``  ``data`` (w): four int8 elements (element 4k in bits 0–7)
``out_data`` ``data`` (rc): one accumulator or packed outputs, rows in order
============ ======================================================================================
"""

from amaranth import Module, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ...hdl.circulant import CirculantMatVec
from ...hdl.densematvec import DenseMatVec
from ...hdl.params import ParameterError, check_int, validated
from ..csr import attach_bank, bank_bus_signature
from .common import DenseCtrl, DenseStatus, InData, Levels, OutCfg, OutData, WAddr, WData, fifos, output_words, \
    weight_address

__all__ = ["MatVecAccel", "DenseAccel", "CirculantAccel", "check_columns"]


class MatVecAccel(wiring.Component):
    """A matrix-vector layer behind the registers above. ``layer`` is the layer's description: an object
    with ``m``, ``n``, ``words`` (weight words), ``bank`` (the bank's name in the header), ``registers``
    (its weight registers), ``build()`` (the layer, a stream ``i``/``o`` component, built at elaboration)
    and ``connect(m, layer, regs, status)`` (drive its weight ports from ``regs``, set
    ``status.err_address`` on a bad address; returns a signal that restarts the layer besides ``clear``,
    or None)."""

    @validated
    def __init__(self, layer, *, fifo_depth=64):
        check_int(fifo_depth, "FIFO depth", 2, 1 << 16)
        self._layer, self._fifo_depth = layer, fifo_depth
        self._registers = [DenseCtrl("ctrl"), DenseStatus("status"), Levels("levels"), OutCfg("out_cfg"),
                           *layer.registers, InData("in_data"), OutData("out_data")]
        super().__init__({"bus": In(bank_bus_signature(self._registers))})

    registers = property(lambda self: list(self._registers))
    words = property(lambda self: self._layer.words)
    #: the layer's description (``bank`` "fc": dense, with ``m``, ``n``, ``lanes``; "circ": block-circulant)
    layer = property(lambda self: self._layer)
    fifo_depth = property(lambda self: self._fifo_depth)

    def elaborate(self, platform):
        m = Module()
        regs = attach_bank(m, self._layer.bank, self._registers, self.bus)
        ctrl, status, levels, out_cfg, in_data, out_data = (
            regs[name] for name in ("ctrl", "status", "levels", "out_cfg", "in_data", "out_data"))
        clear = ctrl.clear_stb & ctrl.clear
        layer = self._layer.build()
        restart = self._layer.connect(m, layer, regs, status)
        m.submodules.layer = ResetInserter(clear if restart is None else clear | restart)(layer)
        in_fifo, out_fifo = fifos(m, self._fifo_depth, clear, status, levels, in_data, out_data)

        byte = Signal(2)
        m.d.comb += [layer.i.valid.eq(in_fifo.r_rdy), layer.i.payload.eq(in_fifo.r_data.word_select(byte, 8)),
                     in_fifo.r_en.eq(layer.i.ready & (byte == 3))]
        with m.If(layer.i.valid & layer.i.ready):
            m.d.sync += byte.eq(byte + 1)
        with m.If(clear):
            m.d.sync += [byte.eq(0), status.err_overflow.eq(0), status.err_address.eq(0)]

        room = output_words(m, out_fifo, layer.o.payload, layer.o.valid, out_cfg, restart=clear)
        m.d.comb += layer.o.ready.eq(room)
        return m


def check_columns(n):
    check_int(n, "Column count", 4)
    if n % 4:
        raise ParameterError(f"Column count must be a positive multiple of 4, not {n!r}")


class _Dense:
    bank = "fc"

    def __init__(self, m, n, lanes):
        check_int(m, "Row count", 1)
        check_columns(n)
        check_int(lanes, "Lane count", 1, 4)
        if m % lanes:
            raise ParameterError(f"Lane count must divide the row count ({m}), not {lanes!r}")
        self.m, self.n, self.lanes = m, n, lanes
        self.words = m // lanes * n
        self.registers = [WAddr("w_addr"), WData("w_data")]

    def build(self):
        return DenseMatVec(m=self.m, n=self.n, lanes=self.lanes, writable=True)

    def connect(self, m, layer, regs, status):
        w_data = regs["w_data"]
        addr = weight_address(m, self.words, regs["w_addr"], w_data, status)
        m.d.comb += [layer.w_addr.eq(addr), layer.w_data.eq(w_data.data[:8 * self.lanes]),
                     layer.w_en.eq(w_data.data_stb)]


def DenseAccel(*, m, n, lanes=4, fifo_depth=64):
    """A fully connected int8 layer ``y = W @ x`` (``m × n``) as a peripheral, ``lanes`` MACs per clock.

    ``n`` is a multiple of 4 (inputs arrive four per word), ``lanes`` in [1, 4] divides ``m``. ``w_data``
    holds ``lanes`` int8 weights of one column (lane 0 in bits 0–7); word ``g·n + c`` holds column ``c`` of
    rows ``g·lanes …``."""
    return MatVecAccel(_Dense(m, n, lanes), fifo_depth=fifo_depth)


class _Circulant:
    bank = "circ"

    def __init__(self, m, n, k, mid_shift, spectrum_width):
        check_columns(n)
        check_int(k, "Block size", 4, 256)
        if k & (k - 1):
            raise ParameterError(f"Block size must be a power of two in range [4, 256], not {k!r}")
        check_int(m, "Row count", k)
        if m % k or n % k:
            raise ParameterError(f"Block size {k} must divide both matrix dimensions, not {m}x{n}")
        check_int(mid_shift, "Mid shift", 0, 63)
        check_int(spectrum_width, "Spectrum width", 4, 16)
        self.m, self.n, self.k, self.mid_shift, self.spectrum_width = m, n, k, mid_shift, spectrum_width
        self.words = (m // k) * (n // k) * (k // 2 + 1)
        self.registers = [WAddr("w_addr"), WData("w_data")]

    def build(self):
        return CirculantMatVec(spectra=None, m=self.m, n=self.n, k=self.k, mid_shift=self.mid_shift,
                               spectrum_width=self.spectrum_width, writable=True)

    def connect(self, m, layer, regs, status):
        w_data, sw = regs["w_data"], self.spectrum_width
        addr = weight_address(m, self.words, regs["w_addr"], w_data, status)
        m.d.comb += [layer.s_addr.eq(addr), layer.s_data.re.eq(w_data.data[:sw]),
                     layer.s_data.im.eq(w_data.data[16:16 + sw]), layer.s_en.eq(w_data.data_stb)]


def CirculantAccel(*, m, n, k, mid_shift, spectrum_width=16, fifo_depth=64):
    """A block-circulant int8 layer ``y = C @ x`` (``m × n``, ``k × k`` blocks, FFT-based) as a peripheral.

    The CPU writes the weight half spectra (``k/2 + 1`` complex bins per block, as
    :func:`insitu.golden.circulant.compress` gives them) once: ``w_data`` is one bin (``re`` bits 0–15,
    ``im`` bits 16–31), word ``(i · n/k + j) · (k/2 + 1) + bin`` holds bin ``bin`` of block ``(i, j)``.
    The outputs are the golden model's ``matvec``. ``mid_shift`` is a property of the compressed layer.
    ``n`` is a multiple of 4 and of ``k``; ``spectrum_width`` at most 16 (one bin per word)."""
    return MatVecAccel(_Circulant(m, n, k, mid_shift, spectrum_width), fifo_depth=fifo_depth)
