"""golden.mlg: generation equals a plain evaluation of the factor products; decomposition and storage."""

import numpy as np
import pytest

from insitu.golden import mlg


def structured(rng, c_out=16, c_in=16, k=3, bo=4, bi=3):
    basis = rng.normal(size=(bo, bi, k * k))
    u = rng.normal(size=(bo, c_in, bi))
    v = rng.normal(size=(c_out, bo))
    w1 = np.einsum("bci,bit->bct", u, basis).reshape(bo, -1)
    return (v @ w1).reshape(c_out, c_in, k, k)


@pytest.mark.parametrize("seed", range(5))
def test_generate_equals_loop_evaluation(seed):
    rng = np.random.default_rng(seed)
    c_out, c_in = (int(v) for v in rng.integers(1, 9, size=2))
    k = int(rng.choice([1, 3, 5]))
    bo, bi = int(rng.integers(1, min(c_out, c_in * k * k) + 1)), int(rng.integers(1, min(c_in, k * k) + 1))
    layer, _ = mlg.decompose(rng.normal(size=(c_out, c_in, k, k)), bi, bo, bits=(3, 6, 3), iterations=3)
    expected = np.zeros((c_out, c_in * k * k), dtype=np.int64)
    for o in range(c_out):
        for b in range(bo):
            for ci in range(c_in):
                for t in range(k * k):
                    level1 = sum(int(layer.u[b, ci, i]) * int(layer.basis[b, i, t]) for i in range(bi))
                    expected[o, ci * k * k + t] += int(layer.v[o, b]) * level1
    np.testing.assert_array_equal(mlg.generate(layer), expected.reshape(c_out, c_in, k, k))


def test_codes_are_odd_and_in_range():
    rng = np.random.default_rng(1)
    layer, _ = mlg.decompose(rng.normal(size=(16, 16, 3, 3)), 3, 4, bits=(3, 6, 3))
    for codes, bits in zip((layer.basis, layer.u, layer.v), layer.bits):
        assert np.all(codes % 2 == 1) and np.abs(codes).max() <= (1 << bits) - 1


@pytest.mark.parametrize("bits, bound", [((3, 6, 3), 0.35), ((6, 6, 6), 0.08), ((12, 12, 12), 0.005)])
def test_structured_layer_error_falls_with_bits(bits, bound):
    """A layer that has the MLG structure is recovered up to the quantisation error."""
    layer, error = mlg.decompose(structured(np.random.default_rng(2)), 3, 4, bits=bits)
    assert error < bound


def test_full_rank_high_precision_is_exact():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(8, 4, 3, 3))
    _, error = mlg.decompose(w, 4, 8, bits=(16, 16, 16))
    assert error < 1e-3


def test_quantize_odd_least_squares_scale():
    x = np.array([0.1, -0.4, 0.9, -1.0])
    codes, scale = mlg.quantize_odd(x, 2)
    assert set(np.abs(codes)) <= {1, 3}
    assert scale == pytest.approx(np.sum(codes * x) / np.sum(codes * codes))


