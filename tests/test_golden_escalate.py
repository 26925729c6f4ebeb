"""golden.escalate: basis-first integer inference against the direct convolution (identical), decomposition
against the float kernel (bounded), the packed format (pinned layout, round trip, every corruption refused)."""

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from insitu.golden import conv, escalate as E
from insitu.golden.packed import seal


def _layer(seed=0, shared=False, mode="pow2", bases=3, density=0.5, c_out=6, c_in=4, k=3, coef_bits=4):
    w = np.random.default_rng(seed).normal(size=(c_out, c_in, k, k))
    return E.decompose(w, bases, shared=shared, mode=mode, coef_bits=coef_bits, density=density)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("mode", ["int", "pow2"])
@pytest.mark.parametrize("padding", [0, 1])
def test_basis_first_equals_direct_convolution(shared, mode, padding):
    layer, _ = _layer(1, shared, mode)
    rng = np.random.default_rng(2)
    for _ in range(5):
        x = rng.integers(-128, 128, size=(4, 7, 6))
        np.testing.assert_array_equal(E.conv2d(x, layer, padding), conv.conv2d(x, E.weights(layer), padding))


def test_stages_are_what_they_say():
    layer, _ = _layer(3, shared=True)
    x = np.random.default_rng(4).integers(-128, 128, size=(4, 5, 5))
    p = E.stage1(x, layer, 1)
    assert p.shape == (4, 3, 5, 5)
    for c in range(4):
        for m in range(3):           # each intermediate map is one channel against one basis kernel
            np.testing.assert_array_equal(p[c, m], conv.conv2d(x[c:c + 1], layer.basis[m][None, None], 1)[0])
    np.testing.assert_array_equal(E.stage2(p, layer), np.einsum("ocm,cmyx->oyx", layer.coef, p))


def test_decomposition_tracks_the_float_kernel():
    """Full rank, dense 8-bit coefficients: within 2 % (basis and coefficient rounding); rank 1 shared,
    sparse: the error grows as the kernel is squeezed, and the sparsity is what was asked."""
    w = np.random.default_rng(5).normal(size=(8, 4, 3, 3))
    full, err = E.decompose(w, 8, mode="int", coef_bits=8, density=1.0)
    assert err < 0.02
    _, err_small = E.decompose(w, 1, shared=True, density=0.25)
    assert err_small > err
    sparse, _ = E.decompose(w, 2, density=0.25)
    assert abs(np.mean(sparse.coef != 0) - 0.25) < 0.02


def test_pow2_coefficients_are_powers_of_two():
    layer, _ = _layer(6, mode="pow2", coef_bits=4)
    nz = np.abs(layer.coef[layer.coef != 0])
    assert set(np.unique(nz)) <= {1, 2, 4, 8}


def test_pack_round_trip_and_pinned_layout():
    for shared in (False, True):
        for mode in ("int", "pow2"):
            layer, _ = _layer(7, shared, mode)
            back = E.unpack(E.pack(layer))
            np.testing.assert_array_equal(back.basis, layer.basis)
            np.testing.assert_array_equal(back.coef, layer.coef)
            assert (back.mode, back.shared, back.coef_bits) == (mode, shared, layer.coef_bits)
            assert E.storage_bits(layer) == 8 * len(E.pack(layer))
    # a hand-built image: shared 1x1 basis [3], coefficients [+2, 0] in pow2 with 2 levels (1 exponent bit)
    layer = E.EscalateLayer(basis=np.array([[[3]]]), coef=np.array([[[2]], [[0]]]), basis_bits=8, mode="pow2",
                            coef_bits=2, basis_scale=0.5, coef_scale=0.25)
    # payload, LSB first: basis 3 (8 bits) | coef +2: zero 0, sign 0, exponent 1 | coef 0: zero 1  = 12 bits
    payload = (3 | 0 << 8 | 0 << 9 | 1 << 10 | 1 << 11).to_bytes(2, "little")
    header = struct.pack("<4sBBBHHBBBffI", b"ESC1", 1, 1, 1, 1, 2, 3, 8, 2, 0.5, 0.25, 12)
    assert E.pack(layer) == seal(header + payload)


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["flip", "cut", "add"]), st.integers(0, 5000), st.integers(0, 255)),
                min_size=1, max_size=3))
def test_every_corruption_is_refused(mutations):
    image = E.pack(_layer(8)[0])
    data = image
    for kind, pos, value in mutations:
        pos %= max(len(data), 1)
        data = (data[:pos] + bytes([data[pos] ^ (value or 1)]) + data[pos + 1:] if kind == "flip" and data else
                data[:pos] if kind == "cut" else data[:pos] + bytes([value]) + data[pos:])
    if data != image:
        with pytest.raises(E.FormatError):
            E.unpack(data)


def test_crafted_sizes_are_refused_before_allocating():
    header = struct.pack("<4sBBBHHBBBffI", b"ESC1", 1, 15, 255, 65535, 65535, 2, 8, 4, 1.0, 1.0, 64)
    with pytest.raises(E.FormatError, match=r"shapes need more than the 64 payload bits$"):
        E.unpack(seal(header + bytes(8)))


@pytest.mark.parametrize("call, msg", [
    (lambda: E.decompose(np.ones((2, 2, 3, 3)), 0), r"^Basis kernels per channel must be an integer in range"),
    (lambda: E.decompose(np.ones((2, 2, 3, 3)), 1, mode="log"), r"^Coefficient mode must be one of int, pow2"),
    (lambda: E.decompose(np.ones((2, 2, 3, 3)), 1, mode="int", coef_bits=9), r"^Coefficient bits must be"),
    (lambda: E.decompose(np.ones((2, 2, 3, 3)), 1, density=0), r"^Density must be a number in \(0, 1\]"),
    (lambda: E.decompose(np.ones((2, 3, 3)), 1), r"^Weights must be shaped \(c_out, c_in, k, k\)"),
])
def test_errors(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()
