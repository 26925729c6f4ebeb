"""Simulation helpers: drive and collect ``lib.stream`` ports with seeded random stalls, and a runner.

Every insitu block test uses these, so a stall pattern or a VCD is one argument away::

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    async def feed(ctx):
        await stream_put(ctx, dut.i, payloads, rng=random.Random(1), stall=0.3)
    ...
    run(dut, [feed, collect], vcd="dut.vcd")
"""

import random

import numpy as np
from amaranth.lib import data
from amaranth.sim import Simulator

__all__ = ["stream_put", "stream_get", "run", "to_python", "simulate_stream", "simulate_conv2d", "valid_trace"]


def to_python(value):
    """Turn a simulator value (an ``int`` or a ``data.Const`` of an array/struct layout) into nested lists,
    dicts and ints."""
    if isinstance(value, data.Const):
        layout = data.Layout.cast(value.shape())
        if isinstance(layout, data.ArrayLayout):
            return [to_python(value[n]) for n in range(layout.length)]
        return {name: to_python(value[name]) for name, _ in layout}
    return value


def _rng(rng):
    return rng if isinstance(rng, random.Random) else random.Random(rng)


async def stream_put(ctx, port, payloads, *, rng=0, stall=0.0):
    """Send every payload through ``port`` (a stream the DUT receives), one transfer each.

    Before each transfer ``valid`` stays low for a random number of clocks: each clock with
    probability ``stall``. ``rng`` is a ``random.Random`` or a seed.
    """
    rng = _rng(rng)
    for payload in payloads:
        while stall and rng.random() < stall:
            ctx.set(port.valid, 0)
            await ctx.tick()
        ctx.set(port.valid, 1)
        ctx.set(port.payload, payload)
        await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def stream_get(ctx, port, count, *, rng=0, stall=0.0, cycles=None):
    """Receive ``count`` payloads from ``port`` (a stream the DUT sends), as Python values.

    ``ready`` is low on each clock with probability ``stall``. If ``cycles`` is a list, the clock number
    (counted from the call) of each transfer is appended to it.
    """
    rng = _rng(rng)
    received = []
    clock = 0
    while len(received) < count:
        ready = not (stall and rng.random() < stall)
        ctx.set(port.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
        if ready and valid:
            received.append(to_python(payload))
            if cycles is not None:
                cycles.append(clock)
        clock += 1
    ctx.set(port.ready, 0)
    return received


def run(dut, testbenches, *, vcd=None, period=1e-6, deadline=100_000):
    """Simulate ``dut`` with a clock on ``sync`` until every testbench has returned.

    ``vcd`` names a VCD file to write (``None`` for none). ``deadline`` (in clocks) bounds the run: a DUT
    that stops transferring fails with ``TimeoutError`` instead of hanging the test.
    """
    sim = Simulator(dut)
    sim.add_clock(period)
    for testbench in testbenches:
        sim.add_testbench(testbench)

    async def watchdog(ctx):
        for _ in range(deadline):
            await ctx.tick()
        raise TimeoutError(f"Simulation did not finish within {deadline} clocks")
    sim.add_testbench(watchdog, background=True)

    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()


def simulate_stream(dut, payloads, count, *, seed=0, stall=0.0, deadline=None, vcd=None):
    """Send ``payloads`` into ``dut.i`` and collect ``count`` payloads from ``dut.o``, with seeded stalls.

    Returns ``(outputs, cycles)``: the Python values received and the clocks from reset to the last output
    transfer.
    """
    rng = random.Random(seed)
    in_rng, out_rng = random.Random(rng.random()), random.Random(rng.random())
    received, cycles = [], []

    async def feed(ctx):
        await stream_put(ctx, dut.i, payloads, rng=in_rng, stall=stall)

    async def collect(ctx):
        received.extend(await stream_get(ctx, dut.o, count, rng=out_rng, stall=stall, cycles=cycles))

    if deadline is None:
        deadline = 100 + int((len(payloads) + count) * 4 / (1 - min(stall, 0.9)))
    run(dut, [feed, collect], vcd=vcd, deadline=deadline)
    return received, (cycles[-1] + 1 if cycles else 0)


def simulate_conv2d(conv, frames, *, seed=0, stall=0.0, vcd=None):
    """Run a :class:`~insitu.hdl.Conv2d` on integer frames ``(n, c_in, h, w)`` in simulation.

    Returns ``(outputs, cycles)``: outputs shaped ``(n, c_out, h', w')`` (accumulators or requantised values,
    whatever the PE emits) and the number of clocks from reset to the last output transfer.
    Input ``valid`` and output ``ready`` stall with probability ``stall``, seeded by ``seed``.
    """
    pe = conv.pe
    frames = np.asarray(frames)
    expected_shape = (pe.c_in, conv.window.height, conv.window.width)
    if frames.ndim != 4 or frames.shape[1:] != expected_shape:
        raise ValueError(f"Frames must be shaped (n, {', '.join(map(str, expected_shape))}), not {frames.shape}")
    n = frames.shape[0]
    pixels = [[int(v) for v in frames[f, :, y, x]]
              for f in range(n) for y in range(frames.shape[2]) for x in range(frames.shape[3])]
    per_frame = conv.out_height * conv.out_width * pe.groups
    work = len(pixels) + n * conv.out_height * conv.out_width * pe.cycles_per_window
    deadline = 100 + int(work * 4 / (1 - min(stall, 0.9)))
    received, cycles = simulate_stream(conv, pixels, n * per_frame, seed=seed, stall=stall, vcd=vcd,
                                       deadline=deadline)
    out = np.array(received, dtype=np.int64).reshape(n, conv.out_height, conv.out_width, pe.c_out)
    return out.transpose(0, 3, 1, 2), cycles


def valid_trace(source, clocks):
    """The ``o.valid`` of a stream source over its first ``clocks`` clocks after reset, with the consumer
    always ready, as a string of ``0``/``1`` (one character per clock, sampled after each edge)."""
    seen = []

    async def bench(ctx):
        ctx.set(source.o.ready, 1)
        for _ in range(clocks):
            await ctx.tick()
            seen.append("1" if ctx.get(source.o.valid) else "0")
    run(source, [bench], deadline=clocks + 10)
    return "".join(seen)

