"""ESCALATE: basis-first decomposed convolution (kernel decomposition, hybrid quantisation).

A ``(c_out, c_in, k, k)`` layer is stored as ``M`` small basis kernels per input channel (or ``M`` shared by
all channels) and sparse low-bit coefficients::

    W[o, c] ≈ Σ_m C[o, c, m] · B[c, m]          (per-channel basis)       B: (c_in, M, k, k)
    W[o, c] ≈ Σ_m C[o, c, m] · B[m]             (shared basis)            B: (M, k, k)

Hybrid quantisation: the basis, reused by every output channel, in ``basis_bits`` (8) bits at one scale;
the coefficients, each used once per pixel, sparse (the largest ``density`` fraction kept) and either
``coef_bits``-bit integers or signed powers of two ``±2**j``, ``j`` in ``[0, levels)`` (shift-and-add).
The float layer is ``weights(layer) · scale``, ``scale = basis_scale · coef_scale``.

Integer inference is basis-first (:func:`conv2d`): stage 1 convolves each input channel with its basis
kernels, ``P[c, m] = x[c] ⋆ B[c, m]``; stage 2 combines them, ``y[o] = Σ_{c,m} C[o, c, m] · P[c, m]``, so
the intermediate maps stream into the coefficient stage and are never stored whole. By linearity it equals
the direct convolution with :func:`weights` exactly.

Packed image (:func:`pack`, version 1, little-endian): a header, the basis codes (``basis_bits`` two's
complement each), then per coefficient a zero flag and, unless zero, its code (``coef_bits`` two's
complement, or a sign bit and ``ceil(log2 levels)`` exponent bits), LSB first, then a CRC-32
(:mod:`insitu.golden.packed`).
"""

import math
import struct
from dataclasses import dataclass

import numpy as np

from .conv import check_activations, check_padding, windows
from .errors import InputError
from .packed import CRC_BYTES, BitReader, BitWriter, seal, unseal

__all__ = ["EscalateLayer", "FormatError", "bit_stream", "decompose", "weights", "stage1", "stage2", "conv2d",
           "pack", "unpack", "storage_bits", "quantise_basis", "quantise_coefficients", "MODES"]

MAGIC = b"ESC1"
VERSION = 1
MODES = ("int", "pow2")
# magic, version, k, bases, c_in, c_out, flags (bit 0 shared, bit 1 pow2), basis bits, coef bits or levels,
# basis scale, coef scale (float32), payload bits
_HEADER = struct.Struct("<4sBBBHHBBBffI")


class FormatError(InputError):
    """Corrupt or truncated packed ESCALATE data."""


@dataclass(frozen=True)
class EscalateLayer:
    basis: np.ndarray        # int (c_in, M, k, k) or shared (M, k, k), signed basis_bits
    coef: np.ndarray         # int (c_out, c_in, M): 0, or a coef_bits integer, or ±2**j
    basis_bits: int
    mode: str                # "int" or "pow2"
    coef_bits: int           # int mode: bits per code; pow2 mode: exponent levels
    basis_scale: float
    coef_scale: float

    shared = property(lambda self: self.basis.ndim == 3)
    c_out = property(lambda self: self.coef.shape[0])
    c_in = property(lambda self: self.coef.shape[1])
    bases = property(lambda self: self.coef.shape[2])
    k = property(lambda self: self.basis.shape[-1])
    scale = property(lambda self: float(self.basis_scale) * float(self.coef_scale))

    def basis_of(self):
        """The basis per input channel, ``(c_in, M, k, k)`` (a shared basis repeated)."""
        return np.broadcast_to(self.basis, (self.c_in, *self.basis.shape)) if self.shared else self.basis


def _check_mode(mode, coef_bits):
    if mode not in MODES:
        raise InputError(f"Coefficient mode must be one of {', '.join(MODES)}, not {mode!r}")
    top = 8 if mode == "int" else 16
    if isinstance(coef_bits, bool) or not isinstance(coef_bits, (int, np.integer)) or not 2 <= coef_bits <= top:
        what = "bits" if mode == "int" else "exponent levels"
        raise InputError(f"Coefficient {what} must be an integer in range [2, {top}], not {coef_bits!r}")


def quantise_basis(basis, bits):
    """``(codes, scale)``: symmetric ``bits``-bit codes of a float basis at one scale."""
    limit = (1 << (bits - 1)) - 1
    scale = max(float(np.abs(basis).max()), 1e-300) / limit
    return np.clip(np.round(basis / scale), -limit, limit).astype(np.int64), scale


