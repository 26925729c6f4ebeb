"""Block-circulant matrix-vector product: FFT each input block once, multiply-accumulate spectra, IFFT."""

import numpy as np
from amaranth import Array, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import ParameterError, ParameterTypeError, abandon, check_int, validated
from .fft import FFT
from .requantize import Requantize, round_saturate

__all__ = ["CirculantMatVec", "spectrum_layout"]


def spectrum_layout(width):
    return data.StructLayout({"re": signed(width), "im": signed(width)})


class CirculantMatVec(wiring.Component):
    """``y = C @ x`` for a block-circulant ``m × n`` matrix of ``k × k`` blocks; golden twin
    :func:`insitu.golden.circulant.matvec`.

    Per input vector (``n`` elements streamed in): each block ``x_j`` goes once through the forward FFT
    and the Hermitian half of its spectrum (bins ``0 … k/2``) is kept in block RAM. For each output block
    ``i`` and bin ``b``, one complex multiply-accumulate per clock forms ``Σ_j X_j[b]·S_ij[b]`` against the
    weight spectra in block RAM; the result is shifted by ``mid_shift`` (round half up, saturate),
    extended to the full spectrum by conjugate symmetry and inverse-transformed. The real parts, put back
    in natural order, stream out (``m`` per vector), through :class:`Requantize` when ``requant`` is given.

    Parameters
    ----------
    m, n : int
        Matrix size; multiples of ``k``.
    k : int
        Block size, a power of two in ``[4, 256]`` (the FFT's range).
    spectra : (m/k, n/k, k/2+1) array of complex int
        The weight half spectra (:attr:`insitu.golden.circulant.CirculantLayer.spectra`).
    mid_shift : int
        Right shift applied to the accumulated spectrum.
    act_width, fft_width, twiddle_width, spectrum_width : int
        Widths, as in the golden model.
    requant : (int, int) or None
        ``(shift, out_width)``.
    writable : bool
        Add a write port to the weight spectra memory (``spectra`` may then be ``None``: all zero).

    Members
    -------
    i : In(stream.Signature(signed(act_width)))
    o : Out(stream.Signature(signed(fft_width or out_width)))
    s_addr, s_data, s_en : In
        With ``writable``: spectrum word ``(i · n/k + j) · (k/2 + 1) + bin`` (``s_data`` is
        :func:`spectrum_layout`); write between vectors.
    """

    @validated
    def __init__(self, *, m, n, k, spectra, mid_shift, act_width=8, fft_width=16, twiddle_width=16,
                 spectrum_width=16, requant=None, writable=False):
        check_int(k, "Block size", 4, 256)
        if k & (k - 1):
            raise ParameterError(f"Block size must be a power of two in range [4, 256], not {k!r}")
        check_int(m, "Row count", k)
        check_int(n, "Column count", k)
        if m % k or n % k:
            raise ParameterError(f"Block size {k} must divide both matrix dimensions, not {m}x{n}")
        check_int(fft_width, "FFT width", 4, 25)
        check_int(act_width, "Activation width", 2, fft_width - 2)
        check_int(spectrum_width, "Spectrum width", 4, 18)
        check_int(mid_shift, "Mid shift", 0, 63)
        p, q, h = m // k, n // k, k // 2 + 1
        if spectra is None and writable:
            spectra = np.zeros((p, q, h), complex)
        self._words = []
        lo, hi = -(1 << (spectrum_width - 1)), (1 << (spectrum_width - 1)) - 1
        try:
            for i in range(p):
                for j in range(q):
                    for b in range(h):
                        v = complex(spectra[i][j][b])
                        re, im = int(v.real), int(v.imag)
                        if re != v.real or im != v.imag or not (lo <= re <= hi and lo <= im <= hi):
                            raise ParameterError(f"Spectrum values must be complex integers with parts in "
                                                 f"[{lo}, {hi}], not {v!r} at ({i}, {j}, {b})")
                        self._words.append({"re": re, "im": im})
        except (TypeError, IndexError):
            raise ParameterError(f"Spectra must be shaped ({p}, {q}, {h})") from None
        self._m, self._n, self._k, self._mid_shift = m, n, k, mid_shift
        self._act_width, self._fft_width, self._spectrum_width = act_width, fft_width, spectrum_width
        if requant is not None and (not isinstance(requant, tuple) or len(requant) != 2):
            raise ParameterTypeError(f"Requantisation must be a (shift, out_width) tuple or None, not {requant!r}")
        self._fwd = FFT(n=k, width=fft_width, twiddle_width=twiddle_width)
        self._inv = FFT(n=k, width=fft_width, twiddle_width=twiddle_width, inverse=True)
        try:
            self._requant = None if requant is None else Requantize(fft_width, requant[1], requant[0])
        except Exception:
            abandon(self._fwd, self._inv)
            raise
        out_width = fft_width if requant is None else requant[1]
        members = {
            "i": In(stream.Signature(signed(act_width))),
            "o": Out(stream.Signature(signed(out_width))),
        }
        if writable:
            members.update(s_addr=In(range(p * q * h)), s_data=In(spectrum_layout(spectrum_width)), s_en=In(1))
        self._writable = writable
        super().__init__(members)

    m = property(lambda self: self._m)
    n = property(lambda self: self._n)
    k = property(lambda self: self._k)

    @property
    def weight_bits(self):
        """Stored weight bits: ``k`` integers of ``spectrum_width`` bits per block (bins 0 and k/2 are real)."""
        return (self._m // self._k) * (self._n // self._k) * self._k * self._spectrum_width

    @property
    def cycles_per_vector(self):
        """Clocks per product without stalls, vectors back to back (the first, counted from reset, takes one
        less; with ``requant`` the requantiser's register adds that one back).

        Per vector: ``n`` samples into the forward FFT and its ``L`` clocks of latency; then per output block
        ``q·(k/2 + 1)`` MACs, 6 clocks of MAC pipeline drain and the ``k`` samples into the inverse FFT;
        the last block's ``L`` clocks through the inverse FFT, ``k`` of output and 2 of hand-over. The
        inverse FFT runs whole frames: while a block is still inside it (the next is ready within ``L + k``
        clocks of the previous feed), the next feed waits for its next frame boundary, a multiple of ``k``
        clocks after the previous one. ``L`` is :attr:`FFT.latency` for ``n = k``."""
        k, latency = self._k, self._fwd.latency
        p, q, h = self._m // k, self._n // k, k // 2 + 1
        block = q * h + k + 6
        gap = block if block >= latency + k else -(-block // k) * k
        return self._n + 2 * latency + k + 2 + block + (p - 1) * gap

    def elaborate(self, platform):
        m = Module()
        k, fw = self._k, self._fft_width
        p, q, h = self._m // k, self._n // k, k // 2 + 1
        bits = k.bit_length() - 1
        bitrev = [int(f"{t:0{bits}b}"[::-1], 2) for t in range(k)]
        m.submodules.fwd = fwd = self._fwd
        m.submodules.inv = inv = self._inv

        cplx = spectrum_layout(fw)
        m.submodules.xmem = xmem = memory.Memory(shape=cplx, depth=q * h, init=[])
        m.submodules.smem = smem = memory.Memory(shape=spectrum_layout(self._spectrum_width),
                                                 depth=p * q * h, init=self._words)
        x_wr, x_rd, s_rd = xmem.write_port(), xmem.read_port(), smem.read_port()
        if self._writable:
            s_wr = smem.write_port()
            m.d.comb += [s_wr.addr.eq(self.s_addr), s_wr.data.eq(self.s_data), s_wr.en.eq(self.s_en)]

        # Input: n samples per vector into the forward FFT, shifted up to the FFT's range.
        pre = fw - self._act_width - 1
        taken = Signal(range(self._n + 1))
        accepting = Signal(init=1)
        m.d.comb += [
            fwd.i.payload.re.eq(self.i.payload << pre),
            fwd.i.payload.im.eq(0),
            fwd.i.valid.eq(self.i.valid & accepting),
            self.i.ready.eq(fwd.i.ready & accepting),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += taken.eq(taken + 1)
            with m.If(taken == self._n - 1):
                m.d.sync += [accepting.eq(0), taken.eq(0)]

        # Forward spectra: keep bins 0..k/2 of each block, in X memory at j*h + bin.
        pos = Signal(range(k))
        blk = Signal(range(q))
        spectra_done = Signal()
        fbin = Signal(range(k))
        m.d.comb += [fwd.o.ready.eq(1), fbin.eq(Array(bitrev)[pos])]
        # Addresses are kept as running sums, so no multiplier (or DSP block) computes them.
        x_base = Signal(range(q * h), name="x_base")      # blk * h
        m.d.comb += [x_wr.addr.eq(x_base + fbin), x_wr.data.eq(fwd.o.payload),
                     x_wr.en.eq(fwd.o.valid & (fbin <= k // 2))]
        with m.If(fwd.o.valid):
            m.d.sync += pos.eq(pos + 1)
            with m.If(pos == k - 1):
                m.d.sync += [blk.eq(Mux(blk == q - 1, 0, blk + 1)), x_base.eq(Mux(blk == q - 1, 0, x_base + h))]
                with m.If(blk == q - 1):
                    m.d.sync += spectra_done.eq(1)

        # Multiply-accumulate: for output block i, bin b, input block j (j fastest), one per clock.
        oi = Signal(range(p))
        b = Signal(range(h))
        j = Signal(range(q))
        issuing = Signal()
        x_addr = Signal(range(q * h), name="x_addr")      # j * h + b
        s_addr = Signal(range(p * q * h), name="s_addr")  # (oi * q + j) * h + b
        m.d.comb += [x_rd.addr.eq(x_addr), s_rd.addr.eq(s_addr)]
        # Pipeline: stage 1 = memory data, 1r = the same registered (the RAM outputs are slow, and feed
        # multipliers), 2 = products, 3 = accumulator.
        v1, first1, last1, bin1 = Signal(), Signal(), Signal(), Signal(range(h))
        v1r, first1r, last1r, bin1r = Signal(), Signal(), Signal(), Signal(range(h))
        v2, first2, last2, bin2 = Signal(), Signal(), Signal(), Signal(range(h))
        v3, last3, bin3 = Signal(), Signal(), Signal(range(h))
        m.d.sync += [v1.eq(issuing), first1.eq(j == 0), last1.eq(j == q - 1), bin1.eq(b),
                     v1r.eq(v1), first1r.eq(first1), last1r.eq(last1), bin1r.eq(bin1),
                     v2.eq(v1r), first2.eq(first1r), last2.eq(last1r), bin2.eq(bin1r),
                     v3.eq(v2 & last2), last3.eq(last2), bin3.eq(bin2)]
        pw = fw + self._spectrum_width
        prods = [Signal(signed(pw), name=f"prod{n}") for n in range(4)]
        xd = Signal.like(x_rd.data, name="x_data")
        sd = Signal.like(s_rd.data, name="s_data")
        m.d.sync += [xd.eq(x_rd.data), sd.eq(s_rd.data)]
        m.d.sync += [prods[0].eq(xd.re * sd.re), prods[1].eq(xd.im * sd.im),
                     prods[2].eq(xd.re * sd.im), prods[3].eq(xd.im * sd.re)]
        acc_width = pw + 1 + (q - 1).bit_length() + 1
        acc_re, acc_im = Signal(signed(acc_width)), Signal(signed(acc_width))
        with m.If(v2):
            m.d.sync += [acc_re.eq(Mux(first2, 0, acc_re) + (prods[0] - prods[1])),
                         acc_im.eq(Mux(first2, 0, acc_im) + (prods[2] + prods[3]))]

        # Z buffer: the half spectrum of the current output block, rounded and saturated.
        zlayout = cplx
        z = Array(Signal(zlayout, name=f"z{t}") for t in range(h))

        # Stage 4: shifted with rounding; stage 5: saturated into the Z buffer.
        shift = self._mid_shift
        bias = (1 << (shift - 1)) if shift else 0
        sh_re = Signal(signed(acc_width + 1), name="sh_re")
        sh_im = Signal(signed(acc_width + 1), name="sh_im")
        v4, bin4 = Signal(), Signal(range(h))
        m.d.sync += [sh_re.eq((acc_re + bias) >> shift), sh_im.eq((acc_im + bias) >> shift),
                     v4.eq(v3), bin4.eq(bin3)]
        with m.If(v4):
            m.d.sync += [z[bin4].re.eq(round_saturate(m, sh_re, 0, fw)),
                         z[bin4].im.eq(round_saturate(m, sh_im, 0, fw))]

        # Feed the inverse FFT with the full Hermitian spectrum: bin t, or conj(Z[k - t]) above k/2.
        # The sample is looked up one transfer ahead into a register, keeping the bin selection out of
        # the inverse FFT's input path.
        t = Signal(range(k))
        lo, hi = -(1 << (fw - 1)), (1 << (fw - 1)) - 1

        def spectrum_bin(tt):
            mirror = tt > k // 2
            zsel = z[Mux(mirror, k - tt, tt)]
            conj_im = Mux(zsel.im == lo, hi, -zsel.im)     # saturating, as in the golden model
            return [inv.i.payload.re.eq(zsel.re), inv.i.payload.im.eq(Mux(mirror, conj_im, zsel.im))]

        t_next = Signal(range(k))
        m.d.comb += t_next.eq(t + 1)
        with m.If(inv.i.valid & inv.i.ready):
            m.d.sync += [t.eq(t_next), *spectrum_bin(t_next)]

        all_sent = self._emitted_all(m, inv, bitrev)   # (its logic must sit outside the FSM's states)
        with m.FSM():
            with m.State("INGEST"):
                with m.If(spectra_done):
                    m.d.sync += [spectra_done.eq(0), oi.eq(0), b.eq(0), j.eq(0), x_addr.eq(0), s_addr.eq(0)]
                    m.next = "MAC"
            with m.State("MAC"):
                m.d.comb += issuing.eq(1)
                m.d.sync += j.eq(Mux(j == q - 1, 0, j + 1))
                with m.If(j != q - 1):
                    m.d.sync += [x_addr.eq(x_addr + h), s_addr.eq(s_addr + h)]
                with m.Elif(b != h - 1):
                    m.d.sync += [b.eq(b + 1), x_addr.eq(x_addr - (q - 1) * h + 1),
                                 s_addr.eq(s_addr - (q - 1) * h + 1)]
                with m.Else():      # next output block: its weights follow on
                    m.d.sync += [b.eq(0), x_addr.eq(0), s_addr.eq(s_addr + 1)]
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(~v1 & ~v1r & ~v2 & ~v3 & ~v4):
                    m.d.sync += spectrum_bin(0)
                    m.next = "FEED"
            with m.State("FEED"):
                m.d.comb += inv.i.valid.eq(1)
                with m.If(inv.i.ready & (t == k - 1)):
                    with m.If(oi == p - 1):
                        m.next = "OUTPUT"
                    with m.Else():
                        m.d.sync += oi.eq(oi + 1)
                        m.next = "MAC"
            with m.State("OUTPUT"):
                with m.If(all_sent):
                    m.d.sync += accepting.eq(1)
                    m.next = "INGEST"
        return m

    def _emitted_all(self, m, inv, bitrev):
        """Reorder each inverse-transformed block to natural order and stream its real parts out.

        Returns a signal that is high for one clock once all ``m`` outputs of the vector have been sent.
        """
        k, fw = self._k, self._fft_width
        ybuf = Array(Signal(signed(fw), name=f"y{t}") for t in range(k))
        rpos = Signal(range(k))
        epos = Signal(range(k))
        emitting = Signal()
        sent = Signal(range(self._m + 1))
        done = Signal()

        if self._requant is None:
            out, payload = self.o, self.o.payload
        else:
            m.submodules.requantize = rq = self._requant
            m.d.comb += [self.o.payload.eq(rq.o.payload[0]), self.o.valid.eq(rq.o.valid),
                         rq.o.ready.eq(self.o.ready)]
            out, payload = rq.i, rq.i.payload[0]

        m.d.comb += inv.o.ready.eq(~emitting)
        with m.If(inv.o.valid & ~emitting):
            m.d.sync += [ybuf[Array(bitrev)[rpos]].eq(inv.o.payload.re), rpos.eq(rpos + 1)]
            with m.If(rpos == k - 1):
                m.d.sync += emitting.eq(1)
        m.d.comb += [out.valid.eq(emitting), payload.eq(ybuf[epos])]
        with m.If(out.valid & out.ready):
            m.d.sync += [epos.eq(epos + 1), sent.eq(sent + 1)]
            with m.If(epos == k - 1):
                m.d.sync += emitting.eq(0)
        with m.If(sent == self._m):
            m.d.comb += done.eq(1)
            m.d.sync += sent.eq(0)
        return done
