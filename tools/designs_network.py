"""The whole-network design: a model file compiled into one layer-pipelined streaming circuit.

:func:`plan` turns a :class:`~insitu.golden.network.Model` into stages, one block per weight layer with
the glue between them (:mod:`insitu.hdl.network`), picks each block's parallelism so that the stages are
balanced within the board's resources, and estimates every stage's cycles per image and resources.
:func:`build_pipeline` elaborates a plan into a :class:`NetworkPipeline`: raw pixels in (one transfer per
pixel, the integer input of :func:`~insitu.golden.network.quantise_input`), class scores out, every weight
on chip in its method's stored form. No processor is involved.

Blocks per layer (what the method stores is what the block holds):

=============  ==========  =============================================================================
kind           method      block
=============  ==========  =============================================================================
conv2d         qgp         :class:`~insitu.hdl.MuxConv` in :class:`~insitu.hdl.Conv2d`; ``parallel``
conv2d         dense       :class:`~insitu.hdl.DenseConv` in :class:`~insitu.hdl.Conv2d`; ``parallel``
conv2d         smartdeal   :class:`~insitu.hdl.streamconv.StreamConv` fed by ``SmartDealWeights``
conv2d         mlg         :class:`~insitu.hdl.streamconv.StreamConv` fed by ``InSituGenerator``; ``lanes``
conv2d         escalate    :class:`~insitu.hdl.BasisFirstConv` in :class:`~insitu.hdl.Conv2d`
linear         dense       :class:`~insitu.hdl.DenseMatVec`; ``lanes``
linear         circulant   :class:`~insitu.hdl.CirculantMatVec`
=============  ==========  =============================================================================

Between weight layers: bias and ReLU (:class:`~insitu.hdl.network.BiasRelu`), pooling
(:class:`~insitu.hdl.network.Pool`), requantisation by the previous layer's shift, strided outputs
(:class:`~insitu.hdl.network.Decimate`), and before a fully connected layer the reorder of
:class:`~insitu.hdl.network.Flatten`. The scores leave through :class:`~insitu.hdl.network.Scores`.

Every link is a valid/ready stream and the chain has no forks or joins, so no FIFO depth can deadlock it
(the tests run every pipeline with random stalls on both ends); FIFOs are sized for throughput only:

* after each convolution's PE, ``2 · groups`` transfers: the window generator keeps going while the PE
  emits a pixel's channel groups;
* in front of each fully connected block, one whole input vector (``n`` values, block RAM): the block
  takes a vector, then computes, so without room for the next vector the layers before it would wait
  through every computation. With it, the interval is the slowest stage's, not the sum of two.

A dense fully connected layer after a feature map takes its values in arrival order (its weight columns
permuted at build time); a circulant one needs the ``(channel, row, column)`` order and gets a
:class:`~insitu.hdl.network.Flatten` reorder buffer.
"""

from dataclasses import dataclass, field

import numpy as np
from amaranth import Module, signed
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..hdl.params import ParameterError

__all__ = ["Stage", "Plan", "plan", "build_pipeline", "NetworkPipeline", "parse_budget", "PlanError"]


class PlanError(ParameterError):
    """A model that cannot become a pipeline on the board: the message names the layer and the resource."""


def _divisors(n, cap=None):
    return [d for d in range(1, min(n, cap or n) + 1) if n % d == 0]


#: The widest folding the plan picks. A wider block broadcasts its input to more multipliers and that net
#: sets the clock: measured on the ECP5-85F, fc1 with 64 lanes closed at 71 MHz.
MAX_LANES, MAX_PARALLEL = 16, 4


