"""The whole-network compiler's plan: a model's weight layers as pipeline stages, each with its block, its
parallelism and its estimated cycles per image and resources (:func:`plan`), folded to balance the stages
within the board's budget (:func:`parse_budget`). :mod:`insitu.tools.network_pipeline` builds a plan into
hardware; :mod:`insitu.tools.designs_network` is the ``insitu build --design network`` front end, and its
notes describe the blocks and the glue.
"""

from dataclasses import dataclass, field

import numpy as np

from ..hdl.params import ParameterError

__all__ = ["Stage", "Plan", "plan", "parse_budget", "PlanError", "ebr_blocks", "spram_blocks", "walk", "MAX_LANES",
           "MAX_PARALLEL", "RAM_LANES"]


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


def spram_blocks(board):
    """SB_SPRAM256KA blocks of ``board``: every iCE40 board of :data:`insitu.boards.BOARDS` is an iCE40UP5K
    (four); the ECP5 has none."""
    return 4 if board.family == "ice40" else 0


#: the lane counts of a dense fully connected layer in SPRAM (:class:`~insitu.hdl.ramweights.RamWeights`)
RAM_LANES = (1, 2, 4, 8)


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
    memory: str = "LUT"             # where its weights live: "LUT" (constants, registers), "BRAM" or "SPRAM"
    why: str = ""
    estimate: callable = None       # value -> dict(cycles=, logic=, dsp=, blocks=[, spram=])

    def cost(self, value=None):
        cost = self.estimate(self.value if value is None else value)
        cost.setdefault("spram", 0)
        return cost

    @property
    def loaded(self):
        """Its weights are written at run time (SPRAM has no initial contents), not built into the bitstream."""
        return self.memory == "SPRAM"

    @property
    def load_bytes(self):
        """Bytes of its weights the pipeline's ``load`` stream writes (0 unless :attr:`loaded`)."""
        return self.cost().get("load_bytes", 0)


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
            for key in ("logic", "dsp", "blocks", "spram"):
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
                         "block_ram": c["blocks"], "spram": c["spram"], "weight_bits": s.weight_bits,
                         "weights_in": s.memory,
                         "why": s.why})
        return rows

    def format(self):
        unit = "LC" if self.family == "ice40" else "LUT"
        head = f"{'layer':8} {'method':10} {'block':23} {'parallel':11} {'cycles/img':>10} {unit:>6} {'DSP':>4} " \
               f"{'BRAM':>5} {'SPRAM':>5} {'weight bits':>11}  weights in"
        lines = [head]
        for r in self.table():
            lines.append(f"{r['layer']:8} {r['method']:10} {r['block']:23} {r['parallelism']:11} "
                         f"{r['cycles_per_image']:>10,} {r['logic']:>6,} {r['dsp']:>4} {r['block_ram']:>5} "
                         f"{r['spram']:>5} {r['weight_bits']:>11,}  {r['weights_in']}: {r['why']}")
        g = self.glue
        lines.append(f"{'glue':8} {'':10} {'windows/pool/…':23} {'':11} {'':>10} {g['logic']:>6,} {g['dsp']:>4} "
                     f"{g['blocks']:>5}")
        t = self.totals()
        spram = f", {t['spram']} SPRAM" if t["spram"] or self.budget.get("spram") else ""
        spram_budget = f", {self.budget.get('spram', 0)} SPRAM" if spram else ""
        lines.append(f"total: ~{t['logic']:,} {unit}, {t['dsp']} DSP, {t['blocks']} block RAMs{spram} (budget "
                     f"{self.budget['logic']:,} {unit}, {self.budget['dsp']} DSP, {self.budget['blocks']} block RAMs"
                     f"{spram_budget}); slowest stage {self.cycles:,} cycles/image → {self.fps:,.0f} images/s at "
                     f"{self.frequency / 1e6:g} MHz")
        if any(s.loaded for s in self.stages):
            lines.append(f"weights loaded at run time: {', '.join(s.layer for s in self.stages if s.loaded)} "
                         f"({self.load_bytes:,} bytes, a byte per clock)")
        return "\n".join(lines)

    @property
    def load_bytes(self):
        """Bytes the pipeline's ``load`` stream takes before the first image (its SPRAM layers' weights)."""
        return sum(s.load_bytes for s in self.stages)
        return "\n".join(lines)


