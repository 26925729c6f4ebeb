"""The buildable designs: their parameters, figures of merit and errors (SmartDeal, MLG, ESCALATE, the SoC
and its accelerators), with one real build of each kind that needs its own."""

import json
from pathlib import Path

import pytest

from insitu.tools import build as build_mod
from insitu.tools import designs
from insitu.tools.cli import main


@pytest.mark.synth
def test_real_build_small_smartdeal_conv(tmp_path, monkeypatch, check_report):
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--board", "icebreaker", "--design", "smartdeal-conv", "--c-in", "2", "--c-out", "2",
                 "--group-size", "2", "--width", "8", "--height", "8", "--json", "r.json"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    report["json_path"] = "r.json"
    check_report(report, "icebreaker", "smartdeal-conv")
    info = report["design_info"]
    assert info["weights_per_clock"] == 3 and info["dense_int8_weight_bits"] == 2 * 2 * 9 * 8
    assert info["weight_bits"] == info["packed_weight_bits"] > 0


@pytest.mark.parametrize("design", ["smartdeal-conv", "mlg-conv", "dense-stream-conv"])
def test_stream_conv_designs_describe_storage(design, unbuilt):
    from insitu.golden import mlg, smartdeal
    d = designs.get_design(design)
    p = d.params(c_in=3, c_out=4, width=4, height=4, **({"group_size": 2} if design == "smartdeal-conv" else {}))
    with unbuilt():
        info = designs.instantiate(d, p)[1]
    if design == "smartdeal-conv":
        layer, _ = designs.smartdeal_layer(p)
        assert info["weight_bits"] == 8 * len(smartdeal.pack(layer))
    elif design == "mlg-conv":
        layer, _ = designs.mlg_layer(p)
        assert info["weight_bits"] == 8 * len(mlg.pack(layer))
    else:
        assert info["weight_bits"] == info["on_chip_weight_bits"] == 4 * 3 * 9 * 8
    assert info["float32_weight_bits"] == 4 * info["dense_int8_weight_bits"] == 4 * 4 * 3 * 9 * 8


def test_bench_decode_refuses_foreign_options(capsys):
    assert main(["bench", "decode", "--k", "3"]) == 1
    assert capsys.readouterr().err.startswith("insitu bench: error: --k is not a parameter of bench decode")


@pytest.mark.slow
def test_bench_decode_small(tmp_path, monkeypatch):
    from insitu.tools.bench_decode import bench_decode, format_bench_decode
    monkeypatch.chdir(tmp_path)
    sd = designs.SmartDealConvParams(c_in=2, c_out=2, group_size=2, width=6, height=6)
    ml = designs.MLGConvParams(bi=2, bo=2)
    result = bench_decode(sd, ml, ["ulx3s-85f"], json_path="b.json", progress=lambda s: None)
    rows = {r["design"]: r for r in result["rows"]}
    assert set(rows) == {"denseconv", "dense-stream-conv", "smartdeal-conv", "mlg-conv"}
    assert rows["denseconv"]["weight_bits"] == rows["dense-stream-conv"]["weight_bits"] == 2 * 2 * 9 * 8
    assert "smartdeal-conv" in format_bench_decode(result)


def test_soc_layout_errors(capsys):
    assert main(["build", "--board", "icebreaker", "--design", "soc", "--rom-size", "1000"]) == 1
    assert capsys.readouterr().err == ("insitu build: error: ROM size must be a power of two or a multiple of 1024 "
                                       "in range [256, 65536], not 1000\n")
    assert main(["build", "--board", "icebreaker", "--design", "soc", "--rom-size", "1024",
                 "--ram-size", "8192"]) == 1
    assert capsys.readouterr().err == ("insitu build: error: SPRAM size must be 65536 or 131072 bytes (2 or 4 of "
                                       "the iCE40UP5K's blocks), not 8192\n")
    assert main(["build", "--board", "icebreaker", "--design", "soc", "--rom-size", "256"]) == 1
    assert capsys.readouterr().err.startswith("insitu build: error: Firmware does not fit in 256 bytes of ROM")


@pytest.mark.synth
def test_real_build_soc_rom_and_spram(tmp_path, monkeypatch, check_report):
    """The iCE40UP5K layout: firmware in a block-RAM ROM, data in two SPRAM blocks."""
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--board", "icebreaker", "--design", "soc", "--rom-size", "1024", "--json", "r.json"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    report["json_path"] = "r.json"
    check_report(report, "icebreaker", "soc")
    assert report["resources"]["SPRAM"]["used"] == 2
    assert report["design_info"]["ram"] == "SPRAM" and report["design_info"]["rom_bytes"] == 1024
    assert report["timing_met"]
    # resources per part: the CPU, its memories (the SPRAM), the bus, the system peripherals
    parts = report["design_info"]["breakdown"]["parts"]
    assert {"cpu", "memory", "bus", "peripherals", "harness"} <= set(parts)
    assert parts["memory"]["spram"] == 2 and parts["cpu"]["logic"] > parts["peripherals"]["logic"]
    assert abs(sum(p["logic"] for p in parts.values()) - report["resources"]["LC"]["used"]) <= len(parts)


@pytest.mark.parametrize("accel", designs.SOC_ACCELS)
def test_soc_design_with_each_accelerator(accel, unbuilt):
    """Every --accel choice makes an SoC whose memory map (and so firmware header) has the peripheral."""
    from amaranth.hdl import Fragment

    from insitu.soc.soc import memory_map
    p = designs.SoCParams(accel=accel, c_in=2, c_out=8, width=4, height=4, block=4).resolved()

    def inspect():
        soc, info = designs.instantiate(designs.get_design("soc"), p, frequency=12e6)
        Fragment.get(soc, None)                      # and it elaborates, peripheral included
        return [name for name, *_ in memory_map(soc).entries], info
    with unbuilt():
        names, info = inspect()
    assert names == ["ram", "sys", "timer", "uart", accel.replace("-", "_")]
    assert info["accelerators"] == [accel.replace("-", "_")] and 0 < info["firmware_bytes"] < 8192


