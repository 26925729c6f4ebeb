"""Pow2Decoder equals golden.smartdeal.reconstruct row for row, with random stalls."""

import numpy as np
import pytest

from insitu.golden import smartdeal as S
from insitu.hdl.decode import Pow2Decoder
from insitu.hdl.testing import simulate_stream


def row_stream(layer):
    c_out, s, _ = layer.zero.shape
    return [{"skip": int(layer.zero[o, r].all()), "group": o // layer.group_size,
             "coef": [{"zero": int(layer.zero[o, r, j]), "sign": int(layer.sign[o, r, j]),
                       "exp": int(layer.exp[o, r, j] - layer.e_min)} for j in range(3)]}
            for o in range(c_out) for r in range(s)]


@pytest.mark.parametrize("seed, group, threshold, e_range", [
    (0, 1, 0.0, (-7, 5)), (1, 4, 0.3, (-7, 5)), (2, 8, 0.5, (-3, 3)), (3, 2, 0.1, (0, 0))])
def test_decoder_matches_golden(seed, group, threshold, e_range):
    rng = np.random.default_rng(seed)
    layer, _ = S.decompose(rng.normal(size=(8, 6, 3, 3)), group_size=group, threshold=threshold,
                           e_range=e_range)
    dut = Pow2Decoder(basis=layer.basis, basis_bits=layer.basis_bits, exp_range=layer.e_max - layer.e_min)
    rows = row_stream(layer)
    got, _ = simulate_stream(dut, rows, len(rows), seed=seed, stall=0.3)
    expected = S.reconstruct(layer).reshape(8, -1, 3).reshape(-1, 3)
    np.testing.assert_array_equal(np.array(got), expected)


def test_one_row_per_clock():
    layer, _ = S.decompose(np.random.default_rng(5).normal(size=(4, 4, 3, 3)))
    dut = Pow2Decoder(basis=layer.basis, basis_bits=layer.basis_bits, exp_range=layer.e_max - layer.e_min)
    rows = row_stream(layer)
    _, cycles = simulate_stream(dut, rows, len(rows))
    assert cycles == len(rows) + dut.latency


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(basis=[[[0] * 3] * 3], basis_bits=1, exp_range=4), ValueError,
     r"^Basis bits must be an integer in range \[2, 16\], not 1$"),
    (dict(basis=[[[0] * 3] * 2], basis_bits=8, exp_range=4), ValueError, r"^Basis must be shaped \(groups, 3, 3\)$"),
    (dict(basis=[[[200] * 3] * 3], basis_bits=8, exp_range=4), ValueError,
     r"^Basis values must fit in signed 8-bit integers \[-128, 127\]$"),
])
def test_errors(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        Pow2Decoder(**kwargs)
