"""The compiled-simulation tier: each block against its golden twin on ≥ 10,000 random cases (random data
with its extremes, random stalls on both streams), in a CXXRTL model (tests/compiled). The seed of a
failing case is in the assertion message; ``INSITU_TIER_SEED`` picks another seed for a whole run."""

import os

import numpy as np
import pytest

from insitu.golden import fft as F

pytest.importorskip("ziglang")
from compiled import CompiledStream, pack, unpack  # noqa: E402

SEED = int(os.environ.get("INSITU_TIER_SEED", "20261201"))
CASES = 10_000


def _first_mismatch(got, want):
    bad = np.flatnonzero(np.any(np.reshape(got != want, (len(got), -1)), axis=1))
    return int(bad[0]) if len(bad) else None


def _extremes(n, width, rng):
    """Frames at the edges of the input range: full-scale impulse, the most negative constant, a full-scale
    square wave in both parts, and full-range noise."""
    full = (1 << (width - 1)) - 1
    impulse = np.zeros(n, complex)
    impulse[0] = full
    dc = np.full(n, -(1 << (width - 1)) + 0j)
    square = np.where(np.arange(n) % 2, full, -full - 1) + 1j * np.where(np.arange(n) % 4 < 2, full, -full - 1)
    return [impulse, dc, square, np.full(n, full + 1j * full)]


