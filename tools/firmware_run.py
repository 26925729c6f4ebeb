"""``insitu sim --firmware``: build C sources for the SoC and run them on the compiled simulation, with the
UART's output streamed as it happens and the firmware's exit code returned."""

import sys
import time
from pathlib import Path

from ..soc.cxxrtl import CompiledSoC
from ..soc.firmware import build_firmware
from ..soc.soc import SoC, check_layout, memory_map

__all__ = ["run_firmware", "FirmwareTimeout"]

#: clocks simulated between two flushes of the UART output
SLICE = 1_000_000


class FirmwareTimeout(RuntimeError):
    pass


def run_firmware(sources, *, build_dir, ram_size=65536, rom_size=None, max_cycles=100_000_000, out=None,
                 progress=print, stdin=b""):
    """Compile ``sources`` with the runtime, run them on the compiled SoC until ``exit``/``return`` from
    ``main``, writing the UART's bytes to ``out`` (a binary stream, default stdout) as they come.
    ``stdin`` is sent to the UART's receive line (115200 baud scaled: two clocks per bit).

    Returns ``(exit_code, cycles, seconds)``. Raises :class:`FirmwareTimeout` after ``max_cycles``."""
    check_layout(ram_size, rom_size)
    out = out if out is not None else sys.stdout.buffer

    def make_soc():
        return SoC(ram_size=ram_size, rom_size=rom_size, uart_divisor=1, uart_depth=512)

    missing = [s for s in sources if not Path(s).is_file()]
    if missing:
        raise FileNotFoundError(2, "No such firmware source", str(missing[0]))
    image = build_firmware(sources, build_dir, memory_map=memory_map(ram_size=ram_size, rom_size=rom_size),
                           ram_size=ram_size, progress=progress)
    progress(f"  image: {len(image)} bytes ({'ROM' if rom_size else 'RAM'}); preparing the compiled simulation ...")
    sim = CompiledSoC(make_soc, progress=progress)
    sim.load(image)
    if stdin:
        sim.send(stdin)
    start = time.monotonic()
    code = None
    while code is None and sim.cycles < max_cycles:
        code, data = sim.step(min(SLICE, max_cycles - sim.cycles))
        if data:
            out.write(data)
            out.flush()
    seconds = time.monotonic() - start
    if code is None:
        raise FirmwareTimeout(f"the firmware did not exit within {max_cycles} cycles (--max-cycles)")
    return code, sim.cycles, seconds
