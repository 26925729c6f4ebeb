"""SmartDeal: weights as sparse power-of-two coefficients times a small basis (shift-and-add only).

Each output filter ``W[o]`` is flattened and padded to a multiple of 3 and viewed as an ``s × 3`` matrix
(for a 3×3 conv: rows are (input channel, kernel row), columns kernel columns). It is written as
``Ce · B``: ``B`` is a 3×3 basis shared by a group of ``group_size`` filters, ``Ce`` is sparse with non-zeros
``±2**e``, ``e`` in ``[e_min, e_max]``. So each weight row is ``Σ_j ±(B[j, :] << (e_j − e_min))`` in integers:

    W_int[o, row, :] = Σ_j (−1)**sign · (basis[g, j, :] << (exp − e_min))      (zero coefficients skipped)
    W_float = W_int · 2**(e_min − basis_frac)

Packed format (:func:`pack`, little-endian bit stream, LSB first): a header, the basis codes
(``basis_bits`` two's complement each), then per row a skip bit (the row is all zero) and, unless
skipped, per coefficient a zero flag and, unless zero, a sign bit and an exponent code of
``exp_bits = ceil(log2(e_max − e_min + 1))`` bits.
"""

import math
import struct
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .packed import CRC_BYTES, BitReader, BitWriter, seal, unseal

__all__ = ["SmartDealLayer", "decompose", "reconstruct", "pack", "unpack", "row_words", "storage_bits",
           "FormatError", "bit_stream"]

MAGIC = b"SDL1"
VERSION = 2           # 2: version 1's layout followed by a CRC-32 (:mod:`insitu.golden.packed`)
#: Header limits (checked when packing and unpacking).
BASIS_FRAC_RANGE = (-32, 32)
EXP_RANGE = (-32, 32)
# magic, version, ndim, dims[4], group size, basis bits, basis frac, e_min, e_max
_HEADER = struct.Struct("<4sBB4HHBbbb")


class FormatError(InputError):
    """Corrupt or truncated packed SmartDeal data."""


@dataclass(frozen=True)
class SmartDealLayer:
    shape: tuple            # original weight shape
    group_size: int         # filters sharing one basis
    basis: np.ndarray       # int (groups, 3, 3), signed basis_bits
    basis_bits: int
    basis_frac: int         # B = basis / 2**basis_frac
    zero: np.ndarray        # bool (c_out, s, 3)
    sign: np.ndarray        # bool (c_out, s, 3): negative
    exp: np.ndarray         # int (c_out, s, 3) in [e_min, e_max] (meaningless where zero)
    e_min: int
    e_max: int

    @property
    def scale(self):
        """``reconstruct(layer) · scale`` is the float layer."""
        return 2.0 ** (self.e_min - self.basis_frac)

    @property
    def exp_bits(self):
        return max(1, math.ceil(math.log2(self.e_max - self.e_min + 1)))


def _rows(weights):
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim not in (2, 4):
        raise InputError(f"Weights must be shaped (c_out, c_in, k, k) or (out, in), not {w.shape}")
    flat = w.reshape(w.shape[0], -1)
    pad = (-flat.shape[1]) % 3
    return np.pad(flat, ((0, 0), (0, pad))).reshape(w.shape[0], -1, 3), w.shape


def _project(c, e_min, e_max, threshold):
    """Nearest ±2**e (in the log domain) with e clamped to the range; zero below the threshold."""
    mag = np.abs(c)
    zero = (mag < max(threshold, 2.0 ** (e_min - 0.5))) | (mag == 0)
    with np.errstate(divide="ignore"):
        e = np.clip(np.round(np.log2(np.where(zero, 1.0, mag))), e_min, e_max).astype(np.int64)
    value = np.where(zero, 0.0, np.sign(c) * 2.0 ** e)
    return value, zero, c < 0, e


