"""The whole SoC in the compiled (CXXRTL) simulation: agreement with pysim, VCD traces, the digits network."""

import os
import shutil

import numpy as np
import pytest

from insitu.golden import modelfile, network
from insitu.soc.cxxrtl import CompiledSoC, SimulationError
from insitu.soc.soc import SoC
from insitu.tools.evaluate import MODEL_DIR

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the compiled simulation needs g++")


def test_compiled_agrees_with_pysim(hello, tmp_path):
    from test_soc import run_soc
    text, res = run_soc(hello, 8000)
    sim = CompiledSoC(lambda: SoC(uart_divisor=1))
    sim.load(hello)
    vcd = tmp_path / "hello.vcd"
    sim.trace(vcd, 500)
    code, cycles, out = sim.run(100_000)
    assert (code, out) == (res["code"], text)
    assert abs(cycles - res["cycles"]) <= 1
    trace = vcd.read_text()
    assert "$var" in trace and "uart" in trace and "\n#1000\n" in trace and "\n#1001\n" not in trace
    sim.load(hello)                       # reload resets: the same run again
    assert sim.run(100_000) == (code, cycles, out)


def test_compiled_errors(hello):
    sim = CompiledSoC(lambda: SoC(uart_divisor=1))
    with pytest.raises(SimulationError, match="No firmware loaded"):
        sim.run(10)
    with pytest.raises(SimulationError, match=r"Image of 16388 bytes does not fit in 16384 bytes of RAM"):
        sim.load(bytes(16385))
    sim.load(hello)
    assert sim.run(100)[0] is None        # not finished within the limit


def test_digits_network_on_compiled_soc(tmp_path):
    """Firmware runs every layer on the CPU and again with conv2 on the QGP peripheral: both equal golden."""
    pytest.importorskip("ziglang")
    from insitu.tools.netrun import run_network
    model = modelfile.load(os.path.join(MODEL_DIR, "digits-qgp.npz"))
    _, _, xte, yte = network.digits_split()
    images = xte[5:8]
    result = run_network(model, images, tmp_path, progress=lambda _: None)
    assert result["exit_code"] == 0 and result["accelerator_errors"] == 0
    golden = network.forward_int(model, images)
    for row, scores in zip(result["per_image"], golden):
        assert row["scores"] == [int(v) for v in scores]
        assert row["software_prediction"] == row["accelerator_prediction"] == int(np.argmax(scores))
    assert result["predictions_identical"]
    assert result["conv2"]["accelerator_cycles"] < result["conv2"]["software_cycles"]
    assert result["conv1"]["accelerator_cycles"] < result["conv1"]["software_cycles"]


def test_network_runner_refuses_other_models(tmp_path):
    from insitu.tools.netrun import NetworkRunError, model_header
    model = modelfile.load(os.path.join(MODEL_DIR, "digits-mlg.npz"))
    with pytest.raises(NetworkRunError, match=r"runs QGP models .*not layers conv1=dense, conv2=mlg, fc1=mlg"):
        model_header(model, np.zeros((1, 1, 8, 8)), 2)


def test_sim_command(tmp_path, monkeypatch, capsys):
    pytest.importorskip("ziglang")
    import json
    from insitu.tools.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["sim", "--design", "soc", "--images", "1", "--json", "r.json"]) == 0
    out = capsys.readouterr().out
    assert "speedup" in out and "conv1: software" in out and "firmware built with" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["predictions_identical"] and result["images"] == 1
    assert main(["sim", "--design", "soc", "--model", os.path.join(MODEL_DIR, "digits-mlg.npz")]) == 1
    assert "runs QGP models" in capsys.readouterr().err
    assert main(["sim", "--design", "soc", "--images", "361"]) == 1
    assert "--images must be in range [1, 360]" in capsys.readouterr().err
