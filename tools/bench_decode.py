"""``insitu bench decode``: the SmartDeal and MLG conv layers against stored int8 weights, same layer, same run.

Rows per board:

* ``denseconv``: :class:`~insitu.hdl.DenseConv`, int8 weights in block RAM, a whole output channel per clock
  (``c_in·9`` multipliers), the issue's baseline;
* ``dense-stream-conv``: the same :class:`~insitu.hdl.streamconv.StreamConv` as the decode layers, fed by int8
  weights from block RAM, so only the weight source differs;
* ``smartdeal-conv`` and ``mlg-conv``: the decode units feeding that PE.

Weight bits are counted from the packed images (:func:`insitu.golden.smartdeal.pack`, :func:`insitu.golden.mlg.pack`).
"""

import dataclasses

from . import designs
from .bench import GAUSSIAN_LAYER, layer_rows, write_bench
from .report import format_table

__all__ = ["bench_decode", "format_bench_decode", "decode_runs"]


def decode_runs(smartdeal, mlg):
    """The four (design, params) pairs for one layer: shared fields come from the SmartDeal parameters."""
    shared = {f.name: getattr(smartdeal, f.name) for f in dataclasses.fields(designs.StreamConvParams)}
    mlg = dataclasses.replace(mlg, **shared)
    dense = designs.ConvParams(c_in=smartdeal.c_in, c_out=smartdeal.c_out, k=3, parallel=1,
                               act_width=smartdeal.act_width, width=smartdeal.width, height=smartdeal.height,
                               seed=smartdeal.seed).resolved()
    stream = designs.DenseStreamConvParams(**shared, lanes=3)
    return [("denseconv", dense), ("dense-stream-conv", stream), ("smartdeal-conv", smartdeal), ("mlg-conv", mlg)]


def bench_decode(smartdeal, mlg, boards, *, json_path, synth_opts="", build_root="build/bench", progress=print):
    runs = [(design, params.resolved()) for design, params in decode_runs(smartdeal, mlg)]   # all, before any build
    rows = []
    for _, design, params, row in layer_rows(runs, boards, synth_opts, build_root, progress):
        if design == "denseconv":
            row["weights_per_clock"] = params.c_in * 9 * params.parallel
            row["dense_int8_weight_bits"] = params.c_out * params.c_in * 9 * 8
            row["float32_weight_bits"] = params.c_out * params.c_in * 9 * 32
        bits = row.get("weight_bits")
        row["int8_over_stored"] = round(row["dense_int8_weight_bits"] / bits, 2) if bits else None
        row["float32_over_stored"] = round(row["float32_weight_bits"] / bits, 2) if bits else None
        row["mweights_per_second"] = (round(row["weights_per_clock"] * row["fmax_mhz"], 1)
                                      if row.get("fmax_mhz") else None)
        rows.append(row)
    return write_bench("decode", runs, synth_opts, rows, json_path, layer=GAUSSIAN_LAYER)


def format_bench_decode(result):
    return format_table(
        ["board", "design", "weight bits", "int8/stored", "rel. error", "LC/LUT", "DSP", "BRAM", "fmax MHz", "met",
         "weights/clk", "Mweights/s"],
        [(r["board"], r["design"], r.get("weight_bits"), r.get("int8_over_stored"), r.get("relative_error"),
          f"{r['lc']}{'' if r['fits'] else ' (no fit)'}", r["dsp"], r["bram"], r["fmax_mhz"],
          {True: "yes", False: "NO", None: "-"}[r["timing_met"]], r.get("weights_per_clock"),
          r.get("mweights_per_second")) for r in result["rows"]])
