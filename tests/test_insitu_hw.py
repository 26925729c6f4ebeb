"""InSituGenerator streams golden.mlg.generate's weights bit for bit, with random output stalls."""

import numpy as np
import pytest

from insitu.golden import mlg
from insitu.hdl.insitu import InSituGenerator
from insitu.hdl.testing import run, stream_get


def collect(dut, count, *, seed, stall):
    got = []

    async def sink(ctx):
        got.extend(await stream_get(ctx, dut.o, count, rng=seed, stall=stall))

    run(dut, [sink], deadline=20 * count + 100)
    return np.array(got)


@pytest.mark.parametrize("seed, shape, bi, bo, lanes, bits", [
    (0, (16, 16, 3, 3), 3, 4, 1, (3, 6, 3)), (1, (8, 5, 3, 3), 2, 3, 3, (3, 6, 3)),
    (2, (6, 4, 1, 1), 1, 2, 1, (3, 6, 3)), (3, (4, 3, 5, 5), 2, 2, 5, (3, 6, 3)),
    (4, (5, 4, 3, 3), 2, 3, 3, (2, 2, 1)), (5, (5, 4, 3, 3), 2, 3, 1, (4, 8, 2))])
def test_generator_matches_golden(seed, shape, bi, bo, lanes, bits):
    rng = np.random.default_rng(seed)
    layer, _ = mlg.decompose(rng.normal(size=shape), bi, bo, bits=bits, iterations=5)
    dut = InSituGenerator(basis=layer.basis, u=layer.u, v=layer.v, bits=layer.bits, lanes=lanes)
    expected = mlg.generate(layer).reshape(-1)
    got = collect(dut, 2 * expected.size // lanes, seed=seed, stall=0.3).reshape(-1)
    np.testing.assert_array_equal(got, np.concatenate([expected, expected]))   # the layer repeats
    # the factors on chip are the packed image's codes (its payload length field), without header and scales
    assert dut.stored_bits == int.from_bytes(mlg.pack(layer)[29:33], "little")


@pytest.mark.parametrize("kwargs, msg", [
    (dict(lanes=2), r"^Lane count must divide k² \(9\), not 2$"),
    (dict(v=np.full((4, 2), 2)), r"^V codes must be odd integers in \[-7, 7\]$"),
    (dict(u=np.ones((2, 3, 5), int)), r"^U must be shaped \(2, 3, 1\), not \(2, 3, 5\)$"),
])
def test_errors(kwargs, msg):
    args = dict(basis=np.ones((2, 1, 9), int), u=np.ones((2, 3, 1), int), v=np.ones((4, 2), int))
    args.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        InSituGenerator(**args)


def test_bits_must_be_a_triple():
    with pytest.raises(TypeError, match=r"^Bits must be a \(basis, u, v\) triple of integers, not 3$"):
        InSituGenerator(basis=np.ones((2, 1, 9), int), u=np.ones((2, 3, 1), int), v=np.ones((4, 2), int), bits=3)


@pytest.mark.parametrize("bo", [1, 2, 4, 5])
def test_one_transfer_per_clock_and_latency(bo):
    layer, _ = mlg.decompose(np.random.default_rng(bo).normal(size=(6, 4, 3, 3)), 2, bo, iterations=2)
    dut = InSituGenerator(basis=layer.basis, u=layer.u, v=layer.v, bits=layer.bits, lanes=3)
    cycles = []

    async def sink(ctx):
        await stream_get(ctx, dut.o, 50, cycles=cycles)
    run(dut, [sink], deadline=200)
    # one clock for the factor memories' first read, then `latency` clocks, then one transfer per clock
    assert cycles == list(range(1 + dut.latency, 1 + dut.latency + 50))