def ebr_blocks(depth, width, family):
    """Block RAMs for a ``depth × width`` memory: iCE40 EBR (4 kbit, 256×16 … 4096×1), ECP5 DP16KD (18 kbit,
    512×36 … 16384×1); the cheapest aspect ratio."""
    shapes = ([(256, 16), (512, 8), (1024, 4), (2048, 2), (4096, 1)] if family == "ice40" else
              [(512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)])
    return min(-(-depth // d) * -(-width // w) for d, w in shapes)


@dataclass
class Stage:
    """One weight layer's block with the glue after it: what it is, how parallel, and its estimates."""
    layer: str
    kind: str
    method: str
    block: str
    knob: str = ""                  # the parallelism parameter ("parallel", "lanes") or "" when fixed
    choices: list = field(default_factory=lambda: [1])
    value: int = 1
    weight_bits: int = 0
    memory: str = "LUT"             # where its weights live: "LUT" (constants, registers) or "BRAM"
    why: str = ""
    estimate: callable = None       # value -> dict(cycles=, logic=, dsp=, blocks=)

    def cost(self, value=None):
        return self.estimate(self.value if value is None else value)


@dataclass
class Plan:
    model: object
    family: str
    frequency: float
    stages: list
    budget: dict
    glue: dict                      # estimated resources of the stages between blocks
    glue_cycles: int = 0            # cycles per image of the slowest of them (a Flatten: 2 per value)

    @property
    def cycles(self):
        """Cycles per image of the slowest stage: the pipeline's interval without stalls."""
        return max([self.glue_cycles] + [s.cost()["cycles"] for s in self.stages])

    @property
    def fps(self):
        return self.frequency / self.cycles

    def totals(self):
        total = dict(self.glue)
        for s in self.stages:
            for key in ("logic", "dsp", "blocks"):
                total[key] = total.get(key, 0) + s.cost()[key]
        return total

    def table(self):
        """The plan as rows for printing and reports."""
        rows = []
        for s in self.stages:
            c = s.cost()
            rows.append({"layer": s.layer, "method": s.method, "block": s.block,
                         "parallelism": f"{s.knob}={s.value}" if s.knob else "fixed",
                         "cycles_per_image": c["cycles"], "logic": c["logic"], "dsp": c["dsp"],
                         "block_ram": c["blocks"], "weight_bits": s.weight_bits, "weights_in": s.memory,
                         "why": s.why})
        return rows

    def format(self):
        unit = "LC" if self.family == "ice40" else "LUT"
        head = f"{'layer':8} {'method':10} {'block':16} {'parallel':11} {'cycles/img':>10} {unit:>6} {'DSP':>4} " \
               f"{'BRAM':>5} {'weight bits':>11}  weights in"
        lines = [head]
        for r in self.table():
            lines.append(f"{r['layer']:8} {r['method']:10} {r['block']:16} {r['parallelism']:11} "
                         f"{r['cycles_per_image']:>10,} {r['logic']:>6,} {r['dsp']:>4} {r['block_ram']:>5} "
                         f"{r['weight_bits']:>11,}  {r['weights_in']}: {r['why']}")
        g = self.glue
        lines.append(f"{'glue':8} {'':10} {'windows/pool/…':16} {'':11} {'':>10} {g['logic']:>6,} {g['dsp']:>4} "
                     f"{g['blocks']:>5}")
        t = self.totals()
        lines.append(f"total: ~{t['logic']:,} {unit}, {t['dsp']} DSP, {t['blocks']} block RAMs (budget "
                     f"{self.budget['logic']:,} {unit}, {self.budget['dsp']} DSP, {self.budget['blocks']} block RAMs); "
                     f"slowest stage {self.cycles:,} cycles/image → {self.fps:,.0f} images/s at "
                     f"{self.frequency / 1e6:g} MHz")
        return "\n".join(lines)


def parse_budget(text, board):
    """``lc=N,dsp=N,bram=N`` (``lut=`` is ``lc=``; each optional) → the budget; defaults are the board's
    DSPs and block RAMs and 80 % of its logic (room for routing)."""
    logic, _, _ = board.capacity
    budget = {"logic": int(0.8 * logic), "dsp": board.dsp, "blocks": board.blocks}
    for part in filter(None, (text or "").split(",")):
        key, _, value = part.partition("=")
        key = {"lc": "logic", "lut": "logic", "dsp": "dsp", "bram": "blocks"}.get(key.strip().lower())
        try:
            number = int(value)
        except ValueError:
            number = -1
        if key is None or number < 0:
            raise ParameterError(f"--budget: {part!r} is not lc=N, dsp=N or bram=N (non-negative integers)")
        budget[key] = number
    return budget


# --- estimates ------------------------------------------------------------------------------------------
# Logic in LCs (iCE40) or LUTs (ECP5), fitted to this project's builds (docs/results): an iCE40 8×8
# multiplier in logic is ~190 LC, a 16-input MuxConv lane ~120 LC per input channel, a register bit one LC
# on the iCE40 and a third of a LUT on the ECP5 (whose slices pair flip-flops with LUTs).

def _reg(family, bits):
    return bits if family == "ice40" else bits // 3


def _mults(family, count):
    """``(logic, dsp)`` of ``count`` 8×8 multipliers: ECP5 synthesis maps each to a MULT18X18D; the iCE40
    build does not use its DSPs (``-dsp`` is not passed), so they are logic there."""
    return (count * 190, 0) if family == "ice40" else (count * 12, count)


def _conv_stage(layer, in_shape, family, act_width):
    from ..golden import qgp
    c_in, h, w = in_shape
    c_out, k = layer.shape[0], layer.shape[2]
    pad, stride = layer.attrs["padding"], layer.attrs["stride"]
    ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    positions = (h + pad) * (w + pad)
    window = _reg(family, k * k * c_in * act_width) + 40
    lines = ebr_blocks(w + pad, (k - 1) * c_in * act_width, family) if k > 1 else 0
    method = layer.method
    if method == "qgp":
        code = qgp.code_width(k)
        bits = c_out * c_in * code

        def estimate(p):
            return {"cycles": max(positions, ho * wo * c_out // p), "logic": window + 120 * c_in * p,
                    "dsp": 0, "blocks": lines, "multipliers": 0}
        return Stage(layer.name, "conv2d", method, "MuxConv", "parallel", _divisors(c_out, MAX_PARALLEL), 1, bits,
                     "LUT", f"{code}-bit tap codes, {c_out}x{c_in} kernels", estimate)
    if method == "dense":
        bits = c_out * c_in * k * k * 8

        def estimate(p):
            mults = c_in * k * k * p
            logic, dsp = _mults(family, mults)
            return {"cycles": max(positions, ho * wo * c_out // p), "logic": window + logic, "dsp": dsp,
                    "blocks": lines, "multipliers": mults}
        return Stage(layer.name, "conv2d", method, "DenseConv", "parallel", _divisors(c_out, MAX_PARALLEL), 1,
                     bits, "LUT", "int8 kernels, one PE word per output channel group", estimate)
    if method in ("smartdeal", "mlg"):
        macs = c_out * c_in * k * k
        bits = layer.entry.storage_bits(layer)
        choices = _divisors(k * k) if method == "mlg" else [1]

        def estimate(lanes):
            mults = lanes + (0 if method == "smartdeal" else 3 * lanes)
            logic, dsp = _mults(family, mults)
            return {"cycles": max(positions, ho * wo * macs // lanes),
                    "logic": window + 400 + logic + (600 if method == "smartdeal" else 0),
                    "dsp": dsp, "blocks": lines + (2 if method == "smartdeal" else 0), "multipliers": mults}
        return Stage(layer.name, "conv2d", method, f"StreamConv+{'SmartDeal' if method == 'smartdeal' else 'MLG'}",
                     "lanes" if method == "mlg" else "", choices, 1, bits,
                     "BRAM" if method == "smartdeal" else "LUT", "weights decoded per output pixel", estimate)
    if method == "escalate":
        bits = layer.entry.storage_bits(layer)
        decoded = layer.entry.decode(layer)
        bases = decoded.basis.shape[0]

        def estimate(p):
            logic, dsp = _mults(family, bases * k * k)
            return {"cycles": max(positions, ho * wo * max(c_in * bases, c_out)),
                    "logic": window + 300 + 60 * bases + logic, "dsp": dsp, "blocks": lines,
                    "multipliers": bases * k * k}
        return Stage(layer.name, "conv2d", method, "BasisFirstConv", "", [1], 1, bits, "LUT",
                     f"{bases} basis kernels, sparse power-of-two coefficients", estimate)
    raise PlanError(f"Layer {layer.name}: no pipeline block for {method} convolutions")


def _linear_stage(layer, family, act_width):
    m, n = layer.shape
    if layer.method == "dense":
        bits = m * n * 8

        def estimate(lanes):
            cycles = n + (m // lanes) * (n + 5 + lanes)
            logic, dsp = _mults(family, 2 * lanes)       # two half-depth multipliers per lane
            return {"cycles": cycles, "logic": 120 + 60 * lanes + logic, "dsp": dsp,
                    "blocks": ebr_blocks(m // lanes * n, lanes * 8, family) + ebr_blocks(n, act_width, family),
                    "multipliers": lanes}
        return Stage(layer.name, "linear", "dense", "DenseMatVec", "lanes", _divisors(m, MAX_LANES), 1, bits, "BRAM",
                     f"{m}x{n} int8 rows, lanes rows per word", estimate)
    if layer.method == "circulant":
        from ..hdl import CirculantMatVec
        d = layer.entry.decode(layer)
        k = d.k
        probe = CirculantMatVec(m=m, n=n, k=k, spectra=d.spectra, mid_shift=d.mid_shift,
                                spectrum_width=d.spectrum_width, fft_width=d.fft_width)
        cycles, bits = probe.cycles_per_vector, probe.weight_bits
        from ..hdl.params import abandon
        abandon(probe._fwd, probe._inv, probe)      # a probe for its figures, never elaborated
        words = (m // k) * (n // k) * (k // 2 + 1)

        def estimate(_):
            logic, dsp = _mults(family, 12)
            return {"cycles": cycles, "logic": 2400 + logic, "dsp": dsp,
                    "blocks": ebr_blocks(words, 2 * d.spectrum_width, family) + 6, "multipliers": 12}
        return Stage(layer.name, "linear", "circulant", "CirculantMatVec", "", [1], 1, bits, "BRAM",
                     f"{m // k}x{n // k} blocks of {k}: half spectra", estimate)
    raise PlanError(f"Layer {layer.name}: no pipeline block for {layer.method} fully connected layers "
                    f"(dense and circulant have one)")


def _walk(model):
    """Check that ``model`` can be a pipeline; yield ``(weight layer, its input shape, layers after it up to
    the next weight layer)``."""
    weights = model.weight_layers
    if not weights:
        raise PlanError("The model has no weight layer")
    if len(model.output_shape) != 1:
        raise PlanError(f"The network must end in a vector of class scores, not shape {model.output_shape}")
    groups, current = [], None
    for layer in model.layers:
        if layer.is_weight:
            current = [layer, []]
            groups.append(current)
        elif current is None:
            if layer.kind != "flatten":
                raise PlanError(f"Layer {layer.name}: a {layer.kind} layer before the first weight layer has no "
                                f"pipeline stage (it would act on the raw input)")
        else:
            current[1].append(layer)
    for layer, after in groups:
        if layer.kind == "conv2d":
            if layer.attrs["k"] > 1 and layer.attrs["padding"] > layer.attrs["k"] // 2:
                raise PlanError(f"Layer {layer.name}: padding {layer.attrs['padding']} exceeds k // 2")
        for a in after:
            if a.kind == "pool" and a.attrs["stride"] != a.attrs["k"]:
                raise PlanError(f"Layer {a.name}: only non-overlapping pooling (stride = k) has a pipeline "
                                f"stage, not k {a.attrs['k']} stride {a.attrs['stride']}")
    return groups


def plan(model, board, *, frequency=None, target_fps=None, budget=None):
    """Choose a block and a parallelism per weight layer of ``model`` for ``board``.

    Starting from the least parallel pipeline, the slowest stage is given its next parallelism while the
    estimated total stays within ``budget`` (:func:`parse_budget`; default: the board's), until
    ``target_fps`` is reached (default: as fast as the budget allows). Raises :class:`PlanError` naming the
    layer and the resource when even the least parallel pipeline does not fit."""
    family = board.family
    frequency = frequency or board.target_mhz * 1e6
    budget = budget or parse_budget("", board)
    act = model.formats["act_width"]
    groups = _walk(model)
    stages, glue, glue_cycles = [], {"logic": 60, "dsp": 0, "blocks": 0}, 0
    for index, (layer, after) in enumerate(groups):
        shape = layer.in_shape
        if layer.kind == "conv2d":
            stage = _conv_stage(layer, shape, family, act)
            c, h, w = layer.out_shape
            glue["logic"] += 30 + _reg(family, c * act) + 8 * c          # requantise, gather
            for a in after:
                if a.kind == "pool":
                    glue["logic"] += 50 + 4 * c
                    glue["blocks"] += ebr_blocks(w // a.attrs["k"] * c, 30, family)
            follower = groups[index + 1][0] if index + 1 < len(groups) else None
            if any(a.kind == "flatten" for a in after) and follower is not None and follower.method != "dense":
                size = int(np.prod(layer.out_shape))
                after_pool = size // int(np.prod([a.attrs["k"] ** 2 for a in after if a.kind == "pool"]))
                glue["blocks"] += ebr_blocks(after_pool, act, family)
                glue["logic"] += 60
                glue_cycles = max(glue_cycles, 2 * after_pool)
        else:
            stage = _linear_stage(layer, family, act)
            glue["logic"] += 40
            glue["blocks"] += ebr_blocks(layer.shape[1], act, family)         # the vector FIFO in front
        stages.append(stage)
    result = Plan(model, family, frequency, stages, budget, glue, glue_cycles)

    # on the iCE40 the multipliers go to the DSPs (synth -dsp) only if all of them fit there
    def fits(stages_total):
        over = [key for key in ("logic", "dsp", "blocks") if stages_total[key] > budget[key]]
        return over

    over = fits(result.totals())
    if over:
        parts, hint = [], ""
        for key in over:
            worst = max(stages, key=lambda s: s.cost()[key])
            name = {"logic": "LUTs" if family == "ecp5" else "logic cells", "dsp": "DSPs",
                    "blocks": "block RAMs"}[key]
            parts.append(f"{result.totals()[key]:,} {name} against a budget of {budget[key]:,}, most for layer "
                         f"{worst.layer} ({worst.method} {worst.kind}: {worst.cost()[key]:,})")
            if key == "blocks" and worst.method == "dense" and worst.kind == "linear" and family == "ice40":
                hint = (f". {worst.layer}'s {worst.weight_bits:,} weight bits would fit the SPRAM, which a "
                        f"bitstream cannot initialise (a run-time weight load is not supported yet): compress "
                        f"{worst.layer}, e.g. --layer-method {worst.layer}=circulant")
        raise PlanError(f"The least parallel pipeline does not fit the {board.name}: it needs "
                        f"{'; '.join(parts)}{hint}")
    while target_fps is None or result.fps < target_fps:
        slow = max(stages, key=lambda s: s.cost()["cycles"])
        higher = [v for v in slow.choices if v > slow.value]
        if not higher or slow.cost()["cycles"] <= result.glue_cycles:
            break
        old = slow.value
        slow.value = higher[0]
        if fits(result.totals()):
            slow.value = old
            break
    return result


class NetworkPipeline(wiring.Component):
    """The whole network as one stream circuit: pixels in, class scores out.

    Members
    -------
    i : In(stream.Signature(pixel_layout(C, act_width)))
        One input pixel (all ``C`` channels, integer input values) per transfer, raster order, images back
        to back.
    o : Out(stream.Signature(scores_layout(width, classes)))
        The ``classes`` scores of each image in order; the last carries the image's class.
    """

    def __init__(self, the_plan):
        self._plan = the_plan
        self._stages = []          # (name, component) in stream order
        self._build()
        model = the_plan.model
        first, last = self._stages[0][1], self._stages[-1][1]
        super().__init__({"i": first.signature.members["i"], "o": last.signature.members["o"]})
        self.classes = model.output_shape[0]

    plan = property(lambda self: self._plan)
    stages = property(lambda self: list(self._stages))

    def _add(self, name, component):
        self._stages.append((name, component))
        return component

    def _build(self):
        from ..hdl import CirculantMatVec, Conv2d, DenseMatVec, Requantize
        from ..hdl.network import BiasRelu, Decimate, Flatten, Gather, Pool, Scores, Serialise
        model, stages = self._plan.model, {s.layer: s for s in self._plan.stages}
        act = model.formats["act_width"]
        fmt = None                   # ("groups", width, lanes, C, H, W) or ("vector", width, n)
        pending = None               # shift of the weight layer whose accumulators are flowing
        for layer, after in _walk(model):
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
                conv = self._add(layer.name, Conv2d(pe, width=w, height=h, padding=layer.attrs["padding"]))
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
                                order = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
                            else:
                                self._add(f"{layer.name}_flatten", Flatten(width=act, channels=c, height=h,
                                                                           image_width=w))
                    else:
                        self._add(f"{layer.name}_requant", Requantize(fmt[1], act, pending))
                if layer.method == "dense":
                    codes = layer.data["codes"].astype(int)
                    if order is not None:
                        codes = codes[:, order]
                    block = DenseMatVec(m=layer.shape[0], n=n, weights=codes, act_width=act, lanes=stage.value)
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
                    p = self._add(a.name, Pool(width=width, lanes=lanes, groups=c // lanes, image_width=w,
                                               image_height=h, k=k, mode="max" if a.attrs["mode"] == "max" else "sum"))
                    width, h, w = p.out_width, h // k, w // k
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
        d = layer.entry.decode(layer)
        if layer.method == "smartdeal":
            from ..golden import smartdeal
            from ..hdl.decode import SmartDealWeights
            from ..hdl.streamconv import StreamConv
            source = SmartDealWeights(words=smartdeal.row_words(d), rows=d.zero.shape[1], c_out=c_out,
                                      group_size=d.group_size, basis=d.basis, basis_bits=d.basis_bits,
                                      exp_range=d.e_max - d.e_min)
            return StreamConv(c_in=c_in, c_out=c_out, k=k, act_width=act, source=source)
        if layer.method == "mlg":
            from ..hdl.insitu import InSituGenerator
            from ..hdl.streamconv import StreamConv
            source = InSituGenerator(basis=d.basis, u=d.u, v=d.v, bits=d.bits, lanes=stage.value)
            return StreamConv(c_in=c_in, c_out=c_out, k=k, act_width=act, source=source)
        return BasisFirstConv(basis=d.basis, coef=d.coef, basis_bits=d.basis_bits, coef_bits=d.coef_bits,
                              mode=d.mode, act_width=act)

    def elaborate(self, platform):
        m = Module()
        previous = None
        for name, component in self._stages:
            m.submodules[name] = component
            if previous is None:
                wiring.connect(m, wiring.flipped(self.i), component.i)
            else:
                wiring.connect(m, previous.o, component.i)
            previous = component
        wiring.connect(m, previous.o, wiring.flipped(self.o))
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
        m.d.comb += [q.w_data.eq(self.i.payload), q.w_en.eq(self.i.valid), self.i.ready.eq(q.w_rdy),
                     self.o.payload.eq(q.r_data), self.o.valid.eq(q.r_rdy), q.r_en.eq(self.o.ready)]
        return m


def parts(component):
    """The parts of a network build's resource breakdown (:func:`insitu.tools.build.breakdown`), as the
    plan estimates them: each weight layer's block (with a convolution's sliding window), and ``glue``
    for every stage between blocks (requantisation, FIFOs, bias, pooling, reordering, the scores)."""
    blocks = {s.layer for s in component.plan.stages}
    return lambda path: path[0] if path and path[0] in blocks else "glue"


def build_pipeline(model, board, **options):
    """``(NetworkPipeline, Plan)`` for ``model`` on ``board`` (options as :func:`plan`)."""
    the_plan = plan(model, board, **options)
    return NetworkPipeline(the_plan), the_plan


# --- the "network" design of ``insitu build`` ------------------------------------------------------------

from dataclasses import dataclass as _dataclass    # noqa: E402

from .design_params import Params, param           # noqa: E402


@_dataclass(frozen=True)
class NetworkParams(Params):
    model: str = param(None, "model file: the network compiled into one pipeline with every weight on chip",
                       "text")
    target_fps: int = param(None, "images per second to reach at the build clock (default: as fast as the "
                                  "budget allows)")
    budget: str = param(None, "resources the plan may use: lc=N,dsp=N,bram=N (default 80 % of the board's "
                              "logic, all its DSPs and block RAMs)", "text")
    seed: int = param(1, "placement seed", "non-negative")

    def check(self):
        if not self.model:
            raise ParameterError("--design network needs --model FILE")


def network(p, *, frequency, board):
    from ..golden import modelfile
    if board is None:
        from ..boards import get_board
        board = get_board("ulx3s-85f")
    model = modelfile.load(p.model)
    budget = parse_budget(p.budget, board)
    component, the_plan = build_pipeline(model, board, frequency=frequency, target_fps=p.target_fps,
                                         budget=budget)
    return component, {"plan": the_plan.table(), "plan_text": the_plan.format(), "estimate": the_plan.totals(),
                       "estimated_cycles_per_image": the_plan.cycles,
                       "estimated_images_per_second": round(the_plan.fps), "budget": budget}


def describe_network(component, extra):
    model = component.plan.model
    return {"layers": [layer.name for layer in model.weight_layers],
            "methods": sorted({layer.method for layer in model.weight_layers}),
            "weight_bits": int(sum(s.weight_bits for s in component.plan.stages)),
            "dense_int8_weight_bits": int(sum(int(np.prod(layer.shape)) * 8 for layer in model.weight_layers)),
            "stages": [name for name, _ in component.stages]}


class CompiledNetwork:
    """A :class:`NetworkPipeline` in the compiled simulation (:class:`~insitu.soc.compiled_stream.CompiledStream`):
    raw images in, class scores, classes and clocks out."""

    def __init__(self, pipeline, *, progress=None):
        from ..soc.compiled_stream import CompiledStream
        self.pipeline = pipeline
        self.model = pipeline.plan.model
        self._sim = CompiledStream(pipeline, progress=progress)
        self._in = pipeline.signature.members["i"].signature.members["payload"].shape
        self._out = pipeline.signature.members["o"].signature.members["payload"].shape

    def infer(self, images, *, seed=0, stall=0.0):
        """``(scores (n, classes), classes (n,), clocks)`` of raw ``images`` (as the data set gives them),
        with seeded random stalls on both streams."""
        from ..golden import network
        from ..soc.compiled_stream import pack, unpack
        q = network.quantise_input(self.model, images)
        n, classes = len(q), self.pipeline.classes
        if q.ndim == 4:                   # pixels in raster order, all channels in one transfer
            pixels = q.transpose(0, 2, 3, 1).reshape(-1, q.shape[1])
            words = pack(self._in, {str(c): pixels[:, c] for c in range(pixels.shape[1])})
        else:                             # a flattened input: one value per transfer
            words = pack(self._in, q.reshape(-1))
        budget = 1000 + int(n * (4 * self.pipeline.plan.cycles + 2000) / (1 - min(stall, 0.9)))
        out, clocks = self._sim.run(words, n * classes, seed=seed, stall=stall, max_cycles=budget)
        fields = unpack(self._out, out)
        scores = fields["score"].reshape(n, classes)
        last = fields["last"].reshape(n, classes)
        if not (last[:, -1].all() and not last[:, :-1].any()):
            raise RuntimeError("The pipeline's scores lost their image boundaries (last flags out of place)")
        return scores, fields["klass"].reshape(n, classes)[:, -1], clocks


def run_network(model, images, *, labels=None, board, target_fps=None, budget=None, stall=0.0, seed=0,
                progress=None):
    """Run ``images`` through ``model``'s pipeline (planned for ``board``) in the compiled simulation and
    compare every score with :func:`~insitu.golden.network.forward_int`. Returns the report: mismatches,
    accuracy, cycles per image (the interval, images back to back) and latency (one image alone), images/s
    at the plan's clock, and the plan."""
    import time

    from ..golden import network as golden_network
    pipeline, the_plan = build_pipeline(model, board, target_fps=target_fps, budget=budget)
    if progress:
        progress(the_plan.format())
    sim = CompiledNetwork(pipeline, progress=progress)
    _, _, latency = sim.infer(images[:1])
    start = time.monotonic()
    scores, classes, clocks = sim.infer(images, seed=seed, stall=stall)
    seconds = time.monotonic() - start
    want = golden_network.forward_int(model, images)
    bad = np.flatnonzero((scores != want).any(axis=1) | (classes != want.argmax(axis=1)))
    per_image = clocks / len(images)
    report = {
        "design": "network", "board": board.name, "family": board.family, "images": len(images),
        "mismatches": int(len(bad)), "first_mismatches": bad[:10].tolist(),
        "cycles_per_image": round(per_image, 1), "latency_cycles": int(latency),
        "clock_mhz": the_plan.frequency / 1e6,
        "images_per_second_at_clock": round(the_plan.frequency / per_image),
        "estimated_cycles_per_image": the_plan.cycles, "stall": stall,
        "simulated_clocks_per_second": round(clocks / seconds) if seconds else None,
        "plan": the_plan.table(), "estimate": the_plan.totals(),
        "weight_bits": int(sum(s.weight_bits for s in the_plan.stages)),
    }
    if labels is not None:
        report["accuracy"] = round(float((classes == labels).mean()), 4)
        report["golden_accuracy"] = round(float((want.argmax(axis=1) == labels).mean()), 4)
    return report
