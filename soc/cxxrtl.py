"""Compiled whole-SoC simulation: CXXRTL from Amaranth's built-in yosys, a small C++ driver, ctypes.

The SoC is converted to RTLIL, yosys's ``write_cxxrtl`` turns it into C++, and ``g++ -O2 -shared`` builds
a shared library together with the driver below. The library is cached under a hash of the RTLIL and the
driver (``$INSITU_CACHE_DIR`` or ``~/.cache/insitu/cxxrtl``), so a second run of the same design starts at
once. ``trace`` writes a VCD of the first clocks of a run. The RAM is built empty and the firmware is written into it at run time: changing firmware never
recompiles. The driver runs the clock in C++, collects UART bytes and stops when the firmware writes
``sys.sim_exit``.
"""

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["CompiledSoC", "SimulationError", "cache_dir"]

DRIVER = r"""
#include <cxxrtl/capi/cxxrtl_capi.h>
#include <cxxrtl/capi/cxxrtl_capi_vcd.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

extern "C" cxxrtl_toplevel cxxrtl_design_create();

struct insitu_sim {
    cxxrtl_handle handle;
    cxxrtl_object *clk, *rst, *exit_stb, *exit_code, *sent_stb, *sent_data, *ram;
    uint64_t cycles;
    cxxrtl_vcd vcd;
    FILE *vcd_file;
    uint64_t vcd_left;
};

static void vcd_sample(insitu_sim *s, uint64_t time) {
    const char *data;
    size_t size;
    cxxrtl_vcd_sample(s->vcd, time);
    for (;;) {
        cxxrtl_vcd_read(s->vcd, &data, &size);
        if (!size)
            break;
        fwrite(data, 1, size, s->vcd_file);
    }
}

/* Trace every signal except memories to path for the next `cycles` clocks (0: close the trace). */
extern "C" int insitu_vcd(void *p, const char *path, uint64_t cycles) {
    insitu_sim *s = (insitu_sim *)p;
    if (s->vcd) {
        fclose(s->vcd_file);
        cxxrtl_vcd_destroy(s->vcd);
        s->vcd = 0;
    }
    if (!cycles)
        return 1;
    s->vcd_file = fopen(path, "w");
    if (!s->vcd_file)
        return 0;
    s->vcd = cxxrtl_vcd_create();
    cxxrtl_vcd_timescale(s->vcd, 1, "ns");
    cxxrtl_vcd_add_from_without_memories(s->vcd, s->handle);
    s->vcd_left = cycles;
    return 1;
}

static cxxrtl_object *must(cxxrtl_handle h, const char *name) {
    return cxxrtl_get(h, name);
}

extern "C" void *insitu_create(const char *ram_name) {
    insitu_sim *s = (insitu_sim *)calloc(1, sizeof(insitu_sim));
    s->handle = cxxrtl_create(cxxrtl_design_create());
    s->clk = must(s->handle, "clk");
    s->rst = must(s->handle, "rst");
    s->exit_stb = must(s->handle, "exit_stb");
    s->exit_code = must(s->handle, "exit_code");
    s->sent_stb = must(s->handle, "uart_sent_stb");
    s->sent_data = must(s->handle, "uart_sent_data");
    s->ram = must(s->handle, ram_name);
    if (!s->clk || !s->rst || !s->exit_stb || !s->exit_code || !s->sent_stb || !s->sent_data || !s->ram)
        return 0;
    return s;
}

extern "C" uint32_t *insitu_ram(void *p, size_t *depth) {
    insitu_sim *s = (insitu_sim *)p;
    *depth = s->ram->depth;
    return s->ram->curr;
}

extern "C" void insitu_destroy(void *p) {
    insitu_sim *s = (insitu_sim *)p;
    insitu_vcd(p, 0, 0);
    cxxrtl_destroy(s->handle);
    free(s);
}

/* Run up to max_cycles clocks. Returns 1 when the firmware exited (code in *code), 0 at the limit.
 * The design is posedge-only: the rising edge is evaluated, the falling edge only committed (no comb
 * logic depends on the clock level), so each clock costs one eval. */
extern "C" int insitu_run(void *p, uint64_t max_cycles, uint8_t *uart, size_t uart_cap, size_t *uart_len,
                          uint32_t *code, uint64_t *cycles) {
    insitu_sim *s = (insitu_sim *)p;
    for (uint64_t n = 0; n < max_cycles; n++) {
        s->clk->next[0] = 1;
        cxxrtl_step(s->handle);
        s->cycles++;
        int exited = s->exit_stb->curr[0] & 1;
        if (s->sent_stb->curr[0] & 1) {
            if (*uart_len < uart_cap)
                uart[*uart_len] = (uint8_t)s->sent_data->curr[0];
            (*uart_len)++;
        }
        if (s->vcd)
            vcd_sample(s, 2 * s->cycles - 1);
        s->clk->next[0] = 0;
        cxxrtl_commit(s->handle);
        if (s->vcd) {
            vcd_sample(s, 2 * s->cycles);
            if (!--s->vcd_left)
                insitu_vcd(s, 0, 0);       /* the trace is complete: close the file */
            else if (exited)
                fflush(s->vcd_file);
        }
        if (exited) {
            *code = s->exit_code->curr[0];
            *cycles = s->cycles;
            return 1;
        }
    }
    *cycles = s->cycles;
    if (s->vcd)
        fflush(s->vcd_file);
    return 0;
}
"""


class SimulationError(RuntimeError):
    pass


def cache_dir():
    return Path(os.environ.get("INSITU_CACHE_DIR", Path.home() / ".cache" / "insitu")) / "cxxrtl"


