"""The firmware runtime and the host protocol: frames, the link under injected faults, the layer
interpreter against the integer golden model, all on the compiled SoC simulation. With peripherals:
``test_runtime_peripherals.py``; ``insitu run``: ``test_runtime_cli.py``."""

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from insitu.golden import methods, modelfile, network
from insitu.golden.errors import InputError
from insitu.soc import protocol
from insitu.soc.firmware import FIRMWARE_DIR
from insitu.tools import compress
from insitu.tools.blob import pack_model
from insitu.tools.cli import main
from insitu.tools.deploy import run_model

from helpers import ODD, odd_model, random_model

MODELS = FIRMWARE_DIR.parent.parent / "models"


# ------------------------------------------------------------------------------------------------ frames

@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=protocol.MAX_PAYLOAD))
def test_frames_round_trip_with_one_zero_at_the_end(command, seq, payload):
    wire = protocol.encode_frame(command, seq, payload)
    assert wire.index(b"\0") == len(wire) - 1
    assert protocol.decode_frame(wire) == (command, seq, payload)


def test_every_damaged_byte_is_detected():
    rng = np.random.default_rng(3)
    wire = protocol.encode_frame(5, 9, bytes(rng.integers(0, 256, 200, dtype=np.uint8)))
    for at in range(len(wire) - 1):
        for flip in (1, 0x80, int(rng.integers(1, 256))):
            damaged = bytearray(wire)
            damaged[at] ^= flip
            assert protocol.decode_frame(bytes(damaged).partition(b"\0")[0]) is None
        assert protocol.decode_frame(wire[:at] + wire[at + 1:]) is None          # a dropped byte
        assert protocol.decode_frame(wire[:at] + wire[at:at + 1] * 2 + wire[at + 1:]) is None


def test_oversized_payload_is_refused():
    with pytest.raises(ValueError, match="exceeds"):
        protocol.encode_frame(1, 0, bytes(protocol.MAX_PAYLOAD + 1))


# ------------------------------------------------------------------------------------------ on the SoC

@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """The runtime SoC's compiled simulation (built once); ``board()`` resets it and returns a transport."""
    pytest.importorskip("ziglang")
    from insitu.soc.cxxrtl import CompiledSoC
    from insitu.soc.runtime import build_runtime
    from insitu.soc.soc import SoC, memory_map
    from insitu.tools.deploy import SIM_RAM

    def make():
        return SoC(ram_size=SIM_RAM, uart_divisor=1, uart_depth=512)
    image = build_runtime(tmp_path_factory.mktemp("runtime"), memory_map=memory_map(ram_size=SIM_RAM),
                          ram_size=SIM_RAM)
    sim = CompiledSoC(make)

    def fresh(faults=0.0, seed=0, firmware=None):
        sim.load(firmware or image)
        transport = protocol.SimTransport(sim)
        return protocol.FaultyTransport(transport, rate=faults, seed=seed) if faults else transport
    return fresh


def test_hello_and_echo(board):
    client = protocol.Client(board())
    hello = client.hello()
    assert hello["version"] == protocol.VERSION and hello["max_payload"] == protocol.MAX_PAYLOAD
    assert hello["capabilities"] == ["software_path"] and hello["model_capacity"] >= 16384
    rng = np.random.default_rng(0)
    # zeros, runs of 254 non-zero bytes (COBS's block limit), empty, the largest reply
    for data in (b"", b"\0", b"\0" * 40, bytes(range(1, 255)), bytes([7]) * 254, bytes([7]) * 200 + b"\0" + bytes([9]) * 54,
                 bytes(rng.integers(0, 256, 255, dtype=np.uint8))):
        assert client.echo(data) == data
    assert client.stats["retries"] == 0


@pytest.mark.parametrize("method", methods.names(compressed=True))
def test_interpreter_is_bit_exact_on_odd_shapes(board, method):
    model = odd_model(method)
    assert method in {l.method for l in model.weight_layers}
    raw = np.random.default_rng(4).integers(-12, 13, size=(12, *model.input_shape))
    report = run_model(model, raw, board())
    path = report["paths"]["software"]
    assert report["images"] == 12 and report["mismatches"] == path["mismatches"] == 0
    golden = network.forward_int(model, raw)
    assert [p["scores"] for p in path["per_image"]] == golden.tolist()
    assert all(p["cycles"] > 0 for p in path["per_image"])


