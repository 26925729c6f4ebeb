"""Block-circulant layers (CirCNN): a k×k block is one vector; ``y = IFFT(Σ_j FFT(w_ij) ∘ FFT(x_j))``.

Convention: block ``C`` is defined by its **first column** ``w``: ``C[r, c] = w[(r − c) mod k]``, so
``C @ x = ifft(fft(w) * fft(x))``. (The first-row convention needs ``conj(fft(w))``.)

Integer inference (:func:`matvec`), the contract for the hardware:

1. Each input block ``x_j`` (``act_width``-bit integers) is shifted left by ``pre = fft_width − act_width − 1``
   and transformed once with :func:`insitu.golden.fft.fft` (``fft_width`` bits; output ``DFT/k``, so
   ``|X| < 2**(fft_width − 1)``: no saturation).
2. Weights are stored as the Hermitian half spectrum of each ``w_ij`` (real inputs): bins ``0 … k/2``,
   quantised to ``spectrum_width``-bit integers at the layer's power-of-two scale ``2**spectrum_shift``.
   Bins 0 and k/2 are real, so a block stores exactly ``k`` integers.
3. For each output block, ``acc[b] = Σ_j X_j[b] · S_ij[b]`` exactly (complex integers), for ``b ≤ k/2``.
4. ``Z = sat(round_shift(acc, mid_shift), fft_width)``, extended to the full spectrum by
   ``Z[k − b] = conj(Z[b])``, then ``y_i = real(ifft(Z))`` with :func:`insitu.golden.fft.ifft`.
   ``mid_shift`` is set from the layer's weights so that ``Z`` cannot saturate for any input.
5. ``y`` approximates ``(C @ x) / output_scale(layer)``; :func:`matvec` returns ``y`` (``fft_width``-bit
   integers), and with ``requant=(shift, width)`` passes it through :func:`insitu.golden.fixed.requantize`.
"""

import math
from dataclasses import dataclass

import numpy as np

from . import fft as F
from .errors import InputError
from .fixed import requantize, round_shift, saturate

__all__ = ["CirculantLayer", "compress", "expand", "matvec", "output_scale", "error_bound", "storage_bits"]


@dataclass(frozen=True)
class CirculantLayer:
    """A block-circulant ``m × n`` layer of ``p × q`` blocks of size ``k``.

    ``vectors`` (p, q, k) float: first columns. ``spectra`` (p, q, k/2+1) complex integers: the stored
    half spectra at scale ``2**spectrum_shift``. ``mid_shift``: see the module docstring.
    """
    vectors: np.ndarray
    spectra: np.ndarray
    spectrum_shift: int
    mid_shift: int
    k: int
    act_width: int = 8
    fft_width: int = 16
    twiddle_width: int = 16
    spectrum_width: int = 16

    m = property(lambda self: self.vectors.shape[0] * self.k)
    n = property(lambda self: self.vectors.shape[1] * self.k)
    pre_shift = property(lambda self: self.fft_width - self.act_width - 1)


def _check(weights, k):
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise InputError(f"Weights must be a matrix (m, n), not shape {w.shape}")
    if not isinstance(k, (int, np.integer)) or k < 2 or k & (k - 1):
        raise InputError(f"Block size must be a power of two >= 2, not {k!r}")
    if w.shape[0] % k or w.shape[1] % k:
        raise InputError(f"Block size {k} must divide both matrix dimensions, not {w.shape[0]}x{w.shape[1]}")
    return w