@pytest.mark.parametrize("n, inverse", [(16, False), (64, True)])
def test_fft_on_ten_thousand_frames(n, inverse):
    from insitu.hdl.fft import FFT
    seed = SEED + n + inverse
    rng = np.random.default_rng(seed)
    width = 16
    frames = rng.integers(-(1 << 15), 1 << 15, size=(CASES, n)) + 1j * rng.integers(-(1 << 15), 1 << 15, size=(CASES, n))
    small = rng.integers(-64, 65, size=(CASES // 10, n)) + 1j * rng.integers(-64, 65, size=(CASES // 10, n))
    frames = np.concatenate([np.array(_extremes(n, width, rng)), small, frames])[:CASES]
    dut = FFT(n=n, width=width, twiddle_width=16, inverse=inverse)
    block, shape = CompiledStream(dut), dut.i.payload.shape()
    out, clocks = block.run(pack(shape, {"re": frames.real.ravel(), "im": frames.imag.ravel()}), frames.size,
                            seed=seed, stall=0.3)
    got = unpack(shape, out)
    got = (got["re"] + 1j * got["im"]).reshape(frames.shape)
    want = F.fft_bitrev(frames, width=width, twiddle_width=16, inverse=inverse)
    bad = _first_mismatch(got, want)
    assert bad is None, f"frame {bad} of {CASES} differs (seed {seed}): {got[bad]} != {want[bad]}"
    assert clocks >= frames.size                       # one sample per clock at most, stalls on top


@pytest.mark.parametrize("config", range(2))
def test_dense_matvec_on_ten_thousand_vectors(config):
    from insitu.hdl.densematvec import DenseMatVec
    seed = SEED + 100 + config
    rng = np.random.default_rng(seed)
    lanes = (4, 2)[config]
    m, n = lanes * int(rng.integers(2, 6)), int(rng.integers(8, 40))
    weights = rng.integers(-128, 128, size=(m, n))
    weights[0, :] = -128                                            # the extremes: -128 · -128 summed
    xs = rng.integers(-128, 128, size=(CASES, n))
    xs[0, :], xs[1, :] = -128, 127
    dut = DenseMatVec(m=m, n=n, weights=weights, lanes=lanes)
    out, _ = CompiledStream(dut).run(pack(dut.i.payload.shape(), xs.ravel()), CASES * m, seed=seed, stall=0.3)
    got, want = unpack(dut.o.payload.shape(), out).reshape(CASES, m), xs @ weights.T
    bad = _first_mismatch(got, want)
    assert bad is None, f"vector {bad} of {CASES} differs (seed {seed}): {got[bad]} != {want[bad]}"


@pytest.mark.parametrize("k", [4, 16])
def test_circulant_matvec_on_ten_thousand_vectors(k):
    from insitu.golden import circulant as C
    from insitu.hdl.circulant import CirculantMatVec
    seed = SEED + 200 + k
    rng = np.random.default_rng(seed)
    m, n = 2 * k, 2 * k
    layer = C.compress(rng.normal(size=(m, n)), k, spectrum_width=int(rng.choice([8, 12, 16])))
    xs = rng.integers(-128, 128, size=(CASES, n))
    xs[0, :], xs[1, :] = -128, 127
    dut = CirculantMatVec(m=m, n=n, k=k, spectra=layer.spectra, mid_shift=layer.mid_shift,
                          spectrum_width=layer.spectrum_width)
    out, _ = CompiledStream(dut).run(pack(dut.i.payload.shape(), xs.ravel()), CASES * m, seed=seed, stall=0.3)
    got, want = unpack(dut.o.payload.shape(), out).reshape(CASES, m), C.matvec(layer, xs)
    bad = _first_mismatch(got, want)
    assert bad is None, f"vector {bad} of {CASES} differs (seed {seed}): {got[bad]} != {want[bad]}"


@pytest.mark.parametrize("group, basis_bits, e_range", [(4, 8, (-7, 5)), (1, 12, (-3, 3))])
def test_pow2_decoder_on_ten_thousand_rows(group, basis_bits, e_range):
    """Random coefficient rows (skipped rows carry random codes the decoder must ignore) against
    golden.smartdeal.reconstruct of the same rows."""
    from insitu.golden import smartdeal as S
    from insitu.hdl.decode import Pow2Decoder
    seed = SEED + 300 + group
    rng = np.random.default_rng(seed)
    groups, (e_min, e_max) = 8 // group, e_range
    limit = (1 << (basis_bits - 1)) - 1
    basis = rng.integers(-limit, limit + 1, size=(groups, 3, 3))
    basis[0] = limit
    basis[-1] = -limit
    skip = rng.random(CASES) < 0.1
    zero = rng.random((CASES, 3)) < 0.3
    sign = rng.random((CASES, 3)) < 0.5
    exp = rng.integers(e_min, e_max + 1, size=(CASES, 3))
    exp[:2] = e_max
    g = rng.integers(0, groups, size=CASES)
    dut = Pow2Decoder(basis=basis, basis_bits=basis_bits, exp_range=e_max - e_min)
    values = {"skip": skip, "group": g}
    for j in range(3):
        values.update({f"coef.{j}.zero": zero[:, j], f"coef.{j}.sign": sign[:, j], f"coef.{j}.exp": exp[:, j] - e_min})
    out, _ = CompiledStream(dut).run(pack(dut.i.payload.shape(), values), CASES, seed=seed, stall=0.3)
    got = unpack(dut.o.payload.shape(), out)
    got = np.stack([got[str(c)] for c in range(3)], axis=1)
    off = zero | skip[:, None]
    rows = S.SmartDealLayer(shape=(CASES, 3), group_size=1, basis=basis[g], basis_bits=basis_bits, basis_frac=0,
                            zero=off[:, None], sign=(sign & ~off)[:, None], exp=np.where(off, e_min, exp)[:, None],
                            e_min=e_min, e_max=e_max)
    want = S.reconstruct(rows)
    bad = _first_mismatch(got, want)
    assert bad is None, f"row {bad} of {CASES} differs (seed {seed}): {got[bad]} != {want[bad]}"


def _conv_tier(dut, golden, c_in, h, w, frames_count, seed, label):
    """``frames_count`` random frames (the first at -128 and 127 everywhere) through a Conv2d ``dut``
    against ``golden(frame)``, stalls on both streams."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(-128, 128, size=(frames_count, c_in, h, w))
    frames[0], frames[1] = -128, 127
    pe = dut.pe
    pixels = frames.transpose(0, 2, 3, 1).reshape(-1, c_in)
    per_frame = dut.out_height * dut.out_width * pe.groups
    out, _ = CompiledStream(dut).run(pack(dut.i.payload.shape(), {str(c): pixels[:, c] for c in range(c_in)}),
                                     frames_count * per_frame, seed=seed, stall=0.3)
    lanes = unpack(dut.o.payload.shape(), out)
    lanes = lanes if isinstance(lanes, dict) else {"0": lanes}
    got = np.stack([lanes[str(p)] for p in range(len(lanes))], axis=1)
    got = got.reshape(frames_count, dut.out_height, dut.out_width, pe.c_out).transpose(0, 3, 1, 2)
    want = np.stack([golden(f) for f in frames])
    bad = _first_mismatch(got, want)
    assert bad is None, f"{label}: frame {bad} of {frames_count} differs (seed {seed})"


#: configurations per convolution block; 10,000 frames over them
CONV_CONFIGS = 2


def _conv_config(seed, kernels=(1, 3, 5)):
    """Random parameters within a convolution PE's contract: ``(k, c_in, c_out, parallel, padding, h, w)``."""
    rng = np.random.default_rng(seed)
    k = int(rng.choice(kernels))
    c_in, c_out = int(rng.integers(1, 7)), int(rng.integers(1, 9))
    parallel = int(rng.choice([d for d in range(1, c_out + 1) if c_out % d == 0]))
    padding = int(rng.integers(0, k // 2 + 1))
    h, w = (int(v) for v in rng.integers(max(1, k - 2 * padding), 9, size=2))
    return k, c_in, c_out, parallel, padding, h, w


@pytest.mark.parametrize("config", range(CONV_CONFIGS))
def test_muxconv_on_ten_thousand_frames(config):
    from insitu.golden import qgp
    from insitu.hdl import Conv2d, MuxConv
    seed = SEED + 400 + config
    k, c_in, c_out, parallel, padding, h, w = _conv_config(seed, kernels=(3, 5))   # QGP keeps one tap of several
    layer = qgp.compress(np.random.default_rng(seed).normal(size=(c_out, c_in, k, k)))
    dut = Conv2d(MuxConv(c_in=c_in, c_out=c_out, k=k, parallel=parallel, init=qgp.pack(layer)), width=w, height=h,
                 padding=padding)
    _conv_tier(dut, lambda f: qgp.muxconv2d(f, layer, padding), c_in, h, w, CASES // CONV_CONFIGS, seed,
               f"MuxConv{(k, c_in, c_out, parallel, padding, h, w)}")


@pytest.mark.parametrize("config", range(CONV_CONFIGS))
def test_denseconv_on_ten_thousand_frames(config):
    from insitu.golden import conv
    from insitu.hdl import Conv2d, DenseConv
    seed = SEED + 500 + config
    k, c_in, c_out, parallel, padding, h, w = _conv_config(seed)
    weights = np.random.default_rng(seed).integers(-128, 128, size=(c_out, c_in, k, k))
    weights.flat[0] = -128
    dut = Conv2d(DenseConv(c_in=c_in, c_out=c_out, k=k, parallel=parallel, init=conv.pack(weights)), width=w,
                 height=h, padding=padding)
    _conv_tier(dut, lambda f: conv.conv2d(f, weights, padding), c_in, h, w, CASES // CONV_CONFIGS, seed,
               f"DenseConv{(k, c_in, c_out, parallel, padding, h, w)}")


@pytest.mark.parametrize("shared, mode", [(True, "pow2"), (False, "int")])
def test_escalate_conv_on_ten_thousand_frames(shared, mode):
    from insitu.golden import escalate as E
    from insitu.hdl import BasisFirstConv, Conv2d
    seed = SEED + 600 + shared
    c_in, c_out, h, w = 3, 4, 5, 4
    e = E.decompose(np.random.default_rng(seed).normal(size=(c_out, c_in, 3, 3)), 2, shared=shared, mode=mode,
                    coef_bits=4, density=0.6)[0]
    dut = Conv2d(BasisFirstConv(basis=e.basis, coef=e.coef, basis_bits=e.basis_bits, coef_bits=e.coef_bits,
                                mode=e.mode), width=w, height=h, padding=1)
    _conv_tier(dut, lambda f: E.conv2d(f, e, 1), c_in, h, w, CASES // 2, seed, "BasisFirstConv")


@pytest.mark.parametrize("source", ["smartdeal", "mlg", "int8"])
def test_stream_conv_sources_on_ten_thousand_frames(source):
    """StreamConv fed by each weight source: SmartDeal rows (RowReader → Pow2Decoder), MLG factors
    (InSituGenerator) and an int8 weight memory (the dense-stream-conv baseline)."""
    from insitu.golden import conv, mlg, smartdeal
    from insitu.hdl import Conv2d
    from insitu.hdl.decode import SmartDealWeights
    from insitu.hdl.insitu import InSituGenerator
    from insitu.hdl.streamconv import StreamConv, WeightMemory
    seed = SEED + 700 + len(source)
    rng = np.random.default_rng(seed)
    c_in, c_out, h, w = 3, 4, 4, 5
    shape = (c_out, c_in, 3, 3)
    if source == "smartdeal":
        layer, _ = smartdeal.decompose(rng.normal(size=shape), group_size=2, threshold=0.2)
        weights = smartdeal.reconstruct(layer)
        src = SmartDealWeights(words=smartdeal.row_words(layer), rows=layer.zero.shape[1], c_out=c_out, group_size=2,
                               basis=layer.basis, basis_bits=layer.basis_bits, exp_range=layer.e_max - layer.e_min)
    elif source == "mlg":
        layer, _ = mlg.decompose(rng.normal(size=shape), 2, 3, iterations=5)
        weights = mlg.generate(layer)
        src = InSituGenerator(basis=layer.basis, u=layer.u, v=layer.v, bits=layer.bits, lanes=3)
    else:
        weights = rng.integers(-128, 128, size=shape)
        src = WeightMemory(weights=weights, lanes=3)
    dut = Conv2d(StreamConv(c_in=c_in, c_out=c_out, k=3, source=src), width=w, height=h, padding=1)
    _conv_tier(dut, lambda f: conv.conv2d(f, weights, 1), c_in, h, w, CASES, seed, f"StreamConv({source})")


@pytest.mark.parametrize("source", ["smartdeal", "mlg"])
def test_stream_matvec_sources_on_ten_thousand_vectors(source):
    """StreamMatVec (a fully connected layer) fed by each decode unit; rows not a whole number of transfers."""
    from insitu.golden import mlg, smartdeal
    from insitu.hdl.decode import SmartDealWeights
    from insitu.hdl.insitu import InSituGenerator
    from insitu.hdl.streammatvec import StreamMatVec
    seed = SEED + 800 + len(source)
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(3, 7)), 3 * int(rng.integers(1, 5)) + 1
    if source == "smartdeal":
        layer, _ = smartdeal.decompose(rng.normal(size=(m, n)), group_size=1, threshold=0.2)
        weights = smartdeal.reconstruct(layer)
        src = SmartDealWeights(words=smartdeal.row_words(layer), rows=layer.zero.shape[1], c_out=m, group_size=1,
                               basis=layer.basis, basis_bits=layer.basis_bits, exp_range=layer.e_max - layer.e_min)
    else:
        layer, _ = mlg.decompose(rng.normal(size=(m, n, 1, 1)), 1, 3, iterations=5)
        weights = mlg.generate(layer).reshape(m, n)
        src = InSituGenerator(basis=layer.basis, u=layer.u, v=layer.v, bits=layer.bits, lanes=1)
    xs = rng.integers(-128, 128, size=(CASES, n))
    xs[0, :], xs[1, :] = -128, 127
    dut = StreamMatVec(m=m, n=n, source=src, slices=4 if source == "smartdeal" else 2)
    out, _ = CompiledStream(dut).run(pack(dut.i.payload.shape(), xs.ravel()), CASES * m, seed=seed, stall=0.3)
    got, want = unpack(dut.o.payload.shape(), out).reshape(CASES, m), xs @ weights.T
    bad = _first_mismatch(got, want)
    assert bad is None, f"vector {bad} of {CASES} differs (seed {seed}): {got[bad]} != {want[bad]}"


def test_link_on_ten_thousand_requests():
    """The pipeline's host link (`insitu.soc.link.LinkEndpoint`, in front of the stand-in pipeline of
    tests/test_link.py) on 10,000 random requests in one session, random stalls on both byte streams:
    every command valid and out of range, malformed and unknown ones, damaged frames (NAKs) and repeated
    requests (answered from the kept reply). Each reply is checked field by field against a model of the
    endpoint (image cycles, which the model cannot know, are checked for consistency instead)."""
    import struct
    from insitu.soc import protocol as P
    from insitu.soc.link import LinkEndpoint
    from test_link import _Toy, _toy_golden
    seed = SEED + 900
    rng = np.random.default_rng(seed)
    C, HW, classes, images = 2, 3, 3, 4
    size, cap = 5 + 4 * classes, images * C * HW
    most = (P.MAX_PAYLOAD - 1) // size
    dut = LinkEndpoint(_Toy(C, HW, classes), channels=C, pixels=HW, classes=classes, images=images,
                       methods=1 << (P.METHODS_SHIFT + 2))
    inputs, slots = bytearray(cap), [None] * images          # what the endpoint holds, as the model sees it
    wire, expected, seq, last = bytearray(), [], 0, None      # expected: (command, seq, payload or None)

    def request(command, payload):
        nonlocal seq, last
        seq = (seq + 1) & 0xFF
        frame = P.encode_frame(command, seq, payload)
        reply = answer(command, payload)
        last = (frame, (command | P.REPLY, seq, reply))
        wire.extend(frame)
        expected.append(last[1])

    def answer(command, payload):
        ok = bytes([0])
        if command == P.COMMANDS["HELLO"]:
            return ok + dut.hello
        if command == P.COMMANDS["ECHO"]:
            return ok + (payload if len(payload) < P.MAX_PAYLOAD else b"")
        if command == P.COMMANDS["WRITE"]:
            if len(payload) < 8:
                return bytes([2])
            region, offset = payload[0], struct.unpack_from("<I", payload, 4)[0]
            data = payload[8:]
            if region != 1 or offset + len(data) > cap:
                return bytes([3])
            inputs[offset:offset + len(data)] = data
            return ok
        if command == P.COMMANDS["INFER"]:
            if len(payload) < 5:
                return bytes([2])
            first, count = struct.unpack_from("<HH", payload)
            if first + count > images:
                return bytes([3])
            x = np.frombuffer(bytes(inputs), np.int8).reshape(images, C * HW)[first:first + count].astype(int)
            scores, klass = _toy_golden(x, C, HW, classes)
            for i in range(count):
                slots[first + i] = (int(klass[i]), [int(v) for v in scores[i]])
            return ok + struct.pack("<HQ", count, 0)              # cycles: checked apart
        if command == P.COMMANDS["RESULTS"]:
            if len(payload) < 4:
                return bytes([2])
            first, count = struct.unpack_from("<HH", payload)
            if first + count > images or count > most:
                return bytes([3])
            out = ok
            for i in range(first, first + count):
                klass, scores = slots[i] if slots[i] else (0, [0] * classes)
                out += struct.pack(f"<BI{classes}i", klass, 0, *scores)
            return out
        if command == P.COMMANDS["COMMIT"]:
            return bytes([7])
        return bytes([1])

    commands = ["HELLO", "ECHO", "WRITE", "WRITE", "INFER", "RESULTS", "COMMIT", "OTHER", "SHORT", "DAMAGED",
                "REPEAT"]
    weights = np.array([3, 10, 20, 8, 20, 20, 2, 3, 4, 5, 5], float)
    for _ in range(CASES):
        kind = commands[rng.choice(len(commands), p=weights / weights.sum())]
        if kind == "HELLO":
            request(P.COMMANDS["HELLO"], b"")
        elif kind == "ECHO":
            request(P.COMMANDS["ECHO"], rng.integers(0, 256, int(rng.integers(0, 256)), dtype=np.uint8).tobytes())
        elif kind == "WRITE":
            offset = int(rng.integers(0, cap + 3))
            n = int(rng.integers(0, 12))
            region = 1 if rng.random() < 0.9 else 0
            request(P.COMMANDS["WRITE"], struct.pack("<BxxxI", region, offset) +
                    rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        elif kind == "INFER":
            first = int(rng.integers(0, images + 1))
            request(P.COMMANDS["INFER"], struct.pack("<HHB", first, int(rng.integers(0, images + 2 - first)), 0))
        elif kind == "RESULTS":
            first = int(rng.integers(0, images + 1))
            request(P.COMMANDS["RESULTS"], struct.pack("<HH", first, int(rng.integers(0, images + 2 - first))))
        elif kind == "COMMIT":
            request(P.COMMANDS["COMMIT"], struct.pack("<II", 0, 0))
        elif kind == "OTHER":
            request(int(rng.choice([0, 0x07, 0x42, 0x7F, 0xFF])), b"")
        elif kind == "SHORT":                                   # a request without its arguments
            request(P.COMMANDS[str(rng.choice(["WRITE", "INFER", "RESULTS"]))], b"\x01\x00")
        elif kind == "DAMAGED":                                 # one data byte changed: the CRC fails
            seq = (seq + 1) & 0xFF
            frame = bytearray(P.encode_frame(P.COMMANDS["ECHO"], seq, b"abcdefgh"))
            frame[frame.index(b"abcdefgh") + int(rng.integers(8))] ^= 0x20     # still not zero
            wire.extend(frame)
            expected.append((P.NAK, seq, b""))
        elif last is not None:                                  # the last request again, its reply lost
            wire.extend(last[0])
            expected.append(("repeat", last[1][1], None))
    kinds = [c for c, _, _ in expected]
    assert kinds.count("repeat") > 200 and kinds.count(P.NAK) > 200 and kinds.count(P.COMMANDS["INFER"] | P.REPLY) > 1000
    # cycles fields: placeholders of the same zero pattern keep the COBS length (no run reaches 254 bytes)
    count = sum(len(P.encode_frame(c if c != "repeat" else 0, s, p if p is not None else b""))
                for c, s, p in expected if c != "repeat")
    count += sum(len(P.encode_frame(*prev)) for prev in _repeated(expected))
    block = CompiledStream(dut)
    out, clocks = block.run(np.frombuffer(bytes(wire), np.uint8)[:, None].astype(np.uint32), count, seed=seed,
                            stall=0.2, max_cycles=60 * (len(wire) + count) + 100 * CASES)
    got = bytes(out[:, 0].astype(np.uint8))
    frames = got.split(b"\0")[:-1]
    assert len(frames) == len(expected), f"{len(frames)} frames for {len(expected)} requests (seed {seed})"
    previous = None
    for n, (frame, (command, s, payload)) in enumerate(zip(frames, expected)):
        decoded = P.decode_frame(frame)
        assert decoded is not None, f"reply {n} is not a valid frame (seed {seed})"
        if command == "repeat":
            assert decoded == previous, f"reply {n}: a repeated request got another reply (seed {seed})"
            continue
        c, q, data = decoded
        assert (c, q) == (command, s), f"reply {n}: {(c, q)} != {(command, s)} (seed {seed})"
        masked = bytearray(data)
        if command == P.COMMANDS["INFER"] | P.REPLY and len(data) == 11:
            masked[3:11] = bytes(8)
            assert data[1:3] == b"\0\0" or int.from_bytes(data[3:11], "little") > 0
        if command == P.COMMANDS["RESULTS"] | P.REPLY and len(data) > 1:
            for i in range((len(data) - 1) // size):
                masked[1 + i * size + 1:1 + i * size + 5] = bytes(4)
        assert bytes(masked) == payload, f"reply {n} to {command:#x}: {bytes(data)!r} != {payload!r} (seed {seed})"
        if c != P.NAK:
            previous = decoded
    assert clocks > len(wire)


def _repeated(expected):
    """The replies the repeated requests in ``expected`` get: each its predecessor's (non-NAK) reply, with
    placeholder cycles of the same length."""
    prev = None
    for command, seq, payload in expected:
        if command == "repeat":
            yield prev
        elif command != 0x7F:
            prev = (command, seq, payload)