def decompose(weights, *, group_size=1, basis_bits=8, e_range=(-7, 5), threshold=0.0, density=None,
              iterations=20):
    """Find ``B`` and sparse power-of-two ``Ce`` by alternating least squares with power-of-two projection.

    Coefficients below ``threshold`` times the group's largest coefficient are zeroed (sparsity); with
    ``density`` (in (0, 1]), also all but the largest ``density`` fraction of each group's coefficients.
    Whole zero rows are skipped in the packed image.

    Returns ``(layer, relative_error)``; the error is ``‖W − reconstruct(layer)·scale‖ / ‖W‖``.
    """
    rows, shape = _rows(weights)
    c_out = rows.shape[0]
    if not isinstance(group_size, int) or not 1 <= group_size or c_out % group_size:
        raise InputError(f"Group size must be a positive integer dividing {c_out}, not {group_size!r}")
    e_min, e_max = e_range
    if not (isinstance(e_min, int) and isinstance(e_max, int) and e_min <= e_max):
        raise InputError(f"Exponent range must be two integers (e_min <= e_max), not {e_range!r}")
    if not isinstance(basis_bits, int) or not 2 <= basis_bits <= 16:
        raise InputError(f"Basis bits must be an integer in range [2, 16], not {basis_bits!r}")
    if density is not None and not (isinstance(density, (int, float)) and 0 < density <= 1):
        raise InputError(f"Density must be a number in (0, 1], not {density!r}")

    def cut(c):
        """The magnitude under which coefficients are zeroed."""
        mag = np.abs(c)
        limit = threshold * mag.max()
        if density is not None and density < 1:
            limit = max(limit, float(np.quantile(mag, 1 - density)))
        return limit
    groups = c_out // group_size
    grouped = rows.reshape(groups, -1, 3)
    basis_f = np.empty((groups, 3, 3))
    for g in range(groups):
        m = grouped[g]
        _, s, vt = np.linalg.svd(m, full_matrices=False)
        # Scale the basis so that coefficients sit mid-range of the exponents.
        basis_f[g] = vt * (s[0] / np.sqrt(len(m)) / 2.0 ** ((e_min + e_max) / 2))
        for _ in range(iterations):
            c = m @ np.linalg.pinv(basis_f[g])
            ce, *_ = _project(c, e_min, e_max, cut(c))
            if not ce.any():
                break
            basis_f[g], *_ = np.linalg.lstsq(ce, m, rcond=None)

    peak = max(np.abs(basis_f).max(), 1e-300)
    basis_frac = basis_bits - 1 - math.ceil(math.log2(peak + 1e-300) + 1e-12)
    limit = (1 << (basis_bits - 1)) - 1
    basis = np.clip(np.round(basis_f * 2.0 ** basis_frac), -limit, limit).astype(np.int64)
    zero = np.empty(grouped.shape, bool)
    sign = np.empty(grouped.shape, bool)
    exp = np.empty(grouped.shape, np.int64)
    for g in range(groups):
        c = grouped[g] @ np.linalg.pinv(basis[g] / 2.0 ** basis_frac)
        _, zero[g], sign[g], exp[g] = _project(c, e_min, e_max, cut(c))
    layer = SmartDealLayer(shape=tuple(shape), group_size=group_size, basis=basis, basis_bits=basis_bits,
                           basis_frac=basis_frac, zero=zero.reshape(rows.shape),
                           sign=(sign & ~zero).reshape(rows.shape),
                           exp=np.where(zero, e_min, exp).reshape(rows.shape),
                           e_min=e_min, e_max=e_max)
    w = np.asarray(weights, dtype=np.float64)
    error = np.linalg.norm(reconstruct(layer) * layer.scale - w) / max(np.linalg.norm(w), 1e-300)
    return layer, float(error)


def reconstruct(layer):
    """The integer weights the hardware produces, in the original shape (padding dropped)."""
    c_out, s, _ = layer.zero.shape
    basis = np.repeat(layer.basis, layer.group_size, axis=0).astype(np.int64)        # (c_out, 3, 3)
    coef = np.where(layer.zero, 0, np.where(layer.sign, -1, 1) << (layer.exp - layer.e_min))
    rows = np.einsum("osj,ojc->osc", coef.astype(np.int64), basis)
    size = int(np.prod(layer.shape[1:]))
    return rows.reshape(c_out, -1)[:, :size].reshape(layer.shape)



def _row_bits(layer):
    """The row section of the packed image: per row a skip bit and, unless skipped, per coefficient a zero
    flag and, unless zero, a sign bit and an exponent code. Returns a :class:`~insitu.golden.packed.BitWriter`."""
    bits = BitWriter()
    for o in range(layer.zero.shape[0]):
        for r in range(layer.zero.shape[1]):
            skip = bool(layer.zero[o, r].all())
            bits.put(skip, 1)
            if skip:
                continue
            for j in range(3):
                bits.put(layer.zero[o, r, j], 1)
                if not layer.zero[o, r, j]:
                    bits.put(layer.sign[o, r, j], 1)
                    bits.put(layer.exp[o, r, j] - layer.e_min, layer.exp_bits)
    return bits


