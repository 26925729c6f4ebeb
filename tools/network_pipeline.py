"""The whole-network pipeline: a :class:`~insitu.tools.network_plan.Plan` elaborated into one streaming
circuit (:class:`NetworkPipeline`, :func:`build_pipeline`); :mod:`insitu.tools.network_sim` runs it in the
compiled simulation. The notes of :mod:`insitu.tools.designs_network` describe its blocks, glue and FIFOs.
"""

import numpy as np
from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..hdl.skid import Skid
from ..hdl.streamconv import source_lanes
from .network_plan import plan, walk

__all__ = ["NetworkPipeline", "LoadFirst", "build_pipeline", "arrival_order", "weight_image"]


def arrival_order(c, h, w):
    """The column (of the golden ``(channel, row, column)`` flatten) of each value of a ``c × h × w`` feature
    map in the order the pipeline delivers it: ``(row, column, channel)``."""
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def weight_image(model, layers):
    """The bytes a pipeline's ``load`` stream takes for ``model``'s dense fully connected ``layers`` (by
    name, the plan's SPRAM layers): each one's int8 weights row by row, in layer order, the columns of a
    layer after a multi-channel feature map in :func:`arrival_order` (:attr:`NetworkPipeline.load_image`;
    the host sends them over the link)."""
    image = []
    for index, layer in enumerate(model.layers):
        if layer.name not in layers:
            continue
        if layer.kind != "linear" or layer.method != "dense":
            raise ValueError(f"Layer {layer.name} is not a dense fully connected layer")
        codes = layer.data["codes"].astype(int)
        for before in reversed(model.layers[:index]):          # the flatten since the last weight layer
            if before.is_weight:
                break
            if before.kind == "flatten" and len(before.in_shape) == 3:
                c, h, w = before.in_shape
                if c > 1 and h * w > 1:
                    codes = codes[:, arrival_order(c, h, w)]
                break
        image.append(bytes(int(v) & 0xFF for v in codes.reshape(-1)))
    missing = set(layers) - {layer.name for layer in model.layers}
    if missing:
        raise ValueError(f"The model has no layer {', '.join(sorted(missing))}")
    return b"".join(image)


