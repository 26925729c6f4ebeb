"""InSituGenerator and CachedGenerator stream golden.mlg.generate's weights bit for bit, with random output
stalls."""

import numpy as np
import pytest

from insitu.golden import mlg
from amaranth import Module, ResetInserter, Signal
from amaranth.lib import wiring

from insitu.hdl.insitu import InSituGenerator
from insitu.hdl.insitu_cached import CachedGenerator
from insitu.hdl.testing import run, stream_get

GENERATORS = [InSituGenerator, CachedGenerator]


def collect(dut, count, *, seed, stall):
    got = []

    async def sink(ctx):
        got.extend(await stream_get(ctx, dut.o, count, rng=seed, stall=stall))

    run(dut, [sink], deadline=20 * count + getattr(dut, "fill_cycles", 0) + 100)
    return np.array(got)


@pytest.mark.parametrize("seed, shape, bi, bo, lanes, bits", [
    (0, (16, 16, 3, 3), 3, 4, 1, (3, 6, 3)), (1, (8, 5, 3, 3), 2, 3, 3, (3, 6, 3)),
    (2, (6, 4, 1, 1), 1, 2, 1, (3, 6, 3)), (3, (4, 3, 5, 5), 2, 2, 5, (3, 6, 3)),
    (4, (5, 4, 3, 3), 2, 3, 3, (2, 2, 1)), (5, (5, 4, 3, 3), 2, 3, 1, (4, 8, 2)), (6, (3, 1, 1, 1), 1, 1, 1, (3, 6, 3))])
@pytest.mark.parametrize("generator", GENERATORS)
def test_generator_matches_golden(generator, seed, shape, bi, bo, lanes, bits):
    rng = np.random.default_rng(seed)
    layer, _ = mlg.decompose(rng.normal(size=shape), bi, bo, bits=bits, iterations=5)
    dut = generator(basis=layer.basis, u=layer.u, v=layer.v, bits=layer.bits, lanes=lanes)
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
@pytest.mark.parametrize("generator", GENERATORS)
def test_one_transfer_per_clock_and_latency(generator, bo):
    layer, _ = mlg.decompose(np.random.default_rng(bo).normal(size=(6, 4, 3, 3)), 2, bo, iterations=2)
    dut = generator(basis=layer.basis, u=layer.u, v=layer.v, bits=layer.bits, lanes=3)
    cycles = []

    async def sink(ctx):
        await stream_get(ctx, dut.o, 50, cycles=cycles)
    fill = getattr(dut, "fill_cycles", 0)
    run(dut, [sink], deadline=fill + 200)
    # one clock for the factor memories' first read (the cached one: its fill), then `latency` clocks,
    # then one transfer per clock
    start = (fill or 1) + dut.latency
    assert cycles == list(range(start, start + 50))


def test_the_cached_generator_takes_few_multipliers():
    from insitu.hdl.params import abandon
    args = dict(basis=np.ones((4, 3, 9), int), u=np.ones((4, 16, 3), int), v=np.ones((16, 4), int))
    gens = [InSituGenerator(**args), CachedGenerator(**args), CachedGenerator(**args, lanes=3)]
    counts = [g.multipliers for g in gens]
    abandon(*gens)                                       # described only
    assert counts == [16, 5, 13]


class _Held(wiring.Component):
    """A writable generator whose reset the testbench holds while it writes the factors."""

    def __init__(self, gen):
        self.gen = gen
        super().__init__({"hold": wiring.In(1), **dict(gen.signature.members.items())})

    def elaborate(self, platform):
        m = Module()
        m.submodules.gen = ResetInserter(self.hold)(self.gen)
        for name in self.gen.signature.members:
            if name == "o":
                wiring.connect(m, self.gen.o, wiring.flipped(self.o))
            else:
                m.d.comb += getattr(self.gen, name).eq(getattr(self, name))
        return m


@pytest.mark.parametrize("generator", GENERATORS)
def test_factors_written_in_reset_are_the_ones_generated(generator):
    """writable: the factors go in through the ports while the reset is held; after it the stream is
    golden.mlg.generate's of them, not of the arrays the generator was built with. Then another layer."""
    rng = np.random.default_rng(11)
    layers = [mlg.decompose(rng.normal(size=(5, 4, 3, 3)), 2, 3, iterations=3)[0] for _ in range(2)]
    ones = dict(basis=np.ones((3, 2, 9), int), u=np.ones((3, 4, 2), int), v=np.ones((5, 3), int))
    dut = _Held(generator(**ones, bits=layers[0].bits, lanes=3, writable=True))
    got = []

    async def tb(ctx):
        for layer in layers:
            ctx.set(dut.hold, 1)
            ctx.set(dut.basis, layer.basis.tolist())
            for ci in range(4):
                ctx.set(dut.u_addr, ci)
                ctx.set(dut.u_data, [int(layer.u[b, ci, i]) for b in range(3) for i in range(2)])
                ctx.set(dut.u_en, (1 << 6) - 1)
                await ctx.tick()
            ctx.set(dut.u_en, 0)
            for o in range(5):
                ctx.set(dut.v_addr, o)
                ctx.set(dut.v_data, [int(x) for x in layer.v[o]])
                ctx.set(dut.v_en, (1 << 3) - 1)
                await ctx.tick()
            ctx.set(dut.v_en, 0)
            ctx.set(dut.hold, 0)
            got.append(await stream_get(ctx, dut.o, 5 * 4 * 3, rng=4, stall=0.2))

    run(dut, [tb], deadline=5000)
    for layer, out in zip(layers, got):
        np.testing.assert_array_equal(np.array(out).reshape(-1), mlg.generate(layer).reshape(-1))
