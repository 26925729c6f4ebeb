import json

from insitu.tools.cli import main


def test_demo_runs_hardware_and_matches_golden(tmp_path, capsys):
    assert main(["demo", "--images", "1", "--json", str(tmp_path / "demo.json")]) == 0
    out = capsys.readouterr().out
    assert "1024/1024 conv2 accumulators bit-exact" in out
    assert "Ran on simulated hardware" in out and "Golden model" in out
    result = json.loads((tmp_path / "demo.json").read_text())
    assert result["all_bit_exact"] and result["weight_memory_ratio"] == 72 / 5
    assert result["cycles_per_image"] >= result["ideal_cycles_per_image"]
    methods = [r["method"] for r in result["evaluation"]["rows"]]
    assert methods == ["float", "dense", "qgp", "circulant", "smartdeal", "mlg", "escalate"]


def test_demo_image_count_error(capsys):
    assert main(["demo", "--images", "400"]) == 1
    assert capsys.readouterr().err == "insitu demo: error: Image count must be in range [1, 360], not 400\n"
