"""What the packed weight images (SmartDeal, MLG, ESCALATE) share: the bit stream they are written as, and
the integrity trailer, a CRC-32 of everything before it.

CRC-32 as in zlib (IEEE 802.3 polynomial 0x04C11DB7, reflected, initial and final XOR 0xFFFFFFFF), stored
little-endian in the last four bytes. Version 1 images had none; they are still read.
"""

import zlib

__all__ = ["seal", "unseal", "CRC_BYTES", "BitWriter", "BitReader"]

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


class BitReader:
    """Reads what :class:`BitWriter` wrote: ``take(width)`` the next ``width`` bits (unsigned),
    ``signed(width)`` as two's complement. Reading past ``length`` bits raises ``error(message)``;
    ``left`` is the number of bits not read yet."""

    def __init__(self, payload, length, error, message):
        self.value, self.length, self.pos = int.from_bytes(payload, "little"), length, 0
        self._error, self._message = error, message

    left = property(lambda self: self.length - self.pos)

    def take(self, width):
        if self.pos + width > self.length:
            raise self._error(self._message)
        field = (self.value >> self.pos) & ((1 << width) - 1)
        self.pos += width
        return field

    def signed(self, width):
        field = self.take(width)
        return field - (1 << width) if field >> (width - 1) else field
