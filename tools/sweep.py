"""``insitu sweep``: a grid of builds (designs × parameters × boards × nextpnr seeds) on dask.distributed.

Each build point is one task. A point's result is cached under a key of what it asks for (the design, its
parameters and their input files by content, the board, the clock, the synthesis options, the nextpnr seed
and the tool versions) together with the hashes of the sources its build imported and compiled: the build
runs in a fresh Python process, so those are exactly the design's (:mod:`insitu.tools.provenance`). A cached
point is used while none of its sources changed, so an edit to one block rebuilds only the points that load
it. A failing point is recorded with its error; the sweep goes on.

Spec (JSON)::

    {"boards": ["icebreaker", "ulx3s-85f"],          # default for every entry
     "seeds": [1, 2, 3],                              # nextpnr seeds, default [1]
     "designs": [{"design": "muxconv", "params": {"c_in": [8, 16], "parallel": 1},
                  "boards": [...], "seeds": [...], "freq": 48, "dsp": false}]}

A list in ``params`` is swept, a scalar is fixed; the grid is their product with the boards and seeds.
"""

import csv
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..hdl.params import ParameterError
from .errors import CLIError

__all__ = ["Point", "load_spec", "expand", "file_params", "point_key", "run_point", "dask_client", "run_tasks", "sweep",
           "write_csv", "pareto_plot", "DEFAULT_CACHE"]


def _default_cache():
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "insitu" / "sweep"


DEFAULT_CACHE = _default_cache()


@dataclass(frozen=True)
class Point:
    design: str
    board: str
    params: tuple                      # sorted (name, value) pairs of the design's parameters
    seed: int = 1                      # nextpnr seed
    freq: float = None                 # MHz; None: the board's (or design's) default
    dsp: bool = False

    def as_dict(self):
        return {"design": self.design, "board": self.board, "params": dict(self.params), "seed": self.seed,
                "freq": self.freq, "dsp": self.dsp}

    @classmethod
    def from_dict(cls, given):
        """The point :meth:`as_dict` gave (``Point.from_dict(p.as_dict()) == p``)."""
        return cls(given["design"], given["board"], tuple(sorted(given["params"].items())), given["seed"],
                   given["freq"], given["dsp"])


def load_spec(path):
    """Read and check a sweep spec; one-line errors naming the entry."""
    try:
        spec = json.loads(Path(path).read_text())
    except OSError as error:
        raise CLIError(f"Cannot read sweep spec {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise CLIError(f"{path}: not JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("designs"), list) or not spec["designs"]:
        raise CLIError(f"{path}: a sweep spec is an object with a non-empty list \"designs\"")
    return spec


def expand(spec):
    """The points of a spec, in order, each checked against its design's parameters (nothing is built)."""
    from ..boards import get_board
    from .designs import get_design
    points = []
    for n, entry in enumerate(spec["designs"]):
        where = f"designs[{n}]"
        if not isinstance(entry, dict) or "design" not in entry:
            raise ParameterError(f"Sweep {where}: an entry is an object with a \"design\"")
        unknown = set(entry) - {"design", "params", "boards", "seeds", "freq", "dsp"}
        if unknown:
            raise ParameterError(f"Sweep {where}: unknown key {sorted(unknown)[0]!r}")
        design = get_design(entry["design"])
        boards = entry.get("boards", spec.get("boards"))
        seeds = entry.get("seeds", spec.get("seeds", [1]))
        if not boards or not isinstance(boards, list):
            raise ParameterError(f"Sweep {where}: give \"boards\" (a list), here or for the whole spec")
        if not isinstance(seeds, list) or not all(isinstance(s, int) and s >= 0 for s in seeds) or not seeds:
            raise ParameterError(f"Sweep {where}: \"seeds\" must be a list of non-negative integers")
        for board in boards:
            get_board(board)
        params = entry.get("params", {})
        if not isinstance(params, dict):
            raise ParameterError(f"Sweep {where}: \"params\" must be an object")
        fields = {f.name for f in design.params.__dataclass_fields__.values()}
        for name in params:
            if name not in fields:
                raise ParameterError(f"Sweep {where}: {entry['design']} has no parameter {name!r}; it has "
                                     f"{', '.join(sorted(fields))}")
        names = sorted(params)
        axes = [params[k] if isinstance(params[k], list) else [params[k]] for k in names]
        for values in itertools.product(*axes):
            chosen = dict(zip(names, values))
            try:
                design.params(**chosen).resolved()
            except (TypeError, ValueError) as error:
                raise ParameterError(f"Sweep {where} {chosen}: {error}") from None
            for board in boards:
                for seed in seeds:
                    points.append(Point(entry["design"], board, tuple(sorted(chosen.items())), seed,
                                        entry.get("freq"), bool(entry.get("dsp", False))))
    return points


