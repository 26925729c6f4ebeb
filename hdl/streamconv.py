"""A convolution PE whose weights arrive on a stream: the consumer of the decode units.

:class:`StreamConv` stores no weights. A weight source (a SmartDeal decoder, an MLG generator, or a
testbench) streams the whole layer's weights once per output pixel, ``lanes`` at a time, in the order
``weights.reshape(c_out, c_in·k²)`` read row by row. The PE multiplies them with the held window and
accumulates, so the weights are regenerated just before use and only their compressed form is stored.
"""

import numpy as np
from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import ParameterError, ParameterTypeError, check_int, check_kernel, signed_width, validated
from .requantize import Requantize
from .select import pick
from .window import window_layout

__all__ = ["StreamConv", "WeightMemory", "source_lanes", "weight_stream_signature"]


def source_lanes(source):
    """``(weight_width, lanes)`` of a weight source: a component whose output stream ``o`` carries an array of
    signed weights per transfer (a decode unit or :class:`WeightMemory`)."""
    try:
        shape = source.signature.members["o"].signature.members["payload"].shape
        if shape.elem_shape.signed:
            return shape.elem_shape.width, shape.length
    except (AttributeError, KeyError):
        pass
    raise ParameterTypeError(f"Weight source must be a component with an output stream 'o' of signed "
                             f"weight lanes, not {source!r}")


def weight_stream_signature(weight_width, lanes):
    """``lanes`` signed ``weight_width``-bit weights per transfer."""
    return stream.Signature(data.ArrayLayout(signed(weight_width), lanes))


