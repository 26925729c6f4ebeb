"""ESCALATE's basis-first convolution PE: basis convolutions streamed straight into a sparse coefficient stage.

Golden twin: :func:`insitu.golden.escalate.conv2d` (stage 1 ``P[c, m] = x[c] ⋆ B[c, m]``, stage 2
``y[o] = Σ_{c,m} C[o, c, m] · P[c, m]``).
"""

from amaranth import Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import ParameterError, ParameterTypeError, check_int, check_kernel, signed_width, validated
from .select import pick
from .window import window_layout

__all__ = ["BasisFirstConv"]


class BasisFirstConv(wiring.Component):
    """Convolution PE of a basis-decomposed layer (ESCALATE), one intermediate map value per ``k² / lanes``
    clocks.

    For every window (one output pixel) it steps through the ``c_in · M`` pairs (input channel ``c``,
    basis kernel ``m``), ``c`` major: the basis stage computes ``P[c, m]``, the dot product of channel
    ``c``'s k×k window with basis kernel ``B[c, m]`` (``k²`` multipliers and an adder tree), and the
    coefficient stage adds ``C[o, c, m] · P[c, m]`` into all ``c_out`` accumulators at once: a shift (and a
    negation) for power-of-two coefficients, a small multiplier for integer ones, nothing for a zero. The
    intermediate maps are never stored. After the last pair the accumulators go to an output buffer that
    emits ``c_out`` results, one output channel per transfer, while the next window accumulates.

    Throughput: one window per ``passes · max(c_in · M · k² / lanes, outputs)`` clocks
    (:attr:`cycles_per_window`). Latency: :attr:`latency` clocks from a window's transfer to its first result,
    when the output is idle. Every select ahead of a multiplier or adder is one register stage deep, and the
    pipeline's stall enable is itself a register (48 MHz on the iCE40UP5K). Basis and
    coefficients are constants of the build: the basis a LUT ROM, the coefficients one word per pair in a
    block-RAM ROM.

    Parameters
    ----------
    basis : (c_in, M, k, k) or shared (M, k, k) array of int
        Signed ``basis_bits``-bit basis codes (:attr:`insitu.golden.escalate.EscalateLayer.basis`).
    coef : (c_out, c_in, M) array of int
        Coefficient codes: ``0``, ``±2**j`` (``mode="pow2"``, ``j < coef_bits``) or ``coef_bits``-bit
        integers (``mode="int"``).
    basis_bits, coef_bits : int
    mode : "pow2" or "int"
    act_width : int
    lanes : int or None
        Basis taps multiplied per clock (divides ``k²``; default ``k²``, one pair per clock). Fewer lanes,
        fewer multipliers: ``k² / lanes`` clocks per pair.
    outputs : int or None
        Output channels accumulated at once (divides ``c_out``; default ``c_out``). Fewer accumulators and
        shift-adders; the pairs are stepped through ``c_out / outputs`` times per window (the basis stage
        recomputes ``P``), and each pass emits its ``outputs`` results.

    Members
    -------
    i : In(stream.Signature(window_layout(c_in, act_width, k)))
    o : Out(stream.Signature(ArrayLayout(signed(acc_width), 1)))
    """

    parallel = 1

    @validated
    def __init__(self, *, basis, coef, basis_bits=8, coef_bits=4, mode="pow2", act_width=8, lanes=None,
                 outputs=None):
        check_int(basis_bits, "Basis width", 2, 16)
        check_int(act_width, "Activation width", 2, 16)
        if mode not in ("pow2", "int"):
            raise ParameterError(f"Coefficient mode must be 'pow2' or 'int', not {mode!r}")
        check_int(coef_bits, "Coefficient width" if mode == "int" else "Coefficient exponent levels", 2,
                  8 if mode == "int" else 16)
        try:
            coef = [[[int(v) for v in row] for row in plane] for plane in coef]
            basis_list = _nested(basis)
        except (TypeError, ValueError):
            raise ParameterTypeError("Basis and coefficients must be arrays of integers") from None
        if not coef or not coef[0] or not coef[0][0] or \
                len({len(p) for p in coef}) != 1 or len({len(r) for p in coef for r in p}) != 1:
            raise ParameterError("Coefficients must be shaped (c_out, c_in, M)")
        c_out, c_in, bases = len(coef), len(coef[0]), len(coef[0][0])
        shape = _shape(basis_list)
        if len(shape) == 3:
            basis_list, shape = [basis_list] * c_in, (c_in, *shape)
        if len(shape) != 4 or shape[:2] != (c_in, bases) or shape[2] != shape[3]:
            raise ParameterError(f"Basis must be shaped ({c_in}, {bases}, k, k) or ({bases}, k, k), not {shape}")
        k = check_kernel(shape[2])
        lanes = k * k if lanes is None else lanes
        check_int(lanes, "Basis lane count", 1, k * k)
        if (k * k) % lanes:
            raise ParameterError(f"Basis lane count must divide k² ({k * k}), not {lanes!r}")
        self._lanes = lanes
        outputs = c_out if outputs is None else outputs
        check_int(outputs, "Accumulator count", 1, c_out)
        if c_out % outputs:
            raise ParameterError(f"Accumulator count must divide the output channel count ({c_out}), not {outputs!r}")
        self._outputs = outputs
        lo, hi = -(1 << (basis_bits - 1)) + 1, (1 << (basis_bits - 1)) - 1
        if any(not lo <= v <= hi for c in basis_list for b in c for r in b for v in r):
            raise ParameterError(f"Basis codes must fit in signed {basis_bits}-bit integers [{lo}, {hi}]")
        flat = [v for p in coef for r in p for v in r]
        if mode == "pow2":
            bad = [v for v in flat if v and (abs(v) & (abs(v) - 1) or abs(v) >= 1 << coef_bits)]
            if bad:
                raise ParameterError(f"Coefficients must be 0 or ±2**j with j < {coef_bits}, not {bad[0]}")
        else:
            top = (1 << (coef_bits - 1)) - 1
            if any(abs(v) > top for v in flat):
                raise ParameterError(f"Coefficients must fit in [{-top}, {top}]")
        self._c_in, self._c_out, self._k, self._bases = c_in, c_out, k, bases
        self._basis = [[[v for r in basis_list[c][m] for v in r] for m in range(bases)] for c in range(c_in)]
        self._coef, self._mode, self._coef_bits = coef, mode, coef_bits
        self._basis_bits, self._act_width = basis_bits, act_width
        # Widths from the codes themselves: the exact worst case over any input, no wider.
        a = 1 << (act_width - 1)
        p_max = [[a * sum(abs(v) for v in self._basis[c][mm]) for mm in range(bases)] for c in range(c_in)]
        peak = max(max(row) for row in p_max)
        self._p_width = signed_width(-peak, peak)
        worst = max(sum(abs(coef[o][c][mm]) * p_max[c][mm] for c in range(c_in) for mm in range(bases))
                    for o in range(c_out))
        self._acc_width = signed_width(-max(worst, 1), max(worst, 1))
        super().__init__({
            "i": In(stream.Signature(window_layout(c_in, act_width, k))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(self._acc_width), 1))),
        })

    c_in = property(lambda self: self._c_in)
    c_out = property(lambda self: self._c_out)
    k = property(lambda self: self._k)
    bases = property(lambda self: self._bases)
    mode = property(lambda self: self._mode)
    act_width = property(lambda self: self._act_width)
    acc_width = property(lambda self: self._acc_width)
    groups = property(lambda self: self._c_out)            # output transfers per window
    lanes = property(lambda self: self._lanes)
    outputs = property(lambda self: self._outputs)
    passes = property(lambda self: self._c_out // self._outputs)
    steps = property(lambda self: self._c_in * self._bases * (self._k ** 2 // self._lanes))   # per pass
    latency = 6

    @property
    def cycles_per_window(self):
        """Clocks per output pixel without stalls: per pass, ``lanes`` basis taps per clock, or the output
        buffer's drain."""
        return self.passes * max(self.steps, self._outputs)

    @property
    def multipliers(self):
        """Multipliers the block builds: ``lanes`` in the basis stage, plus ``outputs`` for integer coefficients."""
        return self._lanes + (self._outputs if self._mode == "int" else 0)

    def elaborate(self, platform):
        m = Module()
        pairs, taps, bases, lanes = self._c_in * self._bases, self._k ** 2, self._bases, self._lanes
        c_out, passes = self._outputs, self.passes  # accumulators; passes over the pairs per window
        subs = taps // lanes                           # clocks per pair

        out_count = Signal(range(c_out + 1))
        # The whole pipeline waits only when a pass's last pair reaches the accumulators and finds the
        # output buffer still draining. `en` is that condition one clock ahead, registered, so that the
        # enable of the whole pipeline starts at a flip-flop (see the end of this method).
        en = Signal(init=1)

        # Stage 0: the next step: pass, pair (c, m), c major, and its block q of `lanes` taps; operands
        # registered. `slot` (pass · pairs + pair) addresses the coefficient ROM.
        pair, chan, mi, q = Signal(range(pairs)), Signal(range(self._c_in)), Signal(range(bases)), Signal(range(subs))
        slot, npass = Signal(range(pairs * passes)), Signal(range(passes))
        last_q, last_pair, last_pass = Signal(init=subs == 1), Signal(init=pairs == 1), Signal(init=passes == 1)
        # `last_step` (the window's last step: it takes the window) is kept as its own flip-flop, so that
        # `ready` is one gate from registers.
        last_step, commit = Signal(init=subs == 1 and pairs == 1 and passes == 1), Signal()
        m.d.comb += [commit.eq(last_q & last_pair), self.i.ready.eq(en & last_step)]
        issue = Signal()
        m.d.comb += issue.eq(en & self.i.valid)
        with m.If(issue):
            m.d.sync += last_step.eq(Mux(last_q, subs == 1, q == subs - 2)
                                     & Mux(last_q, Mux(last_pair, pairs == 1, pair == pairs - 2), last_pair)
                                     & Mux(commit, Mux(last_pass, passes == 1, npass == passes - 2), last_pass))
            with m.If(last_q):
                m.d.sync += [q.eq(0), last_q.eq(subs == 1)]
                m.d.sync += [pair.eq(Mux(last_pair, 0, pair + 1)),
                             last_pair.eq(Mux(last_pair, pairs == 1, pair == pairs - 2)),
                             slot.eq(Mux(last_step, 0, slot + 1))]
                with m.If(last_pair | (mi == bases - 1)):
                    m.d.sync += [mi.eq(0), chan.eq(Mux(last_pair, 0, chan + 1))]
                with m.Else():
                    m.d.sync += mi.eq(mi + 1)
                with m.If(last_pair):
                    m.d.sync += [npass.eq(Mux(last_pass, 0, npass + 1)),
                                 last_pass.eq(Mux(last_pass, passes == 1, npass == passes - 2))]
            with m.Else():
                m.d.sync += [q.eq(q + 1), last_q.eq(q == subs - 2)]

        def follow(name, flags, valid=None):
            """The next stage's copies of the flags (valid optionally narrowed), advanced with ``en``."""
            out = {k: Signal.like(v, name=f"{k}_{name}") for k, v in flags.items()}
            with m.If(en):
                m.d.sync += [out[k].eq(v) for k, v in flags.items() if k != "v"]
                m.d.sync += out["v"].eq(flags["v"] if valid is None else valid)
            return out

        # Stage 0 registers the issued channel's k² taps (one select over c_in channels). Stage 0b picks the
        # block q of `lanes` taps from them and the basis codes from the ROM: two short selects instead of
        # one c_in · k²/lanes-way select ahead of the multipliers.
        window = self.i.payload
        ctaps = [Signal(signed(self._act_width), name=f"ctap{t}") for t in range(taps)]
        v0, last0, qfirst0, qlast0 = Signal(), Signal(), Signal(), Signal()
        slot0, pair0, q0 = Signal(range(pairs * passes)), Signal(range(pairs)), Signal(range(subs))
        with m.If(en):
            m.d.sync += [v0.eq(issue), last0.eq(commit),
                         qfirst0.eq(q == 0), qlast0.eq(last_q), slot0.eq(slot), pair0.eq(pair), q0.eq(q)]
            for t in range(taps):
                m.d.sync += ctaps[t].eq(pick([window[t][c] for c in range(self._c_in)], chan))
        act = [Signal(signed(self._act_width), name=f"act{t}") for t in range(lanes)]
        bas = [Signal(signed(self._basis_bits), name=f"bas{t}") for t in range(lanes)]

        f0 = follow("s0b", {"v": v0, "last": last0, "qfirst": qfirst0, "qlast": qlast0,
                            "pair": slot0})
        with m.If(en):
            for t in range(lanes):
                m.d.sync += act[t].eq(pick([ctaps[b * lanes + t] for b in range(subs)], q0))
                codes = [[self._basis[s // bases][s % bases][b * lanes + t] for b in range(subs)] for s in range(pairs)]
                m.d.sync += bas[t].eq(pick([pick([Const(v, signed(self._basis_bits)) for v in row], q0)
                                             for row in codes], pair0))

        # Stage 1: the products. Stage 2: sums of three. Stage 3: P[c, m], summed over the pair's blocks of taps.
        prods = [Signal(signed(self._act_width + self._basis_bits), name=f"prod{t}") for t in range(lanes)]
        f1 = follow("s1", f0)
        with m.If(en):
            m.d.sync += [prods[t].eq(act[t] * bas[t]) for t in range(lanes)]
        groups = [prods[g:g + 3] for g in range(0, lanes, 3)]
        gsums = [Signal(signed(self._p_width), name=f"gsum{g}") for g in range(len(groups))]
        f2 = follow("s2", f1)
        with m.If(en):
            m.d.sync += [gs.eq(sum(group)) for gs, group in zip(gsums, groups)]
        # P and -P accumulate side by side, so that a negative power-of-two coefficient costs a select, not
        # a negation per output channel.
        p, p_neg = Signal(signed(self._p_width)), Signal(signed(self._p_width))
        f3 = follow("s3", f2, valid=f2["v"] & f2["qlast"])
        with m.If(en & f2["v"]):
            m.d.sync += p.eq(Mux(f2["qfirst"], 0, p) + sum(gsums))
            if self._mode == "pow2":
                m.d.sync += p_neg.eq(Mux(f2["qfirst"], 0, p_neg) - sum(gsums))

        # Stage 4: every output channel's term C[o, c, m] · P (shift and negation for powers of two); the
        # coefficients of a pair are one word of a ROM in block RAM, read while stage 3 forms P.
        codes = [[self._coef[(s // pairs) * c_out + o][s % pairs // bases][s % bases] for o in range(c_out)]
                 for s in range(pairs * passes)]
        if self._mode == "pow2":
            field = data.StructLayout({"zero": 1, "neg": 1, "exp": range(self._coef_bits)})
            words = [[{"zero": int(v == 0), "neg": int(v < 0), "exp": max(abs(v).bit_length() - 1, 0)} for v in word]
                     for word in codes]
        else:
            field = signed(self._coef_bits)
            words = codes
        m.submodules.coef = rom = memory.Memory(shape=data.ArrayLayout(field, c_out), depth=pairs * passes,
                                                init=words)
        rd = rom.read_port()
        m.d.comb += [rd.addr.eq(f2["pair"]), rd.en.eq(en)]
        terms = []
        for o in range(c_out):
            term = Signal(signed(self._acc_width), name=f"term{o}")
            code = rd.data[o]
            if self._mode == "pow2":
                value = Mux(code.zero, 0, Mux(code.neg, p_neg, p) << code.exp)
            else:
                value = p * code
            with m.If(en):
                m.d.sync += term.eq(value)
            terms.append(term)
        f4 = follow("s4", f3)

        # Stage 5: the accumulators. After the pass's last pair they load the output buffer, a shift
        # register that emits one output channel per transfer (no multiplexer on the output), and clear, so
        # that the next pass starts from zero without a select ahead of the adders.
        accs = [Signal(signed(self._acc_width), name=f"acc{o}") for o in range(c_out)]
        nexts = []
        for o in range(c_out):
            nxt = Signal(signed(self._acc_width), name=f"next{o}")
            m.d.comb += nxt.eq(accs[o] + terms[o])
            nexts.append(nxt)
        out_buf = [Signal(signed(self._acc_width), name=f"out{o}") for o in range(c_out)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += out_count.eq(out_count - 1)
            m.d.sync += [out_buf[o].eq(out_buf[o + 1]) for o in range(c_out - 1)]
        with m.If(en & f4["v"]):
            with m.If(f4["last"]):
                m.d.sync += [accs[o].eq(0) for o in range(c_out)]
                m.d.sync += [out_buf[o].eq(nexts[o]) for o in range(c_out)]
                m.d.sync += out_count.eq(c_out)
            with m.Else():
                m.d.sync += [accs[o].eq(nexts[o]) for o in range(c_out)]
        m.d.comb += [self.o.valid.eq(out_count != 0), self.o.payload[0].eq(out_buf[0])]

        # Next clock's `en`: not (a pass ends in stage 4 and the output buffer still holds results).
        pop = self.o.valid & self.o.ready
        ends_next = Mux(en, f3["v"] & f3["last"], f4["v"] & f4["last"])
        busy_next = (en & f4["v"] & f4["last"]) | (out_count > 1) | ((out_count == 1) & ~pop)
        m.d.sync += en.eq(~(ends_next & busy_next))
        return m


def _nested(a):
    if hasattr(a, "tolist"):
        a = a.tolist()
    if isinstance(a, (list, tuple)):
        return [_nested(x) for x in a]
    if isinstance(a, bool) or not isinstance(a, int):
        raise TypeError
    return int(a)


def _shape(a):
    shape = []
    while isinstance(a, list):
        shape.append(len(a))
        if not a:
            break
        a = a[0]
    return tuple(shape)
