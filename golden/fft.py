"""Fixed-point radix-2² FFT/IFFT: the golden twin of the streaming FFT engine.

Number format and rounding (one definition, mirrored bit for bit by the hardware):

* Data are complex, each part a signed two's-complement integer of ``width`` bits.
* The transform is a decimation-in-frequency network of ``log2(n)`` butterfly stages, grouped in pairs
  (radix-2², :func:`stage_plan`). Butterfly stage ``s`` pairs ``a = x[i]`` and ``b = x[i + n / 2**(s+1)]``::

      upper = sat(round_shift(a + b, 1))
      lower = sat(round_shift(rot(a − b), 1))

  where ``rot`` is ``·(−j)`` (``·(+j)`` for the inverse) on the second half of each block's lower outputs
  in the first stage of a pair (``bf2i``), and the identity otherwise. After each pair but the last, every
  sample is multiplied by its radix-4 twiddle (:func:`pair_twiddles`)::

      y = sat(round_shift(x · w, twiddle_width − 1))          # complex product, exact before rounding

  Every stage scales by 1/2, so the forward output is ``DFT(x) / n`` and the inverse is
  ``IDFT(x) = numpy.fft.ifft(x)``. Odd ``log2 n`` ends with a plain radix-2 stage.
* ``round_shift`` is :func:`insitu.golden.fixed.round_shift`: arithmetic shift right, round half up.
  ``sat`` saturates each part to ``width`` bits (only reachable when ``|x|`` exceeds ``2**(width−1)``
  in complex modulus, e.g. full-scale square inputs).
* Twiddles ``w = exp(∓2πi·e/n)`` are stored in Q1.(twiddle_width−1): each part is
  ``floor(v · 2**(twiddle_width−1) + 1/2)``, clamped to ``±(2**(twiddle_width−1) − 1)`` so it fits
  ``twiddle_width`` signed bits (1.0 becomes 1 − 2**−(twiddle_width−1)). Every sample goes through the
  multiplication, trivial twiddle or not.
* A DIF network emits bit-reversed order. :func:`fft` and :func:`ifft` return natural order;
  :func:`fft_bitrev` gives the raw order the hardware streams out.

Error bound against ``numpy.fft`` (output LSBs, complex modulus), for inputs with ``|x| < 2**(width−1)``:
each butterfly stage adds at most ``√2/2`` (rounding of both parts) and does not amplify earlier errors
(it averages); each of the ``U`` twiddle multiplications adds at most ``√2/2 + √2·2**(width −
twiddle_width)`` (rounding, plus the twiddle error ``|ΔW| ≤ √2·2**−(twiddle_width−1)`` times
``|x| < 2**(width−1)``) and amplifies earlier errors by at most ``1 + |ΔW|``. So the error is at most
``(log2(n)·√2/2 + U·(√2/2 + √2·2**(width − twiddle_width)))·(1 + |ΔW|)**U``: :func:`error_bound`.
"""

import numpy as np

from .errors import InputError
from .fixed import round_shift, saturate

__all__ = ["check_fft_params", "stage_plan", "pair_twiddles", "fft", "ifft", "fft_bitrev", "bit_reverse",
           "twiddle_units", "error_bound"]


def check_fft_params(n, width, twiddle_width):
    if not isinstance(n, (int, np.integer)) or n < 2 or n & (n - 1):
        raise InputError(f"FFT size must be a power of two >= 2, not {n!r}")
    if not isinstance(width, (int, np.integer)) or not 4 <= width <= 32:
        raise InputError(f"Data width must be an integer in range [4, 32], not {width!r}")
    if not isinstance(twiddle_width, (int, np.integer)) or not 4 <= twiddle_width <= 25:
        raise InputError(f"Twiddle width must be an integer in range [4, 25], not {twiddle_width!r}")


def bit_reverse(n):
    """``p[i]`` = ``i`` with its ``log2(n)`` bits reversed. Bit-reversed position ``i`` holds bin ``p[i]``;
    the permutation is its own inverse, so ``natural = bitrev[..., p]``."""
    bits = n.bit_length() - 1
    return np.array([int(f"{i:0{bits}b}"[::-1], 2) if bits else 0 for i in range(n)])


def _split(x, n, width):
    x = np.asarray(x)
    if x.shape[-1] != n:
        raise InputError(f"Input must have {n} samples in its last axis, not shape {x.shape}")
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
        raise InputError(f"Input parts must fit in signed {width}-bit integers [{lo}, {hi}]")
    return re, im


def _rotate(re, im, inverse):
    """Multiply by −j (forward) or +j (inverse): exact."""
    return (im, -re) if not inverse else (-im, re)


def pair_twiddles(n, s, twiddle_width, inverse=False):
    """Twiddles applied after the stage pair (s, s + 1), one per position ``p`` of an ``n >> s`` block:
    ``W_N^(j·(q1 + 2·q2)·2**s)`` with ``p = q1·N_s/2 + q2·N_s/4 + j``. Integer arrays ``(re, im)``."""
    size = n >> s
    p = np.arange(size)
    q1, q2, j = p // (size // 2), (p // (size // 4)) % 2, p % (size // 4)
    angle = 2 * np.pi * ((j * (q1 + 2 * q2)) << s) / n
    one = 1 << (twiddle_width - 1)
    quant = lambda v: np.clip(np.floor(v * one + 0.5), -(one - 1), one - 1).astype(np.int64)
    return quant(np.cos(angle)), quant((1 if inverse else -1) * np.sin(angle))


