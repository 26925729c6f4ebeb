"""The whole-network compiler's stages: one weight layer's block, its parallelism choices and its estimated
cycles per image and resources (:class:`Stage`), made per layer kind and method by the estimate functions
below, fitted to this project's builds. :mod:`insitu.tools.network_plan` chooses among them.
"""

from dataclasses import dataclass, field

from ..hdl.params import ParameterError

__all__ = ["Stage", "PlanError", "ebr_blocks", "spram_blocks", "MAX_LANES", "MAX_PARALLEL", "RAM_LANES",
           "conv_stage", "linear_stage", "ram_linear_stage", "GLUE_SCALE", "reg_bits"]

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


# --- estimates ------------------------------------------------------------------------------------------
# Logic in LCs (iCE40) or LUTs (ECP5), fitted to this project's builds (docs/results; the per-layer figures
# of a synthesis that keeps the hierarchy, ``insitu build --design network``):
# - a register bit is one LC on the iCE40 and a third of a LUT on the ECP5 (whose slices pair flip-flops
#   with LUTs);
# - an iCE40 8×8 multiplier in logic is ~145 LC (the lean digits pipeline's DenseMatVecs: 766 LC with two
#   lanes, 364 with one);
# - a MuxConv lane is ~73 LC per input channel on the iCE40 (its conv1 and conv2: 157 and 1,174 LC,
#   windows included) and ~120 LUT on the ECP5;
# - a DenseConv tap is a full 8×8 product into a k²-input adder tree, twice a DenseMatVec lane's half-depth
#   product (the QGP digits model's int8 conv1, 9 taps: 2,416 LC in logic on the iCE40, 319 LUT with 9
#   MULT18X18D on the ECP5);
# - the glue's stages measure more than the sum of their parts below, by the skid registers, small FIFOs
#   and registered counters that close timing between blocks: :data:`GLUE_SCALE`.

#: the glue's measured logic over its sum of parts (the digits pipelines: iCE40 lean 975 LC of 698, QGP
#: 1,122 of 698, mixed 1,115 of 698; ECP5 QGP 1,074 LUT of 569, lean with the link 1,059 of 569, SmartDeal
#: 1,233 of 629)
GLUE_SCALE = {"ice40": 1.4, "ecp5": 1.9}


def reg_bits(family, bits):
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


def conv_stage(layer, in_shape, family, act_width, dsp):
    from ..golden import qgp
    c_in, h, w = in_shape
    c_out, k = layer.shape[0], layer.shape[2]
    pad, stride = layer.attrs["padding"], layer.attrs["stride"]
    ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    positions = (h + pad) * (w + pad)
    control, lane, _, _ = _BLOCK_LOGIC[family]
    window = reg_bits(family, k * k * c_in * act_width) + control
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
            logic *= 2                                          # full 8×8 products and their adder tree
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


def linear_stage(layer, family, act_width, dsp):
    m, n = layer.shape
    if layer.method == "dense":
        bits = m * n * 8

        # DenseMatVec.cycles_per_vector: its pipeline drains in 5 clocks, 6 with multipliers in logic (4 slices)
        drain = 6 if family == "ice40" and not dsp else 5

        def estimate(lanes):
            cycles = n + (m // lanes) * (n + drain + lanes)
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


def ram_linear_stage(layer, family, act_width, dsp, why):
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
