"""golden.fft against numpy.fft within the derived bound, and its exact corner cases."""

import numpy as np
import pytest

from insitu.golden import fft as F


def in_circle(rng, shape, width):
    """Random complex integers with modulus < 2**(width-1): the bound's precondition."""
    r = rng.uniform(0, 2 ** (width - 1) - 1, size=shape)
    t = rng.uniform(0, 2 * np.pi, size=shape)
    return np.trunc(r * np.cos(t)) + 1j * np.trunc(r * np.sin(t))


@pytest.mark.parametrize("n", [8, 16, 32, 64, 128, 256])
@pytest.mark.parametrize("width, twiddle_width", [(16, 16), (12, 10), (18, 18)])
def test_error_within_bound(n, width, twiddle_width):
    rng = np.random.default_rng(n * 1000 + width)
    x = in_circle(rng, (300, n), width)
    bound = F.error_bound(n, width, twiddle_width)
    fwd = np.abs(F.fft(x, width=width, twiddle_width=twiddle_width) - np.fft.fft(x, axis=-1) / n).max()
    inv = np.abs(F.ifft(x, width=width, twiddle_width=twiddle_width) - np.fft.ifft(x, axis=-1)).max()
    assert fwd <= bound and inv <= bound
    assert fwd > 0  # a model that matched numpy exactly would not be fixed point


def test_real_input_gives_hermitian_spectrum_up_to_rounding():
    rng = np.random.default_rng(1)
    x = rng.integers(-20000, 20000, size=64)
    y = F.fft(x)
    assert np.abs(y[1:] - np.conj(y[1:][::-1])).max() <= 2 * F.error_bound(64)


def test_impulse_and_dc():
    n = 16
    impulse = np.zeros(n, dtype=np.int64)
    impulse[0] = 16384
    # An impulse's spectrum is flat: 16384 / 16 = 1024 in every bin, up to twiddle rounding.
    assert np.abs(F.fft(impulse) - 1024).max() <= F.error_bound(n)
    dc = np.full(n, 1600)
    y = F.fft(dc)
    assert y[0] == 1600 and np.abs(y[1:]).max() <= F.error_bound(n)


def test_round_trip_scales_by_one_over_n():
    rng = np.random.default_rng(2)
    x = in_circle(rng, (50, 32), 16)
    back = F.ifft(F.fft(x)) * 32
    assert np.abs(back - x).max() <= 32 * 2 * F.error_bound(32)


def test_full_scale_saturates_instead_of_wrapping():
    n = 8
    x = np.full(n, -32768) + 1j * np.tile([32767, -32768], n // 2)
    y = F.fft_bitrev(x)
    assert np.abs(y.real).max() <= 32768 and np.abs(y.imag).max() <= 32768


def test_bit_reverse_and_natural_order():
    np.testing.assert_array_equal(F.bit_reverse(8), [0, 4, 2, 6, 1, 5, 3, 7])
    x = np.arange(16) * 100
    np.testing.assert_array_equal(F.fft(x), F.fft_bitrev(x)[F.bit_reverse(16)])


def test_pair_twiddles_are_radix4_and_clamped():
    # n = 8, pair at stage 0: position p = 4·q1 + 2·q2 + j gets W_8^(j·(q1 + 2·q2)).
    wr, wi = F.pair_twiddles(8, 0, 8)
    assert list(zip(wr, wi)) == [(127, 0), (127, 0), (127, 0), (0, -127),
                                 (127, 0), (91, -91), (127, 0), (-91, -91)]


def test_plan_is_radix_2_squared():
    assert F.stage_plan(64) == [("bf2i", 0), ("bf2ii", 1), ("twiddle", 0), ("bf2i", 2), ("bf2ii", 3),
                                ("twiddle", 2), ("bf2i", 4), ("bf2ii", 5)]
    assert F.stage_plan(8)[-1] == ("bf2", 2) and F.twiddle_units(64) == 2


@pytest.mark.parametrize("call, exc, msg", [
    (lambda: F.fft(np.zeros(12)), ValueError, r"^FFT size must be a power of two >= 2, not 12$"),
    (lambda: F.fft(np.zeros(8), width=3), ValueError, r"^Data width must be an integer in range \[4, 32\], not 3$"),
    (lambda: F.fft(np.zeros(8), twiddle_width=30), ValueError,
     r"^Twiddle width must be an integer in range \[4, 25\], not 30$"),
    (lambda: F.fft(np.full(8, 40000)), ValueError, r"^Input parts must fit in signed 16-bit integers"),
    (lambda: F.fft(np.full(8, 0.5)), TypeError, r"^Input real parts must be integers$"),
])
def test_errors(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


def test_out_of_range_inputs_are_refused_or_saturate_as_the_hardware():
    """Parts that fit 16 bits but a modulus of 2**15 or more would saturate inside the transform (up to
    hundreds of LSBs from the float result): refused by default, computed as the hardware does on request."""
    x = np.full(16, 30000 + 30000j)
    with pytest.raises(ValueError, match=r"^Input modulus 42426\.4 is not below 2\*\*15: the transform would "
                                         r"saturate"):
        F.fft(x)
    np.testing.assert_array_equal(F.fft(x, strict=False), F.fft_bitrev(x)[F.bit_reverse(16)])
    edge = np.full(16, 23170 + 23170j)                  # modulus just below 2**15: accepted, within the bound
    assert np.abs(F.fft(edge) - np.fft.fft(edge) / 16).max() <= F.error_bound(16)
