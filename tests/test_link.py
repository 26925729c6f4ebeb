"""The pipeline's host link in logic (`insitu.soc.link`): the protocol of `insitu.soc.protocol` spoken by
:class:`LinkEndpoint`, driven by the host's own `Client` through Amaranth's simulator with random stalls and
damaged frames, checked against NumPy; the UART against a bit-level model; the CRC against zlib."""

import random
import struct
import zlib

import numpy as np
import pytest
from amaranth import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from insitu.hdl.uart import UARTRx, UARTTx
from insitu.soc.link import CRC_RESIDUE, LinkEndpoint, crc32_update
from insitu.soc.link_sim import SimLink
from insitu.hdl.network import Scores, scores_layout
from insitu.hdl.params import ParameterError
from insitu.hdl.testing import run
from insitu.soc import protocol
from insitu.soc.protocol import Client, FaultyTransport, ProtocolError, decode_frame, encode_frame


class _Toy(wiring.Component):
    """A stand-in pipeline: per image of ``pixels`` transfers (``channels`` int8 each), the scores
    ``s[k] = (channel sum of pixel k) + (sum of the image)``, with the class through :class:`Scores`."""

    def __init__(self, channels, pixels, classes, width=16):
        self.channels, self.pixels, self.classes, self.width = channels, pixels, classes, width
        layout = data.ArrayLayout(signed(8), channels) if channels > 1 else signed(8)
        super().__init__({"i": In(stream.Signature(layout)),
                          "o": Out(stream.Signature(scores_layout(width, classes)))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.scores = sc = Scores(width=self.width, classes=self.classes)
        wiring.connect(m, sc.o, wiring.flipped(self.o))
        lanes = [self.i.payload[c] for c in range(self.channels)] if self.channels > 1 else [self.i.payload]
        pix = [Signal(signed(self.width), name=f"pix{k}") for k in range(self.classes)]
        total = Signal(signed(self.width))
        p, k, emitting = Signal(range(self.pixels)), Signal(range(self.classes)), Signal()
        with m.If(~emitting):
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                for q in range(self.classes):
                    with m.If(p == q):
                        m.d.sync += pix[q].eq(sum(lanes))
                m.d.sync += [total.eq(total + sum(lanes)), p.eq(p + 1)]
                with m.If(p == self.pixels - 1):
                    m.d.sync += [p.eq(0), emitting.eq(1)]
        with m.Else():
            m.d.comb += [sc.i.valid.eq(1), sc.i.payload.eq(Array(pix)[k] + total)]
            with m.If(sc.i.ready):
                m.d.sync += k.eq(k + 1)
                with m.If(k == self.classes - 1):
                    m.d.sync += [k.eq(0), emitting.eq(0), total.eq(0)]
        return m


def _toy_golden(x, channels, pixels, classes):
    sums = x.reshape(len(x), channels, pixels).sum(axis=1)
    scores = sums[:, :classes] + sums.sum(axis=1, keepdims=True)
    return scores, scores.argmax(axis=1)


def _endpoint(channels=1, pixels=6, classes=3, images=4):
    return LinkEndpoint(_Toy(channels, pixels, classes), channels=channels, pixels=pixels, classes=classes,
                        images=images, methods=1 << (protocol.METHODS_SHIFT + 2))


def test_crc_matches_zlib_and_its_residue():
    rng = np.random.default_rng(1)
    for n in (0, 1, 7, 300):
        body = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        crc = 0xFFFFFFFF
        for b in body:
            crc = crc32_update(crc, b)
        assert crc ^ 0xFFFFFFFF == zlib.crc32(body)
        for b in struct.pack("<I", zlib.crc32(body)):
            crc = crc32_update(crc, b)
        assert crc == CRC_RESIDUE


@pytest.mark.parametrize("channels,pixels,classes,images,seed,stall", [
    (1, 6, 3, 4, 1, 0.0), (2, 5, 4, 3, 2, 0.4), (3, 4, 2, 5, 3, 0.2)])
def test_the_host_client_runs_images_through_the_endpoint(channels, pixels, classes, images, seed, stall):
    link = SimLink(_endpoint(channels, pixels, classes, images), seed=seed, stall=stall)
    client = Client(link, timeout=0.002)
    board = client.hello()
    assert board["baked_model"] == "ok" and "baked_model" in board["capabilities"]
    assert board["methods"] == ["qgp"] and board["model_capacity"] == 0
    assert (board["input_capacity"], board["result_capacity"]) == (images * channels * pixels, images)

    rng = np.random.default_rng(seed)
    for n in (0, 1, 17, 255):                       # 255: a 256-byte reply, past one COBS block
        echo = bytes(rng.integers(0, 256, n, dtype=np.uint8))
        assert client.echo(echo) == echo
    assert client.echo(b"\x01" * 255) == b"\x01" * 255

    for batch in range(2):
        x = rng.integers(-128, 128, (images, channels * pixels), dtype=np.int8)
        client.write("inputs", 0, x.tobytes())
        done, cycles = client.infer(0, images)
        got = client.results(0, images, classes)
        want_scores, want_class = _toy_golden(x.astype(np.int64), channels, pixels, classes)
        assert done == images
        assert [r["scores"] for r in got] == want_scores.tolist()
        assert [r["class"] for r in got] == want_class.tolist()
        per_image = sum(r["cycles"] for r in got)
        assert 0 < per_image <= cycles <= per_image + 16
    # a part of the slots: the others keep their results
    client.write("inputs", (images - 1) * channels * pixels, x[0].tobytes())
    assert client.infer(images - 1, 1)[0] == 1
    assert client.results(images - 1, 1, classes)[0]["scores"] == want_scores[0].tolist()
    assert client.results(0, 1, classes)[0]["scores"] == want_scores[0].tolist()


def test_bad_requests_get_their_status_and_bad_frames_a_nak():
    images, size = 4, 6
    link = SimLink(_endpoint(images=images), seed=5, stall=0.3)
    client = Client(link, timeout=0.002)
    cases = [("INFER", struct.pack("<HHB", images - 1, 2, 0), "out of range"),
             ("INFER", struct.pack("<HH", 0, 1), "malformed request"),
             ("RESULTS", struct.pack("<HH", 0, 7), "out of range"),         # 7 × 17 bytes > one reply
             ("WRITE", struct.pack("<BxxxI", 0, 0) + b"x", "out of range"),   # no model region
             ("WRITE", struct.pack("<BxxxI", 1, images * size - 1) + b"xy", "out of range"),
             ("WRITE", b"\x01\x00", "malformed request"),
             ("COMMIT", struct.pack("<II", 4, 0), "the model does not fit")]
    for command, payload, message in cases:
        with pytest.raises(ProtocolError, match=message):
            client.request(command, payload)
    assert client.request("WRITE", struct.pack("<BxxxI", 1, images * size - 1) + b"x") == b""

    def exchange(frame):
        link.write(frame)
        return decode_frame(link.read_frame(0.002))

    command, seq, payload = exchange(encode_frame(0x42, 9))
    assert (command, seq, payload) == (0x42 | protocol.REPLY, 9, bytes([1]))          # BAD_COMMAND
    frame = bytearray(encode_frame(protocol.COMMANDS["ECHO"], 10, b"abcdef"))
    frame[4] ^= 0x10                                                                 # a damaged byte
    assert exchange(bytes(frame))[0] == protocol.NAK
    assert exchange(b"\x05\x01\x02\0")[0] == protocol.NAK                            # too short
    assert exchange(encode_frame(protocol.COMMANDS["ECHO"], 10, b"abcdef"))[2] == b"\0abcdef"


def test_replies_are_the_canonical_cobs_encoding_at_every_block_boundary():
    """The endpoint encodes each frame as it builds it: the bytes on the wire equal ``cobs.encode`` of the
    frame, for replies whose last block is one byte short of a full one (254 bytes), full, or one past it,
    with and without zeros, and for a NAK."""
    link = SimLink(_endpoint(), seed=3, stall=0.2)
    echo = protocol.COMMANDS["ECHO"]
    # n ones: the block after the status byte (0) holds them and the CRC, full at n = 250
    cases = [(n, b"\x01") for n in range(248, 256)]
    cases += [(n, fill) for n in (0, 1, 250, 255) for fill in (b"\x00", b"\x07\x00")]
    for seq, (n, fill) in enumerate(cases, 1):          # (a repeated sequence number gets the kept reply)
        payload = (fill * n)[:n]
        link.write(encode_frame(echo, seq, payload))
        assert link.read_frame(0.01) == encode_frame(echo | protocol.REPLY, seq, b"\0" + payload), (n, fill)
    link.write(b"\x05\x01\x02\0")                     # too short (command 1, sequence 2): a NAK
    assert link.read_frame(0.01) == encode_frame(protocol.NAK, 2)
    link.write(b"\x02\x01\0")                         # no sequence number: a NAK with 0
    assert link.read_frame(0.01) == encode_frame(protocol.NAK, 0)


def test_a_repeated_request_is_answered_again_not_run_again():
    images, pixels = 3, 6
    endpoint = _endpoint(pixels=pixels, images=images)
    link = SimLink(endpoint, seed=7)
    transfers = []

    async def monitor(ctx):
        while True:
            _, _, valid, ready = await ctx.tick().sample(endpoint.pipeline.i.valid, endpoint.pipeline.i.ready)
            if valid and ready:
                transfers.append(1)
    link.sim.add_testbench(monitor, background=True)
    client = Client(link, timeout=0.002)
    client.write("inputs", 0, bytes(range(images * pixels)))
    infer = encode_frame(protocol.COMMANDS["INFER"], 77, struct.pack("<HHB", 0, images, 0))
    replies = []
    for _ in range(3):                  # the first reply "lost": the host sends the same frame again
        link.write(infer)
        replies.append(link.read_frame(0.002))
    assert replies[0] == replies[1] == replies[2] and decode_frame(replies[0])[2][:3] == b"\0\x03\0"
    assert len(transfers) == images * pixels
    # a NAK between does not forget the reply; a new request does
    link.write(b"\x02\x01\0")
    assert decode_frame(link.read_frame(0.002))[0] == protocol.NAK
    link.write(infer)
    assert link.read_frame(0.002) == replies[0] and len(transfers) == images * pixels


def test_a_damaging_link_still_delivers_every_result_once():
    images, pixels, classes = 4, 6, 3
    link = FaultyTransport(SimLink(_endpoint(pixels=pixels, classes=classes, images=images), seed=11),
                           rate=0.02, seed=3)
    client = Client(link, timeout=0.0005, retries=50)
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (images, pixels), dtype=np.int8)
    client.write("inputs", 0, x.tobytes())
    assert client.infer(0, images)[0] == images
    got = client.results(0, images, classes)
    want_scores, want_class = _toy_golden(x.astype(np.int64), 1, pixels, classes)
    assert [r["scores"] for r in got] == want_scores.tolist()
    assert sum(link.faults.values()) > 0 and client.stats["retries"] > 0


def test_endpoint_parameters_are_checked():
    with pytest.raises(ParameterError, match="Image slots"):
        _endpoint(images=0)
    with pytest.raises(ParameterError, match="at most 131072 fit"):
        LinkEndpoint(_Toy(1, 6, 3), channels=1, pixels=4096, classes=3, images=40)


@pytest.mark.parametrize("cpb,seed", [(4, 1), (7, 2)])
def test_uart_bytes_cross_the_line(cpb, seed):
    """UARTTx → UARTRx back to back, and the receiver against a bit-level model with a late clock."""
    rng = random.Random(seed)
    payload = [rng.randrange(256) for _ in range(40)] + [0, 255]

    class Loop(wiring.Component):
        def __init__(self):
            self.tx, self.rx = UARTTx(clocks_per_bit=cpb), UARTRx(clocks_per_bit=cpb)
            super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8))})

        def elaborate(self, platform):
            m = Module()
            m.submodules.tx, m.submodules.rx = self.tx, self.rx
            wiring.connect(m, wiring.flipped(self.i), self.tx.i)
            m.d.comb += [self.rx.rx.eq(self.tx.tx), self.o.valid.eq(self.rx.o.valid),
                         self.o.payload.eq(self.rx.o.payload), self.rx.o.ready.eq(1)]
            return m

    dut, got = Loop(), []

    async def feed(ctx):
        for b in payload:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, b)
            await ctx.tick().until(dut.i.ready)
            for _ in range(rng.randrange(3) * cpb):          # idle line between some bytes
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
        ctx.set(dut.i.valid, 0)

    async def collect(ctx):
        while len(got) < len(payload):
            _, _, valid, value = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                got.append(value)
    run(dut, [feed, collect], deadline=len(payload) * 14 * cpb + 100)
    assert got == payload

    # A sender whose bits are 4 % longer than the receiver expects (a clock 4 % off) still gets through.
    rx, seen = UARTRx(clocks_per_bit=cpb * 25), []

    async def line(ctx):
        for b in payload[:8]:
            for level in [0] + [(b >> n) & 1 for n in range(8)] + [1, 1]:
                ctx.set(rx.rx, level)
                await ctx.tick().repeat(cpb * 26)

    async def take(ctx):                 # the first three bytes are not taken: lost, and counted
        offered = 0
        while len(seen) < 5:
            ctx.set(rx.o.ready, offered >= 3)
            _, _, valid, value = await ctx.tick().sample(rx.o.valid, rx.o.payload)
            if valid:
                if offered >= 3:
                    seen.append(value)
                offered += 1
        assert ctx.get(rx.dropped) == 3
    run(rx, [line, take], deadline=9 * 11 * cpb * 26)
    assert seen == payload[3:8]