class NetworkPipeline(wiring.Component):
    """The whole network as one stream circuit: pixels in, class scores out.

    Members
    -------
    i : In(stream.Signature(pixel_layout(C, act_width)))
        One input pixel (all ``C`` channels, integer input values) per transfer, raster order, images back
        to back.
    o : Out(stream.Signature(scores_layout(width, classes)))
        The ``classes`` scores of each image in order; the last carries the image's class.
    load : In(stream.Signature(8)), only when the plan keeps weights in SPRAM
        The :attr:`load_image` bytes, always ready, one per clock. Until all of them have arrived, ``i`` is
        not ready; then the SPRAM layers restart their weight streams and images flow. Send them again to
        reload (with no image in flight: ``i`` stops at the first byte).
    """

    def __init__(self, the_plan):
        self._plan = the_plan
        self._stages = []          # (name, component) in stream order
        self._loads = []           # (layer, RamWeights, its int8 rows as bytes) in load order
        self._build()
        model = the_plan.model
        first, last = self._stages[0][1], self._stages[-1][1]
        members = {"i": first.signature.members["i"], "o": last.signature.members["o"]}
        if self._loads:
            members["load"] = In(stream.Signature(8))
        super().__init__(members)
        self.classes = model.output_shape[0]

    plan = property(lambda self: self._plan)
    stages = property(lambda self: list(self._stages))

    @property
    def load_image(self):
        """The bytes of the ``load`` stream: each SPRAM layer's int8 weights, row by row, in layer order
        (empty when every weight is in the bitstream). A layer after a feature map has its columns in the
        order the values arrive (as a :class:`~insitu.hdl.DenseMatVec` would hold them); the lane count
        does not change the image (the loader pads each row to whole transfers)."""
        return b"".join(image for _, _, image in self._loads)

    def _add(self, name, component):
        self._stages.append((name, component))
        return component

    def _build(self):
        from ..hdl import CirculantMatVec, Conv2d, DenseMatVec, Requantize
        from ..hdl.network import BiasRelu, Decimate, Flatten, Gather, Pool, Scores, Serialise
        from ..hdl.streammatvec import StreamMatVec
        model, stages = self._plan.model, {s.layer: s for s in self._plan.stages}
        act = model.formats["act_width"]
        fmt = None                   # ("groups", width, lanes, C, H, W) or ("vector", width, n)
        # multipliers in logic: the matrix-vector products in four slices (shorter carry chains), else two
        slices = 4 if self._plan.multipliers_in_logic else 2
        pending = None               # shift of the weight layer whose accumulators are flowing
        for layer, after in walk(model):
            stage = stages[layer.name]
            # into the layer's input format, requantised
            if layer.kind == "conv2d":
                c, h, w = layer.in_shape
                if fmt is not None:
                    _, width, lanes, _, _, _ = fmt
                    self._add(f"{layer.name}_requant", Requantize(width, act, pending, lanes=lanes))
                    if lanes != c:
                        self._add(f"{layer.name}_gather", Gather(width=act, lanes=lanes, groups=c // lanes))
                pe = self._pe(layer, stage, act)
                conv = Conv2d(pe, width=w, height=h, padding=layer.attrs["padding"])
                if fmt is not None:
                    # a skid register: the window generator's ready logic ends at a flip-flop instead of
                    # running back through the requantiser into the previous layer's FIFO
                    self._add(f"{layer.name}_skid", Skid(conv.signature.members["i"].signature.members["payload"].shape))
                self._add(layer.name, conv)
                lanes = pe.parallel
                c_out = layer.shape[0]
                width = pe.signature.members["o"].signature.members["payload"].shape.elem_shape.width
                ho, wo = conv.out_height, conv.out_width
                self._add(f"{layer.name}_fifo", _Fifo(pe.signature.members["o"].signature.members["payload"].shape,
                                                      2 * (c_out // lanes)))
                if layer.attrs["stride"] > 1:
                    s = layer.attrs["stride"]
                    self._add(f"{layer.name}_stride", Decimate(width=width, lanes=lanes, groups=c_out // lanes,
                                                               image_width=wo, image_height=ho, stride=s))
                    ho, wo = (ho - 1) // s + 1, (wo - 1) // s + 1
                fmt = ("groups", width, lanes, c_out, ho, wo)
            else:
                n = layer.shape[1]
                order = None                # the column of each arriving value, when not 0, 1, 2, …
                if fmt is not None:
                    if fmt[0] == "groups":
                        _, width, lanes, c, h, w = fmt
                        self._add(f"{layer.name}_requant", Requantize(width, act, pending, lanes=lanes))
                        if lanes > 1:
                            self._add(f"{layer.name}_serialise", Serialise(width=act, lanes=lanes))
                        if c > 1 and h * w > 1:
                            if layer.method == "dense":     # take the values in arrival order instead
                                order = arrival_order(c, h, w)
                            else:
                                self._add(f"{layer.name}_flatten", Flatten(width=act, channels=c, height=h,
                                                                           image_width=w))
                    else:
                        self._add(f"{layer.name}_requant", Requantize(fmt[1], act, pending))
                if layer.method == "dense":
                    codes = layer.data["codes"].astype(int)
                    if order is not None:
                        codes = codes[:, order]
                    if stage.loaded:
                        from ..hdl.ramweights import RamWeights
                        ram = RamWeights(m=layer.shape[0], n=n, lanes=stage.value)
                        self._loads.append((layer.name, ram, weight_image(model, [layer.name])))
                        block = StreamMatVec(m=layer.shape[0], n=n, act_width=act, source=ram, slices=slices)
                    else:
                        block = DenseMatVec(m=layer.shape[0], n=n, weights=codes, act_width=act,
                                            lanes=stage.value, slices=slices)
                elif layer.method in ("smartdeal", "mlg"):
                    source = self._weight_source(layer, layer.shape[0], lanes=1)
                    block = StreamMatVec(m=layer.shape[0], n=n, act_width=act, source=source,
                                         slices=slices if source_lanes(source)[0] >= slices else 2)
                else:
                    d = layer.entry.decode(layer)
                    block = CirculantMatVec(m=layer.shape[0], n=n, k=d.k, spectra=d.spectra, mid_shift=d.mid_shift,
                                            act_width=act, fft_width=d.fft_width, spectrum_width=d.spectrum_width)
                # it takes a whole vector, then computes: a vector of room in front lets the layers before
                # it deliver the next one meanwhile
                self._add(f"{layer.name}_fifo", _Fifo(signed(act), n))
                self._add(layer.name, block)
                width = block.signature.members["o"].signature.members["payload"].shape.width
                fmt = ("groups", width, 1, layer.shape[0], 1, 1)
            # bias, relu and pooling on the accumulators
            _, width, lanes, c, h, w = fmt
            bias = layer.data["bias_q"].astype(int).tolist() if "bias_q" in layer.data else None
            relu_now = bool(after) and after[0].kind == "relu"
            if bias is not None or relu_now:
                b = self._add(f"{layer.name}_bias", BiasRelu(width=width, lanes=lanes, groups=c // lanes, bias=bias,
                                                              relu=relu_now))
                width = b.out_width
            for a in after[1 if relu_now else 0:]:
                if a.kind == "relu":
                    self._add(a.name, BiasRelu(width=width, lanes=lanes, groups=c // lanes, relu=True))
                elif a.kind == "pool":
                    k = a.attrs["k"]
                    pool = Pool(width=width, lanes=lanes, groups=c // lanes, image_width=w, image_height=h, k=k,
                                mode="max" if a.attrs["mode"] == "max" else "sum")
                    # registers on both sides: a three-entry FIFO in front (its valid and ready are
                    # flip-flops) and a skid behind, so the pool's input decision and its position
                    # counters run from flip-flops, not from the next layer's FIFO back into the previous
                    # layer's
                    self._add(f"{a.name}_in", _Fifo(pool.signature.members["i"].signature.members["payload"].shape, 3))
                    self._add(a.name, pool)
                    self._add(f"{a.name}_out", Skid(pool.signature.members["o"].signature.members["payload"].shape))
                    width, h, w = pool.out_width, h // k, w // k
            fmt = ("groups", width, lanes, c, h, w)
            pending = layer.shift
        _, width, lanes, c, h, w = fmt
        if lanes > 1:
            self._add("scores_serialise", Serialise(width=width, lanes=lanes))
        self._add("scores", Scores(width=width, classes=c * h * w))

    @staticmethod
    def _pe(layer, stage, act):
        from ..golden import conv as golden_conv
        from ..hdl import BasisFirstConv, DenseConv, MuxConv
        c_out, c_in, k = layer.shape[0], layer.shape[1], layer.shape[2]
        if layer.method == "qgp":
            return MuxConv(c_in=c_in, c_out=c_out, k=k, act_width=act, parallel=stage.value,
                           init=layer.data["codes"].astype(int))
        if layer.method == "dense":
            return DenseConv(c_in=c_in, c_out=c_out, k=k, act_width=act, parallel=stage.value,
                             init=golden_conv.pack(layer.data["codes"].astype(int)))
        if layer.method in ("smartdeal", "mlg"):
            from ..hdl.streamconv import StreamConv
            return StreamConv(c_in=c_in, c_out=c_out, k=k, act_width=act,
                              source=NetworkPipeline._weight_source(layer, c_out, lanes=stage.value))
        d = layer.entry.decode(layer)
        return BasisFirstConv(basis=d.basis, coef=d.coef, basis_bits=d.basis_bits, coef_bits=d.coef_bits,
                              mode=d.mode, act_width=act)

    @staticmethod
    def _weight_source(layer, c_out, *, lanes):
        """The decode unit that streams a SmartDeal or MLG layer's weights, row by row."""
        d = layer.entry.decode(layer)
        if layer.method == "smartdeal":
            from ..golden import smartdeal
            from ..hdl.decode import SmartDealWeights
            return SmartDealWeights(words=smartdeal.row_words(d), rows=d.zero.shape[1], c_out=c_out,
                                    group_size=d.group_size, basis=d.basis, basis_bits=d.basis_bits,
                                    exp_range=d.e_max - d.e_min)
        from ..hdl.insitu import InSituGenerator
        return InSituGenerator(basis=d.basis, u=d.u, v=d.v, bits=d.bits, lanes=lanes)

    def elaborate(self, platform):
        m = Module()
        previous = None
        for name, component in self._stages:
            m.submodules[name] = component
            if previous is None:
                if self._loads:
                    loaded = self._loader(m)
                    m.d.comb += [component.i.payload.eq(self.i.payload), component.i.valid.eq(self.i.valid & loaded),
                                 self.i.ready.eq(component.i.ready & loaded)]
                else:
                    wiring.connect(m, wiring.flipped(self.i), component.i)
            else:
                wiring.connect(m, previous.o, component.i)
            previous = component
        wiring.connect(m, previous.o, wiring.flipped(self.o))
        return m

    def _loader(self, m):
        """Route the ``load`` bytes to the SPRAM layers' write ports, each row to its padded place; return
        ``loaded``, set once the last byte is in and the weight streams have restarted."""
        total = len(self.load_image)
        at = Signal(range(total), name="load_at")
        last = Signal(name="load_last", init=total == 1)     # ``at`` is the image's last byte
        written, restart, loaded = Signal(name="load_written"), Signal(name="load_restart"), Signal(name="loaded")
        take = self.load.valid
        m.d.comb += self.load.ready.eq(1)
        offset = 0
        for name, ram, image in self._loads:
            n, width = ram.n, ram.transfers_per_row * ram.lanes
            mine = Signal(name=f"load_{name}")
            col = Signal(range(n), name=f"load_{name}_col")
            addr = Signal(range(ram.m * width), name=f"load_{name}_addr")
            end = offset + len(image) - 1
            # the write is registered: the RAM's port sees flip-flops, not the load stream's valid
            m.d.comb += [mine.eq((at >= offset) & (at <= end)), ram.restart.eq(restart)]
            m.d.sync += [ram.w_addr.eq(addr), ram.w_data.eq(self.load.payload), ram.w_en.eq(take & mine)]
            with m.If(take & mine):
                with m.If(at == end):                   # the layer's last byte: ready for a reload
                    m.d.sync += [col.eq(0), addr.eq(0)]
                with m.Elif(col == n - 1):              # a row's last byte: skip its padding
                    m.d.sync += [col.eq(0), addr.eq(addr + 1 + width - n)]
                with m.Else():
                    m.d.sync += [col.eq(col + 1), addr.eq(addr + 1)]
            offset += len(image)
        m.d.sync += [written.eq(take & last), restart.eq(written)]     # after the last write
        with m.If(take):
            m.d.sync += [at.eq(Mux(last, 0, at + 1)), last.eq(Mux(last, total == 1, at == total - 2)),
                         loaded.eq(0)]
        with m.Elif(restart):
            m.d.sync += loaded.eq(1)
        return loaded


class LoadFirst(wiring.Component):
    """A pipeline with a ``load`` stream (:attr:`NetworkPipeline.load_image`) behind one input stream: the
    first ``len(load_image)`` transfers carry its bytes (in their low 8 bits), every later one a pixel. So
    one stream of words feeds it, as the compiled simulation and the build harness (``--link none``) do.

    ``clock``: the output adds field ``clock``, the clocks since the load finished (32 bits, from 0 in the
    first clock ``i`` could take a pixel), so that a simulation counts the images' clocks alone.

    Members
    -------
    i : In(stream.Signature(max(8, pixel bits)))
    o : Out(stream.Signature(the pipeline's scores layout [+ clock]))
    """

    def __init__(self, pipeline, *, clock=False):
        self._pipeline, self._clock = pipeline, clock
        self._bytes = len(pipeline.load_image)
        pixel = pipeline.signature.members["i"].signature.members["payload"].shape
        self._pixel_bits = pixel.size if isinstance(pixel, data.Layout) else pixel.width
        out = pipeline.signature.members["o"].signature.members["payload"].shape
        self._scores = out
        if clock:
            out = data.StructLayout({**{name: field.shape for name, field in out}, "clock": 32})
        super().__init__({"i": In(stream.Signature(max(8, self._pixel_bits))), "o": Out(stream.Signature(out))})

    pipeline = property(lambda self: self._pipeline)
    plan = property(lambda self: self._pipeline.plan)
    stages = property(lambda self: self._pipeline.stages)
    classes = property(lambda self: self._pipeline.classes)
    load_image = property(lambda self: self._pipeline.load_image)

    def elaborate(self, platform):
        m = Module()
        m.submodules.pipeline = p = self._pipeline
        sent = Signal(range(self._bytes + 1), name="load_sent")
        loading = Signal(init=1)
        m.d.comb += [p.load.payload.eq(self.i.payload[:8]), p.i.payload.eq(self.i.payload[:self._pixel_bits])]
        with m.If(loading):
            m.d.comb += [p.load.valid.eq(self.i.valid), self.i.ready.eq(p.load.ready)]
            with m.If(self.i.valid & p.load.ready):
                m.d.sync += [sent.eq(sent + 1), loading.eq(sent != self._bytes - 1)]
        with m.Else():
            m.d.comb += [p.i.valid.eq(self.i.valid), self.i.ready.eq(p.i.ready)]
        m.d.comb += [self.o.valid.eq(p.o.valid), p.o.ready.eq(self.o.ready)]
        if not self._clock:
            m.d.comb += self.o.payload.eq(p.o.payload)
            return m
        for name, _ in self._scores:
            m.d.comb += self.o.payload[name].eq(p.o.payload[name])
        clock, counting = Signal(32, name="clock"), Signal()
        m.d.comb += self.o.payload.clock.eq(clock)
        with m.If(counting | p.i.ready):     # from the load's end: the weight streams have restarted
            m.d.sync += [clock.eq(clock + 1), counting.eq(1)]
        return m


class _Fifo(wiring.Component):
    """A synchronous FIFO (``amaranth.lib.fifo.SyncFIFOBuffered``) of ``shape`` payloads with stream ports."""

    def __init__(self, shape, depth):
        from amaranth import Shape
        from amaranth.lib import data
        self._layout, self._depth = shape, depth
        self._bits = shape.size if isinstance(shape, data.Layout) else Shape.cast(shape).width
        sig = stream.Signature(shape)
        super().__init__({"i": In(sig), "o": Out(sig)})

    depth = property(lambda self: self._depth)

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=self._bits, depth=self._depth)
        # The skid register in front makes ``i.ready`` a flip-flop, so the stages feeding the FIFO do not
        # chain their ready logic onto its level comparison.
        m.submodules.skid = skid = Skid(self._layout)
        wiring.connect(m, wiring.flipped(self.i), skid.i)
        m.d.comb += [q.w_data.eq(skid.o.payload), q.w_en.eq(skid.o.valid), skid.o.ready.eq(q.w_rdy),
                     self.o.payload.eq(q.r_data), self.o.valid.eq(q.r_rdy), q.r_en.eq(self.o.ready)]
        return m


def build_pipeline(model, board, **options):
    """``(NetworkPipeline, Plan)`` for ``model`` on ``board`` (options as :func:`plan`)."""
    the_plan = plan(model, board, **options)
    return NetworkPipeline(the_plan), the_plan