def row_words(layer, word_bits=32):
    """The row section as the words of the decoder's coefficient memory (bit ``n`` of the stream is bit
    ``n mod word_bits`` of word ``n // word_bits``; the last word is zero padded)."""
    bits = _row_bits(layer)
    count = -(-bits.length // word_bits)
    mask = (1 << word_bits) - 1
    return [(bits.value >> (n * word_bits)) & mask for n in range(count)]


def pack(layer):
    """The bit-exact stored image (bytes): header, basis, per-row skip flags and coefficient codes, CRC-32."""
    if not (BASIS_FRAC_RANGE[0] <= layer.basis_frac <= BASIS_FRAC_RANGE[1]
            and EXP_RANGE[0] <= layer.e_min <= layer.e_max <= EXP_RANGE[1]):
        raise InputError(f"SmartDeal basis_frac {layer.basis_frac} and exponents [{layer.e_min}, {layer.e_max}] "
                         f"must lie in {BASIS_FRAC_RANGE} and {EXP_RANGE}")
    dims = list(layer.shape) + [0] * (4 - len(layer.shape))
    header = _HEADER.pack(MAGIC, VERSION, len(layer.shape), *dims, layer.group_size, layer.basis_bits,
                          layer.basis_frac, layer.e_min, layer.e_max)
    bits = BitWriter()
    for code in layer.basis.ravel():
        bits.put(code, layer.basis_bits)
    rows = _row_bits(layer)
    bits.put(rows.value, rows.length)
    payload = bits.value.to_bytes((bits.length + 7) // 8, "little")
    return seal(header + struct.pack("<I", bits.length) + payload)


def unpack(data):
    """Parse :func:`pack`'s image; raise :class:`FormatError` with a one-line reason if it is corrupt."""
    data = bytes(data)
    if len(data) < _HEADER.size + 4:
        raise FormatError(f"SmartDeal data is truncated: {len(data)} bytes, the header alone needs "
                          f"{_HEADER.size + 4}")
    magic, version, ndim, *rest = _HEADER.unpack_from(data)
    dims, (group, basis_bits, basis_frac, e_min, e_max) = rest[:4], rest[4:]
    if magic != MAGIC:
        raise FormatError(f"Not SmartDeal data (magic {magic!r}, expected {MAGIC!r})")
    if version not in (1, VERSION):
        raise FormatError(f"Unsupported SmartDeal format version {version} (this reads 1 and {VERSION})")
    if ndim not in (2, 4) or not all(dims[:ndim]) or any(dims[ndim:]) or not 2 <= basis_bits <= 16 or \
            not EXP_RANGE[0] <= e_min <= e_max <= EXP_RANGE[1] or group < 1 or dims[0] % group or \
            not BASIS_FRAC_RANGE[0] <= basis_frac <= BASIS_FRAC_RANGE[1]:
        raise FormatError("SmartDeal header is corrupt (shape, group, basis width or exponent range)")
    shape = tuple(dims[:ndim])
    (length,) = struct.unpack_from("<I", data, _HEADER.size)
    trailer = CRC_BYTES if version == VERSION else 0
    payload = data[_HEADER.size + 4:len(data) - trailer]
    if len(payload) != (length + 7) // 8:
        raise FormatError(f"SmartDeal payload is {len(payload)} bytes, the header says "
                          f"{(length + 7) // 8}: truncated or padded")
    if trailer:
        unseal(data, FormatError, "SmartDeal")
    # every size against the payload before allocating: a basis code per group tap and a skip bit per row
    c_out = shape[0]
    s = -(-int(np.prod(shape[1:], dtype=object)) // 3)
    if (c_out // group) * 9 * basis_bits + c_out * s > length:
        raise FormatError(f"SmartDeal header's shape {shape} needs more than the {length} payload bits")
    bits = BitReader(payload, length, FormatError, "SmartDeal payload ends in the middle of a row")

    groups = c_out // group
    basis = np.array([bits.signed(basis_bits) for _ in range(groups * 9)], dtype=np.int64).reshape(groups, 3, 3)
    exp_bits = max(1, math.ceil(math.log2(e_max - e_min + 1)))
    zero = np.ones((c_out, s, 3), bool)
    sign = np.zeros((c_out, s, 3), bool)
    exp = np.full((c_out, s, 3), e_min, np.int64)
    for o in range(c_out):
        for r in range(s):
            if bits.take(1):
                continue
            for j in range(3):
                zero[o, r, j] = bool(bits.take(1))
                if not zero[o, r, j]:
                    sign[o, r, j] = bool(bits.take(1))
                    code = bits.take(exp_bits)
                    if code > e_max - e_min:
                        raise FormatError(f"SmartDeal exponent code {code} is outside the range "
                                          f"[{e_min}, {e_max}]")
                    exp[o, r, j] = e_min + code
    if bits.left:
        raise FormatError(f"SmartDeal payload has {bits.left} bits left over after the last row")
    return SmartDealLayer(shape=shape, group_size=group, basis=basis, basis_bits=basis_bits,
                          basis_frac=basis_frac, zero=zero, sign=sign, exp=exp, e_min=e_min, e_max=e_max)



def bit_stream(data):
    """The payload bit stream of a :func:`pack` image (checked by :func:`unpack` first): ``(bytes, bits)``,
    the basis codes then the row section, LSB first, without the header and CRC."""
    unpack(data)
    data = bytes(data)
    (length,) = struct.unpack_from("<I", data, _HEADER.size)
    trailer = CRC_BYTES if data[4] == VERSION else 0
    return data[_HEADER.size + 4:len(data) - trailer], length


def storage_bits(layer):
    """Bits of the packed image, counted from :func:`pack` (header included)."""
    return 8 * len(pack(layer))
