"""golden.mlg: generation equals a plain evaluation of the factor products; decomposition and storage."""

import numpy as np
import pytest

from insitu.golden import mlg


def structured(rng, c_out=16, c_in=16, k=3, bo=4, bi=3):
    basis = rng.normal(size=(bo, bi, k * k))
    u = rng.normal(size=(bo, c_in, bi))
    v = rng.normal(size=(c_out, bo))
    w1 = np.einsum("bci,bit->bct", u, basis).reshape(bo, -1)
    return (v @ w1).reshape(c_out, c_in, k, k)


@pytest.mark.parametrize("seed", range(5))
def test_generate_equals_loop_evaluation(seed):
    rng = np.random.default_rng(seed)
    c_out, c_in = (int(v) for v in rng.integers(1, 9, size=2))
    k = int(rng.choice([1, 3, 5]))
    bo, bi = int(rng.integers(1, min(c_out, c_in * k * k) + 1)), int(rng.integers(1, min(c_in, k * k) + 1))
    layer, _ = mlg.decompose(rng.normal(size=(c_out, c_in, k, k)), bi, bo, bits=(3, 6, 3), iterations=3)
    expected = np.zeros((c_out, c_in * k * k), dtype=np.int64)
    for o in range(c_out):
        for b in range(bo):
            for ci in range(c_in):
                for t in range(k * k):
                    level1 = sum(int(layer.u[b, ci, i]) * int(layer.basis[b, i, t]) for i in range(bi))
                    expected[o, ci * k * k + t] += int(layer.v[o, b]) * level1
    np.testing.assert_array_equal(mlg.generate(layer), expected.reshape(c_out, c_in, k, k))


def test_codes_are_odd_and_in_range():
    rng = np.random.default_rng(1)
    layer, _ = mlg.decompose(rng.normal(size=(16, 16, 3, 3)), 3, 4, bits=(3, 6, 3))
    for codes, bits in zip((layer.basis, layer.u, layer.v), layer.bits):
        assert np.all(codes % 2 == 1) and np.abs(codes).max() <= (1 << bits) - 1


@pytest.mark.parametrize("bits, bound", [((3, 6, 3), 0.35), ((6, 6, 6), 0.08), ((12, 12, 12), 0.005)])
def test_structured_layer_error_falls_with_bits(bits, bound):
    """A layer that has the MLG structure is recovered up to the quantisation error."""
    layer, error = mlg.decompose(structured(np.random.default_rng(2)), 3, 4, bits=bits)
    assert error < bound


def test_full_rank_high_precision_is_exact():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(8, 4, 3, 3))
    _, error = mlg.decompose(w, 4, 8, bits=(16, 16, 16))
    assert error < 1e-3


def test_quantize_odd_least_squares_scale():
    x = np.array([0.1, -0.4, 0.9, -1.0])
    codes, scale = mlg.quantize_odd(x, 2)
    assert set(np.abs(codes)) <= {1, 3}
    assert scale == pytest.approx(np.sum(codes * x) / np.sum(codes * codes))


def test_storage_16_to_16_3x3():
    rng = np.random.default_rng(4)
    layer, _ = mlg.decompose(rng.normal(size=(16, 16, 3, 3)), 3, 4, bits=(3, 6, 3))
    # basis 4·3·9 codes of 3 bits, u 4·16·3 of 6 bits, v 16·4 of 3 bits, three float32 scales
    assert mlg.storage_bits(layer) == 108 * 3 + 192 * 6 + 64 * 3 + 96 == 1764
    assert 16 * 16 * 9 * 8 / mlg.storage_bits(layer) > 10


@pytest.mark.parametrize("call, msg", [
    (lambda: mlg.decompose(np.zeros((4, 4, 3)), 1, 1), r"^Weights must be shaped \(c_out, c_in, k, k\)"),
    (lambda: mlg.decompose(np.ones((4, 4, 3, 3)), 1, 5), r"^bo must be an integer in range \[1, 4\], not 5$"),
    (lambda: mlg.decompose(np.ones((4, 4, 3, 3)), 5, 2), r"^bi must be an integer in range \[1, 4\], not 5$"),
    (lambda: mlg.quantize_odd(np.ones(3), 0), r"^Quantiser bits must be an integer in range \[1, 16\], not 0$"),
    (lambda: mlg.decompose(np.ones((4, 4, 3, 3)), 1, 1, bits=(3, 3)), r"^Bits must be a \(basis, u, v\) triple"),
])
def test_errors(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()
