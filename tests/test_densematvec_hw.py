"""DenseMatVec (the circulant layer's baseline) equals the integer product W @ x, with random stalls."""

import numpy as np
import pytest

from insitu.hdl.densematvec import DenseMatVec
from insitu.hdl.testing import simulate_stream


def simulate(weights, xs, *, lanes, seed, stall, slices=2):
    m, n = weights.shape
    dut = DenseMatVec(m=m, n=n, weights=weights, lanes=lanes, slices=slices)
    got, cycles = simulate_stream(dut, [int(v) for v in np.ravel(xs)], len(xs) * m, seed=seed, stall=stall,
                                  deadline=50 * len(xs) * (m * n // lanes + m + n) + 1000)
    return np.array(got).reshape(len(xs), m), cycles


@pytest.mark.parametrize("seed", range(6))
def test_matches_integer_product(seed):
    rng = np.random.default_rng(seed)
    lanes = int(rng.choice([1, 2, 4]))
    m = lanes * int(rng.integers(1, 9))
    n = int(rng.integers(1, 40))
    weights = rng.integers(-128, 128, size=(m, n))
    weights[0, 0] = -128
    xs = rng.integers(-128, 128, size=(3, n))
    xs[0, 0] = -128
    got, _ = simulate(weights, xs, lanes=lanes, seed=seed, stall=float(rng.choice([0.0, 0.4])),
                      slices=int(rng.choice([2, 4])))
    np.testing.assert_array_equal(got, xs @ weights.T)


@pytest.mark.parametrize("m, n, lanes", [(1, 1, 1), (2, 1, 1), (1, 2, 1), (4, 2, 4), (3, 3, 1)])
def test_smallest_shapes(m, n, lanes):
    """The counters' registered end flags hold for one-column, one-row and one-group matrices."""
    rng = np.random.default_rng(m * 100 + n * 10 + lanes)
    weights = rng.integers(-128, 128, size=(m, n))
    xs = rng.integers(-128, 128, size=(4, n))
    got, _ = simulate(weights, xs, lanes=lanes, seed=m + n, stall=0.4)
    np.testing.assert_array_equal(got, xs @ weights.T)


@pytest.mark.parametrize("m, n, lanes, slices", [(16, 16, 4, 2), (4, 4, 1, 2), (6, 5, 3, 4), (2, 9, 1, 2),
                                                  (8, 12, 2, 4)])
def test_cycles_are_exact(m, n, lanes, slices):
    """Without stalls, vector after vector, each product takes exactly ``cycles_per_vector`` clocks (the
    first one less: the count starts at reset)."""
    rng = np.random.default_rng(m * n)
    weights = rng.integers(-128, 128, size=(m, n))
    xs = rng.integers(-128, 128, size=(3, n))
    runs, periods = [], set()
    for v in (1, 2, 3):
        dut = DenseMatVec(m=m, n=n, weights=weights, lanes=lanes, slices=slices)
        runs.append(simulate_stream(dut, [int(e) for e in np.ravel(xs[:v])], v * m, deadline=10000)[1])
        periods.add(dut.cycles_per_vector)
    (period,) = periods
    assert runs == [period - 1, 2 * period - 1, 3 * period - 1]


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(m=6, n=4, lanes=4), ValueError, r"^Lane count must divide the row count \(6\), not 4$"),
    (dict(m=4, n=4, lanes=8), ValueError, r"^Lane count must be an integer in range \[1, 4\], not 8$"),
    (dict(m=4, n=4, lanes=2, weights=np.full((4, 4), 300)), ValueError,
     r"^Weights must fit in signed 8-bit integers \[-128, 127\]$"),
    (dict(m=4, n=5, lanes=2), ValueError, r"^Weights must be shaped \(4, 5\)$"),
    (dict(m=4, n=4, lanes=2, slices=3), ValueError, r"^Weight slices must be 2 or 4 \(at most the weight width 8\), not 3$"),
    (dict(m=4, n=4, lanes=2, weights=None), ValueError, r"^Weights are required unless the weight memory is writable$"),
])
def test_errors(kwargs, exc, msg):
    kwargs.setdefault("weights", np.zeros((4, 4), int))
    with pytest.raises(exc, match=msg):
        DenseMatVec(**kwargs)
