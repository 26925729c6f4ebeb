"""``insitu bench circulant``: CirculantMatVec against a dense int8 matrix-vector baseline, same m and n."""

import numpy as np

from ..boards import get_board
from ..hdl.testing import simulate_stream
from . import designs
from .bench import build_row
from .build import write_result
from .report import format_table

__all__ = ["bench_circulant", "format_bench_circulant"]


def cycles_per_matvec(design, params, seed=0):
    """Clocks from reset to the last output of one matrix-vector product, simulated without stalls."""
    dut, _ = designs.instantiate(designs.get_design(design), params)
    x = np.random.default_rng(seed).integers(-128, 128, size=dut.n)
    _, cycles = simulate_stream(dut, [int(v) for v in x], dut.m, deadline=100 * dut.m * dut.n)
    return cycles


def bench_circulant(params, boards, *, lanes=4, json_path, synth_opts="", build_root="build/bench",
                    progress=print):
    dense = designs.DenseMatVecParams(rows=params.rows, cols=params.cols, lanes=lanes, seed=params.seed)
    runs = [("circulant", params), ("densematvec", dense)]
    progress("Simulating one matrix-vector product of each design ...")
    cycles = {design: cycles_per_matvec(design, p) for design, p in runs}
    rows = []
    for board in boards:
        get_board(board)
        for design, p in runs:
            row = build_row(board, design, p, synth_opts, build_root, progress)
            row["cycles_per_matvec"] = cycles[design]
            for key in ("kernel_ops_per_clock", "lc_per_kernel_op_per_clock", "synth_lut4_per_kernel_op_per_clock"):
                row.pop(key, None)
            rows.append(row)
    result = {"format": "insitu-bench/1", "bench": "circulant",
              "parameters": {**params.__dict__, "dense_lanes": lanes}, "synth_opts": synth_opts, "rows": rows}
    write_result(json_path, result)
    return result


def format_bench_circulant(result):
    return format_table(
        ["board", "design", "weight bits", "LC/LUT", "DSP", "BRAM", "fmax MHz", "met", "cycles/matvec"],
        [(r["board"], r["design"], r.get("weight_bits"), f"{r['lc']}{'' if r['fits'] else ' (no fit)'}",
          r["dsp"], r["bram"], r["fmax_mhz"], {True: "yes", False: "NO", None: "-"}[r["timing_met"]],
          r["cycles_per_matvec"]) for r in result["rows"]])