class StreamConv(wiring.Component):
    """Convolution PE fed by a weight stream: ``lanes`` multiply-accumulates per clock.

    For every window (one output pixel) it consumes ``c_out · c_in · k² / lanes`` weight transfers and emits
    ``c_out`` results, output channel ``o`` being ``Σ_ci Σ_t weight[o, ci, t] · window[t][ci]`` (the same
    result as :class:`~insitu.hdl.DenseConv`; golden twin :func:`insitu.golden.conv.conv2d`). Weight
    transfer ``n`` of a pixel holds ``weights.reshape(c_out, -1)`` entries ``n·lanes … n·lanes + lanes − 1``
    of the flattened row-major order (output channel, input channel, tap).

    Pipeline: operands selected and registered, products, their sum, the accumulation (and an optional
    :class:`~insitu.hdl.Requantize` stage). Throughput: one weight transfer per clock.

    Parameters
    ----------
    c_in, c_out, k, act_width : int
    source : wiring.Component or None
        A component with an ``o`` port of :func:`weight_stream_signature`; it becomes the submodule
        ``source`` and its width and lane count are used. ``None`` exposes the weight stream as port ``w``.
    weight_width, lanes : int
        Only when ``source`` is ``None``. ``lanes`` divides ``k²``.
    requant : (shift, out_width) or None
    split_select : bool
        Select a block's activations in two registered steps (the input channel's ``k²`` taps, then the
        block's ``lanes``): one more clock of latency and ``k²`` activation registers for a much shorter
        critical path (default). ``False``: one ``c_in·k²/lanes``-way select, for designs that need the
        cells more than the clock (e.g. an SoC peripheral at 12 MHz on the iCE40UP5K).

    Members
    -------
    i : In(stream.Signature(window_layout(c_in, act_width, k)))
    o : Out(stream.Signature(ArrayLayout(signed(w), 1)))
        One output channel per transfer; ``w`` is ``acc_width`` or ``requant[1]``.
    w : In(weight_stream_signature(weight_width, lanes)), only without ``source``.
    """

    parallel = 1

    @validated
    def __init__(self, *, c_in, c_out, k, act_width=8, source=None, weight_width=8, lanes=1, requant=None,
                 split_select=True):
        check_int(c_in, "Input channel count", 1)
        check_int(c_out, "Output channel count", 1)
        check_kernel(k)
        check_int(act_width, "Activation width", 2, 32)
        if source is not None:
            weight_width, lanes = source_lanes(source)
        check_int(weight_width, "Weight width", 2, 32)
        check_int(lanes, "Weight lane count", 1, k * k)
        if (k * k) % lanes:
            raise ParameterError(f"Weight lane count must divide k² ({k * k}), not {lanes!r}")
        self._c_in, self._c_out, self._k, self._act_width = c_in, c_out, k, act_width
        self._source, self._weight_width, self._lanes = source, weight_width, lanes

        a, b = 1 << (act_width - 1), 1 << (weight_width - 1)
        self._term = (-max(a * (b - 1), (a - 1) * b), a * b)
        n = c_in * k * k
        self._acc_width = signed_width(self._term[0] * n, self._term[1] * n)
        if requant is not None:
            if not (isinstance(requant, tuple) and len(requant) == 2):
                raise ParameterTypeError(f"Requantisation must be a (shift, out_width) tuple or None, not {requant!r}")
            check_int(requant[0], "Requantisation shift", 0, self._acc_width - 1)
            check_int(requant[1], "Requantisation output width", 2, 32)
        self._requant = requant
        if not isinstance(split_select, bool):
            raise ParameterTypeError(f"Split select must be a bool, not {split_select!r}")
        self._split = split_select

        out_width = self._acc_width if requant is None else requant[1]
        members = {
            "i": In(stream.Signature(window_layout(c_in, act_width, k))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(out_width), 1))),
        }
        if source is None:
            members["w"] = In(weight_stream_signature(weight_width, lanes))
        super().__init__(members)

    c_in = property(lambda self: self._c_in)
    c_out = property(lambda self: self._c_out)
    k = property(lambda self: self._k)
    act_width = property(lambda self: self._act_width)
    weight_width = property(lambda self: self._weight_width)
    lanes = property(lambda self: self._lanes)
    source = property(lambda self: self._source)
    requant = property(lambda self: self._requant)
    acc_width = property(lambda self: self._acc_width)
    groups = property(lambda self: self._c_out)   # output transfers per window

    @property
    def transfers_per_channel(self):
        return self._c_in * self._k * self._k // self._lanes

    @property
    def cycles_per_window(self):
        """Clocks per output pixel without stalls: one weight transfer per clock."""
        return self._c_out * self.transfers_per_channel

    @property
    def latency(self):
        """Clocks from the last weight transfer of an output channel to its result's ``valid``."""
        return 3 + self._split + (self._lanes > 1) + (self._requant is not None)

    def elaborate(self, platform):
        m = Module()
        if self._source is not None:
            m.submodules.source = self._source
            w = self._source.o
        else:
            w = self.w

        if self._requant is None:
            out = self.o
        else:
            shift, out_width = self._requant
            m.submodules.requantize = rq = Requantize(self._acc_width, out_width, shift, 1)
            wiring.connect(m, rq.o, wiring.flipped(self.o))
            out = rq.i

        en = Signal()
        m.d.comb += en.eq(~out.valid | out.ready)

        # Position of the next weight transfer inside the pixel: output channel and term block, the block
        # counted also as (input channel, block of `lanes` taps inside it).
        # "Last" flags are registers (updated with the counters), so that the window's ready, which
        # reaches into the line buffers, does not also go through the counter comparators.
        per_channel, c_out = self.transfers_per_channel, self._c_out
        lanes, taps = self._lanes, self._k * self._k
        subs = taps // lanes                               # blocks per input channel
        block = Signal(range(per_channel))
        cin, sub = Signal(range(self._c_in)), Signal(range(subs))
        channel = Signal(range(c_out))
        last_block = Signal(init=per_channel == 1)
        last_sub = Signal(init=subs == 1)
        last_channel = Signal(init=c_out == 1)
        issue = Signal()
        m.d.comb += [
            issue.eq(en & self.i.valid & w.valid),
            w.ready.eq(en & self.i.valid),
            self.i.ready.eq(en & w.valid & last_block & last_channel),
        ]
        with m.If(issue):
            with m.If(last_block):
                m.d.sync += [block.eq(0), last_block.eq(per_channel == 1)]
                with m.If(last_channel):
                    m.d.sync += [channel.eq(0), last_channel.eq(c_out == 1)]
                with m.Else():
                    m.d.sync += [channel.eq(channel + 1), last_channel.eq(channel == c_out - 2)]
            with m.Else():
                m.d.sync += [block.eq(block + 1), last_block.eq(block == per_channel - 2)]
            with m.If(last_sub):
                m.d.sync += [sub.eq(0), last_sub.eq(subs == 1), cin.eq(Mux(last_block, 0, cin + 1))]
            with m.Else():
                m.d.sync += [sub.eq(sub + 1), last_sub.eq(sub == subs - 2)]

        # Stage 0 (split_select): the input channel's k² taps and the weights, registered (one c_in-way
        # select). Stage 1: the block's `lanes` taps (a subs-way select), so no c_in·k²/lanes-way select sits
        # in one clock; without split_select, stage 1 selects them straight from the window. Stage 2:
        # products. Stage 3 (lanes > 1): their sum. Stage 4: accumulation.
        window = self.i.payload
        if self._split:
            ctaps = [Signal(signed(self._act_width), name=f"ctap{t}") for t in range(taps)]
            wgt0 = [Signal(signed(self._weight_width), name=f"wgt0_{lane}") for lane in range(lanes)]
            v0, first0, last0, sub0 = Signal(), Signal(), Signal(), Signal(range(subs))
            with m.If(en):
                m.d.sync += [v0.eq(issue), first0.eq(block == 0), last0.eq(last_block), sub0.eq(sub)]
                m.d.sync += [ctaps[t].eq(pick((window[t][c] for c in range(self._c_in)), cin))
                             for t in range(taps)]
                m.d.sync += [wgt0[lane].eq(w.payload[lane]) for lane in range(lanes)]
            operands = [(pick((ctaps[b * lanes + lane] for b in range(subs)), sub0), wgt0[lane])
                        for lane in range(lanes)]
        else:
            v0, first0, last0 = issue, block == 0, last_block
            operands = [(pick((window[(n % subs) * lanes + lane][n // subs] for n in range(per_channel)), block),
                         w.payload[lane]) for lane in range(lanes)]
        act = [Signal(signed(self._act_width), name=f"act{lane}") for lane in range(lanes)]
        wgt = [Signal(signed(self._weight_width), name=f"wgt{lane}") for lane in range(lanes)]
        v1, first1, last1 = Signal(), Signal(), Signal()
        with m.If(en):
            m.d.sync += [v1.eq(v0), first1.eq(first0), last1.eq(last0)]
            for lane, (a, b) in enumerate(operands):
                m.d.sync += [act[lane].eq(a), wgt[lane].eq(b)]
        lo, hi = self._term
        prods = [Signal(signed(signed_width(lo, hi)), name=f"prod{lane}") for lane in range(lanes)]
        v2, first2, last2 = Signal(), Signal(), Signal()
        with m.If(en):
            m.d.sync += [v2.eq(v1), first2.eq(first1), last2.eq(last1)]
            for lane in range(lanes):
                m.d.sync += prods[lane].eq(act[lane] * wgt[lane])
        if lanes > 1:
            total = Signal(signed(signed_width(lo * lanes, hi * lanes)))
            v3, first3, last3 = Signal(), Signal(), Signal()
            with m.If(en):
                m.d.sync += [v3.eq(v2), first3.eq(first2), last3.eq(last2), total.eq(sum(prods))]
        else:
            total, v3, first3, last3 = prods[0], v2, first2, last2

        acc = Signal(signed(self._acc_width))
        acc_next = Signal(signed(self._acc_width))
        m.d.comb += acc_next.eq(Mux(first3, 0, acc) + total)
        with m.If(en):
            m.d.sync += out.valid.eq(v3 & last3)
            with m.If(v3):
                m.d.sync += acc.eq(acc_next)
                with m.If(last3):
                    m.d.sync += out.payload[0].eq(acc_next)
        return m


class WeightMemory(wiring.Component):
    """Uncompressed weights in block RAM, streamed like a decoder's output: the stored-int8 baseline of
    the decode units, feeding the same :class:`StreamConv`.

    Streams ``weights.reshape(c_out, c_in·k²)`` row-major, ``lanes`` per transfer, one transfer per clock,
    the layer repeating.

    Parameters
    ----------
    weights : (c_out, c_in, k, k) array of int
    weight_width : int
    lanes : int
        Divides ``c_in · k²``.
    """

    @validated
    def __init__(self, *, weights, weight_width=8, lanes=3):
        check_int(weight_width, "Weight width", 2, 32)
        check_int(lanes, "Weight lane count", 1)
        try:
            flat = [int(v) for v in np.asarray(weights).reshape(-1)]
            shape = np.asarray(weights).shape
        except (TypeError, ValueError):
            raise ParameterTypeError("Weights must be an array of integers") from None
        if len(shape) != 4 or shape[2] != shape[3]:
            raise ParameterError(f"Weights must be shaped (c_out, c_in, k, k), not {shape}")
        if (shape[1] * shape[2] * shape[3]) % lanes:
            raise ParameterError(f"Weight lane count must divide c_in·k² ({shape[1] * shape[2] * shape[3]}), "
                                 f"not {lanes!r}")
        lo, hi = -(1 << (weight_width - 1)), (1 << (weight_width - 1)) - 1
        if any(not lo <= v <= hi for v in flat):
            raise ParameterError(f"Weights must fit in signed {weight_width}-bit integers [{lo}, {hi}]")
        self._rows = [flat[n:n + lanes] for n in range(0, len(flat), lanes)]
        self._weight_width, self._lanes = weight_width, lanes
        super().__init__({"o": Out(weight_stream_signature(weight_width, lanes))})

    @property
    def stored_bits(self):
        return len(self._rows) * self._lanes * self._weight_width

    #: clocks after reset before the first transfer is offered (the first word is read)
    startup = 1

    @property
    def cycles_per_layer(self):
        """Clocks per pass over the layer with the consumer always ready: one transfer per clock, no gap."""
        return len(self._rows)

    def elaborate(self, platform):
        m = Module()
        layout = data.ArrayLayout(signed(self._weight_width), self._lanes)
        m.submodules.mem = mem = memory.Memory(shape=layout, depth=len(self._rows), init=self._rows)
        rd = mem.read_port()
        addr = Signal(range(len(self._rows)))
        primed = Signal()
        m.d.sync += primed.eq(1)
        take = Signal()
        m.d.comb += take.eq(primed & (~self.o.valid | self.o.ready))
        nxt = Mux(addr == len(self._rows) - 1, 0, addr + 1)
        m.d.comb += rd.addr.eq(Mux(take, nxt, addr))
        with m.If(take):
            m.d.sync += addr.eq(nxt)
        # The read port is one clock behind its address: hold its data in the output register.
        with m.If(~self.o.valid | self.o.ready):
            m.d.sync += [self.o.valid.eq(take), self.o.payload.eq(rd.data)]
        return m
