"""The build farm (insitu sweep on dask.distributed) and the results that cannot drift (insitu results)."""

import json
from pathlib import Path

import pytest

from insitu.hdl.params import ParameterError
from insitu.tools import build as build_mod
from insitu.tools import designs, provenance
from insitu.tools.cli import main
from insitu.tools.sweep import Point, expand, sweep
from insitu.tools.sweep_commands import _command_for, _probe_command, rescope, result_status

TINY = {"c_in": 2, "c_out": 2, "k": 3, "width": 6, "height": 5}


@pytest.mark.synth
def test_sweep_builds_caches_records_failures_and_equals_a_direct_build(tmp_path, monkeypatch):
    """Two LocalCluster workers: one real point, one that fails; again from the cache; the point's numbers
    are those of a direct build of the same design, board and nextpnr seed."""
    monkeypatch.chdir(tmp_path)
    spec = {"boards": ["icebreaker"], "designs": [
        {"design": "muxconv", "params": TINY, "seeds": [3]},
        {"design": "muxconv", "params": {"c_in": 100000}}]}                 # refused: too large for the board
    points = expand(spec)
    assert [p.seed for p in points] == [3, 1]
    cache = tmp_path / "cache"
    first = sweep(points, workers=2, cache_dir=cache, progress=lambda line: None)
    assert first[0]["cached"] is False and first[0]["lc"] > 0 and first[0]["fmax_mhz"] > 0
    assert "Too large for iCE40UP5K" in first[1]["error"]
    # each point names the sources its build imported, in a process of its own: the design's, not the SoC's,
    # the pipeline's or another block's
    assert "hdl/muxconv.py" in first[0]["sources"] and "tools/designs_network.py" not in first[0]["sources"]
    assert "hdl/fft.py" not in first[0]["sources"] and "soc/cxxrtl_driver.cc" not in first[0]["sources"]
    assert "tools/build.py" in first[1]["sources"]
    again = sweep(points, workers=2, cache_dir=cache, progress=lambda line: None)
    assert again[0]["cached"] is True and {k: v for k, v in again[0].items() if k != "cached"} == \
        {k: v for k, v in first[0].items() if k != "cached"}
    assert "error" in again[1]                                             # failures are not cached
    assert not (tmp_path / ".insitu-sweep").exists() or not any((tmp_path / ".insitu-sweep").iterdir())

    direct = build_mod.build("icebreaker", "muxconv", designs.ConvParams(**TINY), build_dir="direct",
                             nextpnr_seed=3, progress=lambda line: None)
    assert direct["bitstream"]["sha256"] == first[0]["bitstream_sha256"]
    assert direct["resources"]["LC"]["used"] == first[0]["lc"]
    assert min(c["achieved_mhz"] for c in direct["clocks"]) == first[0]["fmax_mhz"]


@pytest.mark.parametrize("spec, msg", [
    ({"boards": ["icebreaker"], "designs": [{"design": "muxconv", "params": {"speed": 1}}]},
     r"designs\[0\]: muxconv has no parameter 'speed'"),
    ({"designs": [{"design": "muxconv"}]}, r"give \"boards\""),
    ({"boards": ["icebreaker"], "designs": [{"design": "muxconv", "params": {"k": [3, 4]}}]},
     r"designs\[0\] \{'k': 4\}: --k must be an odd integer >= 1, not 4"),
    ({"boards": ["nope"], "designs": [{"design": "fft"}]}, r"Unknown board 'nope'"),
    ({"boards": ["icebreaker"], "designs": [{"design": "fft", "seeds": [-1]}]}, r"non-negative integers"),
])
def test_spec_errors_are_one_line(spec, msg):
    with pytest.raises(ParameterError, match=msg):
        expand(spec)