def stage_plan(n):
    """The stage sequence: ``("bf2i", s)``, ``("bf2ii", s)``, ``("twiddle", s)`` (after the pair starting at
    ``s``) and, for odd ``log2 n``, a final plain ``("bf2", s)``."""
    stages = n.bit_length() - 1
    plan = []
    for s in range(0, stages - 1, 2):
        plan += [("bf2i", s), ("bf2ii", s + 1)]
        if s + 2 < stages:
            plan.append(("twiddle", s))
    if stages % 2:
        plan.append(("bf2", stages - 1))
    return plan


def fft_bitrev(x, *, width=16, twiddle_width=16, inverse=False):
    """The radix-2² DIF network on the last axis of ``x``; output in bit-reversed order (complex int64)."""
    n = np.shape(x)[-1]
    check_fft_params(n, width, twiddle_width)
    re, im = _split(x, n, width)
    lead = re.shape[:-1]
    for kind, s in stage_plan(n):
        if kind == "twiddle":
            size = n >> s
            wr, wi = pair_twiddles(n, s, twiddle_width, inverse)
            vr, vi = re.reshape(lead + (n // size, size)), im.reshape(lead + (n // size, size))
            re = saturate(round_shift(vr * wr - vi * wi, twiddle_width - 1), width).reshape(lead + (n,))
            im = saturate(round_shift(vr * wi + vi * wr, twiddle_width - 1), width).reshape(lead + (n,))
            continue
        span = n >> (s + 1)
        shape = lead + (1 << s, 2, span)
        re, im = re.reshape(shape), im.reshape(shape)
        ar, ai, br, bi = re[..., 0, :], im[..., 0, :], re[..., 1, :], im[..., 1, :]
        dr, di = ar - br, ai - bi
        if kind == "bf2i":
            # The lower half's second quarter carries the trivial factor (−j)**1 of the radix-4 twiddle.
            rot_r, rot_i = _rotate(dr, di, inverse)
            second = np.arange(span) >= span // 2
            dr, di = np.where(second, rot_r, dr), np.where(second, rot_i, di)
        upper_r, upper_i = round_shift(ar + br, 1), round_shift(ai + bi, 1)
        lower_r, lower_i = round_shift(dr, 1), round_shift(di, 1)
        re = saturate(np.stack([upper_r, lower_r], axis=-2), width).reshape(lead + (n,))
        im = saturate(np.stack([upper_i, lower_i], axis=-2), width).reshape(lead + (n,))
    out = np.empty(re.shape, dtype=np.complex128)
    out.real, out.imag = re, im
    return out


def check_range(x, width):
    """Raise a one-line ValueError unless every sample's complex modulus is below ``2**(width − 1)``: the range
    in which no butterfly saturates and :func:`error_bound` holds."""
    x = np.asarray(x)
    re, im = np.real(x).astype(np.float64), np.imag(x).astype(np.float64)
    limit = 2.0 ** (width - 1)
    if re.size and max(np.abs(re).max(), np.abs(im).max()) > limit:
        return                       # parts that do not fit: fft_bitrev says so, in its own words
    power = re ** 2 + im ** 2
    if power.size and power.max() >= limit ** 2:
        raise InputError(f"Input modulus {np.sqrt(power.max()):.1f} is not below 2**{width - 1}: the transform "
                         f"would saturate (pass strict=False to accept what the hardware computes)")


def fft(x, *, width=16, twiddle_width=16, strict=True):
    """Fixed-point forward FFT of integer (real or complex) ``x``: ``≈ numpy.fft.fft(x) / n``, natural order.

    ``strict``: refuse inputs outside the range of :func:`check_range`; without it they saturate exactly as
    the hardware does (:func:`fft_bitrev` never checks)."""
    if strict:
        check_range(x, width)
    y = fft_bitrev(x, width=width, twiddle_width=twiddle_width)
    return y[..., bit_reverse(y.shape[-1])]


def ifft(x, *, width=16, twiddle_width=16, strict=True):
    """Fixed-point inverse FFT: ``≈ numpy.fft.ifft(x)``, natural order (``strict`` as for :func:`fft`)."""
    if strict:
        check_range(x, width)
    y = fft_bitrev(x, width=width, twiddle_width=twiddle_width, inverse=True)
    return y[..., bit_reverse(y.shape[-1])]


def twiddle_units(n):
    """Number of complex twiddle multiplications in the network (``stage_plan`` entries "twiddle")."""
    return sum(kind == "twiddle" for kind, _ in stage_plan(n))


def error_bound(n, width=16, twiddle_width=16):
    """The derived worst-case error (output LSBs, complex modulus) against numpy, for ``|x| < 2**(width−1)``."""
    check_fft_params(n, width, twiddle_width)
    stages, units = n.bit_length() - 1, twiddle_units(n)
    dw = np.sqrt(2) * 2.0 ** -(twiddle_width - 1)
    rounding = np.sqrt(2) / 2
    return (stages * rounding + units * (rounding + np.sqrt(2) * 2.0 ** (width - twiddle_width))) \
        * (1 + dw) ** units
