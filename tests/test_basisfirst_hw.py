"""BasisFirstConv (ESCALATE) against golden.escalate.conv2d: random layers (shared and per-channel bases,
power-of-two and integer coefficients), random data including extremes, seeded stalls; exact timing."""

import numpy as np
import pytest

from insitu.golden import escalate as E
from insitu.hdl import BasisFirstConv, Conv2d
from insitu.hdl.testing import simulate_conv2d


def layer(seed, c_out, c_in, bases, shared, mode, coef_bits=4, density=0.6):
    w = np.random.default_rng(seed).normal(size=(c_out, c_in, 3, 3))
    return E.decompose(w, bases, shared=shared, mode=mode, coef_bits=coef_bits, density=density)[0]


def pe_of(e, lanes=None, outputs=None):
    return BasisFirstConv(basis=e.basis, coef=e.coef, basis_bits=e.basis_bits, coef_bits=e.coef_bits, mode=e.mode,
                          lanes=lanes, outputs=outputs)


@pytest.mark.parametrize("seed, c_out, c_in, bases, shared, mode, stall, lanes, outputs", [
    (0, 4, 2, 2, True, "pow2", 0.0, None, None),
    (1, 3, 3, 2, False, "pow2", 0.3, None, None),
    (2, 5, 2, 1, False, "int", 0.3, 3, None),
    (3, 2, 4, 3, True, "int", 0.5, 1, 1),
    (4, 8, 1, 2, True, "pow2", 0.2, None, None),    # c_out > c_in·M: the output buffer sets the pace
    (5, 4, 3, 2, True, "pow2", 0.4, 3, 2),
    (6, 6, 2, 2, False, "pow2", 0.3, None, 3),
])
def test_bit_exact_against_golden(seed, c_out, c_in, bases, shared, mode, stall, lanes, outputs):
    e = layer(seed, c_out, c_in, bases, shared, mode)
    rng = np.random.default_rng(100 + seed)
    frames = rng.integers(-128, 128, size=(2, c_in, 4, 5))
    frames[0, :, 0, 0] = -128                      # extremes
    frames[1, :, 1, 1] = 127
    dut = Conv2d(pe_of(e, lanes, outputs), width=5, height=4, padding=1)
    got, _ = simulate_conv2d(dut, frames, seed=seed, stall=stall)
    for f in range(len(frames)):
        np.testing.assert_array_equal(got[f], E.conv2d(frames[f], e, 1))


@pytest.mark.parametrize("lanes, outputs", [(None, None), (3, None), (None, 1)])
def test_throughput_and_latency_are_exact(lanes, outputs):
    """No stalls: a window's first result appears `latency` clocks after its first pass ends, and windows
    follow each other every `cycles_per_window` clocks."""
    from amaranth.sim import Simulator
    e = layer(5, 3, 2, 2, True, "pow2")
    dut = pe_of(e, lanes, outputs)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    n = 4
    windows = np.random.default_rng(6).integers(-128, 128, size=(n, 9, 2))
    log = {"in": [], "out": []}

    async def feed(ctx):
        for w in windows:
            ctx.set(dut.i.payload, [[int(v) for v in tap] for tap in w])
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            log["in"].append(ctx.get(dut.i.ready) and len(log["in"]))
        ctx.set(dut.i.valid, 0)

    async def drain(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while len(log["out"]) < n * dut.c_out:
            if ctx.get(dut.o.valid):
                log["out"].append((cycle, ctx.get(dut.o.payload[0])))
            await ctx.tick()
            cycle += 1

    sim.add_testbench(feed)
    sim.add_testbench(drain)
    sim.run_until(1e-6 * 2000)
    firsts = [log["out"][i * dut.c_out][0] for i in range(n)]
    assert firsts[0] == dut.steps + dut.latency      # the first pass ends on the tick ending its last pair
    assert np.diff(firsts).tolist() == [dut.cycles_per_window] * (n - 1)
    expected = [E.stage2(E.stage1(w.T.reshape(2, 3, 3), e, 0), e)[:, 0, 0] for w in windows]
    assert [v for _, v in log["out"]] == [int(v) for w in expected for v in w]


@pytest.mark.parametrize("kwargs, error, msg", [
    (dict(basis=np.ones((2, 3, 3), int), coef=np.full((2, 1, 2), 3)), ValueError,
     r"^Coefficients must be 0 or ±2\*\*j with j < 4, not 3$"),
    (dict(basis=np.ones((2, 2, 2), int), coef=np.ones((2, 1, 2), int)), ValueError, r"^Kernel size must be an odd"),
    (dict(basis=np.full((2, 3, 3), 200), coef=np.ones((2, 1, 2), int)), ValueError,
     r"^Basis codes must fit in signed 8-bit integers"),
    (dict(basis=np.ones((3, 3, 3), int), coef=np.ones((2, 1, 2), int)), ValueError, r"^Basis must be shaped"),
    (dict(basis=np.ones((2, 3, 3), int), coef=np.ones((2, 1, 2), int), mode="log"), ValueError,
     r"^Coefficient mode must be 'pow2' or 'int'"),
    (dict(basis="x", coef=np.ones((2, 1, 2), int)), TypeError, r"^Basis and coefficients must be arrays"),
])
def test_parameter_errors(kwargs, error, msg):
    with pytest.raises(error, match=msg):
        BasisFirstConv(**kwargs)
