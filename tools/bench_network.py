"""``insitu bench network``: one model three ways on each board, from real builds and compiled simulations.

* the whole-network pipeline (``insitu build --design network``; images through its compiled simulation);
* the RISC-V SoC with the firmware runtime and peripherals for the model's layers (``insitu build --design
  soc --model``), accelerator path: the layers with a peripheral on it;
* the same SoC, software path: every layer on the CPU.

Images per second and latency are compute only, at the clock each build reaches (its target, or the
achieved fmax when timing fails); the SoC's UART is left out (``insitu run`` measures the link). The SoC
paths run ``soc_images`` images of the test split in its compiled simulation (cycles per image vary little
between images); the pipeline runs every image.
"""

import dataclasses
from pathlib import Path

from .build import BuildError, build, write_json_atomic
from .provenance import provenance

__all__ = ["bench_network", "format_bench_network"]


def _clock(report):
    achieved = min((c["achieved_mhz"] for c in report["clocks"]), default=None)
    target = report["target_mhz"]
    return target if report["timing_met"] or achieved is None else achieved


def _resources(report, family):
    used = report["resources"]

    def get(name):
        value = used.get(name)
        return value.get("used") if isinstance(value, dict) else value
    return {"logic": get("LC" if family == "ice40" else "LUT"), "dsp": get("DSP"), "bram": get("BRAM")}


def bench_network(params, boards, *, json_path, build_root="build/bench", soc_images=20, synth_opts="",
                  progress=print):
    from ..boards import get_board
    from ..golden import datasets, modelfile, network
    from ..hdl.params import ParameterError
    from .deploy import run_model, sim_transport
    from .designs import get_design
    from .network_sim import run_network
    from .network_plan import parse_budget
    model = modelfile.load(params.model)
    data = datasets.load("digits") if tuple(model.input_shape) == (1, 8, 8) else None
    if data is None:
        raise ParameterError("bench network takes a model of the digits images (1×8×8)")
    x, y = data.x_test, data.y_test
    rows, soc_paths, simulated = [], None, []
    for name in boards:
        board = get_board(name)
        unit = "lc" if board.family == "ice40" else "lut"
        # the pipeline
        try:
            sim = run_network(model, x, labels=y, board=board, target_fps=params.target_fps,
                              budget=parse_budget(params.budget, board), progress=progress)
            report = build(name, "network", params, build_dir=Path(build_root) / f"{name}-network",
                           synth_opts=synth_opts, progress=progress)
            clock = _clock(report)
            rows.append({"board": name, "design": "pipeline", "images": sim["images"],
                         "mismatches": sim["mismatches"], "accuracy": sim["accuracy"],
                         "cycles_per_image": sim["cycles_per_image"], "clock_mhz": clock,
                         "images_per_second": round(clock * 1e6 / sim["cycles_per_image"]),
                         "latency_us": round(sim["latency_cycles"] / clock, 2),
                         **_resources(report, board.family), "logic_unit": unit,
                         "fmax_mhz": min(c["achieved_mhz"] for c in report["clocks"]),
                         "timing_met": report["timing_met"], "weight_bits": sim["weight_bits"],
                         "estimate": sim["estimate"], "plan": sim["plan"],
                         "measured_parts": report["design_info"].get("breakdown")})
        except (ParameterError, BuildError) as error:
            rows.append({"board": name, "design": "pipeline", "error": str(error).splitlines()[0]})
        # the SoC: one build, two paths
        soc_params = get_design("soc").params(model=params.model)
        try:
            report = build(name, "soc", soc_params, build_dir=Path(build_root) / f"{name}-soc-model",
                           synth_opts=synth_opts, progress=progress)
        except (ParameterError, BuildError) as error:
            rows.append({"board": name, "design": "soc", "error": str(error).splitlines()[0]})
            continue
        if soc_paths is None:
            transport = sim_transport(Path(build_root) / "soc-sim", accelerate_for=model, progress=progress)
            try:
                ran = run_model(model, x[:soc_images], transport, labels=y[:soc_images],
                                paths=("software", "accelerator"), progress=progress)
                soc_paths, simulated = ran["paths"], list(ran["peripherals"])
            finally:
                if hasattr(transport, "close"):
                    transport.close()
        clock = _clock(report)
        built = list(report["design_info"].get("peripherals_for_layers") or [])
        for path in ("accelerator", "software"):
            if path == "accelerator" and not built:
                rows.append({"board": name, "design": "soc-accelerator", "error": "no peripheral fits this board "
                             "beside the runtime: every layer runs in software"})
                continue
            p = soc_paths[path]
            rows.append({"board": name, "design": f"soc-{path}", "images": soc_images,
                         "mismatches": p["mismatches"], "accuracy": p.get("accuracy"),
                         "cycles_per_image": round(p["cycles_per_image"], 1), "clock_mhz": clock,
                         "images_per_second": round(clock * 1e6 / p["cycles_per_image"], 1),
                         "latency_us": round(p["cycles_per_image"] / clock, 2),
                         **_resources(report, board.family), "logic_unit": unit,
                         "fmax_mhz": min(c["achieved_mhz"] for c in report["clocks"]),
                         "timing_met": report["timing_met"],
                         "weight_bits": int(sum(network.layer_storage_bits(layer) for layer in model.weight_layers)),
                         "peripherals": built if path == "accelerator" else [],
                         "measured_parts": report["design_info"].get("breakdown"),
                         **({"note": f"cycles simulated with peripherals for {', '.join(simulated)}; the build "
                                     f"has {', '.join(built)}"}
                            if path == "accelerator" and sorted(simulated) != sorted(built) else {})})
    result = {"format": "insitu-bench/1", "bench": "network", "model": Path(params.model).name,
              "parameters": dataclasses.asdict(params), "soc_images": soc_images, "rows": rows,
              "provenance": provenance(inputs=[params.model])}
    write_json_atomic(json_path, result)
    return result


def format_bench_network(result):
    from .report import format_table
    rows = []
    for r in result["rows"]:
        if "error" in r:
            rows.append((r["board"], r["design"], "-", "-", "-", "-", "-", "-", "-", "-", r["error"][:60]))
            continue
        rows.append((r["board"], r["design"], f"{r['images_per_second']:,}", f"{r['latency_us']:,}",
                     f"{r['logic']:,} {r['logic_unit'].upper()}", r["dsp"], r["bram"], f"{r['weight_bits']:,}",
                     f"{r['fmax_mhz']:.1f}", r["mismatches"], r.get("note", "")[:60]))
    return format_table(["board", "design", "images/s", "latency µs", "logic", "DSP", "BRAM", "weight bits",
                         "fmax MHz", "mismatches", "note"], rows)