def parse_budget(text, board):
    """``lc=N,dsp=N,bram=N,spram=N`` (``lut=`` is ``lc=``; each optional) → the budget; defaults are the
    board's DSPs, block RAMs and SPRAMs and 80 % of its logic (room for routing)."""
    logic, _, _ = board.capacity
    budget = {"logic": int(0.8 * logic), "dsp": board.dsp, "blocks": board.blocks, "spram": spram_blocks(board)}
    for part in filter(None, (text or "").split(",")):
        key, _, value = part.partition("=")
        key = {"lc": "logic", "lut": "logic", "dsp": "dsp", "bram": "blocks", "spram": "spram"}.get(key.strip().lower())
        try:
            number = int(value)
        except ValueError:
            number = -1
        if key is None or number < 0:
            raise ParameterError(f"--budget: {part!r} is not lc=N, dsp=N, bram=N or spram=N (non-negative "
                                 f"integers)")
        if key == "spram" and number > spram_blocks(board):
            raise ParameterError(f"--budget: the {board.name} has {spram_blocks(board)} SPRAM blocks, not {number}")
        budget[key] = number
    return budget


# --- estimates ------------------------------------------------------------------------------------------
# Logic in LCs (iCE40) or LUTs (ECP5), fitted to this project's builds (docs/results; the per-layer figures
# of a synthesis that keeps the hierarchy, ``insitu build --design network``):
# - a register bit is one LC on the iCE40 and a third of a LUT on the ECP5 (whose slices pair flip-flops
#   with LUTs);
# - an iCE40 8×8 multiplier in logic is ~145 LC (the lean digits pipeline's DenseMatVecs: 766 LC with two
#   lanes, 364 with one);
# - a MuxConv lane is ~73 LC per input channel on the iCE40 (its conv1 and conv2: 157 and 1,174 LC,
#   windows included) and ~120 LUT on the ECP5.

def _reg(family, bits):
    return bits if family == "ice40" else bits // 3


def _mults(family, count, dsp=False, size=1):
    """``(logic, dsp)`` of ``count`` multipliers of about 8×4 bits times ``size`` (a lane's partial
    product): ECP5 synthesis maps each to a MULT18X18D; an iCE40 build maps each to an SB_MAC16 with
    ``dsp`` (``insitu build --dsp``: yosys's ``synth_ice40 -dsp``), else builds it in logic."""
    if family == "ice40" and not dsp:
        return count * 145 * size, 0
    # the logic around a DSP block (partial products' sum, registers): fitted to the lean digits pipeline's
    # DenseMatVecs built with --dsp (fc1 3 lanes: 468 LC, fc2 1 lane: 199)
    return count * (12 if family == "ecp5" else 45), count


#: ``(window control, MuxConv logic per input channel and lane, DenseMatVec control, per lane besides
#: its multipliers)`` per family
_BLOCK_LOGIC = {"ice40": (12, 73, 40, 60), "ecp5": (40, 120, 120, 60)}


