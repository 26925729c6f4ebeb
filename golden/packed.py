"""What the packed weight images (SmartDeal, MLG, ESCALATE) share: the bit stream they are written as, and
the integrity trailer, a CRC-32 of everything before it.

CRC-32 as in zlib (IEEE 802.3 polynomial 0x04C11DB7, reflected, initial and final XOR 0xFFFFFFFF), stored
little-endian in the last four bytes. Version 1 images had none; they are still read.
"""

import zlib

__all__ = ["seal", "unseal", "CRC_BYTES", "BitWriter"]

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


class BitWriter:
    """A little-endian bit stream, LSB first: ``put(value, width)`` appends the low ``width`` bits of
    ``value`` (two's complement for negatives); ``value`` and ``length`` are the stream so far."""

    def __init__(self):
        self.value, self.length = 0, 0

    def put(self, value, width):
        self.value |= (int(value) & ((1 << width) - 1)) << self.length
        self.length += width
