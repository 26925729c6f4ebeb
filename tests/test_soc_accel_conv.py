"""The convolution peripherals on the bus (ConvAccel with staged QGP or int8 weights, SmartDeal and MLG
decoded weight sources) against their golden models, with random gaps between bus accesses, and their
error flags."""

import numpy as np
import pytest

from accel_bus import assert_pixels_equal, bus_map, conv_frame, encode, load_codes, write_mlg_factors
from insitu.hdl.testing import run
from insitu.soc.driver import wb_read, wb_write


@pytest.mark.parametrize("pe, c_in, parallel, seed, shift", [
    ("qgp", 4, 1, 0, None), ("qgp", 6, 2, 1, None), ("qgp", 8, 4, 2, None), ("dense", 1, 1, 3, None),
    ("dense", 5, 2, 4, None), ("qgp", 8, 2, 5, 2), ("dense", 1, 1, 6, 7), ("dense", 3, 4, 7, 0),
    ("qgp", 8, 2, 8, "pair"), ("dense", 2, 1, 9, "pair"), ("qgp", 9, 1, 10, None)])
def test_conv_accel_matches_golden(pe, c_in, parallel, seed, shift):
    """Weights through w_stage/w_commit, pixels through in_data with random gaps, accumulators (or, with a
    shift, ReLU-requantised outputs packed four per word) from out_data."""
    from insitu.golden import conv, fixed, qgp
    from insitu.soc.accel import ConvAccel, StagedWeights
    rng = np.random.default_rng(seed)
    c_out, size = 4, 5
    x = rng.integers(-128, 128, (c_in, size, size))
    if pe == "qgp":
        codes = rng.integers(0, 9, (c_out, c_in)) | (rng.integers(0, 2, (c_out, c_in)) << 4)
        want = qgp.muxconv2d(x, qgp.unpack(codes, 3), 1)
    else:
        weights = rng.integers(-128, 128, (c_out, c_in, 3, 3))
        codes = weights.reshape(c_out, c_in * 9) & 255          # one int8 per write, channel-major
        want = conv.conv2d(x, weights, 1)
    if shift == "pair":
        want = np.clip(want, -(1 << 15), (1 << 15) - 1)
    elif shift is not None:
        want = np.maximum(fixed.requantize(want, shift, 8), 0)
    dut = ConvAccel(c_in=c_in, c_out=c_out, width=size, height=size, fifo_depth=4,
                    weights=StagedWeights(pe, parallel=parallel))
    off, bit = bus_map(dut)
    got = []

    async def tb(ctx):
        await load_codes(ctx, dut, off, codes)
        if shift == "pair":
            await wb_write(ctx, dut.bus, off["out_cfg"], bit("out_cfg", "pair"))
        elif shift is not None:
            await wb_write(ctx, dut.bus, off["out_cfg"], encode(dut, "out_cfg", pack=1, shift=shift))
        got.extend(await conv_frame(ctx, dut, off, bit, rng, x, shift))

    run(dut, [tb])
    assert_pixels_equal(got, want)


def test_conv_accel_error_flags():
    from insitu.soc.accel import ConvAccel
    dut = ConvAccel(c_in=4, c_out=2, width=4, height=4, fifo_depth=4)
    off, bit = bus_map(dut)
    err_nw, err_ov, busy = bit("status", "err_no_weights"), bit("status", "err_overflow"), bit("status", "busy")

    async def tb(ctx):
        bus = dut.bus
        await wb_write(ctx, bus, off["ctrl"], bit("ctrl", "start"))           # no weights yet
        status = await wb_read(ctx, bus, off["status"])
        assert status & err_nw and not status & busy
        for n in range(6):                                                     # not running: nothing drains
            await wb_write(ctx, bus, off["in_data"], n)
        status = await wb_read(ctx, bus, off["status"])
        assert status & err_ov and status & bit("status", "in_full")
        await wb_write(ctx, bus, off["ctrl"], bit("ctrl", "clear"))
        assert not await wb_read(ctx, bus, off["status"]) & (err_nw | err_ov | bit("status", "in_full"))
        await load_codes(ctx, dut, off, np.zeros((2, 4), dtype=int))
        await wb_write(ctx, bus, off["ctrl"], bit("ctrl", "start"))
        status = await wb_read(ctx, bus, off["status"])
        assert status & busy and not status & err_nw

    run(dut, [tb])


@pytest.mark.parametrize("seed, group_size, threshold", [(0, 1, 0.0), (1, 2, 0.3)])
def test_smartdeal_conv_accel_matches_golden(seed, group_size, threshold):
    """Packed SmartDeal rows through w_addr/w_data and bases through basis; two frames with different
    layers (the second loaded after the first frame): each equals a direct convolution with
    golden.smartdeal.reconstruct of its layer."""
    from insitu.golden import conv, smartdeal
    from insitu.soc.accel import SmartDealConvAccel
    rng = np.random.default_rng(seed)
    c_in, c_out, size = 3, 4, 4
    layers = [smartdeal.decompose(rng.normal(size=(c_out, c_in, 3, 3)), group_size=group_size,
                                  threshold=threshold)[0] for _ in range(2)]
    xs = rng.integers(-128, 128, (2, c_in, size, size))
    layer = layers[0]
    dut = SmartDealConvAccel(c_in=c_in, c_out=c_out, width=size, height=size, group_size=group_size,
                             basis_bits=layer.basis_bits, exp_range=layer.e_max - layer.e_min, fifo_depth=4)
    off, bit = bus_map(dut)
    got = []

    async def tb(ctx):
        for layer, x in zip(layers, xs):
            await wb_write(ctx, dut.bus, off["w_addr"], 0)
            for word in smartdeal.row_words(layer):
                await wb_write(ctx, dut.bus, off["w_data"], word)
            for n, v in enumerate(np.ravel(layer.basis)):
                await wb_write(ctx, dut.bus, off["basis"], encode(dut, "basis", index=n, value=int(v)))
            got.append(await conv_frame(ctx, dut, off, bit, rng, x, None))
        assert not await wb_read(ctx, dut.bus, off["status"]) & bit("status", "err_address")

    run(dut, [tb], deadline=200_000)
    for layer, x, out in zip(layers, xs, got):
        assert_pixels_equal(out, conv.conv2d(x, smartdeal.reconstruct(layer), 1))