def test_a_hundred_images_through_one_percent_faults(board):
    """1 % of the bytes in each direction dropped, corrupted or duplicated: every image gets exactly one
    result, equal to the golden model's."""
    model = odd_model("qgp", seed=5)
    raw = np.random.default_rng(6).integers(-12, 13, size=(100, *model.input_shape))
    transport = board(faults=0.01, seed=1)
    report = run_model(model, raw, transport)
    assert report["images"] == 100 and report["mismatches"] == 0
    per = report["paths"]["software"]["per_image"]
    assert [p["scores"] for p in per] == network.forward_int(model, raw).tolist()
    assert min(transport.faults.values()) > 0 and report["link"]["retries"] > 0


def test_the_digits_model_on_the_firmware(board):
    model = modelfile.load(MODELS / "digits-qgp.npz")
    _, _, xte, yte = network.digits_split()
    report = run_model(model, xte[:2], board(), labels=yte[:2])
    assert report["mismatches"] == 0 and report["paths"]["software"]["accuracy"] == report["golden_accuracy"]


def test_protocol_errors_are_named(board, monkeypatch):
    client = protocol.Client(board())
    monkeypatch.setitem(protocol.COMMANDS, "BOGUS", 0x55)
    with pytest.raises(protocol.ProtocolError, match="unknown command"):
        client.request("BOGUS")
    with pytest.raises(protocol.ProtocolError, match="no model loaded"):
        client.infer(0, 1)
    with pytest.raises(protocol.ProtocolError, match="out of range"):
        client.write("inputs", 1 << 20, b"x")
    blob = pack_model(odd_model("dense"))
    client.write("model", 0, blob)
    with pytest.raises(protocol.ProtocolError, match="corrupt"):
        client.request("COMMIT", struct.pack("<II", len(blob), zlib.crc32(blob) ^ 1))
    bad = bytearray(blob)
    bad[4] = 99                                                  # the blob's version
    client.write("model", 0, bytes(bad))
    with pytest.raises(protocol.ProtocolError, match="invalid"):
        client.commit(bytes(bad))


def test_version_mismatch_and_silence_are_one_line_errors(board, monkeypatch):
    client = protocol.Client(board())
    monkeypatch.setattr(protocol, "VERSION", 2)
    with pytest.raises(protocol.ProtocolError, match="protocol version 1, this driver 2"):
        client.hello()
    monkeypatch.undo()
    broken = protocol.Client(board(faults=0.5, seed=3), retries=2)
    with pytest.raises(protocol.LinkError, match="after 3 attempts"):
        broken.echo(bytes(200))


#: settings far from the defaults: wide bases and shifts (weights beyond int8), per-channel bases, integer
#: coefficients, wider factor codes
VARIANTS = {"smartdeal": {"group_size": 1, "basis_bits": 10, "e_range": [-2, 3], "density": 0.9},
            "mlg": {"bi": 2, "bo": 3, "bits": [4, 8, 4]},
            "escalate": {"bases": 3, "shared": False, "mode": "int", "coef_bits": 6, "density": 0.7}}


@pytest.mark.parametrize("method", sorted(VARIANTS))
def test_compressed_layers_with_other_settings_are_bit_exact(board, method):
    model = random_model(ODD, 7)
    convs = [layer.name for layer in model.weight_layers if layer.kind == "conv2d"]
    raw = np.random.default_rng(8).integers(-12, 13, size=(16, *model.input_shape))
    model = compress.compress_model(model, "dense", raw, layer_methods=dict.fromkeys(convs, method),
                                    settings=dict.fromkeys(convs, VARIANTS[method]))
    wide = [np.abs(network.integer_weights(model.layer(n))[0]).max() for n in convs]
    report = run_model(model, raw[:8], board())
    assert report["mismatches"] == 0
    assert [p["scores"] for p in report["paths"]["software"]["per_image"]] == network.forward_int(model, raw[:8]).tolist()
    if method != "escalate":
        assert max(wide) > 127                                     # the products beyond the int8 table ran


