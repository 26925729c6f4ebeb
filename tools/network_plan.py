"""The whole-network compiler's plan: a model's weight layers as pipeline stages, each with its block, its
parallelism and its estimated cycles per image and resources (:func:`plan`), folded to balance the stages
within the board's budget (:func:`parse_budget`). :mod:`insitu.tools.network_pipeline` builds a plan into
hardware; :mod:`insitu.tools.designs_network` is the ``insitu build --design network`` front end, and its
notes describe the blocks and the glue.
"""

from dataclasses import dataclass

import numpy as np

from ..hdl.params import ParameterError
from .network_stages import (GLUE_SCALE, MAX_LANES, MAX_PARALLEL, RAM_LANES, PlanError, Stage, conv_stage,
                             ebr_blocks, linear_stage, ram_linear_stage, reg_bits, spram_blocks)

__all__ = ["Stage", "Plan", "plan", "parse_budget", "PlanError", "ebr_blocks", "spram_blocks", "walk", "MAX_LANES",
           "MAX_PARALLEL", "RAM_LANES"]


@dataclass
class Plan:
    model: object
    family: str
    frequency: float
    stages: list
    budget: dict
    glue: dict                      # estimated resources of the stages between blocks
    glue_cycles: int = 0            # cycles per image of the slowest of them (a Flatten: 2 per value)
    dsp: bool = False               # the iCE40 build maps multipliers to DSP blocks (the ECP5's always does)

    @property
    def multipliers_in_logic(self):
        """The build makes multipliers in logic (an iCE40 without ``--dsp``)."""
        return self.family == "ice40" and not self.dsp

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
            stage = conv_stage(layer, shape, family, act, dsp)
            c, h, w = layer.out_shape
            glue["logic"] += 30 + reg_bits(family, c * act) + 8 * c          # requantise, gather
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
            stage = linear_stage(layer, family, act, dsp)
            glue["logic"] += 40
            glue["blocks"] += ebr_blocks(layer.shape[1], act, family)         # the vector FIFO in front
        stages.append(stage)
    glue["logic"] = round(glue["logic"] * GLUE_SCALE[family])
    result = Plan(model, family, frequency, stages, budget, glue, glue_cycles, dsp)

    # with ``dsp`` yosys maps every multiplier to a DSP block, so all of them must fit the DSP budget
    def fits(stages_total):
        over = [key for key in ("logic", "dsp", "blocks", "spram") if stages_total[key] > budget.get(key, 0)]
        return over

    if "blocks" in fits(result.totals()) and budget.get("spram", 0):
        dense = [i for i, s in enumerate(stages) if s.kind == "linear" and s.method == "dense"]
        for i in sorted(dense, key=lambda i: -stages[i].weight_bits):
            held = stages[i].cost()["blocks"]
            ram = ram_linear_stage(groups[i][0], family, act, dsp,
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
            if key == "logic" and worst.method == "dense":
                hints.append(f"Compress layer {worst.layer}, e.g. insitu train --layer-method {worst.layer}="
                             f"{'qgp' if worst.kind == 'conv2d' else 'circulant'}"
                             + ("; or put its multipliers in DSPs with --dsp" if family == "ice40" and not dsp
                                and worst.cost()["multipliers"] <= budget.get("dsp", 0) else ""))
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
