"""``insitu sweep`` (a grid of builds on dask.distributed) and ``insitu results`` (which committed results
the current sources still produce; ``--update`` runs their recorded commands again, as tasks on the same
engine)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from .errors import CLIError

__all__ = ["add_parsers", "cmd_sweep", "cmd_results", "result_status", "regenerate", "remake_alone"]

RESULTS_DIR = Path("docs") / "results"


def add_parsers(sub):
    p = sub.add_parser("sweep", help="build a grid of designs × parameters × boards × nextpnr seeds on dask")
    p.add_argument("spec", help="sweep spec (JSON; see insitu.tools.sweep)")
    p.add_argument("--scheduler", metavar="ADDR", help="an existing dask scheduler, e.g. tcp://host:8786 "
                   "(default: a LocalCluster on this machine)")
    p.add_argument("--workers", type=int, metavar="N", help="LocalCluster workers (default: the cores)")
    p.add_argument("--cache", metavar="DIR", help="result cache (default ~/.cache/insitu/sweep)")
    p.add_argument("--json", metavar="PATH", default="sweep.json", help="every point (default sweep.json)")
    p.add_argument("--csv", metavar="PATH", help="every point as CSV")
    p.add_argument("--plot", metavar="PATH", help="Pareto plot (PNG): logic cells vs throughput per board")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("results", help="check the committed results against the sources; --update remakes them")
    p.add_argument("--update", action="store_true", help="run the recorded command of every stale result again")
    p.add_argument("--all", action="store_true", help="with --update: every result, stale or not")
    p.add_argument("--rescope", action="store_true", help="for current results that record only the hash of "
                   "all sources (made before results recorded the sources they used): find those sources by "
                   "running the result's command on a small workload (a run or simulation on 2 images), "
                   "without remaking the result")
    p.add_argument("--dir", default=str(RESULTS_DIR), metavar="DIR", help="results directory (default "
                   "docs/results)")
    p.add_argument("--only", action="append", metavar="PATTERN", help="only the results whose file names match "
                   "this pattern (shell style, e.g. 'run-digits-*'; repeat for more)")
    p.add_argument("--skip", action="append", metavar="PATTERN", help="leave out the results whose file names "
                   "match this pattern (repeat for more)")
    p.add_argument("--scheduler", metavar="ADDR", help="an existing dask scheduler (default: a LocalCluster)")
    p.add_argument("--workers", type=int, metavar="N", help="LocalCluster workers (default: the cores)")
    p.set_defaults(func=cmd_results)


def cmd_sweep(args):
    from .build import write_result
    from .report import format_table
    from .sweep import DEFAULT_CACHE, expand, file_params, load_spec, pareto_plot, sweep, write_csv
    if args.workers is not None and args.workers < 1:
        raise CLIError(f"--workers must be a positive integer, not {args.workers}")
    spec = load_spec(args.spec)
    points = expand(spec)
    rows = sweep(points, scheduler=args.scheduler, workers=args.workers, cache_dir=args.cache or DEFAULT_CACHE)
    summary = seed_summary(rows)
    named = sorted({path for p in points for path in file_params(p).values()})
    # the points were built by other processes: the sweep used what each point's process imported (a
    # point cached before points recorded that counts as every source)
    from .provenance import scope
    sources = {}
    for row in rows:
        used = row.pop("sources", None)
        sources = "all" if used is None or sources == "all" else {**sources, **used}
    token = scope.set(sources or "all")
    try:
        write_result(args.json, {"format": "insitu-sweep/1", "spec": spec, "points": rows, "summary": summary},
                     inputs=[args.spec, *named])
    finally:
        scope.reset(token)
    if args.csv:
        write_csv(args.csv, rows)
    if args.plot:
        pareto_plot(args.plot, rows)
    table = [(r["design"], r["board"], json.dumps(r["params"], sort_keys=True)[:40], r["seed"],
              r.get("lc", "-"), r.get("fmax_mhz", "-"), {True: "yes", False: "NO"}.get(r.get("timing_met"), "-"),
              "cached" if r.get("cached") else (r["error"][:60] if "error" in r else "built")) for r in rows]
    print(format_table(["design", "board", "params", "seed", "LC/LUT", "fmax MHz", "met", "result"], table))
    if any(len(g["seeds"]) > 1 for g in summary):
        print()
        print(format_table(["design", "board", "params", "dsp", "seeds", "median MHz", "worst MHz", "target",
                            "met", "closes", "median LC/LUT"],
                           [(g["design"], g["board"], json.dumps(g["params"], sort_keys=True)[:40],
                             "yes" if g["dsp"] else "no", len(g["seeds"]), g["median_mhz"], g["worst_mhz"],
                             g["target_mhz"], f"{g['met']}/{len(g['seeds'])}", "yes" if g["closes"] else "NO",
                             g["median_lc"]) for g in summary]))
        print(f"closes: {CLOSURE}; {sum(g['closes'] for g in summary)} of {len(summary)} close")
    failed = sum("error" in r for r in rows)
    print(f"\n{len(rows)} points, {sum(bool(r.get('cached')) for r in rows)} from the cache, {failed} failed; "
          f"written: {', '.join(p for p in (args.json, args.csv, args.plot) if p)}")


def seed_summary(rows):
    """Per design, parameters, board, clock and synthesis options: the median and worst fmax (and the median
    logic) over the nextpnr seeds that built, and how many met the target."""
    import statistics
    groups = {}
    for r in rows:
        key = json.dumps([r["design"], r["board"], r["params"], r.get("freq"), r.get("dsp")], sort_keys=True)
        groups.setdefault(key, []).append(r)
    summary = []
    for members in groups.values():
        built = [r for r in members if r.get("fmax_mhz") is not None]
        first = members[0]
        summary.append({
            "design": first["design"], "board": first["board"], "params": first["params"], "dsp": first.get("dsp"),
            "seeds": [r["seed"] for r in built], "failed": len(members) - len(built),
            "target_mhz": built[0]["target_mhz"] if built else None,
            "median_mhz": round(statistics.median(r["fmax_mhz"] for r in built), 2) if built else None,
            "worst_mhz": round(min(r["fmax_mhz"] for r in built), 2) if built else None,
            "met": sum(bool(r.get("timing_met")) for r in built),
            "median_lc": statistics.median(r["lc"] for r in built) if built else None})
        g = summary[-1]
        g["closes"] = bool(built) and g["median_mhz"] >= g["target_mhz"] and g["worst_mhz"] >= 0.95 * g["target_mhz"]
    return summary


#: a design closes timing when it meets its target at the median seed and reaches 95 % of it at the worst
CLOSURE = "median ≥ target, worst ≥ 95 % of it"


def _chosen(name, only, skip):
    """Whether the result file ``name`` is among ``--only`` (all when not given) and not among ``--skip``."""
    from fnmatch import fnmatch
    return (not only or any(fnmatch(name, p) for p in only)) and not any(fnmatch(name, p) for p in skip or ())


def result_status(directory):
    """``[(path, reason or None)]`` for every result file in ``directory`` (None: current)."""
    from .provenance import stale
    rows = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            rows.append((path, f"it cannot be read ({error})"))
            continue
        rows.append((path, stale(result)))
    return rows


def _command_for(path):
    """The recorded ``insitu`` arguments that make ``path``, writing to it, building in a directory of its own."""
    result = json.loads(Path(path).read_text())
    argv = ((result.get("provenance") or {}).get("command") or [])[1:]
    if not argv:
        raise CLIError(f"{path} records no command: it cannot be remade (make it once with the insitu command "
                       f"that should produce it)")
    drop = {"--json", "--build-dir"}
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in drop:
            skip = True
        else:
            kept.append(arg)
    if kept[:1] == ["sweep"]:                 # a sweep builds in directories of its own, per point
        return [*kept, "--json", str(path)]
    return [*kept, "--json", str(path), "--build-dir", str(Path("build") / "results" / Path(path).stem)]


def _recorded_seconds(path, unknown=600.0):
    """How long ``path`` took to make last time, as it records it (``unknown`` when it does not)."""
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return unknown
    for key in ("wall_seconds", "seconds"):
        if isinstance(result.get(key), (int, float)):
            return float(result[key])
    points = [p.get("seconds") for p in result.get("points", []) if isinstance(p, dict)]     # a sweep's builds
    if any(isinstance(t, (int, float)) for t in points):
        return float(sum(t for t in points if isinstance(t, (int, float))))
    return unknown


def _minutes(seconds):
    return "?" if seconds is None else f"{seconds / 60:.1f} min"


def _cost(paths, workers=None):
    """What remaking ``paths`` took last time, as they record it: minutes one at a time, and on ``workers``
    parallel workers (default: this machine's cores) in the order ``--update`` runs them (longest first,
    each to the worker free first; those that measure speed after them, alone)."""
    workers = workers or os.cpu_count() or 1
    times = {p: _recorded_seconds(p, None) for p in paths}
    recorded = [t for t in times.values() if t is not None]
    unknown = len(paths) - len(recorded)
    alone = [p for p in paths if times[p] is not None and _command_word(p) in ALONE]
    loads = [0.0] * workers
    for t in sorted((times[p] for p in paths if times[p] is not None and p not in alone), reverse=True):
        loads[loads.index(min(loads))] += t
    wall = max(loads) + sum(times[p] for p in alone)
    return (f"about {sum(recorded) / 60:,.0f} minutes one at a time, {wall / 60:,.0f} on {workers} worker{'s' if workers > 1 else ''}, "
            f"as recorded" + (f"; {unknown} record no time" if unknown else ""))


def _command_word(path):
    """The ``insitu`` command a result records (``build``, ``run``, ``sim``, ...), or None."""
    try:
        return ((json.loads(Path(path).read_text()).get("provenance") or {}).get("command") or [None, None])[1]
    except (OSError, json.JSONDecodeError, AttributeError, IndexError):
        return None


def _run_command(argv, cwd):
    """One result, on a worker: the insitu command in a process of its own."""
    done = subprocess.run([sys.executable, "-m", "insitu.tools.cli", *argv], cwd=cwd, capture_output=True,
                          text=True)
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"argv": argv, "returncode": done.returncode, "tail": tail}


def _run_commands(commands, what, *, scheduler=None, workers=None, cwd=".", progress=print):
    """Run ``insitu`` commands (each writing a ``--json`` file) as dask tasks; their outcomes in order."""
    from .sweep import dask_client, run_tasks
    with dask_client(scheduler, workers) as client:
        return run_tasks(client, _run_command, commands, what,
                         lambda outcome: Path(outcome["argv"][outcome["argv"].index("--json") + 1]).name,
                         progress=progress, cwd=str(Path(cwd).resolve()))


def regenerate(paths, *, scheduler=None, workers=None, cwd=".", progress=print):
    """Run the recorded commands of ``paths`` as dask tasks; returns their outcomes in order."""
    return _run_commands([_command_for(path) for path in paths], "results", scheduler=scheduler,
                         workers=workers, cwd=cwd, progress=progress)


#: commands whose results measure speed (simulated cycles per second): remade one at a time after the
#: others, so that no other job shares the cores while they measure
ALONE = ("sim",)


def remake_alone(paths, *, cwd=".", progress=print):
    """Run the recorded commands of ``paths`` one after another in this machine's processes, nothing else
    beside them; returns their outcomes in order."""
    outcomes = []
    for n, path in enumerate(paths, 1):
        progress(f"  alone {n}/{len(paths)}: {Path(path).name} (it measures speed)")
        outcomes.append(_run_command(_command_for(path), str(Path(cwd).resolve())))
    return outcomes


#: how each command is cut down to a probe: (command word, option, value); commands not listed are remade
_PROBES = {"run": ("--images", "2"), "sim": ("--images", "1")}


def _probe_command(path):
    """The recorded command of ``path``, cut down to a small workload and writing elsewhere, or None when
    its command cannot be cut down (such a result is remade instead)."""
    argv = _command_for(path)
    probe = _PROBES.get(argv[0])
    if probe is None or argv[0] == "run" and "--sim" not in argv:
        return None
    option, value = probe
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    argv[argv.index("--json") + 1] = str(Path("build") / "results" / f"{Path(path).stem}.probe.json")
    argv[argv.index("--build-dir") + 1] = str(Path("build") / "results" / Path(path).stem)
    return argv


def rescope(path, outcome):
    """Record in ``path`` the sources its probe (``outcome`` of running :func:`_probe_command`) imported.

    Sound because ``path`` is current as a whole (it was made by exactly these sources) and the probe runs
    the same command, and so the same code, on fewer images: the modules it imports are the ones the full
    command imports. The result's numbers are not touched; ``sources_from`` names the probe."""
    from .provenance import stale, write_json_atomic
    result = json.loads(Path(path).read_text())
    block = result["provenance"]
    why = stale(result)
    if why:
        raise CLIError(f"{path.name} is stale ({why}): remake it instead")
    if outcome["returncode"] != 0:
        raise CLIError(f"{path.name}: its probe failed: " + " / ".join(outcome["tail"]))
    probe_path = Path(outcome["argv"][outcome["argv"].index("--json") + 1])
    probe = json.loads(probe_path.read_text())["provenance"]
    if probe["source_hash"] != block["source_hash"] or probe["inputs"] != block["inputs"]:
        raise CLIError(f"{path.name}: its probe ran on other sources or inputs than the result")
    block["sources"] = probe["sources"]
    block["sources_from"] = ["insitu", *outcome["argv"]]
    write_json_atomic(path, result)
    probe_path.unlink()


