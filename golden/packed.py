"""The integrity trailer shared by the packed weight images (SmartDeal, MLG): a CRC-32 of everything before it.

CRC-32 as in zlib (IEEE 802.3 polynomial 0x04C11DB7, reflected, initial and final XOR 0xFFFFFFFF), stored
little-endian in the last four bytes. Version 1 images had none; they are still read.
"""

import zlib

__all__ = ["seal", "unseal", "CRC_BYTES"]

CRC_BYTES = 4


def seal(data):
    """``data`` followed by its CRC-32."""
    return bytes(data) + zlib.crc32(data).to_bytes(CRC_BYTES, "little")


def unseal(data, error, what):
    """``data`` without its trailer; raise ``error`` (one line naming ``what``) when the CRC-32 does not match."""
    body, stored = data[:-CRC_BYTES], int.from_bytes(data[-CRC_BYTES:], "little")
    actual = zlib.crc32(body)
    if actual != stored:
        raise error(f"{what} image is corrupt: CRC-32 {actual:08x}, the image says {stored:08x}")
    return body
