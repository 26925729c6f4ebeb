"""Integer number formats: the one definition of requantisation and accumulator bit growth.

Every golden layer calls :func:`requantize`; the hardware mirrors it with :class:`insitu.hdl.Requantize`.
The rules are:

* Activations are signed two's-complement integers of a stated width (``int8`` by default).
* Accumulators are wide enough never to overflow for the layer's fan-in (:func:`accumulator_width`).
* Requantisation is an arithmetic shift right by ``shift`` bits with round-half-up
  (``(x + 2**(shift - 1)) >> shift``; ties go towards +infinity), followed by saturation to a signed
  ``width``-bit range.
"""

import numpy as np

from .errors import InputError

__all__ = [
    "signed_range", "signed_width", "saturate", "round_shift", "requantize",
    "accumulator_width", "check_signed",
]


def _check_width(width, name="Width"):
    if not isinstance(width, (int, np.integer)) or isinstance(width, bool):
        raise TypeError(f"{name} must be an integer, not {width!r}")
    if width < 1:
        raise InputError(f"{name} must be a positive integer, not {width!r}")
    return int(width)


def signed_range(width):
    """Return ``(lo, hi)``, the inclusive range of a signed ``width``-bit integer."""
    width = _check_width(width)
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


def signed_width(lo, hi):
    """Return the smallest signed width that holds every integer in ``[lo, hi]``."""
    lo, hi = int(lo), int(hi)
    if lo > hi:
        raise InputError(f"Range is empty: lo={lo} > hi={hi}")
    width = 1
    while not (-(1 << (width - 1)) <= lo and hi <= (1 << (width - 1)) - 1):
        width += 1
    return width


def check_signed(x, width, name="value"):
    """Raise ``ValueError`` if any element of ``x`` lies outside the signed ``width``-bit range."""
    lo, hi = signed_range(width)
    x = np.asarray(x)
    if x.size and (x.min() < lo or x.max() > hi):
        raise InputError(f"{name} must fit in signed {width}-bit integers [{lo}, {hi}], "
                         f"got values in [{x.min()}, {x.max()}]")


def saturate(x, width):
    """Clamp ``x`` to the signed ``width``-bit range."""
    lo, hi = signed_range(width)
    return np.clip(np.asarray(x, dtype=np.int64), lo, hi)


def round_shift(x, shift):
    """Arithmetic shift right by ``shift`` bits, rounding half up (ties towards +infinity)."""
    if not isinstance(shift, (int, np.integer)) or isinstance(shift, bool):
        raise TypeError(f"Shift must be an integer, not {shift!r}")
    if shift < 0:
        raise InputError(f"Shift must be a non-negative integer, not {shift!r}")
    x = np.asarray(x)
    if x.dtype == bool or not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"Accumulators must be integers, not {x.dtype}")
    x = x.astype(np.int64)
    if shift == 0:
        return x
    return (x + (1 << (int(shift) - 1))) >> int(shift)


def requantize(acc, shift, width):
    """Requantise accumulators: ``saturate(round_shift(acc, shift), width)``.

    Parameters
    ----------
    acc : array_like of int
        Accumulator values.
    shift : int
        Right shift (the layer's power-of-two output scale), ``>= 0``.
    width : int
        Output width in bits (signed).
    """
    return saturate(round_shift(acc, shift), width)


def accumulator_width(term_lo, term_hi, terms):
    """Signed width of a sum of ``terms`` values, each in ``[term_lo, term_hi]``.

    This is the bit growth rule every accumulator in insitu follows: the width is exact for the
    worst case, so no accumulator can wrap.
    """
    if not isinstance(terms, (int, np.integer)) or terms < 1:
        raise InputError(f"Number of terms must be a positive integer, not {terms!r}")
    return signed_width(min(0, term_lo * terms), max(0, term_hi * terms))
