"""Fixtures shared by the SoC test files."""

import pytest

from insitu.soc.firmware import FIRMWARE_DIR, build_firmware
from insitu.soc.soc import memory_map


@pytest.fixture(scope="module")
def hello(tmp_path_factory):
    """The smoke-test firmware for the default SoC (16 KB RAM)."""
    pytest.importorskip("ziglang")
    return build_firmware([FIRMWARE_DIR / "hello.c"], tmp_path_factory.mktemp("fw"), memory_map=memory_map(),
                          ram_size=16384)
