"""Streaming radix-2² single-path delay feedback (R2²SDF) FFT: one complex sample per clock.

Why R2²SDF: it keeps R2SDF's one-butterfly-per-stage structure and its ``n − 1`` words of delay memory,
but folds every other stage's twiddle into a trivial ±j rotation, so a complex multiplier is needed only
after each pair of stages: ``4·(⌈log2 n / 2⌉ − 1)`` real multipliers (8 at n = 64, the number of
SB_MAC16 blocks on an iCE40UP5K; R2SDF would need 16). The network is, stage for stage, the one of
:mod:`insitu.golden.fft`, so bit-exactness is structural rather than coincidental.
"""

import math

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import ParameterError, ParameterTypeError, check_int, validated
from .requantize import round_saturate

__all__ = ["FFT", "complex_layout", "stage_plan", "pair_twiddles"]


def complex_layout(width):
    """A complex sample: signed ``width``-bit real and imaginary parts."""
    return data.StructLayout({"re": signed(width), "im": signed(width)})


def stage_plan(n):
    """The network, as :func:`insitu.golden.fft.stage_plan`: butterflies ``bf2i``/``bf2ii`` in pairs, a
    ``twiddle`` multiplication after each pair that is not last, a plain ``bf2`` last for odd ``log2 n``."""
    stages = n.bit_length() - 1
    plan = []
    for s in range(0, stages - 1, 2):
        plan += [("bf2i", s), ("bf2ii", s + 1)]
        if s + 2 < stages:
            plan.append(("twiddle", s))
    if stages % 2:
        plan.append(("bf2", stages - 1))
    return plan


def pair_twiddles(n, s, twiddle_width, inverse):
    """Twiddle of each position ``p = q1·N/2 + q2·N/4 + j`` of an ``N = n >> s`` block after the pair at
    ``s``: ``W_n^(j·(q1 + 2·q2)·2**s)``, rounded as :func:`insitu.golden.fft.pair_twiddles`."""
    size = n >> s
    one = 1 << (twiddle_width - 1)
    quant = lambda v: max(-(one - 1), min(one - 1, math.floor(v * one + 0.5)))
    table = []
    for p in range(size):
        q1, q2, j = p // (size // 2), (p // (size // 4)) % 2, p % (size // 4)
        angle = 2 * math.pi * ((j * (q1 + 2 * q2)) << s) / n
        table.append((quant(math.cos(angle)), quant((1 if inverse else -1) * math.sin(angle))))
    return table


