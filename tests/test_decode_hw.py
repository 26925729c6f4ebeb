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


def reader_for(layer):
    from insitu.hdl.decode import RowReader
    c_out, s, _ = layer.zero.shape
    return RowReader(words=S.row_words(layer), rows=s, c_out=c_out, group_size=layer.group_size,
                     exp_bits=layer.exp_bits)


@pytest.mark.parametrize("seed, group, threshold, e_range", [
    (0, 1, 0.0, (-7, 5)), (1, 2, 0.4, (-7, 5)), (2, 4, 0.7, (-3, 3)), (3, 1, 0.2, (0, 0)), (4, 4, 0.95, (-7, 8))])
def test_row_reader_matches_packed_rows(seed, group, threshold, e_range):
    """Two passes over the layer: the reader restarts at the first row after the last."""
    rng = np.random.default_rng(seed)
    layer, _ = S.decompose(rng.normal(size=(4, 5, 3, 3)), group_size=group, threshold=threshold,
                           e_range=e_range)
    dut = reader_for(layer)
    expected = row_stream(layer)
    for row in expected:   # fields the decoder ignores: zero where the packed format stores nothing
        for coef in row["coef"]:
            if row["skip"] or coef["zero"]:
                coef["sign"] = coef["exp"] = None
            if row["skip"]:
                coef["zero"] = None
    got, _ = simulate_stream_out(dut, 2 * len(expected), seed=seed, stall=0.3)
    for n, (g, e) in enumerate(zip(got, expected * 2)):
        assert g["skip"] == e["skip"] and g["group"] == e["group"], n
        for gc, ec in zip(g["coef"], e["coef"]):
            assert all(ec[key] is None or gc[key] == ec[key] for key in ec), n


def simulate_stream_out(dut, count, *, seed, stall):
    from insitu.hdl.testing import run, stream_get
    got, cycles = [], []

    async def collect(ctx):
        got.extend(await stream_get(ctx, dut.o, count, rng=seed, stall=stall, cycles=cycles))
    run(dut, [collect], deadline=100 + 4 * count)
    return got, cycles[-1] + 1


def test_row_reader_one_row_per_clock():
    layer, _ = S.decompose(np.random.default_rng(9).normal(size=(4, 4, 3, 3)), threshold=0.3)
    dut = reader_for(layer)
    n = layer.zero.shape[0] * layer.zero.shape[1]
    _, cycles = simulate_stream_out(dut, 3 * n, seed=0, stall=0.0)
    # two clocks to fill after reset, one per row, one idle clock at each restart of the layer
    assert cycles == 3 * n + 2 + 2 + 1


@pytest.mark.parametrize("seed, group, threshold", [(0, 1, 0.0), (1, 2, 0.5), (2, 4, 0.3)])
def test_smartdeal_weights_match_reconstruct(seed, group, threshold):
    from insitu.hdl.decode import SmartDealWeights
    rng = np.random.default_rng(seed)
    layer, _ = S.decompose(rng.normal(size=(4, 3, 3, 3)), group_size=group, threshold=threshold)
    dut = SmartDealWeights(words=S.row_words(layer), rows=layer.zero.shape[1], c_out=4, group_size=group,
                           basis=layer.basis, basis_bits=layer.basis_bits, exp_range=layer.e_max - layer.e_min)
    rows = S.reconstruct(layer).reshape(-1, 3)
    got, _ = simulate_stream_out(dut, 2 * len(rows), seed=seed, stall=0.3)
    np.testing.assert_array_equal(np.array(got), np.concatenate([rows, rows]))


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(words=[], rows=1, c_out=1, group_size=1, exp_bits=4), ValueError, r"^Words must be a non-empty"),
    (dict(words=[1 << 32], rows=1, c_out=1, group_size=1, exp_bits=4), ValueError, r"^Words must be a non-empty"),
    (dict(words=[0], rows=40, c_out=1, group_size=1, exp_bits=4), ValueError,
     r"^1 words cannot hold 40 rows \(at least one bit each\)$"),
    (dict(words=[0], rows=1, c_out=4, group_size=3, exp_bits=4), ValueError,
     r"^Group size must divide the output channel count \(4\), not 3$"),
    (dict(words=[0], rows=1, c_out=1, group_size=1, exp_bits=9), ValueError,
     r"^Exponent code width must be an integer in range \[1, 8\], not 9$"),
    (dict(words="ab", rows=1, c_out=1, group_size=1, exp_bits=4), TypeError, r"^Words must be a sequence"),
])
def test_row_reader_errors(kwargs, exc, msg):
    from insitu.hdl.decode import RowReader
    with pytest.raises(exc, match=msg):
        RowReader(**kwargs)


@pytest.mark.parametrize("seed, shape, group_size, threshold", [
    (0, (4, 2, 3, 3), 2, 0.0), (1, (3, 5, 3, 3), 3, 0.8), (2, (8, 1, 3, 3), 4, 0.3), (3, (2, 16), 1, 0.0)])
def test_row_reader_pace_is_exact(seed, shape, group_size, threshold):
    """One row per clock after ``startup`` clocks, whatever the rows' lengths (skipped rows, zeros, full
    rows), then one idle clock per pass over the layer."""
    from insitu.golden import smartdeal
    from insitu.hdl.decode import RowReader
    from insitu.hdl.testing import valid_trace
    layer, _ = smartdeal.decompose(np.random.default_rng(seed).normal(size=shape), group_size=group_size,
                                   threshold=threshold)
    dut = RowReader(words=smartdeal.row_words(layer), rows=layer.zero.shape[1], c_out=shape[0],
                    group_size=group_size, exp_bits=layer.exp_bits)
    rows = shape[0] * layer.zero.shape[1]
    assert dut.cycles_per_layer == rows + 1
    want = "0" * dut.startup + ("1" * rows + "0") * 3
    assert valid_trace(dut, len(want)) == want