def test_the_deploy_driver_runs_the_digits_pipeline_through_the_link():
    """`run_model` (the SoC's host driver, baked-model mode) against the lean digits pipeline behind the
    endpoint: every score equals the integer golden model's."""
    from insitu.boards import get_board
    from insitu.golden import modelfile, network
    from insitu.tools.deploy import run_model
    from insitu.tools.network_link import link_endpoint
    from insitu.tools.network_pipeline import build_pipeline
    model = modelfile.load(modelfile.__file__.rsplit("/", 2)[0] + "/models/digits-lean-mixed.npz")
    pipeline, _ = build_pipeline(model, get_board("icebreaker"))
    images, labels = network.digits_split()[2:]
    link = SimLink(link_endpoint(pipeline, images=2), seed=2, stall=0.1)
    report = run_model(model, images[:3], link, labels=labels[:3], load=False)
    assert report["images"] == 3 and report["mismatches"] == 0
    path = report["paths"]["software"]
    assert [r["class"] for r in path["per_image"]] == [r["golden_class"] for r in path["per_image"]]
    assert 1000 < path["cycles_per_image"] < 4000


def test_the_network_design_puts_the_pipeline_behind_the_link():
    """`--link uart`: the plan gets the budget less the link's cost, the estimate adds it back, and the
    resource breakdown names the link's modules `link` and the pipeline's by layer."""
    from insitu.boards import get_board
    from insitu.tools.designs_network import NetworkParams, network, parts
    from insitu.tools.network_link import NetworkBoard, link_cost
    from insitu.tools.network_plan import PlanError
    from insitu.golden import modelfile
    model_path = modelfile.__file__.rsplit("/", 2)[0] + "/models/digits-qgp.npz"
    board = get_board("ulx3s-85f")
    top, info = network(NetworkParams(model=model_path, link="uart", baud=1_000_000), frequency=50e6, board=board)
    cost = link_cost(modelfile.load(model_path), board)
    assert isinstance(top, NetworkBoard) and info["link"] == "uart" and top.baud == 1_000_000
    assert info["plan_budget"]["logic"] == info["budget"]["logic"] - cost["logic"] and cost["blocks"] >= 1
    assert info["estimate"]["logic"] == sum(s.cost()["logic"] for s in top.plan.stages) + \
        top.plan.glue["logic"] + cost["logic"]
    part = parts(top)
    assert part(("link", "endpoint", "pipeline", "fc1", "lanes")) == "fc1"
    assert part(("link", "endpoint", "pipeline", "conv2_fifo")) == "glue"
    assert part(("link", "endpoint", "mem")) == part(("link", "uart_rx")) == "link"
    pipeline, info = network(NetworkParams(model=model_path), frequency=50e6, board=board)
    assert info["link"] == "none" and parts(pipeline)(("fc1",)) == "fc1"
    # both elaborate (the board top itself, which requests the UART pins, only in a build)
    from amaranth.back import rtlil
    from insitu.hdl.params import abandon
    rtlil.convert(top.link, name="top")
    rtlil.convert(pipeline, name="top")
    abandon(top)
    with pytest.raises(PlanError, match="less the host link's 1,950 logic cells"):
        network(NetworkParams(model=model_path.replace("qgp", "lean-mixed"), link="uart"), frequency=48e6,
                board=get_board("icebreaker"))
    with pytest.raises(ParameterError, match="too fast"):
        network(NetworkParams(model=model_path, link="uart", baud=20_000_000), frequency=50e6, board=board)


