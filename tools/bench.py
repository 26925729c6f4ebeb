"""``insitu bench muxconv``: MuxConv against the DenseConv baseline, same parameters, same run."""

from ..boards import get_board
from .build import BuildError, ToolMissing, build, write_result
from .report import format_table

__all__ = ["bench_muxconv", "build_row", "layer_rows", "write_bench"]

#: The layer the decode and ESCALATE benches compress.
GAUSSIAN_LAYER = "Gaussian random 3×3 layer from the seed (no structure to exploit: a worst case)"


def write_bench(bench, runs, synth_opts, rows, json_path, **extra):
    """The result of a bench over ``runs`` (``(design, params)`` pairs), written to ``json_path``."""
    result = {"format": "insitu-bench/1", "bench": bench,
              "parameters": {design: params.__dict__ for design, params in runs}, "synth_opts": synth_opts,
              **extra, "rows": rows}
    write_result(json_path, result)
    return result


def _lc(report_resources):
    r = report_resources.get("LC") or report_resources.get("LUT")
    return r["used"] if r else None


def build_row(board, design, params, synth_opts, build_root, progress):
    row = {"board": board, "design": design}
    try:
        report = build(board, design, params, synth_opts=synth_opts,
                       build_dir=f"{build_root}/{board}-{design}", progress=progress)
    except ToolMissing:
        raise
    except BuildError as error:
        # Typically the dense baseline not fitting the device: keep the synthesised size.
        row.update(error.design_info)
        cells = error.synth_cells
        # nextpnr packs before it places: its LC count is like-for-like with a fitting design's.
        packed = error.packed.get("ICESTORM_LC", error.packed.get("TRELLIS_COMB"))
        lc, source = ((packed["used"], "nextpnr packing (did not fit)") if packed else
                      (cells.get("SB_LUT4", cells.get("LUT4")), "synthesised LUT4 (did not fit)"))
        summary = str(error).splitlines()[0]
        progress(f"  {design} on {board} did not build: {summary}")
        row.update(fits=False, error=summary, lc=lc, lc_source=source,
                   dsp=cells.get("SB_MAC16", cells.get("MULT18X18D", 0)),
                   bram=cells.get("SB_RAM40_4K", cells.get("DP16KD", 0)), fmax_mhz=None, timing_met=None)
    else:
        res = report["resources"]
        row.update(report["design_info"])
        cells = report["synth_cells"]
        row.update(fits=True, lc=_lc(res), lc_source="place and route", dsp=res["DSP"]["used"],
                   bram=res["BRAM"]["used"], fmax_mhz=min(c["achieved_mhz"] for c in report["clocks"]),
                   target_mhz=report["target_mhz"], timing_met=report["timing_met"],
                   bitstream_sha256=report["bitstream"]["sha256"])
    # Synthesised LUT4s are known for every row, fitting or not: the like-for-like comparison.
    row["synth_lut4"] = cells.get("SB_LUT4", cells.get("LUT4"))
    kops = row.get("kernel_ops_per_clock")
    row["synth_lut4_per_kernel_op_per_clock"] = (round(row["synth_lut4"] / kops, 2)
                                                 if row["synth_lut4"] and kops else None)
    row["lc_per_kernel_op_per_clock"] = round(row["lc"] / kops, 2) if row["lc"] and kops else None
    return row



def layer_rows(runs, boards, synth_opts, build_root, progress):
    """``(board, design, params, row)`` for every run on every board (each board checked first), without
    the per-kernel-op ratios: the comparisons of one compressed layer against its baselines."""
    for board in boards:
        get_board(board)
    for board in boards:
        for design, params in runs:
            row = build_row(board, design, params, synth_opts, build_root, progress)
            for key in ("lc_per_kernel_op_per_clock", "synth_lut4_per_kernel_op_per_clock"):
                row.pop(key, None)
            yield board, design, params, row

def bench_muxconv(params, boards, *, json_path, synth_opts="", build_root="build/bench", progress=print):
    """Build MuxConv and DenseConv with identical parameters on each board; write and return the table."""
    params = params.resolved()
    rows = []
    for board in boards:
        get_board(board)
        for design in ("muxconv", "denseconv"):
            rows.append(build_row(board, design, params, synth_opts, build_root, progress))
    def ratio(a, b):
        return round(a / b, 4) if a and b else None

    ratios = {}
    for board in boards:
        mux, dense = (next(r for r in rows if r["board"] == board and r["design"] == d)
                      for d in ("muxconv", "denseconv"))
        ratios[board] = {
            "lc_per_kernel_op_ratio": ratio(mux["lc_per_kernel_op_per_clock"],
                                            dense["lc_per_kernel_op_per_clock"]),
            "synth_lut4_per_kernel_op_ratio": ratio(mux["synth_lut4_per_kernel_op_per_clock"],
                                                    dense["synth_lut4_per_kernel_op_per_clock"]),
            "weight_bits_ratio": ratio(mux.get("weight_bits"), dense.get("weight_bits")),
        }
    result = {"format": "insitu-bench/1", "bench": "muxconv", "parameters": params.__dict__,
              "synth_opts": synth_opts, "rows": rows, "muxconv_vs_dense": ratios}
    write_result(json_path, result)
    return result


def format_bench(result):
    table = format_table(
        ["board", "design", "LC/LUT", "kernel-ops/clk", "LC per kop/clk", "LUT4 (synth)", "DSP", "BRAM", "fmax MHz",
         "met", "weight bits/kernel", "weight bits"],
        [(r["board"], r["design"], f"{r['lc']}{'' if r['fits'] else ' (no fit)'}",
          r["kernel_ops_per_clock"], r["lc_per_kernel_op_per_clock"], r["synth_lut4"], r["dsp"], r["bram"], r["fmax_mhz"],
          {True: "yes", False: "NO", None: "-"}[r["timing_met"]], r["weight_bits_per_kernel"], r["weight_bits"])
         for r in result["rows"]])
    lines = [table, ""]
    for board, r in result["muxconv_vs_dense"].items():
        lines.append(f"{board}: MuxConv/DenseConv per kernel-op/clock: LCs/LUTs {r['lc_per_kernel_op_ratio']}, "
                     f"synthesised LUT4s {r['synth_lut4_per_kernel_op_ratio']}; "
                     f"weight bits {r['weight_bits_ratio']}")
    return "\n".join(lines)
