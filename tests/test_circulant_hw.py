"""CirculantMatVec equals golden.circulant.matvec bit for bit, with random stalls."""

import numpy as np
import pytest

from insitu.golden import circulant as C
from insitu.hdl.circulant import CirculantMatVec
from insitu.hdl.testing import simulate_stream


def simulate(layer, xs, *, seed, stall, requant=None):
    dut = CirculantMatVec(m=layer.m, n=layer.n, k=layer.k, spectra=layer.spectra, mid_shift=layer.mid_shift,
                          act_width=layer.act_width, fft_width=layer.fft_width,
                          twiddle_width=layer.twiddle_width, spectrum_width=layer.spectrum_width,
                          requant=requant)
    got, cycles = simulate_stream(dut, [int(v) for v in np.ravel(xs)], len(xs) * layer.m, seed=seed,
                                  stall=stall, deadline=20 * (layer.m * layer.n + len(xs) * (layer.m + layer.n) * 8))
    return np.array(got).reshape(len(xs), layer.m), cycles, dut


@pytest.mark.parametrize("seed", range(8))
def test_matches_golden(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.choice([4, 8, 16]))
    m, n = (int(v) * k for v in rng.integers(1, 64 // k + 1, size=2))
    layer = C.compress(rng.normal(size=(m, n)), k)
    xs = rng.integers(-128, 128, size=(2, n))
    xs[0, 0] = -128
    got, _, _ = simulate(layer, xs, seed=seed, stall=float(rng.choice([0.0, 0.3])))
    np.testing.assert_array_equal(got, C.matvec(layer, xs))


def test_requantised_output():
    rng = np.random.default_rng(9)
    layer = C.compress(rng.normal(size=(16, 32)), 8)
    xs = rng.integers(-128, 128, size=(2, 32))
    got, _, _ = simulate(layer, xs, seed=9, stall=0.2, requant=(3, 8))
    np.testing.assert_array_equal(got, C.matvec(layer, xs, requant=(3, 8)))


@pytest.mark.parametrize("kwargs, msg", [
    (dict(m=16, n=24, k=16), r"^Block size 16 must divide both matrix dimensions, not 16x24$"),
    (dict(m=16, n=16, k=12), r"^Block size must be a power of two in range \[4, 256\], not 12$"),
    (dict(m=16, n=16, k=2), r"^Block size must be an integer in range \[4, 256\], not 2$"),
])
def test_errors(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        CirculantMatVec(spectra=np.zeros((2, 2, 9)), mid_shift=4, **kwargs)


def test_requant_must_be_a_pair():
    with pytest.raises(TypeError, match=r"^Requantisation must be a \(shift, out_width\) tuple or None, not 3$"):
        CirculantMatVec(spectra=np.zeros((2, 2, 5)), m=8, n=8, k=4, mid_shift=4, requant=3)


def test_weight_bits_and_cycles():
    """k = 16 stores 16 spectrum integers per 16x16 block: 8x fewer bits than dense int8 at 16-bit width."""
    rng = np.random.default_rng(11)
    layer = C.compress(rng.normal(size=(64, 64)), 16)
    xs = rng.integers(-128, 128, size=(1, 64))
    got, cycles, dut = simulate(layer, xs, seed=11, stall=0.0)
    assert dut.weight_bits == C.storage_bits(layer) == 64 * 64 * 8 // 8
    np.testing.assert_array_equal(got, C.matvec(layer, xs))
    # One complex MAC per clock dominates: p * q * (k/2 + 1) = 144 MACs, plus transforms and flushes.
    assert cycles == dut.cycles_per_vector - 1 == 365


@pytest.mark.parametrize("m, n, k, requant", [
    (8, 8, 4, None), (24, 12, 4, None), (32, 32, 16, None), (96, 32, 32, None), (16, 8, 8, (3, 8)),
    (32, 48, 16, (2, 8)), (40, 20, 4, None)])
def test_cycles_are_exact(m, n, k, requant):
    """Vectors back to back without stalls take exactly ``cycles_per_vector`` each, in both regimes (the
    next block's feed waiting for the inverse transform's frame boundary, or not)."""
    rng = np.random.default_rng(m + n + k)
    layer = C.compress(rng.normal(size=(m, n)), k)
    xs = rng.integers(-128, 128, size=(2, n))
    one, first, _ = simulate(layer, xs[:1], seed=0, stall=0.0, requant=requant)
    two, second, dut = simulate(layer, xs, seed=0, stall=0.0, requant=requant)
    np.testing.assert_array_equal(two, C.matvec(layer, xs, requant=requant))
    assert second - first == dut.cycles_per_vector
    assert first == dut.cycles_per_vector - (requant is None)

