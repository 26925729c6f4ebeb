"""Multi-level in-situ weight generation (MLG): weights regenerated from low-rank quantised factors.

A ``(c_out, c_in, k, k)`` layer is stored as three small factors:

* ``basis`` ``[bo, bi, k²]``: per output group ``b``, ``bi`` kernel shapes;
* ``u`` ``[bo, c_in, bi]``: level 1, inside a kernel: ``W1[b] = u[b] @ basis[b]`` (``c_in × k²``);
* ``v`` ``[c_out, bo]``: level 2, across kernels: ``W = v @ W1.reshape(bo, c_in·k²)``.

Each factor is quantised with a symmetric quantiser of ``2**bits`` levels and no zero: its codes are the odd
integers ``±1, ±3, … ±(2**bits − 1)`` times a per-factor scale. Generation is therefore two small integer
matrix products (:func:`generate`), and the float layer is ``generate(layer) · layer.scale``.
"""

import struct
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .packed import CRC_BYTES, seal, unseal

__all__ = ["MLGLayer", "quantize_odd", "decompose", "generate", "dequantize", "pack", "unpack", "storage_bits",
           "FormatError", "bit_stream", "SCALE_BITS"]

MAGIC = b"MLG1"
VERSION = 2           # 2: version 1's layout followed by a CRC-32 (:mod:`insitu.golden.packed`)
# magic, version, k, bo, bi, c_in, c_out, bits (basis, u, v), scales (basis, u, v) as float32, payload bits
_HEADER = struct.Struct("<4sBB4H3B3fI")


class FormatError(InputError):
    """Corrupt or truncated packed MLG data."""

#: Bits stored per factor scale (a float32).
SCALE_BITS = 32


@dataclass(frozen=True)
class MLGLayer:
    """Quantised MLG factors: integer odd codes and their scales, plus the bit widths ``(basis, u, v)``."""
    basis: np.ndarray      # int (bo, bi, k*k), odd
    u: np.ndarray          # int (bo, c_in, bi), odd
    v: np.ndarray          # int (c_out, bo), odd
    scales: tuple          # float (basis, u, v)
    bits: tuple            # int (basis, u, v)
    k: int

    c_out = property(lambda self: self.v.shape[0])
    c_in = property(lambda self: self.u.shape[1])
    bo = property(lambda self: self.v.shape[1])
    bi = property(lambda self: self.basis.shape[1])
    scale = property(lambda self: float(np.prod(self.scales)))


def quantize_odd(x, bits):
    """Quantise ``x`` to odd integer codes of ``2**bits`` levels (no zero) with the least-squares scale.

    Returns ``(codes, scale)``; ``codes * scale`` approximates ``x``. The scale is searched over a grid
    around ``max|x| / (2**bits − 1)``, choosing the one with the smallest squared error.
    """
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise InputError(f"Quantiser bits must be an integer in range [1, 16], not {bits!r}")
    x = np.asarray(x, dtype=np.float64)
    top = (1 << bits) - 1
    peak = np.abs(x).max()
    if peak == 0:
        return np.ones(x.shape, dtype=np.int64), 0.0
    best = None
    for factor in np.linspace(0.3, 1.0, 36):
        step = factor * peak / top
        codes = np.clip(2 * np.floor(x / (2 * step)) + 1, -top, top).astype(np.int64)
        # least-squares scale for these codes
        scale = float(np.sum(codes * x) / np.sum(codes * codes))
        err = float(np.sum((codes * scale - x) ** 2))
        if best is None or err < best[2]:
            best = (codes, scale, err)
    return best[0], best[1]


