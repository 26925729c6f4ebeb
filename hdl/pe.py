"""The pipeline shared by the convolution processing elements (``MuxConv``, ``DenseConv``).

A PE takes one k×k×c_in window per transfer and produces the ``c_out`` results for it in
``c_out / parallel`` transfers of ``parallel`` lanes (output channels ``g*parallel .. g*parallel+parallel-1``
in transfer ``g``). Each lane reduces a list of terms (one per input channel for ``MuxConv``, one per
input channel and tap for ``DenseConv``) through a registered adder tree. The weights of output-channel
group ``g`` are one word of a weight memory, prefetched so that the memory's read latency is hidden.
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import ParameterError, ParameterTypeError, check_int, check_kernel, signed_width, validated
from .bram import block_ram
from .requantize import Requantize
from .skid import Skid
from .window import window_layout

__all__ = ["ConvPE"]


class ConvPE(wiring.Component):
    """Base class of window-in, channels-out processing elements. Subclasses define the terms.

    Subclasses set ``code_width`` (bits of weight per (output, input) channel pair), ``term_range``
    (inclusive bounds of one term), ``terms_per_lane``, and implement ``_operands(window, codes)``, which
    yields for every term of a lane a tuple of values (registered in pipeline stage 1), and
    ``_term(*operands)``, which computes the term from them (registered in stage 2).

    Members
    -------
    i : In(stream.Signature(window_layout(c_in, act_width, k)))
        One window per transfer.
    o : Out(stream.Signature(ArrayLayout(signed(w), parallel)))
        ``w`` is ``acc_width`` when ``requant`` is ``None``, else ``requant[1]``.
    w_addr, w_data, w_en : In
        Weight memory write port: ``w_data`` is one group's word (``parallel`` lanes of ``c_in`` codes),
        ``w_en`` has one bit per lane. Write while the PE is idle.
    """

    @validated
    def __init__(self, *, c_in, c_out, k, act_width=8, parallel=1, requant=None, init=None):
        check_int(c_in, "Input channel count", 1)
        check_int(c_out, "Output channel count", 1)
        check_kernel(k)
        check_int(act_width, "Activation width", 2, 32)
        check_int(parallel, "Parallel output channel count", 1, c_out)
        if c_out % parallel:
            raise ParameterError(f"Parallel output channel count must divide the output channel count "
                                 f"({c_out}), not {parallel!r}")
        self._c_in, self._c_out, self._k = c_in, c_out, k
        self._act_width, self._parallel = act_width, parallel

        lo, hi = self.term_range
        self._acc_width = signed_width(lo * self.terms_per_lane, hi * self.terms_per_lane)
        if requant is not None:
            if not (isinstance(requant, tuple) and len(requant) == 2):
                raise ParameterTypeError(f"Requantisation must be a (shift, out_width) tuple or None, not {requant!r}")
            check_int(requant[0], "Requantisation shift", 0, self._acc_width - 1)
            check_int(requant[1], "Requantisation output width", 2, 32)
        self._requant = requant

        self._word = data.ArrayLayout(data.ArrayLayout(unsigned(self.code_width), c_in), parallel)
        self._init = self._check_init(init)

        out_width = self._acc_width if requant is None else requant[1]
        super().__init__({
            "i": In(stream.Signature(window_layout(c_in, act_width, k))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(out_width), parallel))),
            "w_addr": In(range(self.groups)),
            "w_data": In(self._word),
            "w_en": In(parallel),
        })

    c_in = property(lambda self: self._c_in)
    c_out = property(lambda self: self._c_out)
    k = property(lambda self: self._k)
    act_width = property(lambda self: self._act_width)
    parallel = property(lambda self: self._parallel)
    requant = property(lambda self: self._requant)
    acc_width = property(lambda self: self._acc_width)
    groups = property(lambda self: self._c_out // self._parallel)
    word_layout = property(lambda self: self._word)

    @property
    def tree_levels(self):
        return (self.terms_per_lane - 1).bit_length()

    @property
    def latency(self):
        """Clocks from a window transfer to the output transfer of its first group (no stalls)."""
        return 2 + self.tree_levels + (self._requant is not None)

    @property
    def cycles_per_window(self):
        return self.groups

    @property
    def weight_bits(self):
        """Bits of weight storage: ``c_out · c_in · code_width``."""
        return self._c_out * self._c_in * self.code_width

    def _check_init(self, init):
        """Turn ``init`` (integer codes shaped ``(c_out, c_in)``) into memory words."""
        if init is None:
            return []
        try:
            rows = [[int(v) for v in row] for row in init]
        except TypeError:
            raise ParameterTypeError(f"Weight init must be a 2-D sequence of integer codes shaped "
                                     f"({self.c_out}, {self.c_in})") from None
        if len(rows) != self.c_out or any(len(row) != self.c_in for row in rows):
            raise ParameterError(f"Weight init must be shaped ({self.c_out}, {self.c_in}), "
                                 f"not ({len(rows)}, {', '.join(sorted({str(len(r)) for r in rows}))})")
        for row in rows:
            for v in row:
                self._check_code(v)
        return [self._word.const([rows[g * self.parallel + lane] for lane in range(self.parallel)])
                for g in range(self.groups)]

    def _check_code(self, code):
        if not 0 <= code < (1 << self.code_width):
            raise ParameterError(f"Weight code must be in range [0, {(1 << self.code_width) - 1}], not {code!r}")

    def elaborate(self, platform):
        m = Module()
        # One lane (output channel) per write enable bit. The read port may read while weights are
        # written; a word read in a clock that writes is never used (see ``primed``), so the memory is
        # collision-free.
        wr, rd = block_ram(m, "weights", shape=self._word, depth=self.groups, init=self._init, granularity=1)
        m.d.comb += [wr.addr.eq(self.w_addr), wr.data.eq(self.w_data), wr.en.eq(self.w_en)]

        # The output goes through a skid register, so ``o.ready`` drives only flip-flops: the downstream
        # block's ready logic never lengthens a path through this pipeline's enable.
        m.submodules.skid = skid = Skid(self.o.payload.shape())
        wiring.connect(m, skid.o, wiring.flipped(self.o))
        if self._requant is None:
            out = skid.i
        else:
            shift, out_width = self._requant
            m.submodules.requantize = rq = Requantize(self._acc_width, out_width, shift, self.parallel)
            wiring.connect(m, rq.o, skid.i)
            out = rq.i

        # Global-enable pipeline: every stage moves when the last one can hand over its value.
        en = Signal()
        m.d.comb += en.eq(~out.valid | out.ready)

        # The read port holds the word of ``group``. A transfer (``issue``) reads the next group's word,
        # whose address ``group_next`` is a register: the memory's address comes from flip-flops through
        # one 2:1 select, and ``issue`` reaches only the read register's enable. After weight writes
        # (``primed`` low: the previous clock wrote) the port reads ``group`` again; ``primed`` is high
        # again one clock after the last write, when that read is presented.
        group = Signal(range(self.groups))
        group_next = Signal(range(self.groups), init=1 % self.groups)
        primed = Signal()
        m.d.sync += primed.eq(self.w_en == 0)
        issue = Signal()
        # ``last_group`` is a register (``group == groups - 1``), so ``i.ready`` is two gates from
        # flip-flops and does not depend on ``i.valid``.
        last_group = Signal(init=self.groups == 1)
        m.d.comb += [
            issue.eq(en & primed & self.i.valid),
            self.i.ready.eq(en & primed & last_group),
            rd.addr.eq(Mux(primed, group_next, group)),
            rd.en.eq(issue | ~primed),
        ]
        with m.If(issue):
            m.d.sync += [group.eq(group_next), last_group.eq(group_next == self.groups - 1),
                         group_next.eq(Mux(group_next == self.groups - 1, 0, group_next + 1))]

        # Stage 1: per-term operands picked from the window and the weight word, registered.
        # Stage 2: each term computed from its operands, registered.
        valid = Signal()
        valid_operands = Signal()
        with m.If(en):
            m.d.sync += [valid_operands.eq(issue), valid.eq(valid_operands)]
        lo, hi = self.term_range
        lanes = []  # per lane: a list of (register, number of terms it sums)
        for lane in range(self.parallel):
            terms = []
            for n, operands in enumerate(self._operands(self.i.payload, rd.data[lane])):
                regs = []
                for index, operand in enumerate(operands):
                    reg = Signal(operand.shape(), name=f"op{lane}_{n}_{index}")
                    with m.If(en):
                        m.d.sync += reg.eq(operand)
                    regs.append(reg)
                term = Signal(signed(signed_width(lo, hi)), name=f"t{lane}_{n}")
                with m.If(en):
                    m.d.sync += term.eq(self._term(*regs))
                terms.append((term, 1))
            lanes.append(terms)

        # Registered adder tree, one level per clock; each register is exactly as wide as its sum needs.
        for level in range(self.tree_levels):
            next_valid = Signal(name=f"valid_l{level}")
            with m.If(en):
                m.d.sync += next_valid.eq(valid)
            valid = next_valid
            for lane, terms in enumerate(lanes):
                summed = []
                for n in range(0, len(terms), 2):
                    pair = terms[n:n + 2]
                    count = sum(c for _, c in pair)
                    reg = Signal(signed(signed_width(lo * count, hi * count)),
                                 name=f"s{lane}_l{level}_{n // 2}")
                    with m.If(en):
                        m.d.sync += reg.eq(sum(r for r, _ in pair))
                    summed.append((reg, count))
                lanes[lane] = summed

        m.d.comb += out.valid.eq(valid)
        for lane, ((acc, _),) in enumerate(lanes):
            m.d.comb += out.payload[lane].eq(acc)
        return m
