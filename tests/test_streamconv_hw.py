"""StreamConv (weights from a stream) against the golden direct convolution, bit for bit, with stalls on
the window, weight and output streams."""

import random

import numpy as np
import pytest

from insitu.golden import conv, fixed
from insitu.hdl import Conv2d
from insitu.hdl.streamconv import StreamConv
from insitu.hdl.testing import run, stream_get, stream_put


def simulate(dut, windows, weights, *, seed, stall):
    """Windows (n, k², c_in) into ``i``, the layer's weights repeated per window into ``w``."""
    flat = np.asarray(weights).reshape(dut.c_out, -1).reshape(-1, dut.lanes).tolist()
    rng = random.Random(seed)
    got, cycles = [], []

    async def feed_windows(ctx):
        await stream_put(ctx, dut.i, [w.tolist() for w in windows], rng=rng.random(), stall=stall)

    async def feed_weights(ctx):
        await stream_put(ctx, dut.w, flat * len(windows), rng=rng.random(), stall=stall)

    async def collect(ctx):
        got.extend(await stream_get(ctx, dut.o, len(windows) * dut.c_out, rng=rng.random(), stall=stall,
                                    cycles=cycles))

    run(dut, [feed_windows, feed_weights, collect], deadline=200 + 4 * len(flat) * len(windows))
    return np.array(got).reshape(len(windows), dut.c_out), cycles[-1] + 1


