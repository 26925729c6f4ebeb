import numpy as np
import pytest

from insitu.golden import conv, qgp


def direct_conv(x, w, padding):
    """Textbook nested-loop convolution, independent of golden.conv."""
    c_out, c_in, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    ho, wo = xp.shape[1] - k + 1, xp.shape[2] - k + 1
    out = np.zeros((c_out, ho, wo), dtype=np.int64)
    for o in range(c_out):
        for y in range(ho):
            for xx in range(wo):
                out[o, y, xx] = np.sum(xp[:, y:y + k, xx:xx + k] * w[o])
    return out


@pytest.mark.parametrize("seed", range(20))
def test_muxconv_equals_direct_conv_of_expanded_kernel(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.choice([1, 3, 5]))
    c_in, c_out = rng.integers(1, 9, size=2)
    padding = int(rng.integers(0, k // 2 + 1))
    h, w = rng.integers(max(1, k - 2 * padding), 10, size=2)
    layer = qgp.compress(rng.normal(size=(c_out, c_in, k, k)))
    x = rng.integers(-128, 128, size=(c_in, h, w))
    expected = direct_conv(x, qgp.expand(layer), padding)
    np.testing.assert_array_equal(qgp.muxconv2d(x, layer, padding), expected)
    np.testing.assert_array_equal(conv.conv2d(x, qgp.expand(layer), padding), expected)


def test_dense_conv2d_equals_direct_conv():
    rng = np.random.default_rng(5)
    for _ in range(10):
        w = rng.integers(-128, 128, size=(3, 4, 3, 3))
        x = rng.integers(-128, 128, size=(4, 7, 6))
        np.testing.assert_array_equal(conv.conv2d(x, w, 1), direct_conv(x, w, 1))


def test_compress_keeps_largest_tap_and_sign():
    w = np.zeros((2, 1, 3, 3))
    w[0, 0, 1, 2] = -0.9
    w[0, 0, 0, 0] = 0.5
    w[1, 0, 2, 2] = 0.25
    layer = qgp.compress(w)
    assert layer.k == 3
    np.testing.assert_array_equal(layer.index, [[5], [8]])
    np.testing.assert_array_equal(layer.sign, [[-1], [1]])
    np.testing.assert_allclose(layer.scale, [0.9, 0.25])


def test_scale_is_least_squares_optimal():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(4, 6, 3, 3))
    layer = qgp.compress(w)
    s = qgp.expand(layer).astype(float)
    for o in range(4):
        best = np.sum(w[o] * s[o]) / np.sum(s[o] * s[o])
        assert layer.scale[o] == pytest.approx(best)


def test_pack_unpack_round_trip_and_code_width():
    rng = np.random.default_rng(4)
    layer = qgp.compress(rng.normal(size=(5, 7, 3, 3)))
    codes = qgp.pack(layer)
    assert codes.max() < 32 and qgp.code_width(3) == 5 and qgp.code_width(1) == 1 and qgp.code_width(5) == 6
    back = qgp.unpack(codes, 3, layer.scale)
    np.testing.assert_array_equal(back.index, layer.index)
    np.testing.assert_array_equal(back.sign, layer.sign)
    assert qgp.storage_bits(layer) == 5 * 7 * 5


@pytest.mark.parametrize("call, exc, msg", [
    (lambda: qgp.compress(np.zeros((2, 2, 3))), ValueError,
     r"^Weights must be shaped \(c_out, c_in, k, k\), not \(2, 2, 3\)$"),
    (lambda: qgp.compress(np.zeros((2, 2, 2, 2))), ValueError, r"^Kernel size must be an odd integer >= 1, not 2$"),
    (lambda: qgp.muxconv2d(np.zeros((3, 4, 4), int), qgp.compress(np.ones((1, 2, 3, 3))), 1), ValueError,
     r"^Activations have 3 channels, the layer expects 2$"),
    (lambda: qgp.muxconv2d(np.zeros((2, 4, 4)), qgp.compress(np.ones((1, 2, 3, 3))), 1), TypeError,
     r"^Activations must be integers, not float64$"),
    (lambda: qgp.muxconv2d(np.zeros((2, 2, 2), int), qgp.compress(np.ones((1, 2, 3, 3))), 0), ValueError,
     r"^Image 2x2 with padding 0 is smaller than the 3x3 kernel$"),
    (lambda: qgp.unpack([[40]], 3), ValueError, r"^QGP codes for k=3 must be in range \[0, 32\)$"),
    (lambda: qgp.QGPLayer(np.array([[9]]), np.array([[1]]), np.ones(1), 3), ValueError,
     r"^Tap index must be in range \[0, 9\) for k=3$"),
])
def test_errors(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


@pytest.mark.parametrize("call, error, msg", [
    (lambda: qgp.muxconv2d(np.zeros((2, 4, 4), int), qgp.compress(np.ones((1, 2, 3, 3))), 5), ValueError,
     r"^Padding must be an integer in range \[0, 1\] for a 3x3 kernel, not 5$"),
    (lambda: qgp.muxconv2d(np.full((2, 4, 4), 300), qgp.compress(np.ones((1, 2, 3, 3))), 1), ValueError,
     r"^Activations must fit in signed 8-bit integers \[-128, 127\], not \[300, 300\]$"),
    (lambda: conv.conv2d(np.full((2, 4, 4), -129), np.ones((1, 2, 3, 3), int), 1), ValueError,
     r"^Activations must fit in signed 8-bit integers"),
])
def test_out_of_contract_inputs(call, error, msg):
    with pytest.raises(error, match=msg):
        call()
