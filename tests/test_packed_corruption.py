"""Packed weight images under corruption: every corrupted SmartDeal or MLG image raises the format error
(the CRC-32 trailer, then every size checked against the payload before allocating); none decodes to other
weights, none allocates from unchecked header sizes. Model files: the zip container's CRC-32 covers every array."""

import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from insitu.golden import mlg, modelfile, smartdeal
from insitu.golden.packed import seal


def _smartdeal_image():
    w = np.random.default_rng(0).normal(size=(8, 4, 3, 3))
    layer, _ = smartdeal.decompose(w, group_size=4, basis_bits=6, e_range=(-6, 1), density=0.4)
    return smartdeal.pack(layer), smartdeal.unpack, smartdeal.FormatError


def _mlg_image():
    w = np.random.default_rng(1).normal(size=(8, 4, 3, 3))
    layer, _ = mlg.decompose(w, 2, 4, iterations=5)
    return mlg.pack(layer), mlg.unpack, mlg.FormatError


IMAGES = {"smartdeal": _smartdeal_image(), "mlg": _mlg_image()}


def _mutate(data, kind, pos, value):
    if not data:
        return bytes([value]) if kind == "insert" else data
    pos %= len(data)
    if kind == "flip":
        return data[:pos] + bytes([data[pos] ^ (value or 1)]) + data[pos + 1:]
    if kind == "truncate":
        return data[:pos]
    if kind == "insert":
        return data[:pos] + bytes([value]) + data[pos:]
    return data[:pos] + data[pos + 1:]                    # delete


@pytest.mark.parametrize("fmt", list(IMAGES))
@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert", "delete"]),
                                    st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=3))
def test_every_corruption_is_refused(fmt, mutations):
    image, unpack, error = IMAGES[fmt]
    data = image
    for kind, pos, value in mutations:
        data = _mutate(data, kind, pos, value)
    if data == image:
        return
    with pytest.raises(error):
        unpack(data)


def test_smartdeal_header_sizes_are_checked_before_allocating():
    """A header claiming 65535 x 65535 x 65535 x 1 weights over a few payload bits (with a valid CRC)."""
    header = smartdeal._HEADER.pack(smartdeal.MAGIC, smartdeal.VERSION, 4, 65535, 65535, 65535, 1, 65535, 6, 0,
                                    -6, 1)
    crafted = seal(header + struct.pack("<I", 64) + bytes(8))
    tracemalloc.start()
    with pytest.raises(smartdeal.FormatError, match=r"needs more than the 64 payload bits$"):
        smartdeal.unpack(crafted)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


def test_smartdeal_refuses_out_of_range_header_fields():
    image = bytearray(IMAGES["smartdeal"][0][:-4])
    image[17] = 0x80                                             # basis_frac = -128
    with pytest.raises(smartdeal.FormatError, match=r"^SmartDeal header is corrupt"):
        smartdeal.unpack(seal(bytes(image)))


def test_crc_is_zlib_crc32_little_endian():
    image = IMAGES["mlg"][0]
    assert image[-4:] == zlib.crc32(image[:-4]).to_bytes(4, "little")


def test_version_1_images_still_read():
    """Version 1 (no trailer): the committed digits models hold such images."""
    for fmt in IMAGES:
        image, unpack, _ = IMAGES[fmt]
        v1 = bytearray(image[:-4])
        v1[4] = 1
        a, b = unpack(bytes(v1)), unpack(image)
        assert all(np.array_equal(x, y) for x, y in zip(vars(a).values(), vars(b).values())
                   if isinstance(x, np.ndarray))


def test_model_file_members_are_crc_checked(tmp_path):
    from insitu.tools.evaluate import MODEL_DIR
    data = bytearray(open(f"{MODEL_DIR}/digits-qgp.npz", "rb").read())
    spots = [i for i in range(len(data) // 4, len(data) // 2, 97)]
    for n, spot in enumerate(spots[:20]):
        bad = bytearray(data)
        bad[spot] ^= 0x5A
        path = tmp_path / f"m{n}.npz"
        path.write_bytes(bytes(bad))
        with pytest.raises(modelfile.ModelFormatError):
            modelfile.load(path)