def test_smartdeal_conv_accel_errors():
    from insitu.soc.accel import SmartDealConvAccel
    with pytest.raises(TypeError, match=r"^Word capacity must be an integer or None, not 'x'$"):
        SmartDealConvAccel(c_in=2, c_out=4, words="x")
    with pytest.raises(ValueError, match=r"^Group size must divide the output channel count \(4\), not 3$"):
        SmartDealConvAccel(c_in=2, c_out=4, group_size=3)
    dut = SmartDealConvAccel(c_in=2, c_out=2, width=4, height=4, words=8, fifo_depth=4)
    off, bit = bus_map(dut)

    async def tb(ctx):
        bus = dut.bus
        await wb_write(ctx, bus, off["ctrl"], bit("ctrl", "start"))            # no row words yet
        assert await wb_read(ctx, bus, off["status"]) & bit("status", "err_no_weights")
        await wb_write(ctx, bus, off["w_addr"], 8)                             # capacity 8 words
        assert await wb_read(ctx, bus, off["status"]) & bit("status", "err_address")
        await wb_write(ctx, bus, off["ctrl"], bit("ctrl", "clear"))
        await wb_write(ctx, bus, off["basis"], 2 * 9)                          # 2 bases of 9 values
        assert await wb_read(ctx, bus, off["status"]) & bit("status", "err_address")
        await wb_write(ctx, bus, off["ctrl"], bit("ctrl", "clear"))
        assert not await wb_read(ctx, bus, off["status"]) & (bit("status", "err_address") |
                                                             bit("status", "err_no_weights"))

    run(dut, [tb])


@pytest.mark.parametrize("seed, lanes", [(0, 1), (1, 3)])
def test_mlg_conv_accel_matches_golden(seed, lanes):
    """MLG factor codes through basis/u/v; two frames with different layers (the second loaded after the
    first frame): each equals a direct convolution with golden.mlg.generate of its layer."""
    from insitu.golden import conv, mlg
    from insitu.soc.accel import MLGConvAccel
    rng = np.random.default_rng(seed)
    c_in, c_out, size, bi, bo = 3, 4, 4, 2, 2
    layers = [mlg.decompose(rng.normal(size=(c_out, c_in, 3, 3)), bi, bo, iterations=5)[0] for _ in range(2)]
    xs = rng.integers(-128, 128, (2, c_in, size, size))
    dut = MLGConvAccel(c_in=c_in, c_out=c_out, width=size, height=size, bi=bi, bo=bo, bits=layers[0].bits,
                       lanes=lanes, fifo_depth=4)
    off, bit = bus_map(dut)
    got = []

    async def tb(ctx):
        bus = dut.bus
        for layer, x in zip(layers, xs):
            await write_mlg_factors(ctx, dut, off, layer)
            got.append(await conv_frame(ctx, dut, off, bit, rng, x, None))
        assert not await wb_read(ctx, bus, off["status"]) & bit("status", "err_address")

    run(dut, [tb], deadline=200_000)
    for layer, x, out in zip(layers, xs, got):
        assert_pixels_equal(out, conv.conv2d(x, mlg.generate(layer), 1))


def test_mlg_conv_accel_errors():
    from insitu.soc.accel import MLGConvAccel
    with pytest.raises(ValueError, match=r"^Lane count must divide k² \(9\), not 2$"):
        MLGConvAccel(c_in=2, c_out=4, lanes=2)
    dut = MLGConvAccel(c_in=2, c_out=2, width=4, height=4, bi=2, bo=2, fifo_depth=4)
    off, bit = bus_map(dut)
    err_address, err_nw = bit("status", "err_address"), bit("status", "err_no_weights")

    async def tb(ctx):
        bus = dut.bus
        await wb_write(ctx, bus, off["ctrl"], bit("ctrl", "start"))             # no v codes yet
        assert await wb_read(ctx, bus, off["status"]) & err_nw
        for reg, word in (("basis", 2 * 2 * 9), ("u", 2), ("u", 4 << 8), ("v", 2), ("v", 2 << 8)):
            await wb_write(ctx, bus, off["ctrl"], bit("ctrl", "clear"))
            assert not await wb_read(ctx, bus, off["status"]) & (err_address | err_nw)
            await wb_write(ctx, bus, off[reg], word | 1 << 16)                  # index, address or element
            assert await wb_read(ctx, bus, off["status"]) & err_address, (reg, word)

    run(dut, [tb])
