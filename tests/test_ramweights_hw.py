"""RamWeights (dense int8 weights written at run time into SPRAM or block RAM) feeding StreamMatVec: loaded
byte by byte in random order, then ``W @ x`` bit for bit with seeded stalls; reloaded with another matrix;
its SPRAM mapping on the iCE40UP5K; and its errors."""

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment

from insitu.hdl.params import ParameterError
from insitu.hdl.ramweights import RamWeights
from insitu.hdl.streammatvec import StreamMatVec
from insitu.hdl.testing import run, stream_get, stream_put


async def write_byte(ctx, src, addr, value):
    """One byte through ``src``'s write port: a clock with ``w_en`` high."""
    ctx.set(src.w_addr, addr)
    ctx.set(src.w_data, value)
    ctx.set(src.w_en, 1)
    await ctx.tick()
    ctx.set(src.w_en, 0)


async def restart(ctx, src):
    """A clock with ``restart`` high: the stream starts again at row 0."""
    ctx.set(src.restart, 1)
    await ctx.tick()
    ctx.set(src.restart, 0)


def simulate(m, n, lanes, batches, *, seed, stall, act=8):
    """``batches``: a list of (weights, vectors); each matrix is loaded (byte addresses in random order,
    random idle clocks between writes), ``restart`` pulsed, then its vectors run. Returns the outputs per
    batch."""
    src = RamWeights(m=m, n=n, lanes=lanes)
    dut = StreamMatVec(m=m, n=n, act_width=act, source=src)
    rng = random.Random(seed)
    outputs = []

    async def drive(ctx):
        expected = 0
        for weights, vectors in batches:
            while len(outputs) < expected:       # load while idle: the previous batch's results are out
                await ctx.tick()
            image = src.image(weights)
            for addr in rng.sample(range(len(image)), len(image)):
                for _ in range(rng.randrange(2)):
                    await ctx.tick()
                await write_byte(ctx, src, addr, image[addr])
            await restart(ctx, src)
            expected += len(vectors) * m
            await stream_put(ctx, dut.i, [int(v) for v in np.ravel(vectors)], rng=rng.random(), stall=stall)

    async def collect(ctx):
        for _, vectors in batches:
            for _ in range(len(vectors) * m):
                outputs.extend(await stream_get(ctx, dut.o, 1, rng=rng.random(), stall=stall))

    clocks = sum(len(src.image(w)) * 2 + 4 * dut.cycles_per_vector * len(x) for w, x in batches)
    run(dut, [drive, collect], deadline=500 + 4 * clocks)
    got, start = [], 0
    for _, x in batches:
        got.append(np.array(outputs[start:start + len(x) * m]).reshape(len(x), m))
        start += len(x) * m
    return got


@pytest.mark.parametrize("seed", range(8))
def test_loaded_weights_match_golden(seed):
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(1, 7)), int(rng.integers(1, 14))
    lanes = int(rng.choice([1, 2, 4, 8]))
    batches = []
    for _ in range(2):                           # a second matrix over the first: restart drops the old one
        w = rng.integers(-128, 128, size=(m, n))
        x = rng.integers(-128, 128, size=(2, n))
        w.flat[0], x.flat[0] = -128, -128        # the extremes, multiplied
        batches.append((w, x))
    got = simulate(m, n, lanes, batches, seed=seed, stall=0.3 if seed % 2 else 0.0)
    for g, (w, x) in zip(got, batches):
        np.testing.assert_array_equal(g, x @ w.T)


