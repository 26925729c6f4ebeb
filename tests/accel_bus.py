"""Bus-level helpers of the accelerator peripheral tests (tests/test_soc_accel_*.py): register addresses,
weight loading, frames and vectors streamed through the FIFOs with random gaps."""

import numpy as np

from insitu.soc.driver import Registers, wb_read, wb_write


def bus_map(dut):
    """Register addresses and single-bit masks from the peripheral's own register list."""
    regs = Registers(dut.registers)
    return {reg.name: regs.address(reg.name) for reg in dut.registers}, regs.mask


def encode(dut, name, **values):
    return Registers(dut.registers).encode(name, **values)


async def load_codes(ctx, dut, off, codes):
    c_out, c_in = codes.shape
    par = dut.parallel
    for o in range(c_out):
        for ci in range(c_in):
            await wb_write(ctx, dut.bus, off["w_stage"], int(codes[o, ci]))
        await wb_write(ctx, dut.bus, off["w_commit"], encode(dut, "w_commit", group=o // par, lane=o % par))


def unpack_words(fmt):
    """Decode one out_data word: ``None`` one signed accumulator, ``"pair"`` two int16, else four uint8."""
    if fmt is None:
        return lambda v: [v - (1 << 32) if v >> 31 else v]
    if fmt == "pair":
        return lambda v: [((v >> 16 * h) & 0xFFFF) - (((v >> 16 * h) & 0x8000) << 1) for h in range(2)]
    return lambda v: [(v >> 8 * e) & 255 for e in range(4)]


async def conv_frame(ctx, dut, off, bit, rng, x, fmt):
    """Start one frame, write the pixels of ``x`` (c_in, h, w) and read its outputs (in ``fmt``, see
    :func:`unpack_words`), both at random; check the frame ends done and without errors. Returns the outputs."""
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
            got.extend(unpack_words(fmt)(await wb_read(ctx, dut.bus, off["out_data"])))
        for _ in range(int(rng.integers(0, 3))):
            await ctx.tick()
    status = await wb_read(ctx, dut.bus, off["status"])
    assert status & bit("status", "done") and not status & bit("status", "busy")
    assert not status & (bit("status", "err_overflow") | bit("status", "err_no_weights"))
    assert await wb_read(ctx, dut.bus, off["count"]) == dut.outputs_per_frame
    assert await wb_read(ctx, dut.bus, off["levels"]) >> 16 == 0
    return got


def assert_pixels_equal(got, want):
    """A frame's outputs, read pixel by pixel with the channels of a pixel together, equal ``want``
    (c_out, height, width)."""
    c_out = want.shape[0]
    np.testing.assert_array_equal(np.array(got).reshape(-1, c_out).T.reshape(want.shape), want)


async def stream_vectors(ctx, dut, off, rng, xs, count, fmt):
    """Write the int8 vectors ``xs`` (four per word) to in_data and read ``count`` outputs from out_data,
    both when the FIFO levels allow and at random, with random idle clocks between."""
    bus, unpack, got = dut.bus, unpack_words(fmt), []
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


async def write_mlg_factors(ctx, dut, off, layer):
    """An MLG layer's factor codes into ``basis``, ``u`` and ``v``, one code per write."""
    bi = layer.u.shape[2]
    for n, v in enumerate(np.ravel(layer.basis)):
        await wb_write(ctx, dut.bus, off["basis"], encode(dut, "basis", index=n, value=int(v)))
    for b, ci, i in np.ndindex(*layer.u.shape):
        await wb_write(ctx, dut.bus, off["u"], encode(dut, "u", addr=ci, elem=b * bi + i, value=int(layer.u[b, ci, i])))
    for o, b in np.ndindex(*layer.v.shape):
        await wb_write(ctx, dut.bus, off["v"], encode(dut, "v", addr=o, elem=b, value=int(layer.v[o, b])))
