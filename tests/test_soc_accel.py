"""The accelerator peripherals on the bus (ConvAccel, DenseAccel, CirculantAccel) against their golden
models, with random gaps between bus accesses, and their error flags."""

import numpy as np
import pytest

from insitu.hdl.testing import run
from insitu.soc.driver import Registers, wb_read, wb_write


def _accel_bench(dut):
    """Register addresses and single-bit masks from the peripheral's own register list."""
    regs = Registers(dut.registers)
    return {reg.name: regs.address(reg.name) for reg in dut.registers}, regs.mask


def _enc(dut, name, **values):
    return Registers(dut.registers).encode(name, **values)


async def _load_codes(ctx, dut, off, codes):
    c_out, c_in = codes.shape
    par = dut.parallel
    for o in range(c_out):
        for ci in range(c_in):
            await wb_write(ctx, dut.bus, off["w_stage"], int(codes[o, ci]))
        await wb_write(ctx, dut.bus, off["w_commit"], _enc(dut, "w_commit", group=o // par, lane=o % par))


def _unpack(fmt):
    """Decode one out_data word: ``None`` one signed accumulator, ``"pair"`` two int16, else four uint8."""
    if fmt is None:
        return lambda v: [v - (1 << 32) if v >> 31 else v]
    if fmt == "pair":
        return lambda v: [((v >> 16 * h) & 0xFFFF) - (((v >> 16 * h) & 0x8000) << 1) for h in range(2)]
    return lambda v: [(v >> 8 * e) & 255 for e in range(4)]


async def _conv_frame(ctx, dut, off, bit, rng, x, fmt):
    """Start one frame, write the pixels of ``x`` (c_in, h, w) and read its outputs (in ``fmt``, see
    :func:`_unpack`), both at random; check the frame ends done and without errors. Returns the outputs."""
    c_in, height, width = x.shape
    words, got = dut.words_per_pixel, []
    await wb_write(ctx, dut.bus, off["ctrl"], bit("ctrl", "start"))
    assert await wb_read(ctx, dut.bus, off["status"]) & bit("status", "busy")
    sent = 0
    while len(got) < dut.outputs_per_frame:
        status = await wb_read(ctx, dut.bus, off["status"])
        if sent < width * height * words and not status & bit("status", "in_full") and rng.random() < 0.7:
            p, part = divmod(sent, words)
            chans = [int(x[4 * part + k, p // width, p % width]) if 4 * part + k < c_in else 0 for k in range(4)]
            await wb_write(ctx, dut.bus, off["in_data"], sum((v & 255) << 8 * k for k, v in enumerate(chans)))
            sent += 1
        if status & bit("status", "out_valid") and rng.random() < 0.6:
            got.extend(_unpack(fmt)(await wb_read(ctx, dut.bus, off["out_data"])))
        for _ in range(int(rng.integers(0, 3))):
            await ctx.tick()
    status = await wb_read(ctx, dut.bus, off["status"])
    assert status & bit("status", "done") and not status & bit("status", "busy")
    assert not status & (bit("status", "err_overflow") | bit("status", "err_no_weights"))
    assert await wb_read(ctx, dut.bus, off["count"]) == dut.outputs_per_frame
    assert await wb_read(ctx, dut.bus, off["levels"]) >> 16 == 0
    return got


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
    off, bit = _accel_bench(dut)
    got = []

    async def tb(ctx):
        await _load_codes(ctx, dut, off, codes)
        if shift == "pair":
            await wb_write(ctx, dut.bus, off["out_cfg"], bit("out_cfg", "pair"))
        elif shift is not None:
            await wb_write(ctx, dut.bus, off["out_cfg"], _enc(dut, "out_cfg", pack=1, shift=shift))
        got.extend(await _conv_frame(ctx, dut, off, bit, rng, x, shift))

    run(dut, [tb])
    np.testing.assert_array_equal(np.array(got).reshape(size * size, c_out).T.reshape(want.shape), want)


def test_conv_accel_error_flags():
    from insitu.soc.accel import ConvAccel
    dut = ConvAccel(c_in=4, c_out=2, width=4, height=4, fifo_depth=4)
    off, bit = _accel_bench(dut)
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
        await _load_codes(ctx, dut, off, np.zeros((2, 4), dtype=int))
        await wb_write(ctx, bus, off["ctrl"], bit("ctrl", "start"))
        status = await wb_read(ctx, bus, off["status"])
        assert status & busy and not status & err_nw

    run(dut, [tb])


async def _stream_vectors(ctx, dut, off, rng, xs, count, fmt):
    """Write the int8 vectors ``xs`` (four per word) to in_data and read ``count`` outputs from out_data,
    both when the FIFO levels allow and at random, with random idle clocks between."""
    bus, unpack, got = dut.bus, _unpack(fmt), []
    words = [sum((int(v) & 255) << 8 * e for e, v in enumerate(x[4 * j:4 * j + 4])) for x in xs
             for j in range(len(x) // 4)]
    while len(got) < count:
        levels = await wb_read(ctx, bus, off["levels"])
        if words and levels & 0xFFFF and rng.random() < 0.7:
            await wb_write(ctx, bus, off["in_data"], words.pop(0))
        if levels >> 16 and rng.random() < 0.6:
            got.extend(unpack(await wb_read(ctx, bus, off["out_data"])))
        for _ in range(int(rng.integers(0, 3))):
            await ctx.tick()
    return got


@pytest.mark.parametrize("m, n, lanes, seed, shift", [(4, 8, 2, 0, None), (6, 12, 3, 1, None), (8, 16, 4, 2, None),
                                                     (8, 16, 4, 3, 6), (4, 8, 1, 4, 0)])
def test_dense_accel_matches_golden(m, n, lanes, seed, shift):
    """Weights through w_addr/w_data, two vectors with random gaps, accumulators equal W @ x (or, with a
    shift, their ReLU-requantised int8, four per word)."""
    from insitu.golden import fixed
    from insitu.soc.accel import DenseAccel
    rng = np.random.default_rng(seed)
    weights = rng.integers(-128, 128, (m, n))
    xs = rng.integers(-128, 128, (2, n))
    dut = DenseAccel(m=m, n=n, lanes=lanes, fifo_depth=4)
    off, bit = _accel_bench(dut)
    got = []

    async def tb(ctx):
        bus = dut.bus
        await wb_write(ctx, bus, off["w_addr"], 0)
        if shift is not None:
            await wb_write(ctx, bus, off["out_cfg"], _enc(dut, "out_cfg", pack=1, shift=shift))
        for g in range(m // lanes):
            for c in range(n):
                word = sum((int(weights[g * lanes + lane, c]) & 255) << 8 * lane for lane in range(lanes))
                await wb_write(ctx, bus, off["w_data"], word)
        got.extend(await _stream_vectors(ctx, dut, off, rng, xs, 2 * m, shift))
        assert not await wb_read(ctx, bus, off["status"]) & bit("status", "err_overflow")

    run(dut, [tb], deadline=200_000)
    want = xs @ weights.T
    if shift is not None:
        want = np.maximum(fixed.requantize(want, shift, 8), 0)
    np.testing.assert_array_equal(np.array(got).reshape(2, m), want)


def test_dense_accel_errors():
    from insitu.soc.accel import DenseAccel
    with pytest.raises(ValueError, match=r"^Column count must be a positive multiple of 4, not 6$"):
        DenseAccel(m=4, n=6)
    with pytest.raises(ValueError, match=r"^Lane count must be an integer in range \[1, 4\], not 8$"):
        DenseAccel(m=8, n=8, lanes=8)
    dut = DenseAccel(m=2, n=4, lanes=2, fifo_depth=2)
    off, bit = _accel_bench(dut)

    async def tb(ctx):
        bus = dut.bus
        for n in range(5):              # one vector drains, the rest overflows the 2-deep FIFO
            await wb_write(ctx, bus, off["in_data"], n)
        assert await wb_read(ctx, bus, off["status"]) & bit("status", "err_overflow")
        await wb_write(ctx, bus, off["w_addr"], 4)                # 1 group × 4 columns: 4 is out of range
        assert await wb_read(ctx, bus, off["status"]) & bit("status", "err_address")
        await wb_write(ctx, bus, off["ctrl"], bit("ctrl", "clear"))
        status = await wb_read(ctx, bus, off["status"])
        assert not status & (bit("status", "err_overflow") | bit("status", "err_address") | bit("status", "out_valid"))

    run(dut, [tb])


@pytest.mark.parametrize("m, n, k, seed, shift", [(8, 8, 4, 0, None), (16, 8, 8, 1, "pair"), (8, 16, 8, 2, 4)])
def test_circulant_accel_matches_golden(m, n, k, seed, shift):
    """Spectra through w_addr/w_data, two vectors with random gaps: outputs equal golden.circulant.matvec
    (raw, int16 pairs, or ReLU-requantised int8 four per word)."""
    from insitu.golden import circulant, fixed
    from insitu.soc.accel import CirculantAccel
    rng = np.random.default_rng(seed)
    layer = circulant.compress(rng.normal(size=(m, n)), k)
    xs = rng.integers(-128, 128, (2, n))
    xs[0, 0] = -128
    dut = CirculantAccel(m=m, n=n, k=k, mid_shift=layer.mid_shift, fifo_depth=4)
    off, bit = _accel_bench(dut)
    got = []

    async def tb(ctx):
        bus = dut.bus
        await wb_write(ctx, bus, off["w_addr"], 0)
        if shift == "pair":
            await wb_write(ctx, bus, off["out_cfg"], bit("out_cfg", "pair"))
        elif shift is not None:
            await wb_write(ctx, bus, off["out_cfg"], _enc(dut, "out_cfg", pack=1, shift=shift))
        for v in np.ravel(layer.spectra):
            await wb_write(ctx, bus, off["w_data"], (int(v.real) & 0xFFFF) | (int(v.imag) & 0xFFFF) << 16)
        got.extend(await _stream_vectors(ctx, dut, off, rng, xs, 2 * m, shift))
        status = await wb_read(ctx, bus, off["status"])
        assert not status & (bit("status", "err_overflow") | bit("status", "err_address"))

    run(dut, [tb], deadline=400_000)
    want = circulant.matvec(layer, xs)
    if shift not in (None, "pair"):
        want = np.maximum(fixed.requantize(want, shift, 8), 0)
    np.testing.assert_array_equal(np.array(got).reshape(2, m), want)


def test_circulant_accel_errors():
    from insitu.soc.accel import CirculantAccel
    with pytest.raises(ValueError, match=r"^Spectrum width must be an integer in range \[4, 16\], not 18$"):
        CirculantAccel(m=8, n=8, k=4, mid_shift=3, spectrum_width=18)
    with pytest.raises(ValueError, match=r"^Block size 8 must divide both matrix dimensions, not 8x12$"):
        CirculantAccel(m=8, n=12, k=8, mid_shift=3)
    dut = CirculantAccel(m=8, n=8, k=4, mid_shift=3, fifo_depth=2)
    off, bit = _accel_bench(dut)

    async def tb(ctx):
        bus = dut.bus
        await wb_write(ctx, bus, off["w_addr"], 2 * 2 * 3)       # 2×2 blocks of 3 bins: 12 is out of range
        assert await wb_read(ctx, bus, off["status"]) & bit("status", "err_address")
        await wb_write(ctx, bus, off["ctrl"], bit("ctrl", "clear"))
        assert not await wb_read(ctx, bus, off["status"]) & bit("status", "err_address")

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
    off, bit = _accel_bench(dut)
    got = []

    async def tb(ctx):
        for layer, x in zip(layers, xs):
            await wb_write(ctx, dut.bus, off["w_addr"], 0)
            for word in smartdeal.row_words(layer):
                await wb_write(ctx, dut.bus, off["w_data"], word)
            for n, v in enumerate(np.ravel(layer.basis)):
                await wb_write(ctx, dut.bus, off["basis"], _enc(dut, "basis", index=n, value=int(v)))
            got.append(await _conv_frame(ctx, dut, off, bit, rng, x, None))
        assert not await wb_read(ctx, dut.bus, off["status"]) & bit("status", "err_address")

    run(dut, [tb], deadline=200_000)
    for layer, x, out in zip(layers, xs, got):
        want = conv.conv2d(x, smartdeal.reconstruct(layer), 1)
        np.testing.assert_array_equal(np.array(out).reshape(size * size, c_out).T.reshape(want.shape), want)


def test_smartdeal_conv_accel_errors():
    from insitu.soc.accel import SmartDealConvAccel
    with pytest.raises(TypeError, match=r"^Word capacity must be an integer or None, not 'x'$"):
        SmartDealConvAccel(c_in=2, c_out=4, words="x")
    with pytest.raises(ValueError, match=r"^Group size must divide the output channel count \(4\), not 3$"):
        SmartDealConvAccel(c_in=2, c_out=4, group_size=3)
    dut = SmartDealConvAccel(c_in=2, c_out=2, width=4, height=4, words=8, fifo_depth=4)
    off, bit = _accel_bench(dut)

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
    off, bit = _accel_bench(dut)
    got = []

    async def tb(ctx):
        bus = dut.bus
        for layer, x in zip(layers, xs):
            for n, v in enumerate(np.ravel(layer.basis)):
                await wb_write(ctx, bus, off["basis"], _enc(dut, "basis", index=n, value=int(v)))
            for b, ci, i in np.ndindex(*layer.u.shape):
                await wb_write(ctx, bus, off["u"], _enc(dut, "u", addr=ci, elem=b * bi + i, value=int(layer.u[b, ci, i])))
            for o, b in np.ndindex(*layer.v.shape):
                await wb_write(ctx, bus, off["v"], _enc(dut, "v", addr=o, elem=b, value=int(layer.v[o, b])))
            got.append(await _conv_frame(ctx, dut, off, bit, rng, x, None))
        assert not await wb_read(ctx, bus, off["status"]) & bit("status", "err_address")

    run(dut, [tb], deadline=200_000)
    for layer, x, out in zip(layers, xs, got):
        want = conv.conv2d(x, mlg.generate(layer), 1)
        np.testing.assert_array_equal(np.array(out).reshape(size * size, c_out).T.reshape(want.shape), want)


def test_mlg_conv_accel_errors():
    from insitu.soc.accel import MLGConvAccel
    with pytest.raises(ValueError, match=r"^Lane count must divide k² \(9\), not 2$"):
        MLGConvAccel(c_in=2, c_out=4, lanes=2)
    dut = MLGConvAccel(c_in=2, c_out=2, width=4, height=4, bi=2, bo=2, fifo_depth=4)
    off, bit = _accel_bench(dut)
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
