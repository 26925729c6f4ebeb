"""``insitu run`` end to end on the compiled SoC simulation: both paths, a baked image, and its one-line errors."""

import pytest

from insitu.soc.firmware import FIRMWARE_DIR
from insitu.tools.cli import main

MODELS = FIRMWARE_DIR.parent.parent / "models"


def test_insitu_run_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--model", str(MODELS / "digits-qgp.npz"), "--sim", "--images", "2", "--json",
                 "r.json"]) == 0
    out = capsys.readouterr().out
    assert "peripherals: conv1, conv2, fc1, fc2 (4 layers bound)" in out and "images/s 115200 Bd" in out
    assert out.count(" 0 ") >= 2                       # no mismatches on either path
    assert main(["run", "--model", str(MODELS / "digits-dense.npz"), "--sim", "--images", "1", "--baked",
                 "--path", "software"]) == 0
    out = capsys.readouterr().out
    assert "peripherals: none" in out and "\nsoftware " in out and "accelerator" not in out
    assert main(["run", "--model", str(MODELS / "digits-qgp.npz"), "--port", "/dev/nonexistent-tty"]) == 1
    assert "Cannot open /dev/nonexistent-tty" in capsys.readouterr().err
    assert main(["run", "--model", str(MODELS / "digits-qgp.npz"), "--port", "x", "--faults", "0.1"]) == 1
    assert "--faults applies to --sim only" in capsys.readouterr().err
    assert main(["run", "--model", str(MODELS / "digits-float.npz"), "--sim"]) == 1
    assert "Layer conv1 is float: the firmware runtime runs dense, qgp" in capsys.readouterr().err
