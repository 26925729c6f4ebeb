"""The DFU file suffix (USB DFU 1.1, appendix B), so that OrangeCrab builds need no system ``dfu-suffix``.

A DFU file is the firmware followed by a 16-byte suffix, all fields little-endian: ``bcdDevice``,
``idProduct``, ``idVendor``, ``bcdDFU`` (0x0100), the signature ``"UFD"``, ``bLength`` (16), and ``dwCRC``:
the CRC-32 (IEEE polynomial, reflected, initial value 0xFFFFFFFF, *no* final inversion, i.e. the
complement of zlib's) of everything before it, suffix fields included. The command line takes the same
options as dfu-util's ``dfu-suffix`` for adding one (``-v VID -p PID [-d DEVICE] -a FILE``), which is how
amaranth-boards' OrangeCrab platform calls it (``DFU_SUFFIX`` names the program).
"""

import argparse
import os
import sys
import zlib

from ..hdl.params import ParameterError

__all__ = ["add_suffix", "has_suffix", "suffix", "main", "SUFFIX_LENGTH"]

SUFFIX_LENGTH = 16


def _crc(data):
    return zlib.crc32(data) ^ 0xFFFFFFFF


def suffix(data, vendor, product, device=0xFFFF):
    """The 16 suffix bytes for firmware ``data``."""
    for name, value in (("vendor", vendor), ("product", product), ("device", device)):
        if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            raise ParameterError(f"DFU {name} ID must be a 16-bit number, not {value!r}")
    head = device.to_bytes(2, "little") + product.to_bytes(2, "little") + vendor.to_bytes(2, "little") + \
        (0x0100).to_bytes(2, "little") + b"UFD" + bytes([SUFFIX_LENGTH])
    return head + _crc(bytes(data) + head).to_bytes(4, "little")


def has_suffix(data):
    """Whether ``data`` already ends in a valid DFU suffix."""
    data = bytes(data)
    return len(data) >= SUFFIX_LENGTH and data[-8:-5] == b"UFD" and data[-5] == SUFFIX_LENGTH and \
        _crc(data[:-4]) == int.from_bytes(data[-4:], "little")


def add_suffix(data, vendor, product, device=0xFFFF):
    """``data`` with a DFU suffix; a ValueError when it already has one."""
    if has_suffix(data):
        raise ParameterError("the file already has a DFU suffix")
    return bytes(data) + suffix(data, vendor, product, device)


def _hex(text):
    try:
        return int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a hexadecimal ID, not {text!r}") from None


def main(argv=None):
    p = argparse.ArgumentParser(prog="insitu-dfu-suffix", description="Add a DFU suffix to a file (as dfu-suffix -a).")
    p.add_argument("-v", "--vid", type=_hex, default=0xFFFF, help="vendor ID (hex)")
    p.add_argument("-p", "--pid", type=_hex, default=0xFFFF, help="product ID (hex)")
    p.add_argument("-d", "--did", type=_hex, default=0xFFFF, help="device release (hex)")
    p.add_argument("-a", "--add", metavar="FILE", required=True, help="file to add the suffix to, in place")
    args = p.parse_args(argv)
    try:
        with open(args.add, "rb") as f:
            data = f.read()
        out = add_suffix(data, args.vid, args.pid, args.did)
        tmp = args.add + ".tmp"
        with open(tmp, "wb") as f:
            f.write(out)
        os.replace(tmp, args.add)
    except (OSError, ValueError) as error:
        print(f"insitu-dfu-suffix: {args.add}: {getattr(error, 'strerror', None) or error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