def compress(weights, k, *, act_width=8, fft_width=16, twiddle_width=16, spectrum_width=16):
    """Project a dense float matrix onto the nearest (least-squares) block-circulant matrix and quantise it.

    In each block, ``w[d]`` is the mean of the wrapped diagonal ``{(r, c) : (r − c) mod k = d}``.
    """
    w = _check(weights, k)
    if not 2 <= act_width < fft_width - 1:
        raise InputError(f"Activation width must be in range [2, {fft_width - 2}], not {act_width!r}")
    F.check_fft_params(k, fft_width, twiddle_width)
    if not isinstance(spectrum_width, (int, np.integer)) or not 4 <= spectrum_width <= 32:
        raise InputError(f"Spectrum width must be an integer in range [4, 32], not {spectrum_width!r}")
    m, n = w.shape
    blocks = w.reshape(m // k, k, n // k, k).transpose(0, 2, 1, 3)          # (p, q, r, c)
    r = np.arange(k)
    vectors = np.stack([blocks[:, :, r, (r - d) % k].mean(axis=-1) for d in range(k)], axis=-1)

    spectrum = np.fft.fft(vectors, axis=-1)[..., :k // 2 + 1]
    peak = max(np.abs(spectrum.real).max(), np.abs(spectrum.imag).max(), 1e-300)
    limit = (1 << (spectrum_width - 1)) - 1
    shift = math.floor(math.log2(limit / peak))
    while np.floor(peak * 2.0 ** shift + 0.5) > limit:
        shift -= 1
    q = lambda v: np.floor(v * 2.0 ** shift + 0.5)
    spectra = (q(spectrum.real) + 1j * q(spectrum.imag))
    spectra[..., 0] = spectra[..., 0].real
    spectra[..., k // 2] = spectra[..., k // 2].real

    # mid_shift: the smallest shift for which no input can saturate Z. |X_j[b]| < 2**(fft_width-1) in
    # each part, so |Re acc|, |Im acc| <= 2**(fft_width-1) * Σ_j (|Re S| + |Im S|).
    worst = (2 ** (fft_width - 1)) * (np.abs(spectra.real) + np.abs(spectra.imag)).sum(axis=1).max()
    mid = 0
    while (worst + 2 ** mid) / 2 ** mid > (1 << (fft_width - 1)) - 1:
        mid += 1
    return CirculantLayer(vectors=vectors, spectra=spectra, spectrum_shift=shift, mid_shift=mid, k=k,
                          act_width=act_width, fft_width=fft_width, twiddle_width=twiddle_width,
                          spectrum_width=spectrum_width)


def expand(layer):
    """The dense ``m × n`` block-circulant matrix of the stored (float) vectors."""
    k = layer.k
    r = np.arange(k)
    blocks = layer.vectors[:, :, (r[:, None] - r[None, :]) % k]               # (p, q, r, c)
    p, q = blocks.shape[:2]
    return blocks.transpose(0, 2, 1, 3).reshape(p * k, q * k)


def expand_quantised(layer):
    """The dense matrix the integer path actually computes with (dequantised spectra), float."""
    k = layer.k
    full = np.concatenate([layer.spectra, np.conj(layer.spectra[..., 1:k // 2][..., ::-1])], axis=-1)
    vectors = np.real(np.fft.ifft(full, axis=-1)) / 2.0 ** layer.spectrum_shift
    return expand(CirculantLayer(vectors, layer.spectra, layer.spectrum_shift, layer.mid_shift, k))


def output_scale(layer):
    """``C @ x ≈ matvec(layer, x) * output_scale(layer)``."""
    return layer.k * 2.0 ** (layer.mid_shift - layer.pre_shift - layer.spectrum_shift)


def _spectra_of_input(layer, x):
    x = np.asarray(x)
    if x.shape[-1] != layer.n:
        raise InputError(f"Input must have {layer.n} elements in its last axis, not shape {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"Input must be integers, not {x.dtype}")
    lo, hi = -(1 << (layer.act_width - 1)), (1 << (layer.act_width - 1)) - 1
    if x.size and (x.min() < lo or x.max() > hi):
        raise InputError(f"Input must fit in signed {layer.act_width}-bit integers [{lo}, {hi}]")
    blocks = x.astype(np.int64).reshape(x.shape[:-1] + (layer.n // layer.k, layer.k)) << layer.pre_shift
    X = F.fft(blocks, width=layer.fft_width, twiddle_width=layer.twiddle_width)
    return X[..., :layer.k // 2 + 1]                                            # (..., q, k/2+1)


def matvec(layer, x, *, requant=None):
    """Integer block-circulant matrix-vector product of ``x`` (``(..., n)`` integers); see the module docstring.

    Returns ``(..., m)`` integers: ``fft_width``-bit values at :func:`output_scale`, or requantised with
    ``requant=(shift, width)``.
    """
    k = layer.k
    X = _spectra_of_input(layer, x)                                             # FFT once per input block
    S = layer.spectra
    re = np.einsum("...jb,ijb->...ib", X.real.astype(np.int64), S.real.astype(np.int64)) \
        - np.einsum("...jb,ijb->...ib", X.imag.astype(np.int64), S.imag.astype(np.int64))
    im = np.einsum("...jb,ijb->...ib", X.real.astype(np.int64), S.imag.astype(np.int64)) \
        + np.einsum("...jb,ijb->...ib", X.imag.astype(np.int64), S.real.astype(np.int64))
    zr = saturate(round_shift(re, layer.mid_shift), layer.fft_width)
    zi = saturate(round_shift(im, layer.mid_shift), layer.fft_width)
    half = zr + 1j * zi                                                         # (..., p, k/2+1)
    mirrored = half[..., 1:k // 2][..., ::-1]
    mirrored = mirrored.real - 1j * np.clip(mirrored.imag, -(2 ** (layer.fft_width - 1)) + 1, None)
    full = np.concatenate([half, mirrored], axis=-1)     # conj, saturated: -(-2**(w-1)) -> 2**(w-1) - 1
    # Z is saturated per part (step 4), so its modulus may exceed the strict range: the hardware's result
    y = F.ifft(full, width=layer.fft_width, twiddle_width=layer.twiddle_width, strict=False)
    y = np.real(y).astype(np.int64).reshape(y.shape[:-2] + (layer.m,))
    return y if requant is None else requantize(y, *requant)


def error_bound(layer, x):
    """Worst-case ``|matvec(layer, x) − (expand_quantised(layer) @ x) / output_scale(layer)|`` in output LSBs.

    Per bin, ``acc`` is off by at most ``Σ_j e_X·|S_ij|`` (``e_X``: :func:`insitu.golden.fft.error_bound` of the
    input transform); after the shift, ``Z`` adds ``√2/2`` of rounding; the inverse transform averages, so
    it passes that on unamplified and adds its own bound.
    """
    e_x = F.error_bound(layer.k, layer.fft_width, layer.twiddle_width)
    s_sum = np.abs(layer.spectra).sum(axis=1).max()
    e_z = e_x * s_sum / 2.0 ** layer.mid_shift + math.sqrt(2) / 2
    return e_z + F.error_bound(layer.k, layer.fft_width, layer.twiddle_width)


def storage_bits(layer):
    """Bits of stored weights: ``k`` integers of ``spectrum_width`` bits per block (Hermitian half spectrum,
    bins 0 and k/2 being real)."""
    p, q = layer.vectors.shape[:2]
    return p * q * layer.k * layer.spectrum_width
