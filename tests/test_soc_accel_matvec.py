"""The matrix-vector peripherals on the bus (DenseAccel, CirculantAccel, SmartDealDenseAccel,
MLGDenseAccel) against their golden models, with random gaps between bus accesses, and their error
flags."""

import numpy as np
import pytest

from accel_bus import bus_map, encode, stream_vectors, write_mlg_factors
from insitu.hdl.testing import run
from insitu.soc.driver import wb_read, wb_write


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
    off, bit = bus_map(dut)
    got = []

    async def tb(ctx):
        bus = dut.bus
        await wb_write(ctx, bus, off["w_addr"], 0)
        if shift is not None:
            await wb_write(ctx, bus, off["out_cfg"], encode(dut, "out_cfg", pack=1, shift=shift))
        for g in range(m // lanes):
            for c in range(n):
                word = sum((int(weights[g * lanes + lane, c]) & 255) << 8 * lane for lane in range(lanes))
                await wb_write(ctx, bus, off["w_data"], word)
        got.extend(await stream_vectors(ctx, dut, off, rng, xs, 2 * m, shift))
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
    off, bit = bus_map(dut)

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
    off, bit = bus_map(dut)
    got = []

    async def tb(ctx):
        bus = dut.bus
        await wb_write(ctx, bus, off["w_addr"], 0)
        if shift == "pair":
            await wb_write(ctx, bus, off["out_cfg"], bit("out_cfg", "pair"))
        elif shift is not None:
            await wb_write(ctx, bus, off["out_cfg"], encode(dut, "out_cfg", pack=1, shift=shift))
        for v in np.ravel(layer.spectra):
            await wb_write(ctx, bus, off["w_data"], (int(v.real) & 0xFFFF) | (int(v.imag) & 0xFFFF) << 16)
        got.extend(await stream_vectors(ctx, dut, off, rng, xs, 2 * m, shift))
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
    off, bit = bus_map(dut)

    async def tb(ctx):
        bus = dut.bus
        await wb_write(ctx, bus, off["w_addr"], 2 * 2 * 3)       # 2×2 blocks of 3 bins: 12 is out of range
        assert await wb_read(ctx, bus, off["status"]) & bit("status", "err_address")
        await wb_write(ctx, bus, off["ctrl"], bit("ctrl", "clear"))
        assert not await wb_read(ctx, bus, off["status"]) & bit("status", "err_address")

    run(dut, [tb])


@pytest.mark.parametrize("seed, group_size, threshold, shift", [(0, 1, 0.0, None), (1, 2, 0.3, "pair"), (2, 4, 0.1, 5)])
def test_smartdeal_dense_accel_matches_golden(seed, group_size, threshold, shift):
    """A fully connected layer decoded from SmartDeal rows on chip: packed rows through w_addr/w_data and
    bases through basis, then two vectors with random gaps; a second layer loaded after them (its writes
    restart the decoder) and two more vectors. Each output equals golden.smartdeal.reconstruct(layer) @ x."""
    from insitu.golden import fixed, smartdeal
    from insitu.soc.accel import SmartDealDenseAccel
    rng = np.random.default_rng(seed)
    m, n = 8, 20                                            # 20 columns: the rows' last triple is padded
    layers = [smartdeal.decompose(rng.normal(size=(m, n)), group_size=group_size, threshold=threshold)[0]
              for _ in range(2)]
    xs = rng.integers(-128, 128, (2, 2, n))
    layer = layers[0]
    dut = SmartDealDenseAccel(m=m, n=n, group_size=group_size, basis_bits=layer.basis_bits,
                              exp_range=layer.e_max - layer.e_min, fifo_depth=4)
    off, bit = bus_map(dut)
    got = []

    async def tb(ctx):
        bus = dut.bus
        if shift is not None:
            await wb_write(ctx, bus, off["out_cfg"], encode(dut, "out_cfg", pack=shift != "pair",
                                                         pair=shift == "pair", shift=0 if shift == "pair" else shift))
        for layer, x in zip(layers, xs):
            await wb_write(ctx, bus, off["w_addr"], 0)
            for word in smartdeal.row_words(layer):
                await wb_write(ctx, bus, off["w_data"], word)
            for i, v in enumerate(np.ravel(layer.basis)):
                await wb_write(ctx, bus, off["basis"], encode(dut, "basis", index=i, value=int(v)))
            got.append(await stream_vectors(ctx, dut, off, rng, x, 2 * m, shift))
        status = await wb_read(ctx, bus, off["status"])
        assert not status & (bit("status", "err_address") | bit("status", "err_overflow"))

    run(dut, [tb], deadline=400_000)
    for layer, x, out in zip(layers, xs, got):
        want = x @ smartdeal.reconstruct(layer).T
        if shift == "pair":
            want = np.clip(want, -(1 << 15), (1 << 15) - 1)
        elif shift is not None:
            want = np.maximum(fixed.requantize(want, shift, 8), 0)
        np.testing.assert_array_equal(np.array(out).reshape(2, m), want)


@pytest.mark.parametrize("seed, bo", [(0, 1), (1, 3)])
def test_mlg_dense_accel_matches_golden(seed, bo):
    """A fully connected layer generated from MLG factors on chip (one weight per clock): factor codes
    through basis/u/v, two vectors, a second layer, two more. Each equals golden.mlg.generate(layer) @ x."""
    from insitu.golden import mlg
    from insitu.soc.accel import MLGDenseAccel
    rng = np.random.default_rng(seed)
    m, n = 6, 12
    layers = [mlg.decompose(rng.normal(size=(m, n, 1, 1)), 1, bo, iterations=5)[0] for _ in range(2)]
    xs = rng.integers(-128, 128, (2, 2, n))
    dut = MLGDenseAccel(m=m, n=n, bi=1, bo=bo, bits=layers[0].bits, fifo_depth=4)
    off, bit = bus_map(dut)
    got = []

    async def tb(ctx):
        bus = dut.bus
        for layer, x in zip(layers, xs):
            await write_mlg_factors(ctx, dut, off, layer)
            got.append(await stream_vectors(ctx, dut, off, rng, x, 2 * m, None))
        assert not await wb_read(ctx, bus, off["status"]) & bit("status", "err_address")

    run(dut, [tb], deadline=400_000)
    for layer, x, out in zip(layers, xs, got):
        np.testing.assert_array_equal(np.array(out).reshape(2, m), x @ mlg.generate(layer).reshape(m, n).T)


def test_decoded_dense_accel_errors():
    from insitu.soc.accel import MLGDenseAccel, SmartDealDenseAccel
    with pytest.raises(ValueError, match=r"^Column count must be a positive multiple of 4, not 6$"):
        MLGDenseAccel(m=4, n=6)
    with pytest.raises(ValueError, match=r"^MLG factors address at most 256 channels, not 260 → 4$"):
        MLGDenseAccel(m=4, n=260)
    with pytest.raises(ValueError, match=r"^Group size must divide the output channel count \(6\), not 4$"):
        SmartDealDenseAccel(m=6, n=8, group_size=4)
    dut = MLGDenseAccel(m=4, n=8, bi=1, bo=2, fifo_depth=2)
    off, bit = bus_map(dut)
    err_address = bit("status", "err_address")

    async def tb(ctx):
        bus = dut.bus
        for reg, word in (("basis", 2), ("u", 8), ("u", 2 << 8), ("v", 4), ("v", 2 << 8)):
            await wb_write(ctx, bus, off["ctrl"], bit("ctrl", "clear"))
            assert not await wb_read(ctx, bus, off["status"]) & err_address
            await wb_write(ctx, bus, off[reg], word | 1 << 16)                  # index, address or element
            assert await wb_read(ctx, bus, off["status"]) & err_address, (reg, word)
        for word in range(6):              # 2 words a vector: one drains, the rest overflows the 2-deep FIFO
            await wb_write(ctx, bus, off["in_data"], word)
        assert await wb_read(ctx, bus, off["status"]) & bit("status", "err_overflow")

    run(dut, [tb])