def test_image_layout_and_errors():
    src = RamWeights(m=2, n=3, lanes=2)
    assert (src.transfers_per_row, src.words, src.spram_blocks, src.weight_bits) == (2, 4, 1, 48)
    assert src.image([[1, -1, 2], [-128, 127, 0]]) == bytes([1, 0xff, 2, 0, 0x80, 0x7f, 0, 0])
    with pytest.raises(ParameterError, match=r"^Weights must be shaped \(2, 3\)"):
        src.image([[1, 2, 3]])
    with pytest.raises(ParameterError, match=r"^Weights must be int8"):
        src.image([[1, 2, 300], [0, 0, 0]])
    with pytest.raises(ParameterError, match=r"^Weight lane count must be 1, 2, 4 or 8"):
        RamWeights(m=2, n=3, lanes=3)
    with pytest.raises(ParameterError, match=r"^A 64x1024 matrix at 2 lanes needs 32,768 words per lane pair; "
                                            r"an SPRAM holds 16,384: use more lanes"):
        RamWeights(m=64, n=1024, lanes=2)
    Fragment.get(src, None)


class _UP5K:
    device = "iCE40UP5K"


@pytest.mark.parametrize("lanes, blocks", [(1, 1), (2, 1), (8, 4)])
def test_spram_blocks_on_the_up5k(lanes, blocks):
    """On the iCE40UP5K the matrix lives in SB_SPRAM256KA blocks, a pair of lanes in each: the digits fc1
    (64x256 int8, 131 kbit, more than the part's block RAM) at 8 lanes takes four."""
    src = RamWeights(m=64, n=256, lanes=lanes)
    fragment = Fragment.get(src, _UP5K())
    spram = [sub for sub, name, _ in fragment.subfragments
             if getattr(sub, "type", None) == "SB_SPRAM256KA" and name.startswith("spram")]
    assert len(spram) == blocks == src.spram_blocks


@pytest.mark.parametrize("seed", range(3))
def test_writes_pause_the_stream_without_losing_a_transfer(seed):
    """Writes while the matrix streams (here: the same bytes again, at random clocks) take the port for a
    clock each; the stream pauses for them and goes on where it was, passes after passes, with stalls."""
    rng = np.random.default_rng(seed)
    m, n, lanes = int(rng.integers(1, 5)), int(rng.integers(1, 10)), int(rng.choice([1, 2, 4]))
    src = RamWeights(m=m, n=n, lanes=lanes)
    image = src.image(rng.integers(-128, 128, size=(m, n)))
    words = [[b - 256 if b > 127 else b for b in image[w * lanes:(w + 1) * lanes]] for w in range(src.words)]
    passes = 3
    pick = random.Random(seed)
    got, loaded = [], []

    async def write(ctx):
        for addr in range(len(image)):
            await write_byte(ctx, src, addr, image[addr])
        await restart(ctx, src)
        loaded.append(True)
        while len(got) < passes * src.words:
            if pick.random() < 0.3:
                addr = pick.randrange(len(image))
                await write_byte(ctx, src, addr, image[addr])
            else:
                await ctx.tick()

    async def collect(ctx):
        while not loaded:
            await ctx.tick()
        got.extend(await stream_get(ctx, src.o, passes * src.words, rng=pick.random(), stall=0.3))

    run(src, [write, collect], deadline=2000 + 20 * passes * src.words)
    assert [list(t) for t in got] == words * passes


def test_one_transfer_per_clock_once_primed():
    """With ``o`` always ready the words leave one per clock: its FIFO never halves the rate."""
    src = RamWeights(m=3, n=5, lanes=2)
    image = src.image(np.arange(15).reshape(3, 5) - 7)
    seen = []

    async def bench(ctx):
        for addr, value in enumerate(image):
            await write_byte(ctx, src, addr, value)
        await restart(ctx, src)
        ctx.set(src.o.ready, 1)
        for _ in range(30):
            _, _, valid, payload = await ctx.tick().sample(src.o.valid, src.o.payload)
            seen.append(payload.as_value().value if valid else None)

    run(src, [bench])
    words = [int.from_bytes(image[2 * w:2 * w + 2], "little") for w in range(src.words)]
    first = next(i for i, v in enumerate(seen) if v is not None)
    assert first <= 3
    assert seen[first:first + 2 * src.words] == words * 2            # no gap, the matrix repeating
