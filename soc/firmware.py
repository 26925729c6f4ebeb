"""Build firmware for the insitu SoC: C sources → flat binary linked at address 0 (into the RAM, or into
the ROM and RAM of the iCE40UP5K layout).

The compiler is ``ziglang`` from PyPI (``python -m ziglang cc -target riscv32-freestanding-none
-mcpu=generic_rv32``), so no system cross compiler is needed. ``CC`` overrides it, e.g.
``CC="riscv64-unknown-elf-gcc -march=rv32i -mabi=ilp32"`` (then ``OBJCOPY`` names its objcopy, default
``riscv64-unknown-elf-objcopy``). The register header ``regs.h`` is generated from the SoC's register map
into the build directory, so firmware never holds a hand-written address.
"""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from .csr import c_header

__all__ = ["build_firmware", "FirmwareError", "CompilerMissing", "FIRMWARE_DIR", "compiler"]

FIRMWARE_DIR = Path(__file__).parent / "firmware"
STACK_RESERVE = 1024      # bytes kept free above the image for the stack


class FirmwareError(RuntimeError):
    pass


class CompilerMissing(FirmwareError):
    pass


def compiler():
    """``(cc, objcopy, flags)`` command prefixes."""
    cc = os.environ.get("CC")
    if cc:
        objcopy = os.environ.get("OBJCOPY", "riscv64-unknown-elf-objcopy")
        tool = shlex.split(cc)[0]
        if shutil.which(tool) is None:
            raise CompilerMissing(f"Compiler {tool!r} (from CC) not found")
        return shlex.split(cc), shlex.split(objcopy), []
    try:
        import ziglang  # noqa: F401
    except ImportError:
        raise CompilerMissing("No RISC-V compiler: install ziglang (pip install ziglang) or set CC, e.g. "
                              "CC=\"riscv64-unknown-elf-gcc -march=rv32i -mabi=ilp32\"") from None
    zig = [sys.executable, "-m", "ziglang"]
    return zig + ["cc"], zig + ["objcopy"], ["-target", "riscv32-freestanding-none", "-mcpu=generic_rv32"]


def compiler_description(opt="-O2"):
    """The compiler and flags, as stated next to cycle counts."""
    cc = os.environ.get("CC")
    if cc:
        return f"{cc} {opt}"
    import importlib.metadata
    return f"ziglang {importlib.metadata.version('ziglang')} cc -target riscv32-freestanding-none " \
           f"-mcpu=generic_rv32 {opt}"


def _linker_script(memory_map, ram_size, stack):
    """The linker script for the memory map's layout: one RAM at its base, or a ROM (code, read-only data
    and the initial values of .data) and a RAM (.data, .bss, stack)."""
    windows = {name: (base, size) for name, base, size, bank, _ in memory_map.entries if bank is None}
    if "ram" not in windows:
        raise FirmwareError("The memory map has no RAM window")
    ram_base, _ = windows["ram"]
    regions = [f"  RAM (rwx) : ORIGIN = {ram_base:#x}, LENGTH = {ram_size}"]
    if "rom" in windows:
        rom_base, rom_size = windows["rom"]
        rom_size = memory_map.constants.get("ROM_BYTES", rom_size)
        regions.insert(0, f"  ROM (rx) : ORIGIN = {rom_base:#x}, LENGTH = {rom_size}")
    code = "ROM" if "rom" in windows else "RAM"
    return ((FIRMWARE_DIR / "link.ld.in").read_text().replace("@MEMORY@", "\n".join(regions))
            .replace("@CODE@", code).replace("@DATA@", "RAM").replace("@STACK@", str(stack)))


def build_firmware(sources, build_dir, *, memory_map, ram_size, opt="-O2", extra_flags=(), progress=None,
                   stack=STACK_RESERVE):
    """Compile and link ``sources`` (paths; the runtime and start-up code are added) into a flat image.

    The layout follows ``memory_map``: with a ``rom`` window the image is linked for the ROM (code and
    constants) and the RAM (data and stack), otherwise everything is in the RAM.
    Returns the image bytes (also written to ``build_dir/firmware.bin``), which start at the first
    window's address (0). Raises :class:`FirmwareError` with the compiler's message when compilation
    fails, or when the image (including ``.bss``) and ``stack`` bytes of stack exceed ``ram_size``, or the
    code exceeds the ROM (checked by the linker).
    """
    build_dir = Path(build_dir).resolve()      # zig's compile cache keys on the command line: no relative paths
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "regs.h").write_text(c_header(memory_map))
    (build_dir / "link.ld").write_text(_linker_script(memory_map, ram_size, stack))
    cc, objcopy, target = compiler()
    elf, image = build_dir / "firmware.elf", build_dir / "firmware.bin"
    srcs = [FIRMWARE_DIR / "crt0.S", FIRMWARE_DIR / "runtime.c", *map(Path, sources)]
    for src in srcs:
        if not src.exists():
            raise FirmwareError(f"Firmware source {src} not found")
    cmd = [*cc, *target, opt, "-ffreestanding", "-nostdlib", "-fno-builtin", "-Wall", "-g0", "-ffunction-sections",
           "-fdata-sections", "-Wl,--gc-sections",
           f"-I{build_dir}", f"-I{FIRMWARE_DIR}", f"-I{FIRMWARE_DIR / 'include'}", "-T", str(build_dir / "link.ld"), *extra_flags,
           "-o", str(elf), *map(str, srcs)]
    if progress:
        progress(f"  compiling {', '.join(s.name for s in srcs[2:])} ...")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        message = (done.stderr or done.stdout).strip()
        if "region `ROM' overflowed" in message or ("will not fit in region" in message and "ROM" in message):
            rom = memory_map.constants.get("ROM_BYTES") or next(
                size for name, _, size, *_ in memory_map.entries if name == "rom")
            raise FirmwareError(f"Firmware does not fit in {rom} bytes of ROM (the linker's words: "
                                f"{message.splitlines()[-1].strip()})")
        if "will not fit in region" in message or "region `RAM' overflowed" in message:
            raise FirmwareError(f"Firmware does not fit in {ram_size} bytes of RAM (the linker's words: "
                                f"{message.splitlines()[-1].strip()})")
        if "insitu: no room for the stack" in message:
            raise FirmwareError(f"Firmware image (code, data and .bss) plus {stack} bytes of stack does not fit "
                                f"in {ram_size} bytes of RAM")
        raise FirmwareError("Firmware compilation failed:\n" + message)
    done = subprocess.run([*objcopy, "-O", "binary", str(elf), str(image)], capture_output=True, text=True)
    if done.returncode:
        raise FirmwareError("objcopy failed:\n" + (done.stderr or done.stdout).strip())
    return image.read_bytes()
