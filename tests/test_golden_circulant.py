"""golden.circulant: projection, convention, and integer inference against float within the derived bound."""

import numpy as np
import pytest

from insitu.golden import circulant as C


def test_expand_uses_the_first_column_convention():
    rng = np.random.default_rng(0)
    layer = C.compress(rng.normal(size=(8, 8)), 8)
    w = layer.vectors[0, 0]
    block = C.expand(layer)
    assert block[3, 1] == w[2] and block[1, 3] == w[(1 - 3) % 8]
    np.testing.assert_allclose(block[:, 0], w)
    x = rng.normal(size=8)
    np.testing.assert_allclose(block @ x, np.real(np.fft.ifft(np.fft.fft(w) * np.fft.fft(x))), atol=1e-12)


def test_projection_is_least_squares_and_idempotent():
    rng = np.random.default_rng(1)
    k = 4
    dense = rng.normal(size=(8, 12))
    layer = C.compress(dense, k)
    # Brute force for one block: least squares over the k circulant basis matrices.
    block = dense[4:8, 8:12]
    basis = np.stack([np.roll(np.eye(k), d, axis=0).ravel() for d in range(k)], axis=1)
    best, *_ = np.linalg.lstsq(basis, block.ravel(), rcond=None)
    np.testing.assert_allclose(layer.vectors[1, 2], best, atol=1e-12)
    again = C.compress(C.expand(layer), k)
    np.testing.assert_allclose(again.vectors, layer.vectors, atol=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_integer_matvec_within_bound(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.choice([4, 8, 16]))
    m, n = (int(v) * k for v in rng.integers(1, 64 // k + 1, size=2))
    layer = C.compress(rng.normal(size=(m, n)), k)
    x = rng.integers(-128, 128, size=(20, n))
    y = C.matvec(layer, x)
    reference = x @ C.expand_quantised(layer).T / C.output_scale(layer)
    assert np.abs(y - reference).max() <= C.error_bound(layer, x)
    # Against the unquantised projection: the same, plus the spectrum quantisation (relative 2**-14 here).
    exact = x @ C.expand(layer).T / C.output_scale(layer)
    assert np.abs(y - exact).max() <= C.error_bound(layer, x) + 1e-3 * np.abs(exact).max() + 1


def test_matvec_uses_the_output_range():
    """mid_shift is as small as the no-saturation guarantee allows: outputs use a good part of 16 bits."""
    rng = np.random.default_rng(3)
    layer = C.compress(rng.normal(size=(32, 32)), 8)
    y = C.matvec(layer, rng.integers(-128, 128, size=(50, 32)))
    assert np.abs(y).max() > 2 ** 8


def test_requantised_output():
    rng = np.random.default_rng(4)
    layer = C.compress(rng.normal(size=(16, 16)), 4)
    x = rng.integers(-128, 128, size=16)
    y = C.matvec(layer, x, requant=(4, 8))
    np.testing.assert_array_equal(y, np.clip((C.matvec(layer, x) + 8) >> 4, -128, 127))


@pytest.mark.parametrize("spectrum_width, ratio", [(16, 8), (8, 16)])
def test_storage_k16(spectrum_width, ratio):
    layer = C.compress(np.ones((64, 64)), 16, spectrum_width=spectrum_width)
    assert 64 * 64 * 8 / C.storage_bits(layer) == ratio


@pytest.mark.parametrize("call, exc, msg", [
    (lambda: C.compress(np.zeros((12, 16)), 8), ValueError,
     r"^Block size 8 must divide both matrix dimensions, not 12x16$"),
    (lambda: C.compress(np.zeros((12, 12)), 6), ValueError, r"^Block size must be a power of two >= 2, not 6$"),
    (lambda: C.compress(np.zeros(12), 4), ValueError, r"^Weights must be a matrix \(m, n\), not shape \(12,\)$"),
    (lambda: C.matvec(C.compress(np.ones((8, 8)), 4), np.zeros(4, int)), ValueError,
     r"^Input must have 8 elements in its last axis, not shape \(4,\)$"),
    (lambda: C.matvec(C.compress(np.ones((8, 8)), 4), np.full(8, 200)), ValueError,
     r"^Input must fit in signed 8-bit integers \[-128, 127\]$"),
])
def test_errors(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()