def test_sweep_cli_refuses_a_bad_spec_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.json").write_text("{not json")
    assert main(["sweep", "s.json"]) == 1
    assert capsys.readouterr().err.startswith("insitu sweep: error: s.json: not JSON")
    (tmp_path / "s.json").write_text(json.dumps({"boards": ["icebreaker"], "designs": [{"design": "zz"}]}))
    assert main(["sweep", "s.json"]) == 1
    assert "Unknown design 'zz'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_grid_is_the_product_of_lists():
    points = expand({"boards": ["icebreaker", "ulx3s-85f"], "seeds": [1, 2],
                     "designs": [{"design": "muxconv", "params": {"c_in": [4, 8], "parallel": 1}}]})
    assert len(points) == 2 * 2 * 2
    assert points[0] == Point("muxconv", "icebreaker", (("c_in", 4), ("parallel", 1)), 1)


def test_a_point_survives_its_round_trip_through_json():
    """A point goes to its build process as JSON (``as_dict``) and comes back whole (``from_dict``)."""
    spec = json.loads((Path(__file__).parents[1] / "docs" / "sweeps" / "blocks-closure.json").read_text())
    points = expand(spec) + [Point("muxconv", "icebreaker", (("c_in", 2), ("k", 3)), seed=4, freq=50.0, dsp=True)]
    assert len(points) > 50
    assert [Point.from_dict(json.loads(json.dumps(p.as_dict()))) for p in points] == points


def test_results_are_stale_when_the_sources_change(tmp_path):
    current = {"format": "x", "provenance": {"source_hash": provenance.source_hash(), "inputs": {},
                                             "command": ["insitu", "build", "--board", "icebreaker", "--design",
                                                         "fft", "--json", "old.json", "--build-dir", "b"]}}
    (tmp_path / "a.json").write_text(json.dumps(current))
    (tmp_path / "b.json").write_text(json.dumps({**current, "provenance": {**current["provenance"],
                                                                            "source_hash": "0" * 16}}))
    (tmp_path / "c.json").write_text(json.dumps({"format": "x"}))
    status = {p.name: why for p, why in result_status(tmp_path)}
    assert status["a.json"] is None
    assert "made by other sources" in status["b.json"] and status["c.json"] == "it records no provenance"
    assert _command_for(tmp_path / "a.json") == ["build", "--board", "icebreaker", "--design", "fft", "--json",
                                                 str(tmp_path / "a.json"), "--build-dir", "build/results/a"]
    swept = {"format": "insitu-sweep/1", "provenance": {"command": ["insitu", "sweep", "spec.json", "--json", "x"]}}
    (tmp_path / "d.json").write_text(json.dumps(swept))
    assert _command_for(tmp_path / "d.json") == ["sweep", "spec.json", "--json", str(tmp_path / "d.json")]


def test_a_result_records_the_sources_its_process_imported():
    """The hashed Python files among the modules given (default: those imported), and the hashed files that
    are not Python (they are compiled, not imported) of the modules that compile them."""
    import insitu.hdl.params
    import insitu.soc.firmware
    used = provenance.used_sources(modules={"p": insitu.hdl.params})
    assert "hdl/params.py" in used and "hdl/fft.py" not in used
    assert "soc/firmware/net.c" not in used and "soc/cxxrtl_driver.cc" not in used
    used = provenance.used_sources(modules={"p": insitu.hdl.params, "f": insitu.soc.firmware})
    assert "soc/firmware/net.c" in used and "soc/firmware/include/stdio.h" in used
    assert "soc/cxxrtl_driver.cc" not in used and "soc/stream_driver.cc" not in used
    assert provenance.compiled_by("soc/cxxrtl_driver.cc") == "soc/cxxrtl.py"
    assert all(provenance.compiled_by(name) for name in provenance.source_files() if not name.endswith(".py"))
    assert used["hdl/params.py"] == provenance.file_hash(provenance.ROOT / "hdl" / "params.py")
    block = provenance.provenance()
    assert set(block["sources"]) <= set(provenance.source_files()) and "hdl/params.py" in block["sources"]
    token = provenance.scope.set("all")
    try:
        assert sorted(provenance.provenance()["sources"]) == provenance.source_files()
    finally:
        provenance.scope.reset(token)
    token = provenance.scope.set({"tools/elsewhere.py": "from another process"})     # a sweep's points
    try:
        sources = provenance.provenance()["sources"]
        assert sources["tools/elsewhere.py"] == "from another process" and "hdl/params.py" in sources
    finally:
        provenance.scope.reset(token)


def test_a_result_is_stale_only_when_a_source_it_recorded_changes(tmp_path):
    (tmp_path / "hdl").mkdir()
    (tmp_path / "soc").mkdir()
    for name in ("hdl/a.py", "hdl/b.py", "soc/x.c"):
        (tmp_path / name).write_text(f"# {name}\n")
    used = provenance.used_sources(tmp_path, modules={})
    assert sorted(used) == ["soc/x.c"]
    result = {"provenance": {"source_hash": "whatever", "inputs": {},
                             "sources": {**used, "hdl/a.py": provenance.file_hash(tmp_path / "hdl/a.py")}}}
    assert provenance.stale(result, tmp_path) is None
    (tmp_path / "hdl/b.py").write_text("# changed, but never imported\n")
    assert provenance.stale(result, tmp_path) is None
    (tmp_path / "hdl/a.py").write_text("# changed\n")
    assert provenance.stale(result, tmp_path) == "its source hdl/a.py changed"
    (tmp_path / "hdl/a.py").write_text("# hdl/a.py\n")
    (tmp_path / "soc/y.c").write_text("int y;\n")
    assert provenance.stale(result, tmp_path) == "a source it would have compiled was added: soc/y.c"
    (tmp_path / "soc/y.c").unlink()
    # firmware counts only for a result whose process imported the module that compiles it
    (tmp_path / "soc/firmware").mkdir()
    (tmp_path / "soc/firmware/z.c").write_text("int z;\n")
    (tmp_path / "soc/firmware.py").write_text("# compiles the firmware\n")
    assert provenance.stale(result, tmp_path) is None
    assert "soc/firmware/z.c" not in provenance.used_sources(tmp_path, modules={})
    compiles = {"provenance": {**result["provenance"], "sources": {
        **result["provenance"]["sources"], "soc/firmware.py": provenance.file_hash(tmp_path / "soc/firmware.py")}}}
    assert provenance.stale(compiles, tmp_path) == "a source it would have compiled was added: soc/firmware/z.c"
    (tmp_path / "hdl/a.py").unlink()
    assert provenance.stale(result, tmp_path) == "its source hdl/a.py is gone"


def test_a_command_imports_only_what_it_uses():
    """`insitu run` parses without the design registry (and so without every design's module); `build` needs it."""
    import subprocess
    import sys
    code = ("import sys; from insitu.tools.cli import make_parser; make_parser(sys.argv[1:]).parse_args(sys.argv[1:]); "
            "print('insitu.tools.designs' in sys.modules, 'insitu.tools.build' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code, "run", "--model", "m.npz", "--sim"], capture_output=True,
                         text=True, check=True)
    assert run.stdout.split() == ["False", "False"]
    build = subprocess.run([sys.executable, "-c", code, "build", "--board", "icebreaker", "--design", "fft"],
                           capture_output=True, text=True, check=True)
    assert build.stdout.split()[0] == "True"


def test_rescoping_records_the_sources_of_a_probe_of_the_same_sources(tmp_path):
    """A current result made before results recorded their sources gets those of a probe: its command on fewer
    images. A build cannot be probed; a probe of other sources is refused."""
    command = ["insitu", "run", "--model", "m.npz", "--sim", "--path", "software", "--json", "x.json",
               "--build-dir", "b"]
    block = provenance.provenance()
    old = {"images": 360, "provenance": {**{k: v for k, v in block.items() if k != "sources"}, "command": command}}
    path = tmp_path / "run-x.json"
    path.write_text(json.dumps(old))
    argv = _probe_command(path)
    assert argv == ["run", "--model", "m.npz", "--sim", "--path", "software", "--json",
                    "build/results/run-x.probe.json", "--build-dir", "build/results/run-x", "--images", "2"]
    build = tmp_path / "build-x.json"
    build.write_text(json.dumps({"provenance": {**old["provenance"], "command": ["insitu", "build", "--board",
                                                                              "icebreaker", "--design", "fft"]}}))
    assert _probe_command(build) is None
    probe = tmp_path / "probe.json"
    outcome = {"argv": ["run", "--json", str(probe)], "returncode": 0, "tail": []}
    probe.write_text(json.dumps({"images": 2, "provenance": {**block, "source_hash": "0" * 16}}))
    with pytest.raises(Exception, match="other sources"):
        rescope(path, outcome)
    probe.write_text(json.dumps({"images": 2, "provenance": block}))
    rescope(path, outcome)
    done = json.loads(path.read_text())
    assert done["images"] == 360 and done["provenance"]["sources"] == block["sources"]
    assert done["provenance"]["sources_from"] == ["insitu", "run", "--json", str(probe)] and not probe.exists()


def test_the_source_hash_covers_the_hardware_sources():
    files = provenance.source_files()
    assert "hdl/basisfirst.py" in files and "soc/firmware/net.c" in files and "tools/build.py" in files
    assert "soc/firmware/link.ld.in" in files                       # the linker script's template
    assert "tools/cli.py" not in files and not any(f.startswith("tests/") for f in files)


def test_committed_results_come_from_these_sources():
    """Every file in docs/results was made by the sources at hand (and its inputs): otherwise
    `insitu results --update` remakes it. A number that the code no longer produces cannot stay committed."""
    from pathlib import Path
    results = Path(provenance.ROOT) / "docs" / "results"
    stale = [f"{path.name}: {why}" for path, why in result_status(results) if why]
    assert stale == [], "run `insitu results --update`:\n" + "\n".join(stale)


def test_a_point_key_follows_the_content_of_a_file_parameter(tmp_path):
    """Rewriting a model file under the same name must not return the cached build of the old model."""
    from insitu.tools.sweep import Point, point_key
    model = tmp_path / "m.npz"
    model.write_bytes(b"first")
    point = Point("network", "icebreaker", (("model", str(model)),), 1, None, False)
    before = point_key(point, {})
    assert point_key(point, {}) == before
    model.write_bytes(b"second")
    assert point_key(point, {}) != before


def test_a_cached_point_is_used_while_the_sources_it_recorded_are_unchanged(tmp_path):
    """The cache is checked against the sources a point's build imported, not every hashed file: an edit to
    a block another design loads keeps the point; an edit to one of its own rebuilds it."""
    from insitu.tools.sweep import _cached_row
    mine = {"hdl/params.py": provenance.file_hash(provenance.ROOT / "hdl" / "params.py")}
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"lc": 10, "sources": mine}))
    assert _cached_row(path)["lc"] == 10
    path.write_text(json.dumps({"lc": 10, "sources": {**mine, "hdl/fft.py": "0" * 16}}))
    assert _cached_row(path) is None                    # one of its sources changed
    path.write_text(json.dumps({"lc": 10, "sources": {"hdl/gone.py": "0" * 16}}))
    assert _cached_row(path) is None
    path.write_text(json.dumps({"lc": 10}))             # a row from before rows named their sources
    assert _cached_row(path) is None
    path.write_text("{")
    assert _cached_row(path) is None


