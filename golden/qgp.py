"""Quantized Guided Pruning: one ±1 weight per k×k kernel; convolution becomes multiplex and add/subtract.

The golden twin of :class:`insitu.hdl.MuxConv`.
"""

from dataclasses import dataclass

import numpy as np

from .conv import check_activations, check_padding, check_kernel_size, pad
from .errors import InputError

__all__ = ["QGPLayer", "compress", "expand", "muxconv2d", "pack", "unpack", "code_width", "storage_bits"]


@dataclass(frozen=True)
class QGPLayer:
    """A QGP-compressed convolution layer.

    Attributes
    ----------
    index : ndarray of int, (c_out, c_in)
        Kept tap of each kernel, in ``[0, k²)``, row-major (``r·k + c``).
    sign : ndarray of int, (c_out, c_in)
        Sign of the kept tap, ``-1`` or ``+1``.
    scale : ndarray of float, (c_out,)
        Per-output-channel magnitude: the float layer is approximated by ``scale[o] · expand(layer)[o]``.
    k : int
        Kernel size.
    """
    index: np.ndarray
    sign: np.ndarray
    scale: np.ndarray
    k: int

    def __post_init__(self):
        k = check_kernel_size(self.k)
        index, sign = np.asarray(self.index), np.asarray(self.sign)
        if index.ndim != 2 or sign.shape != index.shape:
            raise InputError(f"Index and sign must both be shaped (c_out, c_in), not {index.shape} and {sign.shape}")
        if index.size and (index.min() < 0 or index.max() >= k * k):
            raise InputError(f"Tap index must be in range [0, {k * k}) for k={k}")
        if not np.all(np.isin(sign, (-1, 1))):
            raise InputError("Sign must be -1 or +1")
        if np.shape(self.scale) != (index.shape[0],):
            raise InputError(f"Scale must be shaped ({index.shape[0]},), not {np.shape(self.scale)}")

    c_out = property(lambda self: self.index.shape[0])
    c_in = property(lambda self: self.index.shape[1])


def compress(weights):
    """Compress float conv weights ``(c_out, c_in, k, k)`` to QGP.

    Per kernel the largest-magnitude tap is kept (the lowest index on a tie) with its sign; the scale of
    output channel ``o`` is the mean magnitude of its kept taps, the least-squares optimal scale for the
    chosen ±1 pattern.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise InputError(f"Weights must be shaped (c_out, c_in, k, k), not {w.shape}")
    c_out, c_in, k, _ = w.shape
    check_kernel_size(k)
    flat = w.reshape(c_out, c_in, k * k)
    index = np.argmax(np.abs(flat), axis=2)
    kept = np.take_along_axis(flat, index[..., None], axis=2)[..., 0]
    sign = np.where(kept < 0, -1, 1)
    scale = np.abs(kept).mean(axis=1)
    return QGPLayer(index=index.astype(np.int64), sign=sign.astype(np.int64), scale=scale, k=k)


def expand(layer):
    """The sparse ±1 kernel ``(c_out, c_in, k, k)`` that the layer stands for (integer)."""
    k = layer.k
    dense = np.zeros((layer.c_out, layer.c_in, k * k), dtype=np.int64)
    np.put_along_axis(dense, layer.index[..., None], layer.sign[..., None], axis=2)
    return dense.reshape(layer.c_out, layer.c_in, k, k)


def muxconv2d(x, layer, padding, *, act_width=8):
    """Multiplexer convolution: integer ``(c_in, h, w)`` → integer accumulators ``(c_out, h', w')``.

    ``out[o, y, x] = Σ_ci sign[o, ci] · xpad[ci, y + r, x + c]`` with ``(r, c) = divmod(index[o, ci], k)``.
    """
    x = check_activations(x, layer.c_in, act_width)
    k = layer.k
    xp = pad(x, check_padding(padding, k))
    ho, wo = xp.shape[1] - k + 1, xp.shape[2] - k + 1
    if ho < 1 or wo < 1:
        raise InputError(f"Image {x.shape[1]}x{x.shape[2]} with padding {padding} is smaller than the "
                         f"{k}x{k} kernel")
    out = np.zeros((layer.c_out, ho, wo), dtype=np.int64)
    for o in range(layer.c_out):
        for ci in range(layer.c_in):
            r, c = divmod(int(layer.index[o, ci]), k)
            out[o] += layer.sign[o, ci] * xp[ci, r:r + ho, c:c + wo]
    return out


def code_width(k):
    """Bits per kernel: ``ceil(log2(k²))`` index bits plus one sign bit (5 for 3×3)."""
    return (check_kernel_size(k) ** 2 - 1).bit_length() + 1


def pack(layer):
    """The weight-memory codes ``(c_out, c_in)``: ``index | (sign < 0) << index_width``.

    These are exactly the bits :class:`insitu.hdl.MuxConv` stores (its ``init``).
    """
    index_width = code_width(layer.k) - 1
    return (layer.index | ((layer.sign < 0).astype(np.int64) << index_width)).astype(np.int64)


def unpack(codes, k, scale=None):
    """Inverse of :func:`pack`."""
    codes = np.asarray(codes, dtype=np.int64)
    index_width = code_width(k) - 1
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << (index_width + 1)):
        raise InputError(f"QGP codes for k={k} must be in range [0, {1 << (index_width + 1)})")
    index = codes & ((1 << index_width) - 1)
    sign = np.where(codes >> index_width, -1, 1)
    if scale is None:
        scale = np.ones(codes.shape[0])
    return QGPLayer(index=index, sign=sign, scale=np.asarray(scale, dtype=np.float64), k=k)


def storage_bits(layer):
    """Bits of weight memory: ``c_out · c_in · code_width(k)`` (scales are folded into requantisation)."""
    return layer.c_out * layer.c_in * code_width(layer.k)
