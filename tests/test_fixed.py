import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, strategies as st

from insitu.golden import fixed
from insitu.hdl import Requantize
from insitu.hdl.params import signed_width as hdl_signed_width
from insitu.hdl.testing import run, stream_get, stream_put


def test_round_half_up():
    x = np.array([-6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 5, 6])
    # shift 2: divide by 4, ties (.5) go towards +inf
    expected = np.array([-1, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 2])
    np.testing.assert_array_equal(fixed.round_shift(x, 2), expected)
    np.testing.assert_array_equal(fixed.round_shift(x, 0), x)


def test_round_shift_matches_float():
    rng = np.random.default_rng(1)
    x = rng.integers(-100000, 100000, size=5000)
    for shift in range(1, 9):
        ref = np.floor(x / 2.0 ** shift + 0.5).astype(np.int64)
        np.testing.assert_array_equal(fixed.round_shift(x, shift), ref)


def test_requantize_saturates():
    np.testing.assert_array_equal(fixed.requantize([1000, -1000, 254, 255, -258], 1, 8),
                                  [127, -128, 127, 127, -128])


@pytest.mark.parametrize("lo, hi, width", [(0, 0, 1), (-1, 0, 1), (0, 1, 2), (-128, 127, 8),
                                           (-128, 128, 9), (-129, 127, 9), (-16 * 128, 16 * 128, 13)])
def test_signed_width(lo, hi, width):
    assert fixed.signed_width(lo, hi) == width
    assert hdl_signed_width(lo, hi) == width


def test_signed_width_agrees_with_hdl():
    rng = np.random.default_rng(2)
    for lo, hi in rng.integers(-10**6, 10**6, size=(500, 2)):
        lo, hi = int(min(lo, hi)), int(max(lo, hi))
        assert fixed.signed_width(lo, hi) == hdl_signed_width(lo, hi)


def test_accumulator_width():
    # 16 terms of ±int8 (range [-128, 128]) need 13 bits: 16*128 = 2048 > 2047.
    assert fixed.accumulator_width(-128, 128, 16) == 13
    assert fixed.accumulator_width(-128, 127, 16) == 12


@pytest.mark.parametrize("call, exc, msg", [
    (lambda: fixed.round_shift(1, -1), ValueError, r"^Shift must be a non-negative integer, not -1$"),
    (lambda: fixed.round_shift(1, 1.5), TypeError, r"^Shift must be an integer, not 1\.5$"),
    (lambda: fixed.saturate(1, 0), ValueError, r"^Width must be a positive integer, not 0$"),
    (lambda: fixed.accumulator_width(-1, 1, 0), ValueError,
     r"^Number of terms must be a positive integer, not 0$"),
    (lambda: Requantize(16, 8, 16), ValueError, r"^Shift must be an integer in range \[0, 15\], not 16$"),
    (lambda: Requantize(16, 0, 2), ValueError, r"^Output width must be an integer >= 1, not 0$"),
    (lambda: Requantize(16, 8, 2, lanes="2"), TypeError, r"^Lane count must be an integer, not '2'$"),
])
def test_errors(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


@pytest.mark.parametrize("in_width, out_width, shift, lanes", [(16, 8, 4, 1), (13, 8, 0, 3), (10, 4, 9, 2)])
def test_requantize_hardware_matches_golden(in_width, out_width, shift, lanes):
    rng = np.random.default_rng(in_width * 100 + shift)
    lo, hi = fixed.signed_range(in_width)
    values = rng.integers(lo, hi + 1, size=(300, lanes))
    values[:4] = [[lo] * lanes, [hi] * lanes, [0] * lanes, [-1] * lanes]
    dut = Requantize(in_width, out_width, shift, lanes)
    got = []

    async def feed(ctx):
        await stream_put(ctx, dut.i, values.tolist(), rng=1, stall=0.3)

    async def collect(ctx):
        got.extend(await stream_get(ctx, dut.o, len(values), rng=2, stall=0.3))

    run(dut, [feed, collect])
    np.testing.assert_array_equal(np.array(got), fixed.requantize(values, shift, out_width))



@given(st.lists(st.integers(-2**40, 2**40), min_size=1, max_size=50), st.integers(0, 20), st.integers(2, 32))
def test_requantize_property(values, shift, width):
    """requantize == clamp(floor(x / 2**shift + 1/2)) computed with exact rationals."""
    lo, hi = fixed.signed_range(width)
    expected = [min(hi, max(lo, math.floor(Fraction(v, 2 ** shift) + Fraction(1, 2)))) for v in values]
    np.testing.assert_array_equal(fixed.requantize(values, shift, width), expected)


def test_requantize_refuses_float_accumulators():
    import pytest
    with pytest.raises(TypeError, match=r"^Accumulators must be integers, not float64$"):
        fixed.requantize(np.array([1.5, 2.0]), 1, 8)