def file_params(point):
    """``{name: path}`` of the parameters of ``point`` that name a file (a network design's ``model``)."""
    return {name: value for name, value in point.params if isinstance(value, str) and Path(value).is_file()}


def _input_hashes(point):
    """SHA-256 of every file a parameter names: the file's content decides the build, not its name."""
    return {name: hashlib.sha256(Path(path).read_bytes()).hexdigest() for name, path in file_params(point).items()}


def point_key(point, tools):
    """The cache key of a point: what it asks for, input files by content (its sources are checked apart)."""
    ident = json.dumps({"point": point.as_dict(), "tools": tools, "inputs": _input_hashes(point)}, sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def _tool_versions():
    from .build import tool_versions
    return {family: tool_versions(family) for family in ("ice40", "ecp5")}


def _cached_row(path):
    """The cached row at ``path`` if its sources are those at hand, else ``None`` (also when damaged)."""
    from .provenance import stale
    try:
        row = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None                                     # a damaged entry is rebuilt
    sources = row.get("sources") if isinstance(row, dict) else None
    if not isinstance(sources, dict) or stale({"provenance": {"sources": sources}}) is not None:
        return None
    return row


def run_point(point, cache_dir, tools):
    """Build one point (on a worker) or take it from the cache; a flat result dictionary, never an exception.
    The build runs in a fresh Python process (:func:`_point_main`), so the row's ``sources`` are the ones
    this design imports, not those of every point the worker built before."""
    key = point_key(point, tools)
    cached = Path(cache_dir) / f"{key}.json"
    row = _cached_row(cached)
    if row is not None:
        return {**row, "cached": True}
    build_dir = Path(".insitu-sweep") / key             # relative: YoWASP tools open only relative paths
    out = Path(".insitu-sweep") / f"{key}.row.json"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        code = f"from {__package__}.sweep import _point_main; _point_main()"
        done = subprocess.run([sys.executable, "-c", code, json.dumps(point.as_dict()), str(build_dir), str(out)],
                              capture_output=True, text=True)
        if done.returncode or not out.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            return {**point.as_dict(), "key": key, "cached": False,
                    "error": f"the build process exited with {done.returncode}: {tail[0]}", "sources": {}}
        row = {**json.loads(out.read_text()), "key": key, "cached": False}
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)
        out.unlink(missing_ok=True)
    if "error" not in row:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(row, sort_keys=True))
        os.replace(tmp, cached)
    return row


def _point_main():
    """The build of one point in a process of its own: ``argv`` is the point (JSON), the build directory and
    where to write the flat row (JSON). An error is written as the row's ``error``, with the sources the
    process had imported when it happened (an error is a result of the code too)."""
    from .build import build
    from .designs import get_design
    from .provenance import used_sources
    spec, build_dir, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    point = Point.from_dict(json.loads(spec))
    row = point.as_dict()
    try:
        design = get_design(point.design)
        params = design.params(**dict(point.params)).resolved()
        report = build(point.board, point.design, params, frequency_mhz=point.freq, build_dir=build_dir,
                       json_path=build_dir / "report.json", synth_opts="-dsp" if point.dsp else "",
                       nextpnr_seed=point.seed, progress=lambda line: None)
    except Exception as error:                          # recorded, not raised: the sweep goes on
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        row["sources"] = used_sources()
    else:
        row.update(_flatten(report))
        row["sources"] = report["provenance"]["sources"]
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, sort_keys=True))
    os.replace(tmp, out)


