"""BlockFIFO against amaranth.lib.fifo.SyncFIFOBuffered, cycle by cycle, and block_ram's marking."""

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import fifo
from amaranth.sim import Simulator

from insitu.hdl.bram import COLLISION_FREE, BlockFIFO, block_ram


@pytest.mark.parametrize("width, depth, seed", [(8, 2, 0), (32, 5, 1), (12, 16, 2)])
def test_block_fifo_matches_amaranth_fifo(width, depth, seed):
    """Same random writes and reads into both FIFOs: the same readiness, level and data every clock."""
    m = Module()
    m.submodules.dut = dut = BlockFIFO(width=width, depth=depth)
    m.submodules.ref = ref = fifo.SyncFIFOBuffered(width=width, depth=depth)
    rng = np.random.default_rng(seed)
    popped = []

    async def tb(ctx):
        for cycle in range(600):
            p_write, p_read = (0.8, 0.3) if (cycle // 100) % 2 == 0 else (0.3, 0.8)   # fill, then drain
            data, w_en, r_en = int(rng.integers(0, 1 << width)), rng.random() < p_write, rng.random() < p_read
            for f in (dut, ref):
                ctx.set(f.w_data, data)
                ctx.set(f.w_en, w_en)
                ctx.set(f.r_en, r_en)
            got = [ctx.get(dut.w_rdy), ctx.get(dut.r_rdy), ctx.get(dut.level)]
            assert got == [ctx.get(ref.w_rdy), ctx.get(ref.r_rdy), ctx.get(ref.level)], f"clock {cycle}"
            if got[1]:
                assert ctx.get(dut.r_data) == ctx.get(ref.r_data), f"clock {cycle}"
                if r_en:
                    popped.append(ctx.get(dut.r_data))
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert len(popped) > 100


def test_block_fifo_rejects_bad_depth():
    with pytest.raises(ValueError, match=r"FIFO depth must be an integer >= 2, not 1"):
        BlockFIFO(width=8, depth=1)
    with pytest.raises(TypeError, match=r"FIFO width must be an integer, not 'x'"):
        BlockFIFO(width="x", depth=4)


def test_block_ram_marks_only_collision_free_memories():
    """The attribute reaches the RTLIL (where the build's Yosys script finds it) on the marked memory only."""
    from amaranth import Elaboratable, Signal
    from amaranth.back import rtlil

    class Two(Elaboratable):
        def __init__(self):
            self.q = Signal(16)

        def elaborate(self, platform):
            m = Module()
            _, rd_a = block_ram(m, "a", shape=8, depth=16)
            wr_b, rd_b = block_ram(m, "b", shape=8, depth=16, collision_free=False)
            assert rd_a.transparent_for == () and rd_b.transparent_for == (wr_b,)
            m.d.comb += self.q.eq(rd_a.data | rd_b.data << 8)
            return m

    top = Two()
    text = rtlil.convert(top, ports=[top.q])
    assert text.count(f"attribute \\{COLLISION_FREE} 1") == 1