def quantise_coefficients(coef, mode, coef_bits, density, scale=None):
    """``(codes, scale)``: the largest ``density`` fraction of ``coef`` kept, the rest zero; kept values as
    ``coef_bits``-bit integers or ``±2**j`` (``j < coef_bits`` levels) at one scale (the largest kept value
    maps to the top code unless ``scale`` is given)."""
    mag = np.abs(coef)
    keep = mag >= (np.quantile(mag, 1 - density) if density < 1 else 0)
    keep &= mag > 0
    top = (1 << (coef_bits - 1)) - 1 if mode == "int" else 1 << (coef_bits - 1)
    if scale is None:
        scale = max(float(mag[keep].max()) if keep.any() else 1.0, 1e-300) / top
    if mode == "int":
        codes = np.clip(np.round(coef / scale), -top, top)
    else:
        j = np.clip(np.round(np.log2(np.maximum(mag, 1e-300) / scale)), 0, coef_bits - 1)
        codes = np.sign(coef) * 2.0 ** j
    return np.where(keep, codes, 0).astype(np.int64), scale


def decompose(w, bases, *, shared=False, basis_bits=8, mode="pow2", coef_bits=4, density=0.5):
    """Factor a float ``(c_out, c_in, k, k)`` layer: a truncated SVD per input channel (or over all kernels
    for a shared basis), the basis quantised, the coefficients refitted by least squares to the quantised
    basis, then made sparse and quantised. Returns ``(layer, relative_error)``."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise InputError(f"Weights must be shaped (c_out, c_in, k, k), not {w.shape}")
    c_out, c_in, k, _ = w.shape
    most = k * k if shared else min(c_out, k * k)
    if isinstance(bases, bool) or not isinstance(bases, (int, np.integer)) or not 1 <= bases <= most:
        raise InputError(f"Basis kernels per channel must be an integer in range [1, {most}], not {bases!r}")
    if not isinstance(basis_bits, (int, np.integer)) or not 2 <= basis_bits <= 16:
        raise InputError(f"Basis bits must be an integer in range [2, 16], not {basis_bits!r}")
    _check_mode(mode, coef_bits)
    if not isinstance(density, (int, float)) or not 0 < density <= 1:
        raise InputError(f"Density must be a number in (0, 1], not {density!r}")
    if shared:
        rows = w.reshape(c_out * c_in, k * k)
        _, s, vt = np.linalg.svd(rows, full_matrices=False)
        basis_f = (np.sqrt(s[:bases])[:, None] * vt[:bases]).reshape(bases, k, k)
    else:
        basis_f = np.empty((c_in, bases, k, k))
        for c in range(c_in):
            _, s, vt = np.linalg.svd(w[:, c].reshape(c_out, k * k), full_matrices=False)
            basis_f[c] = (np.sqrt(s[:bases])[:, None] * vt[:bases]).reshape(bases, k, k)
    codes, basis_scale = quantise_basis(basis_f, basis_bits)
    coef = refit(w, codes * basis_scale)
    coef_codes, coef_scale = quantise_coefficients(coef, mode, coef_bits, density)
    layer = EscalateLayer(basis=codes, coef=coef_codes, basis_bits=basis_bits, mode=mode, coef_bits=coef_bits,
                          basis_scale=float(np.float32(basis_scale)), coef_scale=float(np.float32(coef_scale)))
    error = np.linalg.norm(weights(layer) * layer.scale - w) / max(np.linalg.norm(w), 1e-300)
    return layer, float(error)


def refit(w, basis):
    """Least-squares coefficients ``(c_out, c_in, M)`` of float weights on a float basis (shared or not)."""
    c_out, c_in, k, _ = w.shape
    per_channel = np.broadcast_to(basis, (c_in, *basis.shape)) if basis.ndim == 3 else basis
    return np.stack([w[:, c].reshape(c_out, k * k) @ np.linalg.pinv(per_channel[c].reshape(-1, k * k))
                     for c in range(c_in)], axis=1)


def weights(layer):
    """The integer kernel ``(c_out, c_in, k, k)`` the layer stands for: ``Σ_m C[o, c, m] · B[c, m]``, exact."""
    return np.einsum("ocm,cmij->ocij", layer.coef.astype(np.int64), layer.basis_of().astype(np.int64))


def stage1(x, layer, padding):
    """Basis stage: ``P[c, m] = x[c] ⋆ B[c, m]``, integer ``(c_in, M, h', w')``."""
    k = layer.k
    win = windows(x, k, padding)                                   # (h', w', k², c_in)
    b = layer.basis_of().astype(np.int64).reshape(layer.c_in, layer.bases, k * k)
    return np.einsum("yxtc,cmt->cmyx", win, b)


def stage2(p, layer):
    """Coefficient stage: ``y[o] = Σ_{c,m} C[o, c, m] · P[c, m]``, integer ``(c_out, h', w')``."""
    return np.einsum("ocm,cmyx->oyx", layer.coef.astype(np.int64), p)


def conv2d(x, layer, padding, *, act_width=8):
    """Basis-first integer convolution (stride 1) of ``(c_in, h, w)`` activations."""
    x = check_activations(x, layer.c_in, act_width)
    return stage2(stage1(x, layer, check_padding(padding, layer.k)), layer)



def _exp_bits(levels):
    return max(1, math.ceil(math.log2(levels)))


def pack(layer):
    """The bit-exact stored image (bytes); see the module docstring."""
    _check_mode(layer.mode, layer.coef_bits)
    flags = int(layer.shared) | (2 if layer.mode == "pow2" else 0)
    bits = BitWriter()
    for code in layer.basis.ravel():
        bits.put(code, layer.basis_bits)
    for c in layer.coef.ravel():
        bits.put(c == 0, 1)
        if c == 0:
            continue
        if layer.mode == "int":
            bits.put(c, layer.coef_bits)
        else:
            bits.put(c < 0, 1)
            bits.put(int(abs(c)).bit_length() - 1, _exp_bits(layer.coef_bits))
    header = _HEADER.pack(MAGIC, VERSION, layer.k, layer.bases, layer.c_in, layer.c_out, flags, layer.basis_bits,
                          layer.coef_bits, layer.basis_scale, layer.coef_scale, bits.length)
    return seal(header + bits.value.to_bytes((bits.length + 7) // 8, "little"))


def unpack(data):
    """Parse :func:`pack`'s image; raise :class:`FormatError` with a one-line reason if it is corrupt. Every
    size is checked against the payload before anything is allocated."""
    data = bytes(data)
    if len(data) < _HEADER.size + CRC_BYTES:
        raise FormatError(f"ESCALATE data is truncated: {len(data)} bytes, the header alone needs "
                          f"{_HEADER.size + CRC_BYTES}")
    magic, version, k, bases, c_in, c_out, flags, basis_bits, coef_bits, b_scale, c_scale, length = \
        _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FormatError(f"Not ESCALATE data (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise FormatError(f"Unsupported ESCALATE format version {version} (this reads {VERSION})")
    mode = "pow2" if flags & 2 else "int"
    try:
        _check_mode(mode, coef_bits)
    except ValueError:
        raise FormatError("ESCALATE header is corrupt (coefficient width)") from None
    if not (k % 2 and bases and c_in and c_out and 2 <= basis_bits <= 16 and flags < 4) or \
            not all(np.isfinite([b_scale, c_scale])) or b_scale <= 0 or c_scale <= 0:
        raise FormatError("ESCALATE header is corrupt (shape, widths or scales)")
    payload = data[_HEADER.size:len(data) - CRC_BYTES]
    if len(payload) != (length + 7) // 8:
        raise FormatError(f"ESCALATE payload is {len(payload)} bytes, the header says {(length + 7) // 8}: "
                          f"truncated or padded")
    unseal(data, FormatError, "ESCALATE")
    shared = bool(flags & 1)
    basis_shape = (bases, k, k) if shared else (c_in, bases, k, k)
    n_basis, n_coef = math.prod(basis_shape), c_out * c_in * bases
    if n_basis * basis_bits + n_coef > length:          # a zero flag per coefficient at least
        raise FormatError(f"ESCALATE header's shapes need more than the {length} payload bits")
    bits = BitReader(payload, length, FormatError, "ESCALATE payload ends in the middle of a coefficient")
    basis = np.array([bits.signed(basis_bits) for _ in range(n_basis)], np.int64).reshape(basis_shape)
    coef = np.zeros(n_coef, np.int64)
    exp_bits = _exp_bits(coef_bits)
    for i in range(n_coef):
        if bits.take(1):
            continue
        if mode == "int":
            code = bits.signed(coef_bits)
            if code == 0 or abs(code) > (1 << (coef_bits - 1)) - 1:
                raise FormatError(f"ESCALATE coefficient code {code} is outside its range")
        else:
            negative, j = bits.take(1), bits.take(exp_bits)
            if j >= coef_bits:
                raise FormatError(f"ESCALATE exponent {j} is outside [0, {coef_bits})")
            code = -(1 << j) if negative else 1 << j
        coef[i] = code
    if bits.left:
        raise FormatError(f"ESCALATE payload has {bits.left} bits left over after the last coefficient")
    return EscalateLayer(basis=basis, coef=coef.reshape(c_out, c_in, bases), basis_bits=basis_bits, mode=mode,
                         coef_bits=coef_bits, basis_scale=float(b_scale), coef_scale=float(c_scale))



def bit_stream(data):
    """The payload bit stream of a :func:`pack` image (checked by :func:`unpack` first): ``(bytes, bits)``,
    the basis codes then the coefficients, LSB first, without the header and CRC."""
    unpack(data)
    data = bytes(data)
    return data[_HEADER.size:len(data) - CRC_BYTES], _HEADER.unpack_from(data)[-1]


def storage_bits(layer):
    """Bits of the packed image, counted from :func:`pack` (header and CRC included)."""
    return 8 * len(pack(layer))