def _flatten(report):
    """The columns of a point: resources, clock, figures of merit, provenance."""
    res = report["resources"]
    lc = res.get("LC") or res.get("LUT") or {}
    info = report.get("design_info", {})
    row = {"lc": lc.get("used"), "lc_available": lc.get("available"),
           "dsp_blocks": (res.get("DSP") or res.get("MULT18") or {}).get("used", 0),
           "bram": (res.get("BRAM") or res.get("DP16KD") or {}).get("used", 0),
           "fmax_mhz": min((c["achieved_mhz"] for c in report["clocks"]), default=None),
           "target_mhz": report["target_mhz"], "timing_met": report["timing_met"],
           "weight_bits": info.get("weight_bits"), "seconds": report["seconds"],
           "bitstream_sha256": report["bitstream"]["sha256"], "source_hash": report["provenance"]["source_hash"]}
    clocks_per_item = next((info[k] for k in ("clocks_per_output_pixel", "cycles_per_window", "cycles_per_vector")
                            if info.get(k)), None)
    if clocks_per_item and row["fmax_mhz"]:
        row["mitems_per_second"] = round(min(row["fmax_mhz"], row["target_mhz"]) / clocks_per_item, 4)
    return row


@contextmanager
def dask_client(scheduler=None, workers=None):
    """A dask.distributed client: on the cluster at ``scheduler`` (``tcp://host:8786``), or on a LocalCluster
    of ``workers`` single-threaded processes (default: this machine's cores); closed on exit."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise CLIError("insitu sweep needs dask.distributed: pip install \"dask[distributed]\"") from None
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as error:
            raise CLIError(f"Cannot reach the dask scheduler at {scheduler}: {error}") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_tasks(client, func, items, what, step, progress=print, **kwargs):
    """``func(item, **kwargs)`` for every item as one task each, with a progress bar (``step(result)`` says
    what finished) and the dashboard address; the results in item order."""
    from dask.distributed import as_completed

    from .progress import Progress
    progress(f"{len(items)} {what} on {len(client.scheduler_info()['workers'])} workers; "
             f"dashboard {client.dashboard_link}")
    futures = client.map(func, items, pure=False, **kwargs)
    index = {future.key: n for n, future in enumerate(futures)}
    results = [None] * len(items)
    with Progress(len(items), what) as bar:
        for future in as_completed(futures):
            result = future.result()
            results[index[future.key]] = result
            bar.step(step(result))
    return results


def sweep(points, *, scheduler=None, workers=None, cache_dir=DEFAULT_CACHE, progress=print):
    """Run ``points`` as dask tasks (see :func:`dask_client`). Returns the rows in point order."""
    tools = _tool_versions()
    with dask_client(scheduler, workers) as client:
        return run_tasks(client, run_point, points, "builds",
                         lambda row: "cached" if row.get("cached") else
                         ("failed" if "error" in row else f"{row.get('fmax_mhz')} MHz"),
                         progress=progress, cache_dir=str(cache_dir), tools=tools)


_COLUMNS = ["design", "board", "params", "seed", "freq", "dsp", "lc", "lc_available", "dsp_blocks", "bram", "fmax_mhz",
            "target_mhz", "timing_met", "mitems_per_second", "weight_bits", "cached", "error", "key",
            "source_hash"]


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, _COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "params": json.dumps(row.get("params", {}), sort_keys=True)})


def pareto_plot(path, rows):
    """Logic cells against throughput per board, coloured by weight bits; the Pareto front (fewer cells,
    more throughput) joined. Points without a throughput figure are left out."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    boards = sorted({r["board"] for r in rows if r.get("mitems_per_second") and r.get("lc")})
    fig, axes = plt.subplots(1, max(1, len(boards)), figsize=(6 * max(1, len(boards)), 4.5), squeeze=False)
    for ax, board in zip(axes[0], boards):
        pts = [r for r in rows if r["board"] == board and r.get("mitems_per_second") and r.get("lc")]
        scatter = ax.scatter([r["lc"] for r in pts], [r["mitems_per_second"] for r in pts],
                             c=[r.get("weight_bits") or 0 for r in pts], cmap="viridis")
        front, best = [], -1.0
        for r in sorted(pts, key=lambda r: (r["lc"], -r["mitems_per_second"])):
            if r["mitems_per_second"] > best:
                front.append(r)
                best = r["mitems_per_second"]
        ax.plot([r["lc"] for r in front], [r["mitems_per_second"] for r in front], "r--", label="Pareto front")
        for r in pts:
            ax.annotate(r["design"], (r["lc"], r["mitems_per_second"]), fontsize=7)
        ax.set(title=board, xlabel="logic cells (LC / LUT)", ylabel="million items per second")
        ax.legend()
        fig.colorbar(scatter, ax=ax, label="weight bits")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
