import json

from insitu.tools.cli import main


def test_demo_runs_hardware_and_matches_golden(tmp_path, capsys):
    assert main(["demo", "--images", "2", "--json", str(tmp_path / "demo.json")]) == 0
    out = capsys.readouterr().out
    assert "1024/1024 outputs bit-exact" in out
    result = json.loads((tmp_path / "demo.json").read_text())
    assert result["all_bit_exact"] and result["weight_memory_ratio"] == 72 / 5
    assert result["cycles_per_image"] >= result["ideal_cycles_per_image"]
