"""StreamMatVec (a fully connected layer fed by a weight stream) against integer ``W @ x``, bit for bit,
with seeded stalls on the vector, weight and output streams; and fed by the SmartDeal and MLG decode units
against their golden weights."""

import random

import numpy as np
import pytest

from insitu.golden import mlg
from insitu.golden import smartdeal as S
from insitu.hdl.params import ParameterError, ParameterTypeError
from insitu.hdl.streammatvec import StreamMatVec
from insitu.hdl.testing import run, simulate_stream, stream_get, stream_put


def simulate(dut, vectors, weights, *, seed, stall):
    """Vectors (count, n) into ``i``; the matrix, rows padded to whole transfers, repeated into ``w``."""
    lanes, per_row = dut.lanes, dut.transfers_per_row
    padded = np.zeros((dut.m, per_row * lanes), dtype=np.int64)
    padded[:, :dut.n] = weights
    # what a padded tail holds must not matter: fill it with junk
    padded[:, dut.n:] = np.random.default_rng(seed).integers(-3, 4, size=(dut.m, per_row * lanes - dut.n))
    flat = padded.reshape(-1, lanes).tolist()
    rng = random.Random(seed)
    got, cycles = [], []

    async def feed(ctx):
        await stream_put(ctx, dut.i, [int(v) for v in np.ravel(vectors)], rng=rng.random(), stall=stall)

    async def feed_weights(ctx):
        await stream_put(ctx, dut.w, flat * len(vectors), rng=rng.random(), stall=stall)

    async def collect(ctx):
        got.extend(await stream_get(ctx, dut.o, len(vectors) * dut.m, rng=rng.random(), stall=stall,
                                    cycles=cycles))

    run(dut, [feed, feed_weights, collect], deadline=200 + 4 * dut.cycles_per_vector * len(vectors) * 4)
    return np.array(got).reshape(len(vectors), dut.m), cycles[-1] + 1


@pytest.mark.parametrize("seed", range(10))
def test_matches_golden(seed):
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(1, 6)), int(rng.integers(1, 12))
    lanes = int(rng.integers(1, 5))
    act, ww = int(rng.choice([4, 8])), int(rng.choice([3, 5, 8, 15]))
    slices = 4 if ww >= 4 and seed % 2 else 2         # 5 bits in four slices: three of 2, 2 and 1 bits
    w = rng.integers(-(1 << (ww - 1)), 1 << (ww - 1), size=(m, n))
    x = rng.integers(-(1 << (act - 1)), 1 << (act - 1), size=(3, n))
    w.flat[0], x.flat[0] = -(1 << (ww - 1)), -(1 << (act - 1))        # the extremes, multiplied
    dut = StreamMatVec(m=m, n=n, act_width=act, weight_width=ww, lanes=lanes, slices=slices)
    got, _ = simulate(dut, x, w, seed=seed, stall=0.3 if seed % 3 else 0.0)
    np.testing.assert_array_equal(got, x @ w.T)


@pytest.mark.parametrize("lanes,slices", [(1, 2), (3, 2), (1, 4), (3, 4)])
def test_one_weight_transfer_per_clock(lanes, slices):
    rng = np.random.default_rng(lanes)
    m, n = 4, 7
    dut = StreamMatVec(m=m, n=n, weight_width=8, lanes=lanes, slices=slices)
    x = rng.integers(-128, 128, size=(4, n))
    w = rng.integers(-128, 128, size=(m, n))
    got, cycles = simulate(dut, x, w, seed=0, stall=0.0)
    np.testing.assert_array_equal(got, x @ w.T)
    # vectors back to back: n clocks to load, then one per weight transfer; the last result follows
    assert dut.cycles_per_vector == n + m * -(-n // lanes)
    assert cycles == 4 * dut.cycles_per_vector + dut.latency


def test_smartdeal_source():
    from insitu.hdl.decode import SmartDealWeights
    rng = np.random.default_rng(3)
    m, n = 6, 20                                          # 20 columns: rows padded to 7 triples
    layer, _ = S.decompose(rng.normal(size=(m, n)), group_size=2, threshold=0.3)
    source = SmartDealWeights(words=S.row_words(layer), rows=layer.zero.shape[1], c_out=m, group_size=2,
                              basis=layer.basis, basis_bits=layer.basis_bits, exp_range=layer.e_max - layer.e_min)
    dut = StreamMatVec(m=m, n=n, source=source)
    assert dut.lanes == 3 and dut.transfers_per_row == layer.zero.shape[1]
    x = rng.integers(-128, 128, size=(3, n))
    got, _ = simulate_stream(dut, [int(v) for v in x.ravel()], 3 * m, seed=3, stall=0.3, deadline=20_000)
    np.testing.assert_array_equal(np.array(got).reshape(3, m), x @ S.reconstruct(layer).T)


def test_mlg_source():
    from insitu.hdl.insitu import InSituGenerator
    rng = np.random.default_rng(4)
    m, n = 5, 9
    layer, _ = mlg.decompose(rng.normal(size=(m, n, 1, 1)), 1, 3, iterations=3)
    source = InSituGenerator(basis=layer.basis, u=layer.u, v=layer.v, bits=layer.bits, lanes=1)
    dut = StreamMatVec(m=m, n=n, source=source)
    x = rng.integers(-128, 128, size=(3, n))
    got, _ = simulate_stream(dut, [int(v) for v in x.ravel()], 3 * m, seed=4, stall=0.3, deadline=20_000)
    np.testing.assert_array_equal(np.array(got).reshape(3, m), x @ mlg.generate(layer).reshape(m, n).T)


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(m=0, n=4), ParameterError, r"^Row count must be an integer >= 1, not 0$"),
    (dict(m=2, n=4, lanes=0), ParameterError, r"^Weight lane count must be an integer in range \[1, 16\]"),
    (dict(m=2, n=4, weight_width=1), ParameterError, r"^Weight width must be an integer in range \[2, 24\]"),
    (dict(m=2, n=4, source=object()), ParameterTypeError, r"^Weight source must be a component"),
    (dict(m=2, n=4, slices=3), ParameterError, r"^Weight slices must be 2 or 4 \(at most the weight width 8\), not 3$"),
    (dict(m=2, n=4, weight_width=3, slices=4), ParameterError, r"^Weight slices must be 2 or 4"),
])
def test_errors(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        StreamMatVec(**kwargs)