def test_a_runtime_built_for_some_methods_refuses_the_others(board, tmp_path):
    """build_runtime(methods=...) leaves the other decoders out: HELLO lists what it runs, the host refuses
    a model needing another before loading it, and the firmware itself refuses it at COMMIT."""
    from insitu.soc.runtime import build_runtime
    from insitu.soc.soc import memory_map
    from insitu.tools.deploy import SIM_RAM, DeployError
    small = build_runtime(tmp_path, memory_map=memory_map(ram_size=SIM_RAM), ram_size=SIM_RAM,
                          methods=["qgp"])
    client = protocol.Client(board(firmware=small))
    assert client.hello()["methods"] == ["dense", "qgp"]
    model = odd_model("smartdeal")
    raw = np.zeros((1, *model.input_shape))
    with pytest.raises(DeployError, match="built without smartdeal layers .it runs dense, qgp."):
        run_model(model, raw, board(firmware=small))
    blob = pack_model(model)
    client.write("model", 0, blob)
    with pytest.raises(protocol.ProtocolError, match="COMMIT failed: the runtime was built without a method"):
        client.commit(blob)
    assert sorted(protocol.Client(board()).hello()["methods"]) == sorted(methods.names(compressed=True))


@pytest.mark.parametrize("name", ["dense", "qgp", "smartdeal", "mlg", "escalate", "circulant"])
def test_blobs_keep_the_stored_weights_and_size_their_working_memory(name):
    """The blob carries each layer's weights in the model file's stored form (its bits, not a decoded
    copy), and its header the working memory the interpreter will take: two activation buffers and the
    largest decoding scratch (SmartDeal: basis and one filter; MLG: W1, one filter, the basis and the bo
    level-1 outputs of its factored evaluation; ESCALATE:
    basis and one filter; circulant: the input spectra and one transform)."""
    from insitu.golden import circulant, escalate as golden_escalate, mlg as golden_mlg, smartdeal as golden_smartdeal
    from insitu.soc.modelblob import HEADER, LAYER_FIELDS, payload_offset, working_bytes
    model = modelfile.load(MODELS / f"digits-{name}.npz")
    blob = pack_model(model)
    header = dict(zip(HEADER, struct.unpack_from(f"<{len(HEADER)}I", blob)))
    records = [dict(zip(LAYER_FIELDS, struct.unpack_from(f"<{len(LAYER_FIELDS)}I", blob, 4 * len(HEADER) + 4 * len(LAYER_FIELDS) * n)))
               for n in range(len(model.layers))]
    assert header["total_bytes"] == len(blob) and records[0]["w_off"] == payload_offset(len(model.layers))
    scratch = 0
    for layer, rec in zip(model.layers, records):
        if not layer.is_weight:
            continue
        c_in = int(np.prod(layer.in_shape))
        stored = bytes(blob[rec["w_off"]:rec["w_off"] + rec["w_bytes"]])
        if layer.method == "smartdeal":
            sd = golden_smartdeal.unpack(layer.data["image"].tobytes())
            assert stored == golden_smartdeal.bit_stream(layer.data["image"].tobytes())[0]
            scratch = max(scratch, 9 * (layer.shape[0] // sd.group_size) + 3 * -(-np.prod(layer.shape[1:]) // 3))
        elif layer.method == "mlg":
            g = golden_mlg.unpack(layer.data["image"].tobytes())
            assert stored == golden_mlg.bit_stream(layer.data["image"].tobytes())[0]
            kk = g.k * g.k
            out_pixels = int(np.prod(layer.out_shape[1:])) if layer.kind == "conv2d" else 1
            scratch = max(scratch, (g.bo + 1) * g.c_in * kk + g.bo * g.bi * kk + g.bo * out_pixels)
        elif layer.method == "escalate":
            e = layer.entry.decode(layer)
            assert stored == golden_escalate.bit_stream(layer.data["image"].tobytes())[0]
            scratch = max(scratch, e.basis.size + e.c_out + e.bases * int(np.prod(layer.out_shape[1:])))
        elif layer.method == "circulant":
            c = layer.entry.decode(layer)
            assert rec["w_bytes"] * 8 == circulant.storage_bits(c) * 16 // c.spectrum_width
            scratch = max(scratch, (c_in // c.k) * (c.k + 2) + 2 * c.k)
        elif layer.method == "dense":
            assert stored == np.asarray(layer.data["codes"]).astype(np.int8).tobytes()
    assert header["scratch_words"] == scratch
    assert working_bytes(blob) == 4 * (2 * header["max_activation"] + scratch)


def test_the_first_wait_covers_the_software_path():
    """The first INFER is one image, waited for well beyond the software path's measured cost (dense digits:
    26.8 M cycles, 2.2 s at 12 MHz, more than the old fixed 2 s)."""
    from insitu.tools.deploy import SIM_CLOCK_HZ, first_image_wait
    dense = modelfile.load(MODELS / "digits-dense.npz")
    assert first_image_wait(dense) > 2 * 26.8e6 / SIM_CLOCK_HZ
    assert first_image_wait(random_model({"input": [4], "layers": [{"kind": "linear", "features": 2}]}, 0)) == 2.0


def test_models_the_runtime_cannot_run_are_refused_by_layer():
    model = modelfile.load(MODELS / "digits-float.npz")
    with pytest.raises(InputError, match="Layer conv1 is float: the firmware runtime runs dense, qgp, smartdeal"):
        pack_model(model)
    narrow = random_model(ODD, 1)
    narrow.formats["act_width"] = 6
    with pytest.raises(InputError, match="8-bit activations, not act_width 6"):
        pack_model(narrow)


# ------------------------------------------------------------------------------------- your own firmware

def _run_c(tmp_path, source, **layout):
    import io

    from insitu.tools.firmware_run import run_firmware
    out = io.BytesIO()
    code, cycles, _ = run_firmware([source], build_dir=tmp_path / "build", out=out, progress=lambda *a: None,
                                   **layout)
    return code, out.getvalue().decode()


def test_division_modulo_and_printf_follow_c(tmp_path):
    """The runtime's helpers against C's rules (quotients truncate, remainders take the dividend's sign)
    and printf against Python's %-formatting, which follows C's for these conversions."""
    pytest.importorskip("ziglang")
    rng = np.random.default_rng(8)
    extremes = [(-2**31, -1), (-2**31, 1), (2**31 - 1, -1), (-7, 2), (7, -2), (0, 5), (-2**31, -2**31)]
    pairs = extremes + [(int(n), int(d) or 3) for n, d in zip(rng.integers(-2**31, 2**31, 150),
                                                           rng.integers(-70000, 70000, 150))]
    wide = [(int(n), int(d) or 1) for n, d in zip(rng.integers(0, 2**63, 40, dtype=np.uint64),
                                                  rng.integers(1, 2**40, 40, dtype=np.uint64))]
    formats = [("%d", -42), ("%5d", 42), ("%-5d|", 42), ("%05d", -42), ("%x", 48879), ("%08X", 48879),
               ("%u", 4000000000), ("%c", 65), ("%s", "text"), ("%-6s|", "ab"), ("%3s", "long"), ("%%", None),
               ("%lld", -123456789012345), ("%llu", 18446744073709551615), ("%o", 8)]
    c = ["#include <stdio.h>", "#include <stdint.h>",
         f"static const int32_t P[][2] = {{{', '.join(f'{{{n}, {d}}}' if n != -2**31 else f'{{INT32_MIN, {d}}}' if d != -2**31 else '{INT32_MIN, INT32_MIN}' for n, d in pairs)}}};",
         f"static const uint64_t W[][2] = {{{', '.join(f'{{{n}ull, {d}ull}}' for n, d in wide)}}};",
         "int main(void) {",
         f"  for (int i = 0; i < {len(pairs)}; i++) {{ volatile int32_t n = P[i][0], d = P[i][1];",
         "    printf(\"%ld %ld %lu %lu\\n\", (long)(d == -1 && n == INT32_MIN ? n : n / d),"
         " (long)(d == -1 ? 0 : n % d), (unsigned long)((uint32_t)n / (uint32_t)d),"
         " (unsigned long)((uint32_t)n % (uint32_t)d)); }",
         f"  for (int i = 0; i < {len(wide)}; i++) {{ volatile uint64_t n = W[i][0], d = W[i][1];",
         "    printf(\"%llu %llu %lld\\n\", n / d, n % d, (long long)(-(int64_t)(n >> 1)) / (int64_t)d); }"]
    for fmt, value in formats:
        arg = "" if value is None else f', "{value}"' if isinstance(value, str) else \
            f", {value}{'ull' if 'll' in fmt else 'u' if value > 2**31 else ''}"
        c.append(f'  printf("{fmt}\\n"{arg});')
    c.append("  return 0; }")
    (tmp_path / "t.c").write_text("\n".join(c))
    code, out = _run_c(tmp_path, tmp_path / "t.c")
    assert code == 0
    lines = out.splitlines()

    def trunc(n, d):
        q = abs(n) // abs(d) * (1 if (n < 0) == (d < 0) else -1)
        return q, n - q * d
    expected = []
    for n, d in pairs:
        q, r = trunc(n, d)
        q = (q + 2**31) % 2**32 - 2**31                       # INT_MIN / -1 wraps, as RISC-V's does
        expected.append(f"{q} {0 if d == -1 else r} {(n % 2**32) // (d % 2**32)} {(n % 2**32) % (d % 2**32)}")
    for n, d in wide:
        expected.append(f"{n // d} {n % d} {trunc(-(n >> 1), d)[0]}")
    expected += [(fmt.replace("ll", "") % value if value is not None else "%") for fmt, value in formats]
    assert lines == expected


@pytest.mark.parametrize("layout", [{"ram_size": 65536}, {"ram_size": 65536, "rom_size": 16384}],
                         ids=["ram", "rom+spram"])
def test_a_portable_benchmark_runs_with_only_a_port_file(tmp_path, layout):
    """Plain C99 with hosted headers (stdio, stdlib, string), / and % and printf: only port.h is ours."""
    pytest.importorskip("ziglang")
    import shutil
    here = FIRMWARE_DIR.parent.parent / "tests" / "firmware"
    for name in ("bench.c", "port.h"):
        shutil.copy(here / name, tmp_path / name)
    code, out = _run_c(tmp_path, tmp_path / "bench.c", **layout)
    assert code == 0, out
    assert f"crc32(512) {zlib.crc32(bytes(i % 251 for i in range(512))):08x}" in out
    assert "insitu: 0 failure(s)" in out and "gcd(1071, 462) 21" in out


def test_sim_firmware_cli_streams_output_and_returns_the_exit_code(tmp_path, monkeypatch, capfdbinary):
    pytest.importorskip("ziglang")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.c").write_text('#include <stdio.h>\nint helper(int);\nint main(void) { printf("n=%d\\n", '
                                  'helper(40)); return 3; }\n')
    (tmp_path / "b.c").write_text("int helper(int x) { return x / 7 + x % 7; }\n")
    assert main(["sim", "--firmware", "a.c", "b.c"]) == 3
    assert b"n=10\n" in capfdbinary.readouterr().out
    assert main(["sim", "--firmware", "missing.c"]) == 1
    assert "No such firmware source" in capfdbinary.readouterr().err.decode()
    (tmp_path / "loop.c").write_text("int main(void) { for (;;) ; }\n")
    assert main(["sim", "--firmware", "loop.c", "--max-cycles", "5000"]) == 1
    assert "did not exit within 5000 cycles" in capfdbinary.readouterr().err.decode()
    (tmp_path / "bad.c").write_text("int main(void) { return undefined_thing; }\n")
    assert main(["sim", "--firmware", "bad.c"]) == 1
    assert "undefined_thing" in capfdbinary.readouterr().err.decode()
    assert main(["sim", "--rom-size", "4096"]) == 1
    assert "--rom-size applies to --firmware runs only" in capfdbinary.readouterr().err.decode()


def test_serial_transport_over_a_pyserial_loopback():
    """The serial transport end to end through pyserial (its loop:// port echoes every byte): the
    driver's own requests come back, are recognised as not being replies, and it gives up in one line."""
    transport = protocol.SerialTransport("loop://", 115200)
    try:
        client = protocol.Client(transport, timeout=0.01, retries=1)
        with pytest.raises(protocol.LinkError, match=r"No good reply to ECHO after 2 attempts \(2 damaged or stray"):
            client.echo(b"\0ping\0")
        assert transport.bytes_out == transport.bytes_in == 2 * len(protocol.encode_frame(2, 1, b"\0ping\0"))
        assert client.stats["stale_replies"] == 2
    finally:
        transport.close()