def test_insitu_run_design_network_sim_link(tmp_path, monkeypatch, capsys):
    from insitu.golden import modelfile
    from insitu.tools.cli import main
    monkeypatch.chdir(tmp_path)
    model = modelfile.__file__.rsplit("/", 2)[0] + "/models/digits-lean-mixed.npz"
    assert main(["run", "--design", "network", "--sim", "--link", "--model", model, "--board", "ulx3s-85f",
                 "--images", "3", "--stall", "0.2", "--json", "r.json"]) == 0
    out = capsys.readouterr().out
    assert "mismatches against the golden model: 0" in out and "wire bytes per image:" in out
    import json
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["images"] == 3 and report["mismatches"] == 0 and report["design"] == "network-link"
    assert 100 < report["wire_bytes_per_image"] < 200
    assert main(["run", "--sim", "--link", "--model", model]) == 1
    assert "--link applies to --design network --sim only" in capsys.readouterr().err


class _ToyLoaded(wiring.Component):
    """:class:`_Toy` with a ``load`` stream of ``load_bytes`` weight bytes (ready at random): it takes no
    pixel until they are all in, and adds their signed sum to every score; more bytes start a reload."""

    def __init__(self, channels, pixels, classes, load_bytes, seed=0, width=16):
        self.channels, self.pixels, self.classes, self.width = channels, pixels, classes, width
        self.load_bytes, self.seed = load_bytes, seed
        layout = data.ArrayLayout(signed(8), channels) if channels > 1 else signed(8)
        super().__init__({"i": In(stream.Signature(layout)),
                          "o": Out(stream.Signature(scores_layout(width, classes))),
                          "load": In(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.toy = toy = _Toy(self.channels, self.pixels, self.classes, self.width)
        got, weight = Signal(range(self.load_bytes + 1)), Signal(signed(self.width))
        full = got == self.load_bytes
        lfsr = Signal(8, init=self.seed | 1)                     # a seeded stall on load
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[4]))
        m.d.comb += self.load.ready.eq(lfsr[0] | lfsr[5])
        with m.If(self.load.valid & self.load.ready):
            m.d.sync += [got.eq(Mux(full, 1, got + 1)), weight.eq(Mux(full, 0, weight) + self.load.payload.as_signed())]
        m.d.comb += [toy.i.payload.eq(self.i.payload), toy.i.valid.eq(self.i.valid & full),
                     self.i.ready.eq(toy.i.ready & full)]
        m.d.comb += [self.o.valid.eq(toy.o.valid), toy.o.ready.eq(self.o.ready),
                     self.o.payload.eq(toy.o.payload), self.o.payload.score.eq(toy.o.payload.score + weight)]
        return m


def test_weights_loaded_over_the_link_stream_into_the_pipeline_once():
    """SPRAM weights over the link: HELLO names their layers and says no model until they are in; region-0
    WRITEs stream them into ``load`` in order (a repeated range is skipped, a gap refused); COMMIT checks
    the length and completeness; INFER waits for it; writing from 0 again reloads."""
    pixels, classes, images, size = 4, 3, 2, 300
    endpoint = LinkEndpoint(_ToyLoaded(1, pixels, classes, size, seed=3), channels=1, pixels=pixels,
                            classes=classes, images=images, load_bytes=size, loaded_layers=["fc1", "fc9"])
    link = SimLink(endpoint, seed=9, stall=0.2)
    client = Client(link, timeout=0.004)
    hello = client.hello()
    assert hello["baked_model"] == "no model loaded" and hello["model_capacity"] == size
    assert hello["peripherals"] == [(0x80, "fc1"), (0x80, "fc9")]
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (images, pixels), dtype=np.int8)
    client.write("inputs", 0, x.tobytes())
    with pytest.raises(ProtocolError, match="no model loaded"):
        client.infer(0, images)
    blob = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    client.write("model", 0, blob[:100])
    with pytest.raises(ProtocolError, match="out of range"):            # a gap
        client.request("WRITE", struct.pack("<BxxxI", 0, 101) + blob[101:110])
    with pytest.raises(ProtocolError, match="out of range"):            # past the end
        client.request("WRITE", struct.pack("<BxxxI", 0, size - 2) + b"abc")
    with pytest.raises(ProtocolError, match="no model loaded"):
        client.commit(blob)
    client.write("model", 60, blob[60:200])                          # 40 bytes again: skipped
    client.write("model", 80, blob[80:120])                          # all loaded already
    client.write("model", 200, blob[200:])
    with pytest.raises(ProtocolError, match="invalid"):
        client.commit(blob[:-1])
    assert client.commit(blob) == {"layers": 2, "input_bytes": pixels, "outputs": classes, "accelerated_layers": 0}
    assert client.hello()["baked_model"] == "ok"

    def scores(weights):
        want, _ = _toy_golden(x.astype(np.int64), 1, pixels, classes)
        return (want + int(np.frombuffer(weights, np.int8).astype(np.int64).sum())).tolist()
    assert client.infer(0, images)[0] == images
    assert [r["scores"] for r in client.results(0, images, classes)] == scores(blob)
    other = rng.integers(0, 256, size, dtype=np.uint8).tobytes()        # a reload
    client.write("model", 0, other)
    assert client.hello()["baked_model"] == "no model loaded"
    client.commit(other)
    assert client.infer(0, images)[0] == images
    assert [r["scores"] for r in client.results(0, images, classes)] == scores(other)
