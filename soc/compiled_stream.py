"""Compiled simulation of one stream component: the component compiled with CXXRTL (the build and cache
of the SoC's compiled simulation, :mod:`insitu.soc.cxxrtl`) and driven by ``stream_driver.cc`` like
:func:`insitu.hdl.testing.simulate_stream`: payloads into one input stream, out of one output stream,
seeded random stalls on both. Thousands of transfers per millisecond instead of per second: the block
tests' compiled tier and the whole-network pipeline's simulation use it.

One compiled model per configuration (parameters fixed at construction); the data, and weights where a
block takes them through ports, vary per run.
"""

import ctypes
from pathlib import Path

import numpy as np
from amaranth import Shape
from amaranth.back import rtlil
from amaranth.lib import data

from . import cxxrtl

__all__ = ["CompiledStream", "pack", "unpack"]

DRIVER = Path(__file__).with_name("stream_driver.cc")


def fields(shape, path="", offset=0):
    """``[(path, offset, width, signed)]`` of every integer field of a payload ``shape`` (a shape or a data
    layout), paths as ``"coef.0.exp"`` ("" for a plain shape)."""
    if isinstance(shape, data.Layout):
        if isinstance(shape, data.ArrayLayout):
            members = [(str(n), shape.elem_shape, n * data.Layout.cast(shape.elem_shape).size if isinstance(
                shape.elem_shape, data.Layout) else n * Shape.cast(shape.elem_shape).width) for n in range(shape.length)]
        else:
            members = [(name, field.shape, field.offset) for name, field in shape]
        out = []
        for name, sub, at in members:
            out += fields(sub, f"{path}.{name}" if path else name, offset + at)
        return out
    s = Shape.cast(shape)
    if s.width > 64:
        raise ValueError(f"Field {path or 'payload'} is {s.width} bits: pack and unpack take fields of at most 64")
    return [(path, offset, s.width, s.signed)]


def _parts(at, width):
    """A field as pieces of at most 32 bits: ``(offset, width, shift in the value)``."""
    return [(at + lo, min(32, width - lo), lo) for lo in range(0, width, 32)]


def _chunks(shape):
    return -(-(data.Layout.cast(shape).size if isinstance(shape, data.Layout) else Shape.cast(shape).width) // 32)


def pack(shape, values, count=None):
    """Raw payload words ``(n, chunks)`` (uint32) of ``values``: field path → array (missing fields 0), or
    one array for a plain shape; two's complement."""
    if not isinstance(values, dict):
        values = {"": values}
    n = count if count is not None else len(next(iter(values.values())))
    words = np.zeros((n, _chunks(shape) + 1), dtype=np.uint64)
    for path, at, width, _ in fields(shape):
        if path not in values:
            continue
        value = np.asarray(values[path]).astype(np.int64).astype(np.uint64)
        for part_at, part_width, shift in _parts(at, width):
            v = (value >> np.uint64(shift)) & np.uint64((1 << part_width) - 1)
            v <<= np.uint64(part_at % 32)
            words[:, part_at // 32] |= v & np.uint64(0xFFFFFFFF)
            words[:, part_at // 32 + 1] |= v >> np.uint64(32)
    return words[:, :-1].astype(np.uint32)


def unpack(shape, words):
    """The fields of raw payload words: field path → int64 array (one array for a plain shape)."""
    wide = np.concatenate([words.astype(np.uint64), np.zeros((len(words), 1), np.uint64)], axis=1)
    out = {}
    for path, at, width, is_signed in fields(shape):
        v = np.zeros(len(words), dtype=np.uint64)
        for part_at, part_width, shift in _parts(at, width):
            piece = (wide[:, part_at // 32] >> np.uint64(part_at % 32)) | \
                (wide[:, part_at // 32 + 1] << np.uint64(32 - part_at % 32))
            v |= (piece & np.uint64((1 << part_width) - 1)) << np.uint64(shift)
        if is_signed and width < 64:
            v = np.where(v >= np.uint64(1 << (width - 1)), v - np.uint64(1 << width), v)   # wraps to two's complement
        out[path] = v.astype(np.int64)
    return out[""] if list(out) == [""] else out


class CompiledStream:
    """``dut`` (a component with stream members ``inp`` and ``out``; ``inp=None`` for a source) compiled
    once; :meth:`run` sends raw payloads and collects raw outputs (:func:`pack`, :func:`unpack`);
    :meth:`set` holds another input port at a value."""

    def __init__(self, dut, *, inp="i", out="o", progress=None):
        text = rtlil.convert(dut, name="top")
        path = cxxrtl.build(text, progress, driver=DRIVER)
        self._lib = lib = ctypes.CDLL(str(path))
        lib.block_create.restype = ctypes.c_void_p
        lib.block_create.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        lib.block_destroy.argtypes = [ctypes.c_void_p]
        lib.block_set.restype = ctypes.c_int
        lib.block_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint32)]
        lib.block_chunks.restype = ctypes.c_size_t
        lib.block_chunks.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.block_run.restype = ctypes.c_int64
        lib.block_run.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32), ctypes.c_size_t,
                                  ctypes.POINTER(ctypes.c_uint32), ctypes.c_size_t, ctypes.c_uint64,
                                  ctypes.c_double, ctypes.c_uint64]
        self._block = lib.block_create((inp or "").encode(), out.encode())
        if not self._block:
            raise RuntimeError(f"The compiled model lacks clk, rst or the streams {inp!r} / {out!r}")
        self._chunks_in = lib.block_chunks(self._block, 0)
        self._chunks_out = lib.block_chunks(self._block, 1)

    def __del__(self):
        if getattr(self, "_block", None):
            self._lib.block_destroy(self._block)

    def set(self, name, value, width=32):
        """Hold input port ``name`` at ``value`` (an int; two's complement if negative)."""
        words = -(-width // 32)
        raw = int(value) & ((1 << (32 * words)) - 1)
        chunks = (ctypes.c_uint32 * words)(*[(raw >> (32 * n)) & 0xFFFFFFFF for n in range(words)])
        if not self._lib.block_set(self._block, name.encode(), chunks):
            raise KeyError(f"No input port {name!r} in the compiled model")

    def run(self, words, count, *, seed=0, stall=0.0, max_cycles=None):
        """Reset, send the raw payloads ``words`` (``(n, chunks)`` uint32, see :func:`pack`; ``None`` for a
        source), return ``(count raw outputs, clocks)``. ``TimeoutError`` names the seed."""
        words = np.zeros((0, 1), dtype=np.uint32) if words is None else np.ascontiguousarray(words, dtype=np.uint32)
        if self._chunks_in and words.shape[1] != self._chunks_in and len(words):
            raise ValueError(f"Input payloads are {self._chunks_in} words, not {words.shape[1]}")
        out = np.zeros((count, self._chunks_out), dtype=np.uint32)
        if max_cycles is None:
            max_cycles = 1000 + int((len(words) + count) * 8 / (1 - min(stall, 0.9)))
        clocks = self._lib.block_run(self._block, words.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)),
                                     len(words), out.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), count,
                                     seed, float(stall), max_cycles)
        if clocks < 0:
            raise TimeoutError(f"The compiled block did not give {count} outputs within {max_cycles} clocks "
                               f"(seed {seed})")
        return out, clocks