@pytest.mark.parametrize("seed", range(8))
def test_matches_golden(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.choice([1, 3]))
    lanes = int(rng.choice([d for d in (1, 3, 9) if (k * k) % d == 0]))
    c_in, c_out = (int(v) for v in rng.integers(1, 5, size=2))
    ww = int(rng.choice([4, 8, 13]))
    weights = rng.integers(-(1 << (ww - 1)), 1 << (ww - 1), size=(c_out, c_in, k, k))
    weights.flat[0] = -(1 << (ww - 1))
    x = rng.integers(-128, 128, size=(c_in, 3, 4))
    x[0, 0, 0] = -128
    requant = None if seed % 2 else (int(rng.integers(0, 8)), 8)
    dut = StreamConv(c_in=c_in, c_out=c_out, k=k, weight_width=ww, lanes=lanes, requant=requant,
                     split_select=seed % 4 < 2)
    win = conv.windows(x, k, k // 2).reshape(-1, k * k, c_in)
    got, _ = simulate(dut, win, weights, seed=seed, stall=0.3)
    expected = conv.conv2d(x, weights, k // 2).reshape(c_out, -1).T
    if requant:
        expected = fixed.requantize(expected, *requant)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("lanes, split", [(1, True), (3, True), (3, False)])
def test_one_weight_transfer_per_clock(lanes, split):
    rng = np.random.default_rng(7)
    dut = StreamConv(c_in=2, c_out=3, k=3, weight_width=8, lanes=lanes, split_select=split)
    weights = rng.integers(-128, 128, size=(3, 2, 3, 3))
    win = rng.integers(-128, 128, size=(4, 9, 2))
    _, cycles = simulate(dut, win, weights, seed=0, stall=0.0)
    assert cycles == 4 * dut.cycles_per_window + dut.latency


def test_in_conv2d_with_source():
    """A StreamConv whose source is a component, inside Conv2d: the source repeats the layer forever."""
    from amaranth import Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import Out
    from insitu.hdl.streamconv import weight_stream_signature
    from insitu.hdl.testing import simulate_conv2d

    rng = np.random.default_rng(3)
    weights = rng.integers(-8, 8, size=(2, 3, 3, 3))
    flat = weights.reshape(-1, 3)

    class Rom(wiring.Component):
        o: Out(weight_stream_signature(4, 3))

        def elaborate(self, platform):
            m = Module()
            n = Signal(range(len(flat)))
            table = [[int(v) for v in row] for row in flat]
            from amaranth import Array
            m.d.comb += self.o.valid.eq(1)
            for lane in range(3):
                m.d.comb += self.o.payload[lane].eq(Array(r[lane] for r in table)[n])
            with m.If(self.o.ready):
                m.d.sync += n.eq(Mux(n == len(flat) - 1, 0, n + 1))
            return m

    from amaranth import Mux
    dut = Conv2d(StreamConv(c_in=3, c_out=2, k=3, source=Rom()), width=4, height=3, padding=1)
    frames = rng.integers(-128, 128, size=(2, 3, 3, 4))
    got, _ = simulate_conv2d(dut, frames, seed=1, stall=0.3)
    for f in range(2):
        np.testing.assert_array_equal(got[f], conv.conv2d(frames[f], weights, 1))


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(c_in=2, c_out=2, k=3, lanes=2), ValueError, r"^Weight lane count must divide k² \(9\), not 2$"),
    (dict(c_in=2, c_out=2, k=3, lanes=10), ValueError, r"^Weight lane count must be an integer in range \[1, 9\], not 10$"),
    (dict(c_in=2, c_out=2, k=3, weight_width=1), ValueError, r"^Weight width must be an integer in range \[2, 32\], not 1$"),
    (dict(c_in=2, c_out=2, k=3, source=object()), TypeError, r"^Weight source must be a component"),
    (dict(c_in=2, c_out=2, k=2), ValueError, r"^Kernel size must be an odd integer >= 1, not 2$"),
    (dict(c_in=2, c_out=2, k=3, requant=(40, 8)), ValueError, r"^Requantisation shift must be an integer in range"),
])
def test_errors(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        StreamConv(**kwargs)


@pytest.mark.parametrize("seed, threshold, requant", [(0, 0.0, None), (1, 0.4, (10, 8))])
def test_smartdeal_layer_matches_golden(seed, threshold, requant):
    """Packed rows in block RAM → RowReader → Pow2Decoder → StreamConv, inside Conv2d."""
    from insitu.golden import smartdeal
    from insitu.hdl.decode import SmartDealWeights
    from insitu.hdl.testing import simulate_conv2d
    rng = np.random.default_rng(seed)
    layer, _ = smartdeal.decompose(rng.normal(size=(3, 2, 3, 3)), group_size=3, threshold=threshold)
    source = SmartDealWeights(words=smartdeal.row_words(layer), rows=layer.zero.shape[1], c_out=3,
                              group_size=3, basis=layer.basis, basis_bits=layer.basis_bits,
                              exp_range=layer.e_max - layer.e_min)
    dut = Conv2d(StreamConv(c_in=2, c_out=3, k=3, source=source, requant=requant), width=4, height=3, padding=1)
    frames = rng.integers(-128, 128, size=(2, 2, 3, 4))
    got, _ = simulate_conv2d(dut, frames, seed=seed, stall=0.3)
    for f in range(2):
        expected = conv.conv2d(frames[f], smartdeal.reconstruct(layer), 1)
        if requant:
            expected = fixed.requantize(expected, *requant)
        np.testing.assert_array_equal(got[f], expected)


@pytest.mark.parametrize("seed, lanes", [(0, 1), (1, 3)])
def test_mlg_layer_matches_golden(seed, lanes):
    """Factors in registers and small memories → InSituGenerator → StreamConv, inside Conv2d."""
    from insitu.golden import mlg
    from insitu.hdl.insitu import InSituGenerator
    from insitu.hdl.testing import simulate_conv2d
    rng = np.random.default_rng(seed)
    layer, _ = mlg.decompose(rng.normal(size=(3, 2, 3, 3)), 2, 2, iterations=5)
    source = InSituGenerator(basis=layer.basis, u=layer.u, v=layer.v, bits=layer.bits, lanes=lanes)
    dut = Conv2d(StreamConv(c_in=2, c_out=3, k=3, source=source), width=3, height=3, padding=1)
    frames = rng.integers(-128, 128, size=(2, 2, 3, 3))
    got, _ = simulate_conv2d(dut, frames, seed=seed, stall=0.3)
    for f in range(2):
        np.testing.assert_array_equal(got[f], conv.conv2d(frames[f], mlg.generate(layer), 1))


@pytest.mark.parametrize("seed, lanes", [(0, 3), (1, 1), (2, 9)])
def test_int8_weight_memory_layer_matches_golden(seed, lanes):
    from insitu.hdl.streamconv import WeightMemory
    from insitu.hdl.testing import simulate_conv2d
    rng = np.random.default_rng(seed)
    weights = rng.integers(-128, 128, size=(3, 2, 3, 3))
    source = WeightMemory(weights=weights, lanes=lanes)
    dut = Conv2d(StreamConv(c_in=2, c_out=3, k=3, source=source), width=3, height=3, padding=1)
    frames = rng.integers(-128, 128, size=(2, 2, 3, 3))
    got, _ = simulate_conv2d(dut, frames, seed=seed, stall=0.3)
    for f in range(2):
        np.testing.assert_array_equal(got[f], conv.conv2d(frames[f], weights, 1))


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(weights=np.zeros((2, 2, 3))), ValueError, r"^Weights must be shaped \(c_out, c_in, k, k\), not \(2, 2, 3\)$"),
    (dict(weights=np.full((1, 1, 3, 3), 128)), ValueError, r"^Weights must fit in signed 8-bit integers \[-128, 127\]$"),
    (dict(weights=np.zeros((1, 1, 3, 3), int), lanes=4), ValueError, r"^Weight lane count must divide c_in·k² \(9\), not 4$"),
])
def test_weight_memory_errors(kwargs, exc, msg):
    from insitu.hdl.streamconv import WeightMemory
    with pytest.raises(exc, match=msg):
        WeightMemory(**kwargs)


@pytest.mark.parametrize("shape, lanes", [((2, 3, 3, 3), 3), ((1, 2, 3, 3), 9), ((3, 1, 3, 3), 1)])
def test_weight_memory_pace_is_exact(shape, lanes):
    """One transfer per clock after ``startup`` clocks, the layer repeating with no gap."""
    from insitu.hdl.streamconv import WeightMemory
    from insitu.hdl.testing import valid_trace
    dut = WeightMemory(weights=np.arange(np.prod(shape)).reshape(shape) % 100, lanes=lanes)
    clocks = dut.startup + 3 * dut.cycles_per_layer
    assert dut.cycles_per_layer == np.prod(shape) // lanes
    assert valid_trace(dut, clocks) == "0" * dut.startup + "1" * (3 * dut.cycles_per_layer)
