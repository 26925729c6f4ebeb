"""Products of an activation and a weight split into slices: short carry chains for multipliers in logic.

A multiplier that the synthesis maps onto logic (the iCE40 without ``-dsp``) is an adder array whose depth
grows with the weight's width. Splitting the weight into ``slices`` pieces makes ``slices`` narrower
products, each registered, whose shifted sums (a pair per pipeline level) give the whole product. Two
slices keep one multiplier per half, which DSP blocks take whole; four are for logic.
"""

from amaranth import Signal, signed

from .params import ParameterError

__all__ = ["slice_bounds", "sum_levels", "check_slices", "sliced_product"]


def check_slices(slices, weight_width):
    if slices not in (2, 4) or slices > weight_width:
        raise ParameterError(f"Weight slices must be 2 or 4 (at most the weight width {weight_width}), "
                             f"not {slices!r}")


def slice_bounds(weight_width, slices):
    """``[(lo, hi), ...]``: the bits of each slice, lowest first (the last one may be narrower)."""
    step = -(-weight_width // slices)
    return [(lo, min(weight_width, lo + step)) for lo in range(0, weight_width, step)]


def sum_levels(weight_width, slices):
    """Pipeline levels that sum the partial products (one for two slices, two for four)."""
    return (len(slice_bounds(weight_width, slices)) - 1).bit_length()


def sliced_product(m, x, w, *, slices, name, en=None):
    """Add to ``m`` the product ``x · w`` of two signed values through ``1 + sum_levels`` registered
    stages: the slices' partial products (the top slice signed), then their shifted sums a pair per level
    (an unpaired part waits a level). Registers load while ``en`` (always when ``None``). Returns the last
    register, exactly as wide as ``len(x) + len(w)``."""
    act, wgt = len(x), len(w)

    def load(reg, value):
        if en is None:
            m.d.sync += reg.eq(value)
        else:
            with m.If(en):
                m.d.sync += reg.eq(value)

    ws = w.as_unsigned()
    parts = []
    for k, (lo, hi) in enumerate(slice_bounds(wgt, slices)):
        piece = ws[lo:hi].as_signed() if hi == wgt else ws[lo:hi]
        reg = Signal(signed(act + hi - lo + (hi != wgt)), name=f"pp{name}_{k}")
        load(reg, x * piece)
        parts.append((reg, lo))
    level = 0
    while len(parts) > 1:
        summed = []
        for k in range(0, len(parts), 2):
            if k + 1 == len(parts):
                a, sa = parts[k]
                reg, value = Signal.like(a, name=f"pd{name}_{level}_{sa}"), a
            else:
                (a, sa), (b, sb) = parts[k], parts[k + 1]
                # b is signed and carries the higher bits; the last sum is the whole product
                width = act + wgt if len(parts) == 2 else len(b) + sb - sa + 1
                reg, value = Signal(signed(width), name=f"ps{name}_{level}_{sa}"), a + (b << (sb - sa))
            load(reg, value)
            summed.append((reg, sa))
        parts = summed
        level += 1
    return parts[0][0]
