"""Streaming radix-2 single-path delay feedback (R2SDF) FFT: one complex sample per clock.

Why R2SDF: it is the smallest streaming FFT that still takes one sample per clock — one butterfly and
one complex multiplier per stage and exactly ``n − 1`` words of delay memory — and its decimation-in-
frequency dataflow is, stage for stage, the network of :mod:`insitu.golden.fft`, so bit-exactness is
structural rather than coincidental. Radix-2² halves the non-trivial multipliers and is the natural next
step when DSP blocks are the constraint (see ``multipliers``).
"""

import math

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ._params import check_int, validated

__all__ = ["FFT", "complex_layout", "fft_twiddles"]


def complex_layout(width):
    """A complex sample: signed ``width``-bit real and imaginary parts."""
    return data.StructLayout({"re": signed(width), "im": signed(width)})


def fft_twiddles(n, twiddle_width, inverse):
    """Twiddles ``exp(∓2πi·t/n)``, ``t`` in ``[0, n/2)``, rounded as :func:`insitu.golden.fft.twiddles`."""
    one = 1 << (twiddle_width - 1)
    sign = 1 if inverse else -1
    quant = lambda v: max(-(one - 1), min(one - 1, math.floor(v * one + 0.5)))
    return [(quant(math.cos(2 * math.pi * t / n)), quant(sign * math.sin(2 * math.pi * t / n)))
            for t in range(n // 2)]


class FFT(wiring.Component):
    """Streaming fixed-point FFT (or inverse FFT) of ``n`` complex samples per frame.

    Frames stream in natural order, one sample per transfer, back to back; each output frame streams out
    in **bit-reversed** order (output ``i`` is bin ``bitrev(i)``, see :func:`insitu.golden.fft.bit_reverse`).
    The arithmetic is that of :func:`insitu.golden.fft.fft_bitrev`: every stage scales by 1/2, so the
    forward output is ``DFT/n``; rounding is half up, results saturate to ``width`` bits.

    Throughput is one sample per clock in steady state. An SDF pipeline emits a frame while the next one
    enters; when no next frame comes, the FFT pushes a frame of invisible zero samples to flush the last
    one out (so a lone frame costs ``n`` extra clocks). Stalls of either stream are allowed anywhere.

    Parameters
    ----------
    n : int
        Frame length, a power of two in ``[4, 256]``.
    width : int
        Width of the real and imaginary parts, in ``[4, 25]``.
    twiddle_width : int
        Twiddle width (Q1.(twiddle_width−1)), in ``[4, 18]``.
    inverse : bool
        Inverse transform (conjugate twiddles); the output is then ``IDFT`` = ``numpy.fft.ifft``.

    Members
    -------
    i : In(stream.Signature(complex_layout(width)))
    o : Out(stream.Signature(complex_layout(width)))
    """

    @validated
    def __init__(self, *, n, width=16, twiddle_width=16, inverse=False):
        check_int(n, "FFT size", 4, 256)
        if n & (n - 1):
            raise ValueError(f"FFT size must be a power of two in range [4, 256], not {n!r}")
        check_int(width, "Data width", 4, 25)
        check_int(twiddle_width, "Twiddle width", 4, 18)
        if not isinstance(inverse, bool):
            raise TypeError(f"Inverse must be a bool, not {inverse!r}")
        self._n, self._width, self._twiddle_width, self._inverse = n, width, twiddle_width, inverse
        super().__init__({
            "i": In(stream.Signature(complex_layout(width))),
            "o": Out(stream.Signature(complex_layout(width))),
        })

    n = property(lambda self: self._n)
    width = property(lambda self: self._width)
    twiddle_width = property(lambda self: self._twiddle_width)
    inverse = property(lambda self: self._inverse)
    stages = property(lambda self: self._n.bit_length() - 1)

    #: Pipeline registers per stage (after the multiply, after the rounding).
    STAGE_REGISTERS = 2
    #: Delay lines at least this long live in block RAM; shorter ones are registers.
    MEMORY_DELAY = 8

    @property
    def latency(self):
        """Clocks from the transfer of a frame's first sample to its first output, streaming without stalls."""
        return self._n - 1 + self.stages * self.STAGE_REGISTERS

    def _trivial(self, s):
        """Whether stage ``s`` only multiplies by 0 and ±(2**(twiddle_width−1) − 1) (the last two stages)."""
        one = (1 << (self._twiddle_width - 1)) - 1
        table = fft_twiddles(self._n, self._twiddle_width, self._inverse)
        d = self._n >> (s + 1)
        return all(abs(v) in (0, one) for p in range(d) for v in table[p << s])

    @property
    def multipliers(self):
        """Real multipliers instantiated: 4 per stage with non-trivial twiddles, ``4·(log2 n − 2)``, the
        minimum of R2SDF. (Radix-2² would need ``4·(log2 n / 2 − 1)``; see the module docstring.)"""
        return 4 * sum(not self._trivial(s) for s in range(self.stages))

    def elaborate(self, platform):
        m = Module()
        n, w, tw = self._n, self._width, self._twiddle_width
        bits = self.stages

        # Frame-level control. `slot` counts stage-0 steps modulo n. A frame starts only at slot 0:
        # real if input is waiting, a flush ("bubble") frame of zeros if valid samples are still inside.
        slot = Signal(bits)
        bubbling = Signal()
        in_flight = Signal(range(2 * n + self.stages * self.STAGE_REGISTERS + 2))
        out_ok = ~self.o.valid | self.o.ready
        start_bubble = (slot == 0) & ~self.i.valid & (in_flight != 0)
        bubble_step = bubbling | start_bubble
        real_step = ~bubble_step & self.i.valid
        en = Signal()
        m.d.comb += [
            en.eq(out_ok & (real_step | bubble_step)),
            self.i.ready.eq(out_ok & ~bubbling),
        ]
        with m.If(en):
            m.d.sync += slot.eq(slot + 1)
            with m.If(start_bubble):
                m.d.sync += bubbling.eq(1)
            with m.Elif(slot == n - 1):
                m.d.sync += bubbling.eq(0)
        accepted = self.i.valid & self.i.ready
        delivered = self.o.valid & self.o.ready
        m.d.sync += in_flight.eq(in_flight + accepted - delivered)

        # Stage 0 input: the stream sample, or a zero with valid low.
        re = Signal(signed(w), name="in_re")
        im = Signal(signed(w), name="in_im")
        valid = Signal(name="in_valid")
        m.d.comb += [
            re.eq(Mux(real_step, self.i.payload.re, 0)),
            im.eq(Mux(real_step, self.i.payload.im, 0)),
            valid.eq(real_step),
        ]
        offset = 0
        for s in range(bits):
            re, im, valid = self._stage(m, s, en, (-offset) % n, re, im, valid)
            offset += (n >> (s + 1)) + self.STAGE_REGISTERS
        # The last stage's output register is the output stream register. It only moves with `en`, so
        # its valid must also fall when it is delivered without a replacement.
        with m.If(~en & delivered):
            m.d.sync += valid.eq(0)
        m.d.comb += [self.o.payload.re.eq(re), self.o.payload.im.eq(im), self.o.valid.eq(valid)]
        return m

    def _stage(self, m, s, en, phase0, in_re, in_im, in_valid):
        """One DIF stage: delay line of ``d = n/2**(s+1)`` words, butterfly, twiddle multiply, 2 registers.

        ``phase0`` is the frame position of this stage's input at reset; all stages step together.
        """
        n, w, tw = self._n, self._width, self._twiddle_width
        d = n >> (s + 1)
        t = Signal(self.stages, name=f"s{s}_phase", init=phase0)
        with m.If(en):
            m.d.sync += t.eq(t + 1)
        j = t[:self.stages - s]              # position within the 2d-sample block
        second = j[-1]
        pair_of = lambda phase: (phase % (2 * d)) % d   # index of the butterfly pair within the block

        # Delay line: d words of (re, im, valid), w + 1 bits per part (it holds a − b in the second half).
        line = data.StructLayout({"re": signed(w + 1), "im": signed(w + 1), "valid": unsigned(1)})
        delayed = Signal(line, name=f"s{s}_delayed")
        pushed = Signal(line, name=f"s{s}_pushed")
        if d >= self.MEMORY_DELAY:
            # A circular buffer of d − 1 words in block RAM, then a register, so the multipliers see a
            # register and not the RAM's slow output. The read port prefetches the word for the next
            # step; it never reads the address being written (d − 1 >= 2), so it need not be transparent.
            m.submodules[f"s{s}_delay"] = mem = memory.Memory(shape=line, depth=d - 1, init=[])
            wr, rd = mem.write_port(), mem.read_port()
            ptr = Signal(range(d - 1), name=f"s{s}_ptr")
            ptr_next = Mux(ptr == d - 2, 0, ptr + 1)
            m.d.comb += [rd.addr.eq(Mux(en, ptr_next, ptr)),
                         wr.addr.eq(ptr), wr.data.eq(pushed), wr.en.eq(en)]
            with m.If(en):
                m.d.sync += [ptr.eq(ptr_next), delayed.eq(rd.data)]
        else:
            regs = [Signal(line, name=f"s{s}_dl{k}") for k in range(d)]
            m.d.comb += delayed.eq(regs[-1])
            with m.If(en):
                m.d.sync += regs[0].eq(pushed)
                m.d.sync += [regs[k + 1].eq(regs[k]) for k in range(d - 1)]

        with m.If(second):
            m.d.comb += [pushed.re.eq(delayed.re - in_re), pushed.im.eq(delayed.im - in_im),
                         pushed.valid.eq(in_valid)]
        with m.Else():
            m.d.comb += [pushed.re.eq(in_re), pushed.im.eq(in_im), pushed.valid.eq(in_valid)]

        # Twiddle for the lower output emitted now (first half): W^(pair · 2**s). Registered: it is
        # looked up one step ahead, from the next phase.
        table = fft_twiddles(n, tw, self._inverse)
        first_re, first_im = table[pair_of(phase0) << s]
        wr = Signal(signed(tw), name=f"s{s}_wr", init=first_re)
        wi = Signal(signed(tw), name=f"s{s}_wi", init=first_im)
        if d > 1:
            next_pair = (t + 1)[:self.stages - s - 1]
            with m.If(en):
                with m.Switch(next_pair):
                    for p in range(d):
                        with m.Case(p):
                            m.d.sync += [wr.eq(table[p << s][0]), wi.eq(table[p << s][1])]

        # Register 1: the four products (lower) and the sum (upper).
        prod = [Signal(signed(w + 1 + tw), name=f"s{s}_p{k}") for k in range(4)]
        sum_re = Signal(signed(w + 1), name=f"s{s}_sum_re")
        sum_im = Signal(signed(w + 1), name=f"s{s}_sum_im")
        is_upper = Signal(name=f"s{s}_upper")
        valid1 = Signal(name=f"s{s}_valid1")
        if self._trivial(s):
            # Twiddles are only 0 and ±(2**(tw-1) - 1): x·w is a shift, a subtract and a sign.
            c_re = (delayed.re << (tw - 1)) - delayed.re
            c_im = (delayed.im << (tw - 1)) - delayed.im
            scale = lambda x, v: Mux(v == 0, 0, Mux(v[-1], -x, x))
            products = [scale(c_re, wr), scale(c_im, wi), scale(c_re, wi), scale(c_im, wr)]
        else:
            products = [delayed.re * wr, delayed.im * wi, delayed.re * wi, delayed.im * wr]
        with m.If(en):
            m.d.sync += [
                *(p.eq(v) for p, v in zip(prod, products)),
                sum_re.eq(delayed.re + in_re), sum_im.eq(delayed.im + in_im),
                is_upper.eq(second),
                valid1.eq(Mux(second, in_valid, delayed.valid)),
            ]

        # Register 2: round half up, saturate, select.
        def rounded(value, shift):
            r = Signal(signed(len(value) + 1))
            m.d.comb += r.eq((value + (1 << (shift - 1))) >> shift)
            lo, hi = -(1 << (w - 1)), (1 << (w - 1)) - 1
            return Mux(r > hi, hi, Mux(r < lo, lo, r))

        out_re = Signal(signed(w), name=f"s{s}_re")
        out_im = Signal(signed(w), name=f"s{s}_im")
        out_valid = Signal(name=f"s{s}_valid")
        with m.If(en):
            m.d.sync += [
                out_re.eq(Mux(is_upper, rounded(sum_re, 1), rounded(prod[0] - prod[1], tw))),
                out_im.eq(Mux(is_upper, rounded(sum_im, 1), rounded(prod[2] + prod[3], tw))),
                out_valid.eq(valid1),
            ]
        return out_re, out_im, out_valid
