"""``insitu bench muxconv``: MuxConv against the DenseConv baseline, same parameters, same run."""

from ..boards import get_board
from .build import BuildError, ToolMissing, build, write_json_atomic
from .report import format_table

__all__ = ["bench_muxconv"]


def _lc(report_resources):
    r = report_resources.get("LC") or report_resources.get("LUT")
    return r["used"] if r else None


def _row(board, design, params, synth_opts, build_root, progress):
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
        luts = cells.get("SB_LUT4", cells.get("LUT4"))
        summary = str(error).splitlines()[0]
        progress(f"  {design} on {board} did not build: {summary}")
        row.update(fits=False, error=summary, lc=luts, lc_source="synthesis",
                   dsp=cells.get("SB_MAC16", cells.get("MULT18X18D", 0)),
                   bram=cells.get("SB_RAM40_4K", cells.get("DP16KD", 0)), fmax_mhz=None, timing_met=None)
    else:
        res = report["resources"]
        row.update(report["design_info"])
        row.update(fits=True, lc=_lc(res), lc_source="place and route", dsp=res["DSP"]["used"],
                   bram=res["BRAM"]["used"], fmax_mhz=min(c["achieved_mhz"] for c in report["clocks"]),
                   target_mhz=report["target_mhz"], timing_met=report["timing_met"],
                   bitstream_sha256=report["bitstream"]["sha256"])
    kops = row.get("kernel_ops_per_clock")
    row["lc_per_kernel_op_per_clock"] = round(row["lc"] / kops, 2) if row["lc"] and kops else None
    return row


def bench_muxconv(params, boards, *, json_path, synth_opts="", build_root="build/bench", progress=print):
    """Build MuxConv and DenseConv with identical parameters on each board; write and return the table."""
    params = params.resolved()
    rows = []
    for board in boards:
        get_board(board)
        for design in ("muxconv", "denseconv"):
            rows.append(_row(board, design, params, synth_opts, build_root, progress))
    ratios = {}
    for board in boards:
        mux, dense = (next(r for r in rows if r["board"] == board and r["design"] == d)
                      for d in ("muxconv", "denseconv"))
        if mux["lc_per_kernel_op_per_clock"] and dense["lc_per_kernel_op_per_clock"]:
            ratios[board] = {
                "lc_per_kernel_op_ratio": round(mux["lc_per_kernel_op_per_clock"]
                                                / dense["lc_per_kernel_op_per_clock"], 4),
                "weight_bits_ratio": round(mux["weight_bits"] / dense["weight_bits"], 4),
            }
    result = {"format": "insitu-bench/1", "bench": "muxconv", "parameters": params.__dict__,
              "synth_opts": synth_opts, "rows": rows, "muxconv_vs_dense": ratios}
    write_json_atomic(json_path, result)
    return result


def format_bench(result):
    table = format_table(
        ["board", "design", "LC/LUT", "kernel-ops/clk", "LC per kop/clk", "DSP", "BRAM", "fmax MHz",
         "met", "weight bits/kernel", "weight bits"],
        [(r["board"], r["design"], f"{r['lc']}{'' if r['fits'] else ' (synth, no fit)'}",
          r["kernel_ops_per_clock"], r["lc_per_kernel_op_per_clock"], r["dsp"], r["bram"], r["fmax_mhz"],
          {True: "yes", False: "NO", None: "-"}[r["timing_met"]], r["weight_bits_per_kernel"], r["weight_bits"])
         for r in result["rows"]])
    lines = [table, ""]
    for board, ratio in result["muxconv_vs_dense"].items():
        lines.append(f"{board}: MuxConv uses {ratio['lc_per_kernel_op_ratio']:.3f}x the dense LCs per "
                     f"kernel-op/clock and {ratio['weight_bits_ratio']:.3f}x its weight bits")
    return "\n".join(lines)