def _conv_stage(layer, in_shape, family, act_width, dsp):
    from ..golden import qgp
    c_in, h, w = in_shape
    c_out, k = layer.shape[0], layer.shape[2]
    pad, stride = layer.attrs["padding"], layer.attrs["stride"]
    ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    positions = (h + pad) * (w + pad)
    control, lane, _, _ = _BLOCK_LOGIC[family]
    window = _reg(family, k * k * c_in * act_width) + control
    lines = ebr_blocks(w + pad, (k - 1) * c_in * act_width, family) if k > 1 else 0
    method = layer.method
    if method == "qgp":
        code = qgp.code_width(k)
        bits = c_out * c_in * code

        def estimate(p):
            return {"cycles": max(positions, ho * wo * c_out // p), "logic": window + lane * c_in * p,
                    "dsp": 0, "blocks": lines, "multipliers": 0}
        return Stage(layer.name, "conv2d", method, "MuxConv", "parallel", _divisors(c_out, MAX_PARALLEL), 1, bits,
                     "LUT", f"{code}-bit tap codes, {c_out}x{c_in} kernels", estimate)
    if method == "dense":
        bits = c_out * c_in * k * k * 8

        def estimate(p):
            mults = c_in * k * k * p
            logic, dsps = _mults(family, mults, dsp)
            return {"cycles": max(positions, ho * wo * c_out // p), "logic": window + logic, "dsp": dsps,
                    "blocks": lines, "multipliers": mults}
        return Stage(layer.name, "conv2d", method, "DenseConv", "parallel", _divisors(c_out, MAX_PARALLEL), 1,
                     bits, "LUT", "int8 kernels, one PE word per output channel group", estimate)
    if method in ("smartdeal", "mlg"):
        macs = c_out * c_in * k * k
        bits = layer.entry.storage_bits(layer)
        choices = _divisors(k * k) if method == "mlg" else [1]

        def estimate(lanes):
            mults = lanes + (0 if method == "smartdeal" else 3 * lanes)
            logic, dsps = _mults(family, mults, dsp)
            return {"cycles": max(positions, ho * wo * macs // lanes),
                    "logic": window + 400 + logic + (600 if method == "smartdeal" else 0),
                    "dsp": dsps, "blocks": lines + (2 if method == "smartdeal" else 0), "multipliers": mults}
        return Stage(layer.name, "conv2d", method, f"StreamConv+{'SmartDeal' if method == 'smartdeal' else 'MLG'}",
                     "lanes" if method == "mlg" else "", choices, 1, bits,
                     "BRAM" if method == "smartdeal" else "LUT", "weights decoded per output pixel", estimate)
    if method == "escalate":
        bits = layer.entry.storage_bits(layer)
        decoded = layer.entry.decode(layer)
        bases = decoded.basis.shape[0]

        def estimate(p):
            logic, dsps = _mults(family, bases * k * k, dsp)
            return {"cycles": max(positions, ho * wo * max(c_in * bases, c_out)),
                    "logic": window + 300 + 60 * bases + logic, "dsp": dsps, "blocks": lines,
                    "multipliers": bases * k * k}
        return Stage(layer.name, "conv2d", method, "BasisFirstConv", "", [1], 1, bits, "LUT",
                     f"{bases} basis kernels, sparse power-of-two coefficients", estimate)
    raise PlanError(f"Layer {layer.name}: no pipeline block for {method} convolutions")


def _linear_stage(layer, family, act_width, dsp):
    m, n = layer.shape
    if layer.method == "dense":
        bits = m * n * 8

        def estimate(lanes):
            cycles = n + (m // lanes) * (n + 5 + lanes)
            logic, dsps = _mults(family, 2 * lanes, dsp)       # two half-depth multipliers per lane
            control, per_lane = _BLOCK_LOGIC[family][2:]
            return {"cycles": cycles, "logic": control + per_lane * lanes + logic, "dsp": dsps,
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
            logic, dsps = _mults(family, 12, dsp)
            return {"cycles": cycles, "logic": 2400 + logic, "dsp": dsps,
                    "blocks": ebr_blocks(words, 2 * d.spectrum_width, family) + 6, "multipliers": 12}
        return Stage(layer.name, "linear", "circulant", "CirculantMatVec", "", [1], 1, bits, "BRAM",
                     f"{m // k}x{n // k} blocks of {k}: half spectra", estimate)
    if layer.method in ("smartdeal", "mlg"):
        d = layer.entry.decode(layer)
        bits = layer.entry.storage_bits(layer)
        if layer.method == "smartdeal":
            from ..golden import smartdeal
            lanes, width = 3, d.basis_bits + (d.e_max - d.e_min) + 2           # Pow2Decoder's out_width
            # row reader, shifts, adders; ECP5 fitted to the ULX3S SmartDeal digits pipeline's fc1 (1,484 LUT
            # with its multipliers' 6 DSP)
            decoder = 600 if family == "ice40" else 1260
            memory = ebr_blocks(len(smartdeal.row_words(d)), 32, family)
            where, what = "BRAM", "packed power-of-two rows, decoded 3 weights per clock"
        else:
            bo, bi = d.v.shape[1], d.basis.shape[1]
            tb, ub, vb = ((1 << b) - 1 for b in d.bits)
            lanes, width = 1, (bo * bi * tb * ub * vb).bit_length() + 1         # InSituGenerator's weight_width
            decoder = 25 * bo * (bi + 1) + 100                                  # its small multipliers, adders
            memory = 0
            where, what = "LUT", f"rank {bi}x{bo} factors, generated 1 weight per clock"
        per_row = -(-n // lanes)

        def estimate(_):
            # a lane multiplies act_width × width bits as two partial products of the weight's halves
            logic, dsps = _mults(family, 2 * lanes, dsp, size=max(1, -(-width // 8)))
            return {"cycles": n + m * per_row, "logic": 150 + decoder + logic, "dsp": dsps,
                    "blocks": memory + ebr_blocks(per_row, lanes * act_width, family), "multipliers": lanes}
        return Stage(layer.name, "linear", layer.method,
                     f"StreamMatVec+{'SmartDeal' if layer.method == 'smartdeal' else 'MLG'}", "", [1], 1, bits,
                     where, what, estimate)
    raise PlanError(f"Layer {layer.name}: no pipeline block for {layer.method} fully connected layers "
                    f"(dense, circulant, smartdeal and mlg have one)")


def _ram_linear_stage(layer, family, act_width, dsp, why):
    """A dense fully connected layer as :class:`~insitu.hdl.streammatvec.StreamMatVec` fed by
    :class:`~insitu.hdl.ramweights.RamWeights`: its int8 rows in SPRAM, ``lanes`` weights a clock (a pair of
    lanes per SPRAM), loaded at run time."""
    from ..hdl.ramweights import RamWeights
    m, n = layer.shape
    choices = [lanes for lanes in RAM_LANES if lanes <= n and m * -(-n // lanes) <= RamWeights.SPRAM_WORDS]

    def estimate(lanes):
        per_row = -(-n // lanes)
        # StreamMatVec's two half-depth multipliers per lane and its adders; RamWeights' address, write
        # decode and payload register (the 64x256 matrix at 8 lanes: 553 LUT4, 741 flip-flops with 16 DSPs)
        logic, dsps = _mults(family, 2 * lanes, dsp)
        return {"cycles": n + m * per_row, "logic": 150 + 40 * lanes + logic, "dsp": dsps,
                "blocks": ebr_blocks(per_row, lanes * act_width, family), "spram": -(-lanes // 2),
                "multipliers": lanes, "load_bytes": m * n}
    return Stage(layer.name, "linear", "dense", "StreamMatVec+RamWeights", "lanes", choices, choices[0],
                 m * n * 8, "SPRAM", why, estimate)


def walk(model):
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


def plan(model, board, *, frequency=None, target_fps=None, budget=None, dsp=False):
    """Choose a block and a parallelism per weight layer of ``model`` for ``board``.

    ``dsp``: the iCE40 build maps multipliers to its DSP blocks (``insitu build --dsp``), so they count
    against the budget's DSPs instead of its logic (the ECP5 build always does).

    A dense fully connected layer keeps its int8 rows in block RAM (:class:`~insitu.hdl.DenseMatVec`) unless
    the block RAMs run out and the budget has SPRAM: then, the largest first, such layers move to SPRAM
    (:class:`~insitu.hdl.ramweights.RamWeights` into :class:`~insitu.hdl.streammatvec.StreamMatVec`), whose
    weights the pipeline loads at run time (:attr:`Plan.load_bytes`); the stage's ``why`` says so.

    Starting from the least parallel pipeline, the slowest stage is given its next parallelism while the
    estimated total stays within ``budget`` (:func:`parse_budget`; default: the board's), until
    ``target_fps`` is reached (default: as fast as the budget allows). Raises :class:`PlanError` naming the
    layer and the resource when even the least parallel pipeline does not fit."""
    family = board.family
    frequency = frequency or board.target_mhz * 1e6
    budget = budget or parse_budget("", board)
    act = model.formats["act_width"]
    groups = walk(model)
    stages, glue, glue_cycles = [], {"logic": 60, "dsp": 0, "blocks": 0, "spram": 0}, 0
    for index, (layer, after) in enumerate(groups):
        shape = layer.in_shape
        if layer.kind == "conv2d":
            stage = _conv_stage(layer, shape, family, act, dsp)
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
            stage = _linear_stage(layer, family, act, dsp)
            glue["logic"] += 40
            glue["blocks"] += ebr_blocks(layer.shape[1], act, family)         # the vector FIFO in front
        stages.append(stage)
    result = Plan(model, family, frequency, stages, budget, glue, glue_cycles)

    # with ``dsp`` yosys maps every multiplier to a DSP block, so all of them must fit the DSP budget
    def fits(stages_total):
        over = [key for key in ("logic", "dsp", "blocks", "spram") if stages_total[key] > budget.get(key, 0)]
        return over

    if "blocks" in fits(result.totals()) and budget.get("spram", 0):
        dense = [i for i, s in enumerate(stages) if s.kind == "linear" and s.method == "dense"]
        for i in sorted(dense, key=lambda i: -stages[i].weight_bits):
            held = stages[i].cost()["blocks"]
            ram = _ram_linear_stage(groups[i][0], family, act, dsp,
                                    f"int8 rows written at run time; in block RAM they would take {held} of the "
                                    f"{budget['blocks']} blocks")
            if ram.choices:
                stages[i] = ram
                if "blocks" not in fits(result.totals()):
                    break

    over = fits(result.totals())
    if over:
        parts, hints = [], []
        for key in over:
            worst = max(stages, key=lambda s: s.cost()[key])
            name = {"logic": "LUTs" if family == "ecp5" else "logic cells", "dsp": "DSPs",
                    "blocks": "block RAMs", "spram": "SPRAMs"}[key]
            parts.append(f"{result.totals()[key]:,} {name} against a budget of {budget[key]:,}, most for layer "
                         f"{worst.layer} ({worst.method} {worst.kind}: {worst.cost()[key]:,})")
            if key == "blocks" and worst.method == "dense" and worst.kind == "linear" and family == "ice40" \
                    and not budget.get("spram", 0):
                hints.append(f"Layer {worst.layer}'s {worst.weight_bits:,} weight bits would fit the SPRAM, which "
                             f"this budget does not give: compress {worst.layer}, e.g. --layer-method "
                             f"{worst.layer}=circulant")
            if key == "spram":
                hints.append("Compress a dense fully connected layer, e.g. --layer-method "
                             f"{worst.layer}=circulant")
            if key == "dsp" and family == "ice40" and dsp:
                hints.append("Without --dsp the iCE40 build makes multipliers in logic")
        raise PlanError(f"The least parallel pipeline does not fit the {board.name}: it needs "
                        f"{'; '.join(parts)}{''.join('. ' + h for h in hints)}")
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