def test_escalate_design_describes_storage_and_pace(unbuilt):
    from insitu.golden import escalate
    d = designs.get_design("escalate-conv")
    p = d.params(c_in=3, c_out=4, width=4, height=4, lanes=3).resolved()
    with unbuilt():
        info = designs.instantiate(d, p)[1]
    layer, _ = designs.escalate_layer(p)
    assert info["weight_bits"] == escalate.storage_bits(layer)
    assert info["clocks_per_output_pixel"] == max(3 * 2 * 3, 4) and info["multipliers"] == 3


@pytest.mark.parametrize("argv, msg", [
    (["bench", "escalate", "--lanes", "2"], r"--lanes 2 must divide the taps of a 3x3 kernel \(9\)"),
    (["bench", "escalate", "--bases", "12"], r"--bases must be in range \[1, 9\], not 12"),
    (["build", "--board", "icebreaker", "--design", "escalate-conv", "--coef-mode", "int", "--coef-bits", "12"],
     r"--coef-bits must be in range \[2, 8\] with --coef-mode int, not 12"),
])
def test_escalate_options_are_checked_before_any_build(argv, msg, tmp_path, monkeypatch, capsys):
    import re
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(build_mod, "_run_script", lambda *a, **k: pytest.fail("a build started"))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(msg, err)


@pytest.mark.parametrize("board, peripherals, layout", [
    ("ulx3s-85f", ["conv2", "fc1", "conv1", "fc2"], ("block RAM", 0, "baked into the image")),
    ("icebreaker", [], ("SPRAM", 9216, "loaded over the UART into SPRAM at run time"))])
def test_soc_with_a_model_picks_what_fits(board, peripherals, layout, unbuilt):
    """--model: the firmware runtime and peripherals for the model's layers, as many as the board's logic
    and block RAM are estimated to hold (the UP5K's block RAM holds the runtime's code only)."""
    from insitu.boards import get_board
    model = str(Path(__file__).parent.parent / "models" / "digits-qgp.npz")
    p = designs.SoCParams(model=model).resolved()

    def made(params, frequency, board):
        soc, info = designs.instantiate(designs.get_design("soc"), params, frequency=frequency, board=board)
        return list(soc.accelerators), info
    with unbuilt():
        names, info = made(p, 12e6, get_board(board))
    assert info["peripherals_for_layers"] == peripherals == names
    assert (info["ram"], info["rom_bytes"], info["model_delivery"]) == layout
    assert info["rom_bytes"] == 0 or info["firmware_bytes"] <= info["rom_bytes"] < info["firmware_bytes"] + 1024
    p = designs.SoCParams(model=model, accel_layers="conv2, fc2").resolved()
    with unbuilt():
        names, info = made(p, 50e6, get_board("ulx3s-85f"))
    assert names == ["conv2", "fc2"]


def test_soc_model_option_errors(capsys):
    model = str(Path(__file__).parent.parent / "models" / "digits-qgp.npz")
    assert main(["build", "--board", "ulx3s-85f", "--design", "soc", "--model", model, "--accel", "fc"]) == 1
    assert "--model builds the firmware runtime with the model's own peripherals: leave out --accel" in \
        capsys.readouterr().err
    assert main(["build", "--board", "ulx3s-85f", "--design", "soc", "--model", model, "--accel-layers",
                 "conv9"]) == 1
    assert "no peripheral can run conv9 (the layers that match one: conv1, conv2, fc1, fc2)" in \
        capsys.readouterr().err


@pytest.mark.parametrize("method, chosen", [
    ("smartdeal", ["conv2", "fc1", "conv1", "fc2"]), ("mlg", ["conv2", "fc1", "conv1", "fc2"]),
    ("escalate", ["fc1", "conv1", "fc2"]), ("circulant", ["conv2", "fc1"])])
def test_compressed_models_get_their_peripherals(method, chosen):
    """SmartDeal and MLG layers get their decoding peripherals (convolutions and fully connected layers),
    circulant layers the FFT one; layers with none (ESCALATE's convolution) run in software. The choice stays within the
    board's DSPs (the circulant model's int8 conv2 alone takes 144 of the 156: conv1 and fc2 stay in
    software). The UP5K's block RAM holds only the runtime's code."""
    from insitu.boards import get_board
    from insitu.golden import modelfile
    from insitu.hdl.params import abandon
    from insitu.soc.accel import ConvAccel, MLGFactors, SmartDealRows
    from insitu.tools.designs_soc import choose_peripherals, peripheral_dsp
    model = modelfile.load(Path(__file__).parent.parent / "models" / f"digits-{method}.npz")
    got = choose_peripherals(model, "auto", get_board("ulx3s-85f"))
    assert list(got) == chosen
    assert sum(peripheral_dsp(a) for a in got.values()) <= get_board("ulx3s-85f").dsp
    kinds = {"smartdeal": SmartDealRows, "mlg": MLGFactors}
    if method in kinds:
        assert isinstance(got["conv2"], ConvAccel) and isinstance(got["conv2"].weights, kinds[method])
        assert isinstance(got["fc1"].layer.weights, kinds[method])
    if method == "circulant":
        assert got["fc1"].layer.bank == "circ"
    abandon(*got.values())                               # described only, never built here
    assert choose_peripherals(model, "auto", get_board("icebreaker"), rom_bytes=10240) == {}