def _cmd_rescope(status):
    todo = [p for p, why in status if why is None
            and "sources" not in json.loads(p.read_text()).get("provenance", {})]
    probes = {p: _probe_command(p) for p in todo}
    remake = [p.name for p, argv in probes.items() if argv is None]
    probes = {p: argv for p, argv in probes.items() if argv is not None}
    if probes:
        outcomes = _run_commands(list(probes.values()), "probes")
        failed = []
        for path, outcome in zip(probes, outcomes):
            try:
                rescope(path, outcome)
            except CLIError as error:
                print(f"failed: {error}", file=sys.stderr)
                failed.append(path.name)
        if failed:
            raise CLIError(f"{len(failed)} results could not be rescoped (see above)")
    print(f"{len(probes)} results now record the sources they used"
          + (f"; {len(remake)} cannot be probed, remake them (insitu results --update --all): "
             f"{', '.join(remake)}" if remake else ""))


def cmd_results(args):
    from .report import format_table
    if args.workers is not None and args.workers < 1:
        raise CLIError(f"--workers must be a positive integer, not {args.workers}")
    status = result_status(args.dir)
    if not status:
        raise CLIError(f"No result files in {args.dir}")
    status = [(p, why) for p, why in status if _chosen(p.name, args.only, args.skip)]
    if not status:
        raise CLIError(f"No result file in {args.dir} is left by --only and --skip")
    if args.rescope:
        return _cmd_rescope(status)
    if not args.update:
        print(format_table(["result", "last took", "status"],
                           [(p.name, _minutes(_recorded_seconds(p, None)), "current" if why is None else f"stale: {why}")
                            for p, why in status]))
        stale = [p for p, why in status if why is not None]
        print(f"\n{len(status)} results, {len(stale)} stale"
              + (f"; insitu results --update remakes them ({_cost(stale, args.workers)})" if stale else ""))
        return
    todo = [p for p, why in status if args.all or why is not None]
    if not todo:
        print(f"All {len(status)} results are current.")
        return
    print(f"Remaking {len(todo)} results: {_cost(todo, args.workers)}")
    for path in todo:
        _command_for(path)                                   # every command is known before any work
    todo.sort(key=lambda path: -_recorded_seconds(path))     # longest first: the last task ends sooner
    alone = [p for p in todo if _command_word(p) in ALONE]
    shared = [p for p in todo if p not in alone]
    outcomes = regenerate(shared, scheduler=args.scheduler, workers=args.workers) if shared else []
    outcomes += remake_alone(alone)
    failed = [o for o in outcomes if o["returncode"] != 0]
    for o in failed:
        print(f"failed: insitu {' '.join(o['argv'])}\n  " + "\n  ".join(o["tail"]), file=sys.stderr)
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} results remade")
    if failed:
        raise CLIError(f"{len(failed)} results could not be remade (see above)")