def test_the_seed_summary_gives_median_and_worst_per_design():
    from insitu.tools.sweep_commands import seed_summary
    row = {"design": "network", "board": "icebreaker", "params": {"model": "m.npz"}, "freq": None, "dsp": False,
           "target_mhz": 48.0}
    rows = [{**row, "seed": s, "fmax_mhz": f, "timing_met": f >= 48, "lc": lc}
            for s, f, lc in [(1, 47.0, 4000), (2, 49.5, 4100), (3, 45.0, 4050)]]
    rows += [{**row, "seed": 4, "error": "RuntimeError: place and route failed"},
             {**row, "dsp": True, "seed": 1, "fmax_mhz": 50.0, "timing_met": True, "lc": 3700}]
    plain, dsp = seed_summary(rows)
    assert (plain["seeds"], plain["failed"], plain["median_mhz"], plain["worst_mhz"], plain["met"],
            plain["median_lc"]) == ([1, 2, 3], 1, 47.0, 45.0, 1, 4050)
    assert (dsp["dsp"], dsp["median_mhz"], dsp["met"]) == (True, 50.0, 1)
    assert not plain["closes"] and dsp["closes"]          # the median misses 48 MHz; 50 ≥ 48 at every seed
    near = [{**row, "seed": s, "fmax_mhz": f, "timing_met": f >= 48, "lc": 1} for s, f in [(1, 48.5), (2, 45.7)]]
    assert seed_summary(near + [{**near[0], "seed": 3}])[0]["closes"]          # worst 45.7 ≥ 95 % of 48
    assert not seed_summary(near[:1] + [{**near[0], "seed": 2}, {**near[0], "seed": 3, "fmax_mhz": 45.5}])[0]["closes"]


