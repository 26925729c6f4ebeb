"""``insitu bench escalate``: ESCALATE basis-first against SmartDeal decode-then-convolve and stored int8, on the
same layer (a Gaussian 3×3 layer from the seed), same run.

Rows per board: ``escalate-conv`` (:class:`~insitu.hdl.BasisFirstConv`), ``smartdeal-conv`` (SmartDeal rows
decoded into a :class:`~insitu.hdl.streamconv.StreamConv`), ``dense-stream-conv`` (the same PE fed by int8
weights in block RAM). Weight bits are counted from the packed images; ``LC·clocks/pixel`` is the area-time
product, the fair comparison when the designs run at different output rates.
"""

import dataclasses

from . import designs
from .bench import GAUSSIAN_LAYER, layer_rows, write_bench
from .report import format_table

__all__ = ["bench_escalate", "format_bench_escalate", "escalate_runs"]


def escalate_runs(escalate):
    """The three (design, params) pairs for one layer: shared fields come from the ESCALATE parameters."""
    shared = {f.name: getattr(escalate, f.name) for f in dataclasses.fields(designs.StreamConvParams)}
    return [("escalate-conv", escalate.resolved()),
            ("smartdeal-conv", designs.SmartDealConvParams(**shared, group_size=escalate.c_out).resolved()),
            ("dense-stream-conv", designs.DenseStreamConvParams(**shared, lanes=3).resolved())]


def bench_escalate(escalate, boards, *, json_path, synth_opts="", build_root="build/bench", progress=print):
    runs = escalate_runs(escalate)                     # every parameter checked before the first build
    rows = []
    for _, design, params, row in layer_rows(runs, boards, synth_opts, build_root, progress):
        bits, clocks = row.get("weight_bits"), row.get("clocks_per_output_pixel")
        row["int8_over_stored"] = round(row["dense_int8_weight_bits"] / bits, 2) if bits else None
        row["lc_clocks_per_pixel"] = row["lc"] * clocks if row.get("lc") and clocks else None
        row["mpixels_per_second"] = (round(row["fmax_mhz"] / clocks, 3)
                                     if row.get("fmax_mhz") and clocks else None)
        rows.append(row)
    return write_bench("escalate", runs, synth_opts, rows, json_path, layer=GAUSSIAN_LAYER)


def format_bench_escalate(result):
    return format_table(
        ["board", "design", "weight bits", "int8/stored", "rel. error", "LC/LUT", "DSP", "BRAM", "fmax MHz", "met",
         "clocks/pixel", "LC·clocks/pixel", "Mpixel/s"],
        [(r["board"], r["design"], r.get("weight_bits"), r.get("int8_over_stored"), r.get("relative_error"),
          f"{r['lc']}{'' if r['fits'] else ' (no fit)'}", r["dsp"], r["bram"], r["fmax_mhz"],
          {True: "yes", False: "NO", None: "-"}[r["timing_met"]], r.get("clocks_per_output_pixel"),
          r.get("lc_clocks_per_pixel"), r.get("mpixels_per_second")) for r in result["rows"]])