def decompose(weights, bi, bo, bits=(3, 6, 3), iterations=100):
    """Factor a float layer ``(c_out, c_in, k, k)`` into quantised MLG factors.

    Starts from a rank-``bo`` SVD of the ``c_out × (c_in·k²)`` matrix, then alternates least squares for ``v``
    and for the level-1 matrices, projecting each onto rank ``bi`` (SVD) every time. Then ``basis`` and ``u``
    are quantised, and ``v`` is refitted by least squares against the quantised level 1 and quantised last.

    Returns ``(layer, relative_error)``, the error being ``‖W − dequantize(layer)‖ / ‖W‖``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise InputError(f"Weights must be shaped (c_out, c_in, k, k), not {w.shape}")
    c_out, c_in, k, _ = w.shape
    if not isinstance(bo, (int, np.integer)) or not 1 <= bo <= min(c_out, c_in * k * k):
        raise InputError(f"bo must be an integer in range [1, {min(c_out, c_in * k * k)}], not {bo!r}")
    if not isinstance(bi, (int, np.integer)) or not 1 <= bi <= min(c_in, k * k):
        raise InputError(f"bi must be an integer in range [1, {min(c_in, k * k)}], not {bi!r}")
    if len(bits) != 3:
        raise InputError(f"Bits must be a (basis, u, v) triple, not {bits!r}")
    flat = w.reshape(c_out, c_in * k * k)
    left, sing, right = np.linalg.svd(flat, full_matrices=False)
    v_f = left[:, :bo] * np.sqrt(sing[:bo])
    w1 = (np.sqrt(sing[:bo])[:, None] * right[:bo]).reshape(bo, c_in, k * k)

    def rank_bi(w1):
        """Project each level-1 matrix onto rank bi; return (u, basis)."""
        u_f = np.empty((bo, c_in, bi))
        basis_f = np.empty((bo, bi, k * k))
        for b in range(bo):
            l1, s1, r1 = np.linalg.svd(w1[b], full_matrices=False)
            u_f[b] = l1[:, :bi] * np.sqrt(s1[:bi])
            basis_f[b] = np.sqrt(s1[:bi])[:, None] * r1[:bi]
        return u_f, basis_f

    # Alternating least squares: v given W1, W1 given v, each W1[b] projected back to rank bi.
    for _ in range(iterations):
        u_f, basis_f = rank_bi(w1)
        w1 = np.einsum("bci,bit->bct", u_f, basis_f)
        v_f, *_ = np.linalg.lstsq(w1.reshape(bo, -1).T, flat.T, rcond=None)
        v_f = v_f.T
        w1_ls, *_ = np.linalg.lstsq(v_f, flat, rcond=None)
        w1 = w1_ls.reshape(bo, c_in, k * k)
    u_f, basis_f = rank_bi(w1)

    basis_q, basis_s = quantize_odd(basis_f, bits[0])
    u_q, u_s = quantize_odd(u_f, bits[1])
    w1_q = np.einsum("bci,bit->bct", u_q, basis_q).reshape(bo, c_in * k * k) * (basis_s * u_s)
    v_ls, *_ = np.linalg.lstsq(w1_q.T, flat.T, rcond=None)            # refit v to the quantised level 1
    v_q, v_s = quantize_odd(v_ls.T, bits[2])
    layer = MLGLayer(basis=basis_q, u=u_q, v=v_q, scales=(basis_s, u_s, v_s), bits=tuple(bits), k=k)
    error = np.linalg.norm(dequantize(layer) - w) / max(np.linalg.norm(w), 1e-300)
    return layer, float(error)


def generate(layer):
    """The integer weights ``(c_out, c_in, k, k)`` the hardware generates: ``v @ (u @ basis)``, exact."""
    w1 = np.einsum("bci,bit->bct", layer.u.astype(np.int64), layer.basis.astype(np.int64))
    w = layer.v.astype(np.int64) @ w1.reshape(layer.bo, -1)
    return w.reshape(layer.c_out, layer.c_in, layer.k, layer.k)


def dequantize(layer):
    """The float layer the factors stand for: ``generate(layer) · scale``."""
    return generate(layer) * layer.scale


def pack(layer):
    """The bit-exact stored image (bytes): a header (shape, ranks, code widths, float32 scales), then the
    codes of ``basis``, ``u`` and ``v`` in C order, each odd code ``c`` of ``b`` bits stored as the ``b``-bit
    unsigned ``(c + 2**b − 1) / 2``, LSB first in a little-endian bit stream."""
    value, length = 0, 0
    for codes, bits in zip((layer.basis, layer.u, layer.v), layer.bits):
        top = (1 << bits) - 1
        for c in codes.ravel():
            value |= ((int(c) + top) >> 1) << length
            length += bits
    header = _HEADER.pack(MAGIC, VERSION, layer.k, layer.bo, layer.bi, layer.c_in, layer.c_out,
                          *layer.bits, *layer.scales, length)
    return seal(header + value.to_bytes((length + 7) // 8, "little"))


def unpack(data):
    """Parse :func:`pack`'s image; raise :class:`FormatError` with a one-line reason if it is corrupt.

    The scales come back as float32 values (what is stored)."""
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise FormatError(f"MLG data is truncated: {len(data)} bytes, the header alone needs {_HEADER.size}")
    magic, version, k, bo, bi, c_in, c_out, *rest = _HEADER.unpack_from(data)
    bits, scales, length = tuple(rest[:3]), tuple(rest[3:6]), rest[6]
    if magic != MAGIC:
        raise FormatError(f"Not MLG data (magic {magic!r}, expected {MAGIC!r})")
    if version not in (1, VERSION):
        raise FormatError(f"Unsupported MLG format version {version} (this reads 1 and {VERSION})")
    if not (k and bo and bi and c_in and c_out and all(1 <= b <= 16 for b in bits)):
        raise FormatError("MLG header is corrupt (kernel size, ranks, channels or code widths)")
    shapes = [(bo, bi, k * k), (bo, c_in, bi), (c_out, bo)]
    expected = sum(int(np.prod(shape)) * b for shape, b in zip(shapes, bits))
    if length != expected:
        raise FormatError(f"MLG header says {length} payload bits, its shapes need {expected}")
    trailer = CRC_BYTES if version == VERSION else 0
    payload = data[_HEADER.size:len(data) - trailer]
    if len(payload) != (length + 7) // 8:
        raise FormatError(f"MLG payload is {len(payload)} bytes, the header says {(length + 7) // 8}: "
                          f"truncated or padded")
    if trailer:
        unseal(data, FormatError, "MLG")
    if not all(np.isfinite(scales)) or not all(s > 0 for s in scales):
        raise FormatError(f"MLG header is corrupt (scales {scales} must be positive and finite)")
    value, pos, factors = int.from_bytes(payload, "little"), 0, []
    for shape, b in zip(shapes, bits):
        top = (1 << b) - 1
        n = int(np.prod(shape))
        raw = [(value >> (pos + i * b)) & top for i in range(n)]
        pos += n * b
        factors.append((2 * np.array(raw, dtype=np.int64) - top).reshape(shape))
    if value >> length:
        raise FormatError("MLG payload has bits set after the last code")
    return MLGLayer(basis=factors[0], u=factors[1], v=factors[2], scales=scales, bits=bits, k=k)



def bit_stream(data):
    """The payload bit stream of a :func:`pack` image (checked by :func:`unpack` first): ``(bytes, bits)``,
    the codes of ``basis``, ``u`` and ``v``, LSB first, without the header and CRC."""
    unpack(data)
    data = bytes(data)
    length = _HEADER.unpack_from(data)[-1]
    trailer = CRC_BYTES if data[4] == VERSION else 0
    return data[_HEADER.size:len(data) - trailer], length


def storage_bits(layer):
    """Bits of the packed image, counted from :func:`pack` (header and float32 scales included)."""
    return 8 * len(pack(layer))
