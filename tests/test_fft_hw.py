"""The streaming FFT equals golden.fft bit for bit, with random stalls."""

import re

import numpy as np
import pytest
from amaranth.back import rtlil

from insitu.golden import fft as F
from insitu.hdl.fft import FFT, pair_twiddles, stage_plan
from insitu.hdl.testing import run, simulate_stream, stream_get, stream_put


def simulate(dut, frames, *, seed, stall):
    samples = [{"re": int(v.real), "im": int(v.imag)} for v in np.asarray(frames).ravel()]
    got, _ = simulate_stream(dut, samples, len(samples), seed=seed, stall=stall,
                             deadline=20 * len(samples) + 50 * dut.n)
    return np.array([g["re"] + 1j * g["im"] for g in got]).reshape(np.shape(frames))


def edge_frames(n, width, rng):
    full = (1 << (width - 1)) - 1
    impulse = np.zeros(n, complex)
    impulse[0] = full
    dc = np.full(n, -(1 << (width - 1)) + 0j)
    square = np.where(np.arange(n) % 2, full, -full - 1) + 1j * np.where(np.arange(n) % 4 < 2, full, -full - 1)
    noise = rng.integers(-full - 1, full + 1, size=n) + 1j * rng.integers(-full - 1, full + 1, size=n)
    return [impulse, dc, square, noise]


@pytest.mark.parametrize("n", [4, 8, 16, 64, 256])
@pytest.mark.parametrize("inverse", [False, True])
def test_fft_matches_golden(n, inverse):
    rng = np.random.default_rng(n + inverse)
    width, tw = 16, 16
    frames = np.array(edge_frames(n, width, rng) + [
        rng.integers(-2 ** 15, 2 ** 15, size=n) + 1j * rng.integers(-2 ** 15, 2 ** 15, size=n)
        for _ in range(2 if n < 256 else 1)])
    dut = FFT(n=n, width=width, twiddle_width=tw, inverse=inverse)
    got = simulate(dut, frames, seed=n, stall=0.3)
    expected = F.fft_bitrev(frames, width=width, twiddle_width=tw, inverse=inverse)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("width, tw", [(8, 6), (12, 14)])
def test_fft_other_widths(width, tw):
    rng = np.random.default_rng(width)
    full = 1 << (width - 1)
    frames = rng.integers(-full, full, size=(3, 16)) + 1j * rng.integers(-full, full, size=(3, 16))
    got = simulate(FFT(n=16, width=width, twiddle_width=tw), frames, seed=width, stall=0.5)
    np.testing.assert_array_equal(got, F.fft_bitrev(frames, width=width, twiddle_width=tw))


def test_latency_streaming():
    n = 16
    dut = FFT(n=n)
    rng = np.random.default_rng(0)
    frames = rng.integers(-1000, 1000, size=(3, n)) + 0j
    samples = [{"re": int(v.real), "im": 0} for v in frames.ravel()]
    cycles = []

    async def feed(ctx):
        await stream_put(ctx, dut.i, samples)

    async def collect(ctx):
        await stream_get(ctx, dut.o, len(samples), cycles=cycles)

    run(dut, [feed, collect])
    # Input sample 0 transfers at clock 0; output sample 0 `latency` clocks later; then one per clock.
    assert cycles[0] == dut.latency
    assert cycles[:2 * n] == list(range(dut.latency, dut.latency + 2 * n))


@pytest.mark.parametrize("n", [4, 8, 16, 32, 64, 128, 256])
def test_network_and_twiddles_match_golden(n):
    assert stage_plan(n) == F.stage_plan(n)
    for kind, s in stage_plan(n):
        if kind == "twiddle":
            for inverse in (False, True):
                wr, wi = F.pair_twiddles(n, s, 12, inverse)
                assert pair_twiddles(n, s, 12, inverse) == list(zip(wr.tolist(), wi.tolist()))


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(n=12), ValueError, r"^FFT size must be a power of two in range \[4, 256\], not 12$"),
    (dict(n=512), ValueError, r"^FFT size must be an integer in range \[4, 256\], not 512$"),
    (dict(n=2), ValueError, r"^FFT size must be an integer in range \[4, 256\], not 2$"),
    (dict(n=16, width=30), ValueError, r"^Data width must be an integer in range \[4, 25\], not 30$"),
    (dict(n=16, twiddle_width=3), ValueError, r"^Twiddle width must be an integer in range \[4, 18\], not 3$"),
    (dict(n=16, inverse=1), TypeError, r"^Inverse must be a bool, not 1$"),
])
def test_errors(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        FFT(**kwargs)


@pytest.mark.parametrize("n, multipliers", [(4, 0), (8, 4), (16, 4), (32, 8), (64, 8), (256, 12)])
def test_multipliers_only_after_stage_pairs(n, multipliers):
    """Radix-2²: one complex multiplier after each stage pair but the last, 4·(⌈log2 n / 2⌉ − 1) real."""
    dut = FFT(n=n)
    assert dut.multipliers == multipliers
    # and the netlist has exactly that many multiplier cells
    assert len(re.findall(r"cell \$mul ", rtlil.convert(dut))) == multipliers