def test_storage_16_to_16_3x3():
    rng = np.random.default_rng(4)
    layer, _ = mlg.decompose(rng.normal(size=(16, 16, 3, 3)), 3, 4, bits=(3, 6, 3))
    # basis 4·3·9 codes of 3 bits, u 4·16·3 of 6 bits, v 16·4 of 3 bits, padded to a byte, plus the
    # 33-byte header holding the three float32 scales, and the 4-byte CRC-32
    codes = 108 * 3 + 192 * 6 + 64 * 3
    assert mlg.storage_bits(layer) == 8 * (33 + (codes + 7) // 8 + 4) == 1968


@pytest.mark.parametrize("seed, bits", [(0, (3, 6, 3)), (1, (1, 1, 1)), (2, (5, 7, 16))])
def test_pack_round_trip(seed, bits):
    rng = np.random.default_rng(seed)
    layer, _ = mlg.decompose(rng.normal(size=(6, 5, 3, 3)), 2, 3, bits=bits, iterations=3)
    back = mlg.unpack(mlg.pack(layer))
    for name in ("basis", "u", "v"):
        np.testing.assert_array_equal(getattr(back, name), getattr(layer, name))
    assert back.bits == layer.bits and back.k == layer.k
    np.testing.assert_array_equal(np.float32(back.scales), np.float32(layer.scales))
    np.testing.assert_array_equal(mlg.generate(back), mlg.generate(layer))


def _image():
    layer, _ = mlg.decompose(np.random.default_rng(3).normal(size=(4, 3, 3, 3)), 2, 2, iterations=2)
    return mlg.pack(layer)


@pytest.mark.parametrize("corrupt, msg", [
    (lambda d: d[:20], r"^MLG data is truncated: 20 bytes, the header alone needs 33$"),
    (lambda d: b"XXXX" + d[4:], r"^Not MLG data \(magic b'XXXX', expected b'MLG1'\)$"),
    (lambda d: d[:4] + b"\x07" + d[5:], r"^Unsupported MLG format version 7 \(this reads 1 and 2\)$"),
    (lambda d: d[:5] + b"\x00" + d[6:], r"^MLG header is corrupt"),
    (lambda d: d[:-1], r"^MLG payload is \d+ bytes, the header says \d+: truncated or padded$"),
    (lambda d: d + b"\x00", r"^MLG payload is \d+ bytes, the header says \d+: truncated or padded$"),
    (lambda d: d[:29] + (int.from_bytes(d[29:33], "little") + 1).to_bytes(4, "little") + d[33:],
     r"^MLG header says \d+ payload bits, its shapes need \d+$"),
])
def test_unpack_corrupt(corrupt, msg):
    with pytest.raises(mlg.FormatError, match=msg):
        mlg.unpack(corrupt(_image()))


def test_unpack_stray_bits():
    from insitu.golden.packed import seal
    data = bytearray(_image()[:-4])                  # without the CRC-32, resealed below
    length = int.from_bytes(data[29:33], "little")
    assert length % 8, "the image must end in padding bits for this test"
    data[-1] |= 0x80
    with pytest.raises(mlg.FormatError, match=r"^MLG payload has bits set after the last code$"):
        mlg.unpack(seal(bytes(data)))


@pytest.mark.parametrize("call, msg", [
    (lambda: mlg.decompose(np.zeros((4, 4, 3)), 1, 1), r"^Weights must be shaped \(c_out, c_in, k, k\)"),
    (lambda: mlg.decompose(np.ones((4, 4, 3, 3)), 1, 5), r"^bo must be an integer in range \[1, 4\], not 5$"),
    (lambda: mlg.decompose(np.ones((4, 4, 3, 3)), 5, 2), r"^bi must be an integer in range \[1, 4\], not 5$"),
    (lambda: mlg.quantize_odd(np.ones(3), 0), r"^Quantiser bits must be an integer in range \[1, 16\], not 0$"),
    (lambda: mlg.decompose(np.ones((4, 4, 3, 3)), 1, 1, bits=(3, 3)), r"^Bits must be a \(basis, u, v\) triple"),
])
def test_errors(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()


def test_format_pinned_by_a_hand_made_image():
    """Version 2 (and 1) byte for byte, written from the format description, not from pack(): k = 1,
    bo = bi = c_in = 1, c_out = 2, code widths (2, 2, 1), scales 0.5, 0.25, 2."""
    import struct
    import zlib
    layer = mlg.MLGLayer(basis=np.array([[[3]]]), u=np.array([[[-1]]]), v=np.array([[1], [-1]]),
                       scales=(0.5, 0.25, 2.0), bits=(2, 2, 1), k=1)
    header = (b"MLG1" + bytes([2, 1]) + bytes([1, 0, 1, 0, 1, 0, 2, 0]) + bytes([2, 2, 1])
              + bytes.fromhex("0000003f" "0000803e" "00000040") + (6).to_bytes(4, "little"))
    # codes stored as (c + 2**b − 1) / 2, LSB first: basis 3 -> 0b11, u -1 -> 0b01, v 1 -> 1, v -1 -> 0
    body = header + bytes([0b010111])
    image = body + zlib.crc32(body).to_bytes(4, "little")
    assert struct.unpack("<3f", header[17:29]) == (0.5, 0.25, 2.0)
    assert mlg.pack(layer) == image
    for data in (image, b"MLG1" + bytes([1]) + body[5:]):
        back = mlg.unpack(data)
        np.testing.assert_array_equal(mlg.generate(back), mlg.generate(layer))
        assert back.scales == layer.scales and back.bits == layer.bits