class FFT(wiring.Component):
    """Streaming fixed-point FFT (or inverse FFT) of ``n`` complex samples per frame.

    Frames stream in natural order, one sample per transfer, back to back; each output frame streams out
    in **bit-reversed** order (output ``i`` is bin ``bitrev(i)``, see :func:`insitu.golden.fft.bit_reverse`).
    The arithmetic is that of :func:`insitu.golden.fft.fft_bitrev`: every butterfly stage scales by 1/2,
    so the forward output is ``DFT/n``; rounding is half up, results saturate to ``width`` bits.

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
            raise ParameterError(f"FFT size must be a power of two in range [4, 256], not {n!r}")
        check_int(width, "Data width", 4, 25)
        check_int(twiddle_width, "Twiddle width", 4, 18)
        if not isinstance(inverse, bool):
            raise ParameterTypeError(f"Inverse must be a bool, not {inverse!r}")
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

    #: Delay lines at least this long live in block RAM; shorter ones are registers.
    MEMORY_DELAY = 8
    #: Pipeline registers of a butterfly stage and of a twiddle multiplier.
    BUTTERFLY_REGISTERS, TWIDDLE_REGISTERS = 2, 3

    def _unit_latency(self, kind, s):
        if kind == "twiddle":
            return self.TWIDDLE_REGISTERS
        return (self._n >> (s + 1)) + self.BUTTERFLY_REGISTERS

    @property
    def latency(self):
        """Clocks from the transfer of a frame's first sample to its first output, streaming without stalls."""
        return sum(self._unit_latency(kind, s) for kind, s in stage_plan(self._n))

    @property
    def multipliers(self):
        """Real multipliers instantiated: 4 per twiddle multiplication, ``4·(⌈log2 n / 2⌉ − 1)``."""
        return 4 * sum(kind == "twiddle" for kind, _ in stage_plan(self._n))

    def elaborate(self, platform):
        m = Module()
        n, w = self._n, self._width
        bits = self.stages

        # Frame-level control. `slot` counts stage-0 steps modulo n. A frame starts only at slot 0:
        # real if input is waiting, a flush ("bubble") frame of zeros if valid samples are still inside.
        # `at_start` (slot == 0) and `pending` (in_flight != 0) are registers, so the global enable,
        # which fans out to every pipeline register, is a shallow function of registers and the streams.
        slot = Signal(bits)
        at_start = Signal(init=1)
        bubbling = Signal()
        in_flight = Signal(range(2 * n + self.latency + 2))
        pending = Signal()
        out_ok = ~self.o.valid | self.o.ready
        start_bubble = at_start & ~self.i.valid & pending
        bubble_step = bubbling | start_bubble
        real_step = ~bubble_step & self.i.valid
        en = Signal()
        m.d.comb += [
            en.eq(out_ok & (real_step | bubble_step)),
            self.i.ready.eq(out_ok & ~bubbling),
        ]
        with m.If(en):
            m.d.sync += [slot.eq(slot + 1), at_start.eq(slot == n - 1)]
            with m.If(start_bubble):
                m.d.sync += bubbling.eq(1)
            with m.Elif(slot == n - 1):
                m.d.sync += bubbling.eq(0)
        accepted = self.i.valid & self.i.ready
        delivered = self.o.valid & self.o.ready
        m.d.sync += in_flight.eq(in_flight + accepted - delivered)
        with m.If(accepted & ~delivered):
            m.d.sync += pending.eq(1)
        with m.Elif(delivered & ~accepted & (in_flight == 1)):
            m.d.sync += pending.eq(0)

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
        for kind, s in stage_plan(n):
            unit = self._twiddle if kind == "twiddle" else self._butterfly
            re, im, valid = unit(m, kind, s, en, (-offset) % n, re, im, valid)
            offset += self._unit_latency(kind, s)
        # The last stage's output register is the output stream register. It only moves with `en`, so
        # its valid must also fall when it is delivered without a replacement.
        with m.If(~en & delivered):
            m.d.sync += valid.eq(0)
        m.d.comb += [self.o.payload.re.eq(re), self.o.payload.im.eq(im), self.o.valid.eq(valid)]
        return m

    def _phase(self, m, name, en, phase0):
        """A frame-position counter for one unit: all units step together under ``en``."""
        t = Signal(self.stages, name=f"{name}_phase", init=phase0)
        with m.If(en):
            m.d.sync += t.eq(t + 1)
        return t

    def _butterfly(self, m, kind, s, en, phase0, in_re, in_im, in_valid):
        """One DIF butterfly stage with a delay line of ``d = n/2**(s+1)`` words, scaling by 1/2.

        ``bf2i`` rotates the lower outputs of the second half of each block by ∓j (the trivial part of
        the radix-4 twiddle); ``bf2ii`` and ``bf2`` do not rotate.
        """
        n, w = self._n, self._width
        d = n >> (s + 1)
        t = self._phase(m, f"s{s}", en, phase0)
        j = t[:self.stages - s]              # position within the 2d-sample block
        second = j[-1]

        # Delay line: d words of (re, im, valid), w + 1 bits per part (it holds a − b in the second half).
        line = data.StructLayout({"re": signed(w + 1), "im": signed(w + 1), "valid": unsigned(1)})
        delayed = Signal(line, name=f"s{s}_delayed")
        pushed = Signal(line, name=f"s{s}_pushed")
        if d >= self.MEMORY_DELAY:
            # A circular buffer of d − 1 words in block RAM, then a register (the RAM output is slow).
            # The read port, enabled with the pipeline, reads the word for the next step (pointer
            # `ahead`, a register) while the current one is written: never the same address (d − 1 >= 2),
            # so it need not be transparent, and no logic sits on the RAM addresses.
            m.submodules[f"s{s}_delay"] = mem = memory.Memory(shape=line, depth=d - 1, init=[])
            wr, rd = mem.write_port(), mem.read_port()
            ptr = Signal(range(d - 1), name=f"s{s}_ptr")
            ahead = Signal(range(d - 1), name=f"s{s}_ahead", init=1)
            m.d.comb += [rd.addr.eq(ahead), rd.en.eq(en),
                         wr.addr.eq(ptr), wr.data.eq(pushed), wr.en.eq(en)]
            with m.If(en):
                m.d.sync += [ptr.eq(ahead), ahead.eq(Mux(ahead == d - 2, 0, ahead + 1)),
                             delayed.eq(rd.data)]
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

        # Lower output (first half): the delayed a − b, rotated in bf2i when its pair index >= d/2.
        low_re, low_im = delayed.re, delayed.im
        if kind == "bf2i" and d >= 2:
            rotate = j[-2]
            if self._inverse:    # × +j: (re, im) -> (−im, re)
                low_re, low_im = Mux(rotate, -delayed.im, delayed.re), Mux(rotate, delayed.re, delayed.im)
            else:                # × −j: (re, im) -> (im, −re)
                low_re, low_im = Mux(rotate, delayed.im, delayed.re), Mux(rotate, -delayed.re, delayed.im)

        # Register 1: the sum or (rotated) difference, w + 1 bits. Register 2: halved, rounded half up.
        # With w-bit inputs the sum lies in [−2**w, 2**w − 2] and the difference in [−2**w + 1,
        # 2**w − 1]: only 2**w − 1 overflows when halved, so saturation is one equality, not two compares.
        v_re = Signal(signed(w + 1), name=f"s{s}_v_re")
        v_im = Signal(signed(w + 1), name=f"s{s}_v_im")
        v_valid = Signal(name=f"s{s}_v_valid")
        with m.If(en):
            m.d.sync += [v_re.eq(Mux(second, delayed.re + in_re, low_re)),
                         v_im.eq(Mux(second, delayed.im + in_im, low_im)),
                         v_valid.eq(Mux(second, in_valid, delayed.valid))]

        top = (1 << w) - 1
        half = lambda v: Mux(v == top, (1 << (w - 1)) - 1, (v + 1) >> 1)
        out_re = Signal(signed(w), name=f"s{s}_re")
        out_im = Signal(signed(w), name=f"s{s}_im")
        out_valid = Signal(name=f"s{s}_valid")
        with m.If(en):
            m.d.sync += [out_re.eq(half(v_re)), out_im.eq(half(v_im)), out_valid.eq(v_valid)]
        return out_re, out_im, out_valid

    def _twiddle(self, m, kind, s, en, phase0, in_re, in_im, in_valid):
        """Multiply each sample by its pair twiddle (looked up one step ahead), round, saturate: 3 registers."""
        n, w, tw = self._n, self._width, self._twiddle_width
        size = n >> s
        table = pair_twiddles(n, s, tw, self._inverse)
        # The position one step ahead has its own counter, so the ROM is a pure function of a register.
        ahead = self._phase(m, f"tw{s}_ahead", en, (phase0 + 1) % n)
        first_re, first_im = table[phase0 % size]
        wr = Signal(signed(tw), name=f"tw{s}_wr", init=first_re)
        wi = Signal(signed(tw), name=f"tw{s}_wi", init=first_im)
        position = ahead[:size.bit_length() - 1]
        with m.If(en):
            with m.Switch(position):
                for p in range(size):
                    with m.Case(p):
                        m.d.sync += [wr.eq(table[p][0]), wi.eq(table[p][1])]

        prod = [Signal(signed(w + tw), name=f"tw{s}_p{k}") for k in range(4)]
        valid1 = Signal(name=f"tw{s}_valid1")
        with m.If(en):
            m.d.sync += [prod[0].eq(in_re * wr), prod[1].eq(in_im * wi),
                         prod[2].eq(in_re * wi), prod[3].eq(in_im * wr), valid1.eq(in_valid)]
        # Register 2: the complex products' sums, with the rounding constant. Register 3: shifted, saturated.
        sums = [Signal(signed(w + tw + 1), name=f"tw{s}_sum{k}") for k in range(2)]
        valid2 = Signal(name=f"tw{s}_valid2")
        bias = 1 << (tw - 2)
        with m.If(en):
            m.d.sync += [sums[0].eq(prod[0] - prod[1] + bias), sums[1].eq(prod[2] + prod[3] + bias),
                         valid2.eq(valid1)]
        out_re = Signal(signed(w), name=f"tw{s}_re")
        out_im = Signal(signed(w), name=f"tw{s}_im")
        out_valid = Signal(name=f"tw{s}_valid")
        with m.If(en):
            m.d.sync += [out_re.eq(round_saturate(m, sums[0] >> (tw - 1), 0, w)),
                         out_im.eq(round_saturate(m, sums[1] >> (tw - 1), 0, w)),
                         out_valid.eq(valid2)]
        return out_re, out_im, out_valid
