"""Hardware convolution (SlidingWindow + MuxConv/DenseConv) against the golden models, bit for bit."""


import numpy as np
from amaranth.back import rtlil
import pytest

from insitu.golden import conv, fixed, qgp
from insitu.hdl import Conv2d, DenseConv, MuxConv, SlidingWindow
from insitu.hdl.testing import run, simulate_conv2d, stream_get, stream_put


def random_case(seed, max_ch=16):
    rng = np.random.default_rng(seed)
    k = int(rng.choice([1, 3, 5]))
    c_in = int(rng.integers(1, max_ch + 1))
    c_out = int(rng.integers(1, max_ch + 1))
    divisors = [d for d in range(1, c_out + 1) if c_out % d == 0]
    parallel = int(rng.choice(divisors))
    padding = int(rng.integers(0, k // 2 + 1))
    h, w = (int(v) for v in rng.integers(max(1, k - 2 * padding), 13, size=2))
    stall = float(rng.choice([0.0, 0.2, 0.5]))
    return rng, dict(k=k, c_in=c_in, c_out=c_out, parallel=parallel), padding, h, w, stall


@pytest.mark.parametrize("seed", range(12))
def test_muxconv_matches_golden(seed):
    rng, params, padding, h, w, stall = random_case(seed)
    layer = qgp.compress(rng.normal(size=(params["c_out"], params["c_in"], params["k"], params["k"])))
    frames = rng.integers(-128, 128, size=(2, params["c_in"], h, w))
    frames[0, :, 0, 0] = -128  # the negation corner: -(-128) = +128 must not wrap
    dut = Conv2d(MuxConv(**params, init=qgp.pack(layer)), width=w, height=h, padding=padding)
    got, _ = simulate_conv2d(dut, frames, seed=seed, stall=stall)
    for f in range(2):
        np.testing.assert_array_equal(got[f], qgp.muxconv2d(frames[f], layer, padding))


@pytest.mark.parametrize("seed", range(100, 106))
def test_denseconv_matches_golden(seed):
    rng, params, padding, h, w, stall = random_case(seed, max_ch=6)
    weights = rng.integers(-128, 128, size=(params["c_out"], params["c_in"], params["k"], params["k"]))
    weights.flat[0] = -128
    codes = conv.pack(weights)
    frames = rng.integers(-128, 128, size=(2, params["c_in"], h, w))
    frames[0, 0, 0, 0] = -128
    dut = Conv2d(DenseConv(**params, init=codes), width=w, height=h, padding=padding)
    got, _ = simulate_conv2d(dut, frames, seed=seed, stall=stall)
    for f in range(2):
        np.testing.assert_array_equal(got[f], conv.conv2d(frames[f], weights, padding))


def test_muxconv_requantised_output():
    rng = np.random.default_rng(7)
    layer = qgp.compress(rng.normal(size=(8, 16, 3, 3)))
    frames = rng.integers(-128, 128, size=(1, 16, 6, 5))
    dut = Conv2d(MuxConv(c_in=16, c_out=8, k=3, parallel=4, requant=(3, 8), init=qgp.pack(layer)),
                 width=5, height=6, padding=1)
    got, _ = simulate_conv2d(dut, frames, seed=7, stall=0.3)
    np.testing.assert_array_equal(got[0], fixed.requantize(qgp.muxconv2d(frames[0], layer, 1), 3, 8))


@pytest.mark.parametrize("pe, expected", [
    (lambda: MuxConv(c_in=16, c_out=1, k=3), fixed.accumulator_width(-128, 128, 16)),       # 13 bits
    (lambda: DenseConv(c_in=16, c_out=1, k=3), fixed.accumulator_width(-128 * 127, 128 * 128, 144)),
    (lambda: MuxConv(c_in=3, c_out=2, k=5, act_width=4), fixed.accumulator_width(-8, 8, 3)),
])
def test_accumulator_width_is_exact_bit_growth(pe, expected):
    pe = pe()
    rtlil.convert(pe)
    assert pe.acc_width == expected
    assert pe.o.payload.shape().elem_shape.width == expected


def test_weight_write_port():
    """Weights written through the port replace the initial ones, lane by lane."""
    rng = np.random.default_rng(8)
    old, new = (qgp.compress(rng.normal(size=(4, 3, 3, 3))) for _ in range(2))
    pe = MuxConv(c_in=3, c_out=4, k=3, parallel=2, init=qgp.pack(old))
    dut = Conv2d(pe, width=4, height=4, padding=1)
    frame = rng.integers(-128, 128, size=(3, 4, 4))
    codes = qgp.pack(new)
    pixels = [[int(v) for v in frame[:, y, x]] for y in range(4) for x in range(4)]
    got = []

    async def bench(ctx):
        for g in range(2):
            for lane in range(2):
                ctx.set(pe.w_addr, g)
                ctx.set(pe.w_data, [codes[g * 2 + n].tolist() for n in range(2)])
                ctx.set(pe.w_en, 1 << lane)
                await ctx.tick()
        ctx.set(pe.w_en, 0)
        await stream_put(ctx, dut.i, pixels, rng=1, stall=0.2)

    async def collect(ctx):
        got.extend(await stream_get(ctx, dut.o, 16 * 2, rng=2, stall=0.2))

    run(dut, [bench, collect])
    got = np.array(got).reshape(4, 4, 4).transpose(2, 0, 1)
    np.testing.assert_array_equal(got, qgp.muxconv2d(frame, new, 1))


@pytest.mark.parametrize("pe_class, params", [
    (MuxConv, dict(c_in=16, c_out=4, k=3, parallel=2)),
    (MuxConv, dict(c_in=1, c_out=1, k=1)),
    (MuxConv, dict(c_in=5, c_out=2, k=5, requant=(2, 8))),
    (DenseConv, dict(c_in=2, c_out=2, k=3)),
])
def test_latency(pe_class, params):
    """One window in, no stalls: the first result appears exactly `latency` clocks after the transfer."""
    pe = pe_class(**params)
    k, c_in = params["k"], params["c_in"]
    window = [[1] * c_in] * (k * k)
    timing = {}

    async def bench(ctx):
        await ctx.tick().repeat(3)  # let the weight memory prefetch settle
        ctx.set(pe.i.valid, 1)
        ctx.set(pe.i.payload, window)
        ctx.set(pe.o.ready, 1)
        clock = 0
        while True:
            _, _, i_ready, o_valid = await ctx.tick().sample(pe.i.ready, pe.o.valid)
            if i_ready and "in" not in timing:
                # for several groups, the window stays until the last one issues
                timing["in"] = clock - (pe.groups - 1)
                ctx.set(pe.i.valid, 0)
            if o_valid:
                timing["out"] = clock
                break
            clock += 1

    run(pe, [bench], deadline=200)
    assert timing["out"] - timing["in"] == pe.latency


def test_sliding_window_matches_golden_windows():
    rng = np.random.default_rng(9)
    frame = rng.integers(-8, 8, size=(2, 5, 6))
    dut = SlidingWindow(channels=2, act_width=4, k=3, width=6, height=5, padding=1)
    pixels = [[int(v) for v in frame[:, y, x]] for y in range(5) for x in range(6)]
    got = []

    async def feed(ctx):
        await stream_put(ctx, dut.i, pixels * 2, rng=3, stall=0.4)

    async def collect(ctx):
        got.extend(await stream_get(ctx, dut.o, 2 * 30, rng=4, stall=0.4))

    run(dut, [feed, collect])
    expected = conv.windows(frame, 3, 1).reshape(30, 9, 2)
    np.testing.assert_array_equal(np.array(got), np.concatenate([expected, expected]))


@pytest.mark.parametrize("call, exc, msg", [
    (lambda: MuxConv(c_in=4, c_out=4, k=2), ValueError, r"^Kernel size must be an odd integer >= 1, not 2$"),
    (lambda: MuxConv(c_in=4, c_out=4, k=-3), ValueError, r"^Kernel size must be an odd integer >= 1, not -3$"),
    (lambda: MuxConv(c_in=0, c_out=4, k=3), ValueError,
     r"^Input channel count must be an integer >= 1, not 0$"),
    (lambda: MuxConv(c_in=4, c_out=4.0, k=3), TypeError, r"^Output channel count must be an integer, not 4\.0$"),
    (lambda: MuxConv(c_in=4, c_out=6, k=3, parallel=4), ValueError,
     r"^Parallel output channel count must divide the output channel count \(6\), not 4$"),
    (lambda: MuxConv(c_in=4, c_out=6, k=3, parallel=7), ValueError,
     r"^Parallel output channel count must be an integer in range \[1, 6\], not 7$"),
    (lambda: MuxConv(c_in=4, c_out=4, k=3, act_width=1), ValueError,
     r"^Activation width must be an integer in range \[2, 32\], not 1$"),
    (lambda: MuxConv(c_in=4, c_out=4, k=3, requant=3), TypeError,
     r"^Requantisation must be a \(shift, out_width\) tuple or None, not 3$"),
    (lambda: MuxConv(c_in=4, c_out=4, k=3, requant=(11, 8)), ValueError,
     r"^Requantisation shift must be an integer in range \[0, 10\], not 11$"),
    (lambda: MuxConv(c_in=2, c_out=1, k=3, init=[[1, 2, 3]]), ValueError,
     r"^Weight init must be shaped \(1, 2\), not \(1, 3\)$"),
    (lambda: MuxConv(c_in=1, c_out=1, k=3, init=[[9]]), ValueError,
     r"^Weight code 9 selects tap 9, but a 3x3 kernel has 9 taps$"),
    (lambda: MuxConv(c_in=1, c_out=1, k=3, init=[[32]]), ValueError,
     r"^Weight code must be in range \[0, 31\], not 32$"),
    (lambda: DenseConv(c_in=1, c_out=1, k=3, weight_width=1), ValueError,
     r"^Weight width must be an integer in range \[2, 18\], not 1$"),
    (lambda: SlidingWindow(channels=1, act_width=8, k=3, width=8, height=8, padding=2), ValueError,
     r"^Padding must be an integer in range \[0, 1\], not 2$"),
    (lambda: SlidingWindow(channels=1, act_width=8, k=5, width=2, height=8, padding=1), ValueError,
     r"^Image width must be an integer >= 3, not 2$"),
    (lambda: Conv2d("pe", width=4, height=4, padding=1), TypeError,
     r"^Processing element must be a MuxConv, DenseConv, StreamConv or BasisFirstConv, not 'pe'$"),
])
def test_errors(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


@pytest.mark.parametrize("k, padding, h, w", [(3, 1, 1, 1), (5, 2, 1, 2), (3, 0, 3, 3), (5, 1, 3, 4), (1, 0, 1, 3)])
def test_muxconv_tiny_images(k, padding, h, w):
    """The smallest rasters: line buffers of depth 2 exercise the late write and the transparent read."""
    rng = np.random.default_rng(k * 100 + h * 10 + w)
    layer = qgp.compress(rng.normal(size=(3, 2, k, k)))
    frames = rng.integers(-128, 128, size=(3, 2, h, w))
    dut = Conv2d(MuxConv(c_in=2, c_out=3, k=k, init=qgp.pack(layer)), width=w, height=h, padding=padding)
    got, _ = simulate_conv2d(dut, frames, seed=k, stall=0.3)
    for f in range(3):
        np.testing.assert_array_equal(got[f], qgp.muxconv2d(frames[f], layer, padding))


@pytest.mark.parametrize("width, height, k, padding", [(5, 4, 3, 1), (6, 6, 3, 0), (7, 5, 5, 2), (4, 3, 1, 0)])
def test_window_timing_is_exact(width, height, k, padding):
    """Without stalls, clock by clock for two frames: pixels are taken at the image positions of the
    extended raster after ``startup`` clocks, and each window is valid ``latency`` clock after the position
    that completes it."""
    from amaranth.sim import Simulator

    from insitu.hdl.window import SlidingWindow
    dut = SlidingWindow(channels=1, act_width=8, width=width, height=height, k=k, padding=padding)
    clocks = dut.startup + 2 * dut.cycles_per_frame + 1
    got = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        for _ in range(clocks):
            _, _, valid, ready, out = await ctx.tick().sample(dut.i.valid, dut.i.ready, dut.o.valid)
            got.append((int(valid and ready), int(out)))
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()

    def position(t):
        """The extended-raster position (row, column) the generator is at in clock ``t``, or None."""
        pos = t - dut.startup
        if pos < 0:
            return None
        pos %= dut.cycles_per_frame
        return divmod(pos, width + padding)
    reach = k - 1 - padding                # a window is completed by the position `reach` below and right
    want = []
    for t in range(clocks):
        here, before = position(t), position(t - dut.latency)
        taken = here is not None and here[0] < height and here[1] < width
        valid = (before is not None and 0 <= before[0] - reach < dut.out_height
                 and 0 <= before[1] - reach < dut.out_width)
        want.append((int(taken), int(valid)))
    assert got == want