def _yosys():
    from amaranth._toolchain.yosys import find_yosys
    return find_yosys(lambda version: version >= (0, 10))


def _build(rtlil_text, progress):
    yosys = _yosys()
    include = Path(yosys.data_dir()) / "include" / "backends" / "cxxrtl" / "runtime"
    key = hashlib.sha256((rtlil_text + DRIVER + "g++ -O2 v2").encode()).hexdigest()[:20]
    target = cache_dir() / key
    lib = target / "soc.so"
    if lib.exists():
        return lib
    gxx = shutil.which(os.environ.get("CXX", "g++"))
    if gxx is None:
        raise SimulationError("The compiled simulation needs a C++ compiler: install g++ (Debian: g++) or set CXX")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp = Path(tmp)
        (tmp / "soc.il").write_text(rtlil_text)
        if progress:
            progress("  generating C++ with write_cxxrtl ...")
        # The built-in yosys writes only inside its working directory: use relative names.
        _run_in(tmp, yosys)
        (tmp / "driver.cc").write_text(DRIVER)
        if progress:
            progress("  compiling with g++ -O2 (cached afterwards, ~1 min) ...")
        cmd = [gxx, "-O2", "-shared", "-fPIC", "-std=c++14", f"-I{include}", f"-I{tmp}", "-o", str(tmp / "soc.so"),
               str(tmp / "soc.cc"), str(include / "cxxrtl" / "capi" / "cxxrtl_capi.cc"),
               str(include / "cxxrtl" / "capi" / "cxxrtl_capi_vcd.cc"), str(tmp / "driver.cc")]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise SimulationError("Compiling the CXXRTL model failed:\n" + done.stderr[-2000:])
        try:
            os.replace(tmp, target)
        except OSError:            # built concurrently by another process: use theirs
            pass
    return lib


def _run_in(directory, yosys):
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        yosys.run(["-q", "-p", "read_rtlil soc.il; write_cxxrtl -header soc.cc"])
    finally:
        os.chdir(cwd)


class CompiledSoC:
    """A compiled simulation of an SoC (built from ``make_soc()`` with an empty RAM).

    ``load(image)`` writes firmware into RAM; ``run(max_cycles)`` runs until the firmware exits.
    """

    def __init__(self, make_soc, *, progress=None):
        from amaranth.back import rtlil
        soc = make_soc()
        if soc.rom_size is not None:
            raise SimulationError("The compiled simulation runs the one-RAM layout (SoC without rom_size): "
                                  "it writes the firmware into the RAM")
        ports = [soc.uart_tx, soc.uart_rx, soc.exit_stb, soc.exit_code, soc.uart_sent_stb, soc.uart_sent_data]
        text = rtlil.convert(soc, ports=ports, name="top")
        self.ram_words = soc.ram_size // 4
        self._lib = ctypes.CDLL(str(_build(text, progress)))
        lib = self._lib
        lib.insitu_create.restype = ctypes.c_void_p
        lib.insitu_create.argtypes = [ctypes.c_char_p]
        lib.insitu_ram.restype = ctypes.POINTER(ctypes.c_uint32)
        lib.insitu_ram.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
        lib.insitu_destroy.argtypes = [ctypes.c_void_p]
        lib.insitu_run.restype = ctypes.c_int
        lib.insitu_run.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_size_t,
                                   ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_uint32),
                                   ctypes.POINTER(ctypes.c_uint64)]
        lib.insitu_vcd.restype = ctypes.c_int
        lib.insitu_vcd.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint64]
        self._ram_name = b"ram mem"
        self._sim = None

    def reset(self):
        if self._sim:
            self._lib.insitu_destroy(self._sim)
        self._sim = self._lib.insitu_create(self._ram_name)
        if not self._sim:
            raise SimulationError("The compiled model lacks an expected port or the RAM (names changed?)")

    def load(self, image):
        """Reset the model and write ``image`` (bytes) at RAM address 0."""
        image = bytes(image) + bytes(-len(image) % 4)
        if len(image) // 4 > self.ram_words:
            raise SimulationError(f"Image of {len(image)} bytes does not fit in {self.ram_words * 4} bytes of RAM")
        self.reset()
        depth = ctypes.c_size_t()
        ram = self._lib.insitu_ram(self._sim, ctypes.byref(depth))
        for n in range(depth.value):
            ram[n] = int.from_bytes(image[4 * n:4 * n + 4], "little") if 4 * n < len(image) else 0

    def trace(self, path, cycles):
        """Write a VCD of every signal but the memories to ``path`` for the next ``cycles`` clocks."""
        if self._sim is None:
            raise SimulationError("No firmware loaded")
        if not self._lib.insitu_vcd(self._sim, os.fsencode(path), cycles):
            raise SimulationError(f"Cannot write the VCD file {path}")

    def run(self, max_cycles, *, uart_capacity=1 << 16):
        """Run until the firmware exits; returns ``(exit_code or None, cycles, uart_text)``."""
        if self._sim is None:
            raise SimulationError("No firmware loaded")
        buf = ctypes.create_string_buffer(uart_capacity)
        length, code, cycles = ctypes.c_size_t(0), ctypes.c_uint32(0), ctypes.c_uint64(0)
        exited = self._lib.insitu_run(self._sim, max_cycles, buf, uart_capacity, ctypes.byref(length),
                                      ctypes.byref(code), ctypes.byref(cycles))
        text = buf.raw[:min(length.value, uart_capacity)].decode("latin-1")
        return (code.value if exited else None), cycles.value, text

    def __del__(self):
        if getattr(self, "_sim", None):
            self._lib.insitu_destroy(self._sim)
            self._sim = None
