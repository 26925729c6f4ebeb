"""Fixed-point radix-2 FFT/IFFT: the golden twin of the streaming FFT engine.

Number format and rounding (one definition, mirrored bit for bit by the hardware):

* Data are complex, each part a signed two's-complement integer of ``width`` bits.
* The transform is a radix-2 decimation-in-frequency (DIF) network of ``log2(n)`` stages. Stage ``s``
  pairs ``a = x[i]`` and ``b = x[i + n / 2**(s+1)]`` and produces::

      upper = sat(round_shift(a + b, 1))
      lower = sat(round_shift((a - b) * w, twiddle_width))       # complex product, exact before rounding

  so every stage scales by 1/2 and the forward output is ``DFT(x) / n``; the inverse uses conjugate
  twiddles and its output is ``IDFT(x) = numpy.fft.ifft(x)``.
* ``round_shift`` is :func:`insitu.golden.fixed.round_shift`: arithmetic shift right, round half up.
  ``sat`` saturates each part to ``width`` bits (only reachable when ``|x|`` exceeds ``2**(width-1)``
  in complex modulus, e.g. full-scale square inputs).
* Twiddles ``w = exp(∓2πi·t/n)`` are stored in Q1.(twiddle_width−1): each part is
  ``floor(v · 2**(twiddle_width−1) + 1/2)``, clamped to ``±(2**(twiddle_width−1) − 1)`` so it fits
  ``twiddle_width`` signed bits (1.0 becomes 1 − 2**−(twiddle_width−1)). Every twiddle, trivial or not,
  goes through the same multiply.
* A DIF network emits bit-reversed order. :func:`fft` and :func:`ifft` return natural order;
  :func:`fft_bitrev` gives the raw order the hardware streams out.

Error bound against ``numpy.fft`` (output LSBs, complex modulus), for inputs with ``|x| < 2**(width−1)``:
each stage adds at most ``r = √2·(1/2 + 2**(width − twiddle_width))`` (rounding of both parts, plus the
twiddle error ``|ΔW| ≤ √2·2**−(twiddle_width−1)`` times ``|a − b|/2 < 2**(width−1)``), and a stage never
amplifies earlier errors by more than ``1 + |ΔW|``. So ``|fft(x) − numpy.fft.fft(x)/n| ≤ log2(n)·r·(1 +
|ΔW|)**log2(n)``: :func:`error_bound`.
"""

import numpy as np

from .fixed import round_shift, saturate

__all__ = ["check_fft_params", "twiddles", "fft", "ifft", "fft_bitrev", "bit_reverse", "error_bound"]


def check_fft_params(n, width, twiddle_width):
    if not isinstance(n, (int, np.integer)) or n < 2 or n & (n - 1):
        raise ValueError(f"FFT size must be a power of two >= 2, not {n!r}")
    if not isinstance(width, (int, np.integer)) or not 4 <= width <= 32:
        raise ValueError(f"Data width must be an integer in range [4, 32], not {width!r}")
    if not isinstance(twiddle_width, (int, np.integer)) or not 4 <= twiddle_width <= 25:
        raise ValueError(f"Twiddle width must be an integer in range [4, 25], not {twiddle_width!r}")


def twiddles(n, twiddle_width, inverse=False):
    """Quantised twiddles ``exp(∓2πi·t/n)`` for ``t`` in ``[0, n/2)``: integer arrays ``(re, im)``."""
    check_fft_params(n, 16, twiddle_width)
    one = 1 << (twiddle_width - 1)
    angle = 2 * np.pi * np.arange(n // 2) / n
    sign = 1 if inverse else -1
    quant = lambda v: np.clip(np.floor(v * one + 0.5), -(one - 1), one - 1).astype(np.int64)
    return quant(np.cos(angle)), quant(sign * np.sin(angle))


def bit_reverse(n):
    """``p[i]`` = ``i`` with its ``log2(n)`` bits reversed. Bit-reversed position ``i`` holds bin ``p[i]``;
    the permutation is its own inverse, so ``natural = bitrev[..., p]``."""
    bits = n.bit_length() - 1
    return np.array([int(f"{i:0{bits}b}"[::-1], 2) if bits else 0 for i in range(n)])


def _split(x, n, width):
    x = np.asarray(x)
    if x.shape[-1] != n:
        raise ValueError(f"Input must have {n} samples in its last axis, not shape {x.shape}")
    if np.iscomplexobj(x):
        re, im = np.real(x), np.imag(x)
    else:
        re, im = x, np.zeros_like(x)
    for part, name in ((re, "real"), (im, "imaginary")):
        if not np.all(np.equal(np.mod(part, 1), 0)):
            raise TypeError(f"Input {name} parts must be integers")
    re, im = re.astype(np.int64), im.astype(np.int64)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if re.size and (min(re.min(), im.min()) < lo or max(re.max(), im.max()) > hi):
        raise ValueError(f"Input parts must fit in signed {width}-bit integers [{lo}, {hi}]")
    return re, im


def fft_bitrev(x, *, width=16, twiddle_width=16, inverse=False):
    """The DIF network on the last axis of ``x``; output in bit-reversed order, as complex int64 values."""
    n = np.shape(x)[-1]
    check_fft_params(n, width, twiddle_width)
    re, im = _split(x, n, width)
    lead = re.shape[:-1]
    wr_all, wi_all = twiddles(n, twiddle_width, inverse)
    stages = n.bit_length() - 1
    for s in range(stages):
        span = n >> (s + 1)
        shape = lead + (1 << s, 2, span)
        re, im = re.reshape(shape), im.reshape(shape)
        ar, ai, br, bi = re[..., 0, :], im[..., 0, :], re[..., 1, :], im[..., 1, :]
        wr, wi = wr_all[::1 << s][:span], wi_all[::1 << s][:span]
        dr, di = ar - br, ai - bi
        upper_r, upper_i = round_shift(ar + br, 1), round_shift(ai + bi, 1)
        lower_r = round_shift(dr * wr - di * wi, twiddle_width)
        lower_i = round_shift(dr * wi + di * wr, twiddle_width)
        re = saturate(np.stack([upper_r, lower_r], axis=-2), width).reshape(lead + (n,))
        im = saturate(np.stack([upper_i, lower_i], axis=-2), width).reshape(lead + (n,))
    out = np.empty(re.shape, dtype=np.complex128)
    out.real, out.imag = re, im
    return out


def fft(x, *, width=16, twiddle_width=16):
    """Fixed-point forward FFT of integer (real or complex) ``x``: ``≈ numpy.fft.fft(x) / n``, natural order."""
    y = fft_bitrev(x, width=width, twiddle_width=twiddle_width)
    return y[..., bit_reverse(y.shape[-1])]


def ifft(x, *, width=16, twiddle_width=16):
    """Fixed-point inverse FFT: ``≈ numpy.fft.ifft(x)``, natural order."""
    y = fft_bitrev(x, width=width, twiddle_width=twiddle_width, inverse=True)
    return y[..., bit_reverse(y.shape[-1])]


def error_bound(n, width=16, twiddle_width=16):
    """The derived worst-case error (output LSBs, complex modulus) against numpy, for ``|x| < 2**(width−1)``."""
    check_fft_params(n, width, twiddle_width)
    stages = n.bit_length() - 1
    dw = np.sqrt(2) * 2.0 ** -(twiddle_width - 1)
    r = np.sqrt(2) * (0.5 + 2.0 ** (width - twiddle_width))
    return stages * r * (1 + dw) ** stages
