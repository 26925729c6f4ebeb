"""A :class:`~insitu.soc.link.LinkEndpoint` in Amaranth's simulator as a transport of the host protocol."""

import collections
import random

from amaranth.sim import Simulator

__all__ = ["SimLink"]


class SimLink:
    """A :class:`~insitu.soc.link.LinkEndpoint` in Amaranth's simulator as a byte pipe for :class:`insitu.soc.protocol.Client`
    (the interface of ``protocol.SimTransport``): bytes written are offered on the endpoint's ``i``, reading
    runs the simulation until a frame's closing zero leaves ``o`` or the time is up. Both streams stall at
    random (seeded) with probability ``stall``. Time is the simulation's, at ``clock_hz``.
    """

    #: clocks simulated between checks for a finished frame
    CHUNK = 2000

    def __init__(self, endpoint, *, clock_hz=48e6, seed=0, stall=0.0):
        self.endpoint, self.clock_hz = endpoint, clock_hz
        self.bytes_in = self.bytes_out = 0
        self.byte_time = 0.0                    # bytes move at once: no line
        self._pending, self._received = collections.deque(), bytearray()
        rng = random.Random(seed)
        feed_rng, take_rng = random.Random(rng.random()), random.Random(rng.random())
        self.sim = Simulator(endpoint)
        self.sim.add_clock(1 / clock_hz)

        async def feed(ctx):
            while True:
                if not self._pending or (stall and feed_rng.random() < stall):
                    ctx.set(endpoint.i.valid, 0)
                    await ctx.tick()
                    continue
                ctx.set(endpoint.i.valid, 1)
                ctx.set(endpoint.i.payload, self._pending[0])
                await ctx.tick().until(endpoint.i.ready)
                self._pending.popleft()
                ctx.set(endpoint.i.valid, 0)

        async def take(ctx):
            while True:
                ready = not (stall and take_rng.random() < stall)
                ctx.set(endpoint.o.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(endpoint.o.valid, endpoint.o.payload)
                if ready and valid:
                    self._received.append(payload)

        self.sim.add_testbench(feed, background=True)
        self.sim.add_testbench(take, background=True)
        self._clocks = 0

    def write(self, data):
        self.bytes_out += len(data)
        self._pending.extend(bytes(data))

    def read_frame(self, timeout):
        """Bytes up to and including the next zero, or what arrived before ``timeout`` seconds passed."""
        deadline = self._clocks + max(1, int(timeout * self.clock_hz))
        while 0 not in self._received and self._clocks < deadline:
            self._clocks = min(deadline, self._clocks + self.CHUNK)
            self.sim.run_until(self._clocks / self.clock_hz)
        end = self._received.index(0) + 1 if 0 in self._received else len(self._received)
        data = bytes(self._received[:end])
        del self._received[:end]
        self.bytes_in += len(data)
        return data

    @property
    def seconds(self):
        return self._clocks / self.clock_hz

    @property
    def cycles(self):
        return self._clocks
