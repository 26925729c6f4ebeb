"""golden.smartdeal: reconstruction, the packed format (round trip and corrupt data), decomposition."""

import numpy as np
import pytest

from insitu.golden import smartdeal as S


def loop_reconstruct(layer):
    """Σ ±(B[j, :] << (e_j − e_min)) row by row, written out."""
    c_out, s, _ = layer.zero.shape
    out = np.zeros((c_out, s, 3), dtype=np.int64)
    for o in range(c_out):
        basis = layer.basis[o // layer.group_size]
        for r in range(s):
            for j in range(3):
                if not layer.zero[o, r, j]:
                    term = basis[j].astype(np.int64) << int(layer.exp[o, r, j] - layer.e_min)
                    out[o, r] += -term if layer.sign[o, r, j] else term
    size = int(np.prod(layer.shape[1:]))
    return out.reshape(c_out, -1)[:, :size].reshape(layer.shape)


@pytest.mark.parametrize("shape, group", [((8, 4, 3, 3), 1), ((8, 4, 3, 3), 4), ((6, 5, 1, 1), 2), ((10, 7), 5)])
def test_reconstruct_and_round_trip(shape, group):
    rng = np.random.default_rng(sum(shape))
    layer, error = S.decompose(rng.normal(size=shape), group_size=group, threshold=0.1)
    assert error < 0.5
    np.testing.assert_array_equal(S.reconstruct(layer), loop_reconstruct(layer))
    assert S.reconstruct(layer).shape == shape
    back = S.unpack(S.pack(layer))
    for field in ("basis", "zero", "sign", "exp"):
        np.testing.assert_array_equal(getattr(back, field), getattr(layer, field))
    assert back.shape == layer.shape and back.basis_frac == layer.basis_frac
    assert S.storage_bits(layer) == 8 * len(S.pack(layer))


def test_threshold_trades_error_for_sparsity_and_bits():
    w = np.random.default_rng(1).normal(size=(16, 16, 3, 3))
    dense, e0 = S.decompose(w, threshold=0.0)
    sparse, e1 = S.decompose(w, threshold=0.4)
    assert sparse.zero.mean() > dense.zero.mean() + 0.2
    assert e1 > e0 and S.storage_bits(sparse) < S.storage_bits(dense)


def test_zero_rows_are_skipped_in_the_image():
    w = np.random.default_rng(2).normal(size=(4, 4, 3, 3))
    w[:, :2] = 0                                   # half of every filter's rows are zero
    layer, _ = S.decompose(w)
    assert layer.zero[:, :6].all()
    half, _ = S.decompose(w[:, 2:])
    # each skipped row costs exactly one bit
    assert len(S.pack(layer)) * 8 - len(S.pack(half)) * 8 <= 4 * 6 + 8


def corrupt(data, offset, value):
    data = bytearray(data)
    data[offset] = value
    return bytes(data)


@pytest.fixture(scope="module")
def image():
    layer, _ = S.decompose(np.random.default_rng(3).normal(size=(4, 4, 3, 3)))
    return S.pack(layer)


@pytest.mark.parametrize("mangle, msg", [
    (lambda d: d[:10], r"^SmartDeal data is truncated: 10 bytes, the header alone needs \d+$"),
    (lambda d: b"XXXX" + d[4:], r"^Not SmartDeal data \(magic b'XXXX', expected b'SDL1'\)$"),
    (lambda d: corrupt(d, 4, 9), r"^Unsupported SmartDeal format version 9 \(this reads 1 and 2\)$"),
    (lambda d: d[:-3], r"^SmartDeal payload is \d+ bytes, the header says \d+: truncated or padded$"),
    (lambda d: d + b"\0", r"^SmartDeal payload is \d+ bytes, the header says \d+: truncated or padded$"),
    (lambda d: corrupt(d, 5, 3), r"^SmartDeal header is corrupt"),
])
def test_corrupt_images_are_refused(image, mangle, msg):
    with pytest.raises(S.FormatError, match=msg):
        S.unpack(mangle(image))


def test_out_of_range_exponent_code_is_refused():
    # e in [-7, 5]: 13 values in 4-bit codes, so codes 13..15 are invalid.
    layer, _ = S.decompose(np.ones((1, 1, 3, 3)))
    layer = S.SmartDealLayer(**{**layer.__dict__, "zero": np.zeros_like(layer.zero),
                                "exp": np.full(layer.exp.shape, 5 + 3)})
    with pytest.raises(S.FormatError, match=r"^SmartDeal exponent code 15 is outside the range \[-7, 5\]$"):
        S.unpack(S.pack(layer))


@pytest.mark.parametrize("call, msg", [
    (lambda: S.decompose(np.ones((6, 2, 3, 3)), group_size=4),
     r"^Group size must be a positive integer dividing 6, not 4$"),
    (lambda: S.decompose(np.ones((6, 2, 3))), r"^Weights must be shaped \(c_out, c_in, k, k\) or \(out, in\)"),
    (lambda: S.decompose(np.ones((6, 2)), e_range=(3, 1)), r"^Exponent range must be two integers"),
    (lambda: S.decompose(np.ones((6, 2)), basis_bits=1), r"^Basis bits must be an integer in range \[2, 16\]"),
])
def test_errors(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()


@pytest.mark.parametrize("density", [0.5, 0.2, 0.05])
def test_density_keeps_that_fraction(density):
    w = np.random.default_rng(11).normal(size=(8, 16, 3, 3))
    layer, _ = S.decompose(w, group_size=8, density=density)
    kept = np.mean(~layer.zero)
    assert kept <= density + 0.01 and kept >= density * 0.6
    assert S.storage_bits(layer) < S.storage_bits(S.decompose(w, group_size=8)[0])


def test_density_error():
    with pytest.raises(ValueError, match=r"^Density must be a number in \(0, 1\], not 0$"):
        S.decompose(np.ones((2, 2, 3, 3)), density=0)


def test_format_pinned_by_a_hand_made_image():
    """Version 2 (and 1) byte for byte, written from the format description, not from pack(): a 1×3 linear
    layer, 4-bit basis, exponents [0, 1] (1-bit codes), one row: +2¹, zero, −2⁰."""
    import zlib
    basis = np.array([[[1, 2, 3], [-1, 0, 7], [-8, 4, 5]]])
    layer = S.SmartDealLayer(shape=(1, 3), group_size=1, basis=basis, basis_bits=4, basis_frac=0,
                             zero=np.array([[[False, True, False]]]), sign=np.array([[[False, False, True]]]),
                             exp=np.array([[[1, 0, 0]]]), e_min=0, e_max=1)
    header = (b"SDL1" + bytes([2, 2]) + bytes([1, 0, 3, 0, 0, 0, 0, 0])      # magic, version, ndim, dims (u16)
              + bytes([1, 0, 4, 0, 0, 1]))                                   # group (u16), bits, frac, e_min, e_max
    # 44 payload bits: nine 4-bit basis codes 1,2,3,-1,0,7,-8,4,5 (nibbles LSB first), then the row:
    # skip 0 | zero 0, sign 0, exp 1 | zero 1 | zero 0, sign 1, exp 0  ->  0b01011000
    payload = bytes([0x21, 0xF3, 0x70, 0x48, 0x85, 0x05])
    body = header + (44).to_bytes(4, "little") + payload
    image = body + zlib.crc32(body).to_bytes(4, "little")                    # CRC-32 (zlib's, ISO-HDLC)
    assert S.pack(layer) == image
    for data in (image, b"SDL1" + bytes([1]) + body[5:]):                   # version 2, and version 1 (no CRC)
        back = S.unpack(data)
        np.testing.assert_array_equal(back.basis, basis)
        np.testing.assert_array_equal(S.reconstruct(back), S.reconstruct(layer))
