"""The build farm (insitu sweep on dask.distributed) and the results that cannot drift (insitu results)."""

import json

import pytest

from insitu.hdl.params import ParameterError
from insitu.tools import build as build_mod
from insitu.tools import designs, provenance
from insitu.tools.cli import main
from insitu.tools.sweep import Point, expand, sweep
from insitu.tools.sweep_commands import _command_for, result_status

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


def test_the_source_hash_covers_the_hardware_sources():
    files = provenance.source_files()
    assert "hdl/basisfirst.py" in files and "soc/firmware/net.c" in files and "tools/build.py" in files
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
    before = point_key(point, "src", {})
    assert point_key(point, "src", {}) == before
    model.write_bytes(b"second")
    assert point_key(point, "src", {}) != before


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
