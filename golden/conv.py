"""Integer 2-D convolution: sliding windows and the dense direct convolution (the ``DenseConv`` twin)."""

import numpy as np

from .errors import InputError

__all__ = ["check_kernel_size", "check_activations", "check_padding", "pad", "windows", "conv2d", "pack"]


def check_kernel_size(k):
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1 or k % 2 == 0:
        raise InputError(f"Kernel size must be an odd integer >= 1, not {k!r}")
    return int(k)


def check_activations(x, c_in=None, width=8):
    """Validate integer activations shaped ``(c_in, h, w)`` that fit signed ``width`` bits (None: any);
    return them as ``int64``."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise InputError(f"Activations must be shaped (c_in, h, w), not {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"Activations must be integers, not {x.dtype}")
    if c_in is not None and x.shape[0] != c_in:
        raise InputError(f"Activations have {x.shape[0]} channels, the layer expects {c_in}")
    if width is not None and x.size:
        lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
        if x.min() < lo or x.max() > hi:
            raise InputError(f"Activations must fit in signed {width}-bit integers [{lo}, {hi}], "
                             f"not [{x.min()}, {x.max()}]")
    return x.astype(np.int64)


def check_padding(padding, k):
    """Padding of a k×k convolution: an integer in ``[0, k // 2]`` (more would only add zero rows)."""
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or not 0 <= padding <= k // 2:
        raise InputError(f"Padding must be an integer in range [0, {k // 2}] for a {k}x{k} kernel, not {padding!r}")
    return int(padding)


def pad(x, padding):
    if not isinstance(padding, (int, np.integer)) or padding < 0:
        raise InputError(f"Padding must be a non-negative integer, not {padding!r}")
    return np.pad(x, ((0, 0), (padding, padding), (padding, padding)))


def windows(x, k, padding):
    """All k×k windows of ``x`` (``(c, h, w)``), zero padded: shape ``(h', w', k*k, c)``.

    ``h' = h + 2·padding − k + 1``. Tap ``t = r·k + c`` of output pixel ``(y, x)`` is input pixel
    ``(y − padding + r, x − padding + c)``. This is the order :class:`insitu.hdl.SlidingWindow` emits.
    """
    k = check_kernel_size(k)
    xp = pad(np.asarray(x), padding)
    c, hp, wp = xp.shape
    ho, wo = hp - k + 1, wp - k + 1
    if ho < 1 or wo < 1:
        raise InputError(f"Image {x.shape[1]}x{x.shape[2]} with padding {padding} is smaller than the "
                         f"{k}x{k} kernel")
    out = np.empty((ho, wo, k * k, c), dtype=xp.dtype)
    for r in range(k):
        for s in range(k):
            out[:, :, r * k + s, :] = xp[:, r:r + ho, s:s + wo].transpose(1, 2, 0)
    return out


def conv2d(x, weights, padding, *, act_width=8):
    """Direct integer convolution (cross-correlation, stride 1): ``(c_in, h, w)`` → ``(c_out, h', w')``.

    ``weights`` are integers shaped ``(c_out, c_in, k, k)``; accumulators are exact ``int64``.
    """
    weights = np.asarray(weights)
    if weights.ndim != 4 or weights.shape[2] != weights.shape[3]:
        raise InputError(f"Weights must be shaped (c_out, c_in, k, k), not {weights.shape}")
    c_out, c_in, k, _ = weights.shape
    x = check_activations(x, c_in, act_width)
    win = windows(x, k, check_padding(padding, k))                                     # (h', w', k², c_in)
    w = weights.astype(np.int64).reshape(c_out, c_in, k * k)         # (c_out, c_in, k²)
    return np.einsum("yxtc,oct->oyx", win, w)


def pack(weights, weight_width=8):
    """The weight-memory codes ``(c_out, c_in)`` of :class:`insitu.hdl.DenseConv`.

    Each code holds the kernel's k² two's-complement weights, tap ``t`` in bits
    ``[t·weight_width, (t+1)·weight_width)``.
    """
    weights = np.asarray(weights)
    if weights.ndim != 4 or weights.shape[2] != weights.shape[3]:
        raise InputError(f"Weights must be shaped (c_out, c_in, k, k), not {weights.shape}")
    lo, hi = -(1 << (weight_width - 1)), (1 << (weight_width - 1)) - 1
    if weights.size and (weights.min() < lo or weights.max() > hi):
        raise InputError(f"Weights must fit in signed {weight_width}-bit integers [{lo}, {hi}]")
    c_out, c_in, k, _ = weights.shape
    flat = weights.reshape(c_out, c_in, k * k).astype(np.int64) & ((1 << weight_width) - 1)
    return [[sum(int(v) << (t * weight_width) for t, v in enumerate(flat[o, ci])) for ci in range(c_in)]
            for o in range(c_out)]