def test_results_say_what_a_remake_costs(tmp_path):
    """``insitu results`` shows how long each result took to make, as it records it (a run's wall time, a
    build's seconds, the sum of a sweep's points), and what remaking the stale ones took last time."""
    from insitu.tools.sweep_commands import _cost, _recorded_seconds
    files = {"run.json": {"wall_seconds": 600.0}, "build.json": {"seconds": 30},
             "sweep.json": {"points": [{"seconds": 20.0}, {"seconds": None}, {"seconds": 10}]},
             "bench.json": {"rows": []}, "broken.json": None}
    for name, body in files.items():
        (tmp_path / name).write_text("{" if body is None else json.dumps(body))
    paths = [tmp_path / name for name in files]
    assert [_recorded_seconds(p, None) for p in paths] == [600.0, 30.0, 30.0, None, None]
    assert _cost(paths, 1) == "about 11 minutes one at a time, 11 on 1 worker, as recorded; 2 record no time"
    # longest first, each to the worker free first: 600 on one, 30 + 30 on the other
    assert _cost(paths, 2) == "about 11 minutes one at a time, 10 on 2 workers, as recorded; 2 record no time"


def test_results_can_be_chosen_by_name(tmp_path, capsys):
    """``--only`` and ``--skip`` (shell patterns on file names) choose which results are listed or remade."""
    block = {"format": "x", "provenance": {"source_hash": provenance.source_hash(), "inputs": {}}}
    for name in ("run-a.json", "run-b.json", "build-c.json"):
        (tmp_path / name).write_text(json.dumps(block))
    assert main(["results", "--dir", str(tmp_path), "--only", "run-*", "--skip", "*-b.json"]) == 0
    listed = capsys.readouterr().out
    assert "run-a.json" in listed and "run-b.json" not in listed and "build-c.json" not in listed
    assert "1 results, 0 stale" in listed
    assert main(["results", "--dir", str(tmp_path), "--only", "nothing-*"]) == 1
    assert "is left by --only and --skip" in capsys.readouterr().err


def test_results_that_measure_speed_are_remade_alone_after_the_others(tmp_path, monkeypatch, capsys):
    """A simulation's result records simulated cycles per second: it is remade after the rest, on its
    own, not as one of the engine's parallel tasks."""
    from insitu.tools import sweep_commands
    calls = []
    monkeypatch.setattr(sweep_commands, "regenerate", lambda paths, **kw: calls.append(("engine", [
        p.name for p in paths])) or [{"argv": [], "returncode": 0, "tail": []} for _ in paths])
    monkeypatch.setattr(sweep_commands, "_run_command", lambda argv, cwd: calls.append(("alone", argv[0])) or
                        {"argv": argv, "returncode": 0, "tail": []})
    for name, word in (("sim-a.json", "sim"), ("build-b.json", "build"), ("build-c.json", "build")):
        (tmp_path / name).write_text(json.dumps({"seconds": 1, "provenance": {
            "source_hash": "0", "inputs": {}, "command": ["insitu", word, "--design", "x"]}}))
    assert main(["results", "--dir", str(tmp_path), "--update"]) == 0
    assert calls == [("engine", ["build-b.json", "build-c.json"]), ("alone", "sim")]
    assert "alone 1/1: sim-a.json (it measures speed)" in capsys.readouterr().out
