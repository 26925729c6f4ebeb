"""The host ↔ board protocol over the UART, its host driver and its transports.

Frames
------
Each frame is COBS-encoded (Consistent Overhead Byte Stuffing, the ``cobs`` package on the host,
``protocol.c`` in the firmware) and ends with a zero byte, so a receiver finds the next frame after any
loss by waiting for the next zero. Decoded, a frame is::

    command  u8     request: a COMMAND; reply: the request's command | 0x80; NAK (0x7f): bad frame received
    seq      u8     request: chosen by the host, +1 per new request; reply: the request's
    length   u16    payload bytes (little endian), at most MAX_PAYLOAD
    payload  length bytes
    crc      u32    CRC-32 (IEEE 802.3, the one of zlib.crc32: reflected, polynomial 0x04C11DB7, initial
                    and final XOR 0xFFFFFFFF) of command … payload, little endian

A reply's payload starts with a status byte (:data:`STATUS`), then the command's data.

Delivery: the host sends one request and waits for its reply (stop and wait). A request whose reply does
not arrive in time, or arrives corrupted, is sent again with the same ``seq``. The firmware keeps its
last reply: a request with the ``seq`` and command it has just answered is answered again from that
copy, never executed twice. The host keeps only the reply whose ``seq`` matches the outstanding request,
so a late or duplicated reply is dropped. Together, every request takes effect once and every result
arrives once, or the driver stops with :class:`LinkError` when the retries are exhausted.

Commands (payloads are little endian)
-------------------------------------
``HELLO``     → version u16, max_payload u16, capabilities u32, model_capacity u32 (bytes for a loaded
              model and its working memory, :func:`insitu.soc.modelblob.working_bytes`), input_capacity u32,
              result_capacity u16, baked u16 (the baked model's COMMIT status; "no model loaded": none),
              peripherals u16, then per peripheral: kind u8, name (NUL-terminated)
``ECHO``      data → data (link tests)
``WRITE``     region u8 (0 model, 1 inputs), 3 reserved bytes, offset u32, data → nothing. Idempotent.
``COMMIT``    length u32, crc u32 of the model blob in the model region → layers u16, input_bytes u32,
              outputs u16, accelerated u16 (layers bound to a peripheral, their weights loaded into it)
``INFER``     first u16, count u16, flags u8 (bit 0: use the peripherals) → count u16, cycles u64: runs the
              images at input_bytes × [first, first + count) of the input region
``RESULTS``   first u16, count u16 → per image: class u8, cycles u32, outputs × score i32
"""

import struct
import time
import zlib

from .modelblob import METHODS

__all__ = ["COMMANDS", "STATUS", "VERSION", "MAX_PAYLOAD", "encode_frame", "decode_frame", "Client",
           "LinkError", "ProtocolError", "SimTransport", "SerialTransport", "FaultyTransport", "c_header"]

VERSION = 1
MAX_PAYLOAD = 256
HEADER = struct.Struct("<BBH")
NAK = 0x7F
REPLY = 0x80
#: CRC-32's polynomial 0x04C11DB7, bit-reversed as the reflected (LSB-first) computation uses it
CRC_POLY_REFLECTED = int(f"{0x04C11DB7:032b}"[::-1], 2)

COMMANDS = {"HELLO": 0x01, "ECHO": 0x02, "WRITE": 0x03, "COMMIT": 0x04, "INFER": 0x05, "RESULTS": 0x06}
#: status code → (name in the firmware's header, message)
STATUS = {0: ("OK", "ok"), 1: ("BAD_COMMAND", "unknown command"), 2: ("MALFORMED", "malformed request"),
          3: ("RANGE", "out of range"), 4: ("NO_MODEL", "no model loaded"),
          5: ("BAD_CRC", "the model blob is corrupt (CRC)"), 6: ("BAD_MODEL", "the model blob is invalid"),
          7: ("NO_ROOM", "the model does not fit"), 8: ("ACCEL_ERROR", "an accelerator reported an error"),
          9: ("UNSUPPORTED", "the runtime was built without a method the model uses")}
REGIONS = {"model": 0, "inputs": 1}
CAPABILITIES = {"baked_model": 1, "software_path": 2, "accelerator_path": 4}
#: capability bit METHODS_SHIFT + n: the runtime runs layers of the method whose blob code is n
#: (:data:`insitu.soc.modelblob.METHODS`)
METHODS_SHIFT = 8


class LinkError(RuntimeError):
    """The board did not answer (after the retries), or the link is unusable."""


class ProtocolError(RuntimeError):
    """The board answered with an error status, or with something this driver does not understand."""


def _cobs():
    try:
        from cobs import cobs
    except ImportError:
        raise LinkError("The host protocol needs the cobs package: pip install cobs") from None
    return cobs


def encode_frame(command, seq, payload=b""):
    """The bytes on the wire for one frame, the closing zero included."""
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"Payload of {len(payload)} bytes exceeds the protocol's {MAX_PAYLOAD}")
    body = HEADER.pack(command, seq, len(payload)) + payload
    return _cobs().encode(body + struct.pack("<I", zlib.crc32(body))) + b"\0"


def decode_frame(data):
    """``(command, seq, payload)`` of one frame's bytes (with or without the closing zero), or None when
    the bytes are not a valid frame (COBS, length or CRC)."""
    data = bytes(data).rstrip(b"\0")
    if not data or b"\0" in data:
        return None
    try:
        raw = _cobs().decode(data)
    except _cobs().DecodeError:
        return None
    if len(raw) < HEADER.size + 4:
        return None
    body, crc = raw[:-4], struct.unpack("<I", raw[-4:])[0]
    command, seq, length = HEADER.unpack_from(body)
    if zlib.crc32(body) != crc or length != len(body) - HEADER.size:
        return None
    return command, seq, body[HEADER.size:]


# ------------------------------------------------------------------------------------------- transports

class SimTransport:
    """The compiled SoC simulation as a byte pipe: bytes written go to the SoC's UART receive line, and
    reading runs the simulation until a frame's closing zero leaves the UART (or the time is up).
    Time is the simulation's: ``clock_hz`` converts the driver's timeouts to clocks."""

    def __init__(self, sim, *, clock_hz=12e6):
        self.sim, self.clock_hz = sim, clock_hz
        self.bytes_in = self.bytes_out = 0
        #: seconds one byte takes on the line (10 bits)
        self.byte_time = 10 * sim.clocks_per_bit / clock_hz
        self.exit_code = None

    def write(self, data):
        self.bytes_out += len(data)
        self.sim.send(data)

    def read_frame(self, timeout):
        """Bytes up to and including the next zero, or what arrived before ``timeout`` seconds passed."""
        code, data = self.sim.step(max(1, int(timeout * self.clock_hz)), stop_byte=0)
        self.bytes_in += len(data)
        if code is not None:
            self.exit_code = code
            raise LinkError(f"The firmware exited with code {code}")
        return data

    @property
    def seconds(self):
        return self.sim.cycles / self.clock_hz


class SerialTransport:
    """A serial port (pyserial): ``port`` is a device path such as ``/dev/ttyUSB1`` or a pyserial URL."""

    def __init__(self, port, baud=115200):
        try:
            import serial
        except ImportError:
            raise LinkError("Serial ports need pyserial: pip install pyserial") from None
        try:
            self.port = serial.serial_for_url(port, baudrate=baud, timeout=1)
        except (serial.SerialException, ValueError) as error:
            raise LinkError(f"Cannot open {port}: {error}") from None
        self.port.reset_input_buffer()
        self.bytes_in = self.bytes_out = 0
        self.byte_time = 10 / baud
        self._start = time.monotonic()

    def write(self, data):
        self.bytes_out += len(data)
        self.port.write(data)

    def read_frame(self, timeout):
        self.port.timeout = timeout
        data = self.port.read_until(b"\0")
        self.bytes_in += len(data)
        return data

    @property
    def seconds(self):
        return time.monotonic() - self._start

    def close(self):
        self.port.close()


class FaultyTransport:
    """Wraps a transport and damages bytes in both directions, seeded: each byte is dropped, corrupted
    (XOR with a random non-zero value) or duplicated, each with probability ``rate / 3``."""

    def __init__(self, inner, *, rate=0.01, seed=0):
        import numpy as np
        self.inner, self.rate = inner, rate
        self.rng = np.random.default_rng(seed)
        self.faults = {"dropped": 0, "corrupted": 0, "duplicated": 0}
        self._pending = b""

    def _damage(self, data):
        out = bytearray()
        for byte in data:
            r = self.rng.random()
            if r < self.rate / 3:
                self.faults["dropped"] += 1
            elif r < 2 * self.rate / 3:
                self.faults["corrupted"] += 1
                out.append(byte ^ int(self.rng.integers(1, 256)))
            elif r < self.rate:
                self.faults["duplicated"] += 1
                out += bytes([byte, byte])
            else:
                out.append(byte)
        return bytes(out)

    def write(self, data):
        self.inner.write(self._damage(data))

    def read_frame(self, timeout):
        # A damaged frame may hold a zero in its middle (a corruption) or lose its own (a drop): deliver up
        # to the first zero, keep the rest for the next read.
        if b"\0" not in self._pending:
            self._pending += self._damage(self.inner.read_frame(timeout))
        if b"\0" in self._pending:
            head, _, self._pending = self._pending.partition(b"\0")
            return head + b"\0"
        data, self._pending = self._pending, b""
        return data

    def __getattr__(self, name):
        return getattr(self.inner, name)


# ---------------------------------------------------------------------------------------------- driver

class Client:
    """The host side of the protocol over a transport (:class:`SimTransport`, :class:`SerialTransport`).

    ``timeout`` is the wait for one reply in seconds (the transport's time) besides the time the request
    and the longest reply take on the line; ``retries`` the number of times a request is sent again
    before :class:`LinkError`."""

    def __init__(self, transport, *, timeout=0.05, retries=20):
        self.transport, self.timeout, self.retries = transport, timeout, retries
        self.seq = 0
        self.chunk = MAX_PAYLOAD - 8           # bytes per WRITE
        self.stats = {"requests": 0, "retries": 0, "bad_frames": 0, "stale_replies": 0, "naks": 0}

    def request(self, command, payload=b"", *, timeout=None, retries=None):
        """Send ``command`` and return its reply's payload after the status byte; raises
        :class:`ProtocolError` on an error status, :class:`LinkError` when no reply arrives."""
        code = COMMANDS[command]
        retries = self.retries if retries is None else retries
        before = dict(self.stats)
        self.seq = (self.seq + 1) & 0xFF
        frame = encode_frame(code, self.seq, payload)
        self.stats["requests"] += 1
        wait = (self.timeout if timeout is None else timeout) + \
            (len(frame) + MAX_PAYLOAD + 16) * getattr(self.transport, "byte_time", 0)
        for attempt in range(retries + 1):
            if attempt:
                self.stats["retries"] += 1
            self.transport.write(frame)
            reply = self._await(code, wait)
            if reply is not None:
                break
        else:
            damaged = sum(self.stats[k] - before[k] for k in ("bad_frames", "naks", "stale_replies"))
            if damaged:
                raise LinkError(f"No good reply to {command} after {retries + 1} attempts ({damaged} damaged "
                                f"or stray frames): the link loses too much")
            raise LinkError(f"No reply to {command} after {retries + 1} attempts: the board does not answer "
                            f"(is the insitu runtime firmware running, at this baud rate?)")
        status, data = reply[0], reply[1:]
        if status:
            raise ProtocolError(f"{command} failed: {STATUS.get(status, ('', f'status {status}'))[1]}")
        return data

    def _await(self, code, wait):
        """The reply's payload, or None to send again (timeout, a damaged frame, a NAK)."""
        deadline = self.transport.seconds + wait
        while True:
            left = deadline - self.transport.seconds
            if left <= 0:
                return None
            data = self.transport.read_frame(left)
            if not data.endswith(b"\0"):
                return None                                # timed out mid-frame or in silence
            frame = decode_frame(data)
            if frame is None:
                self.stats["bad_frames"] += 1
                return None                                # damaged: ask again at once
            command, seq, payload = frame
            if command == NAK:
                self.stats["naks"] += 1
                return None
            if command != code | REPLY or seq != self.seq or not payload:
                self.stats["stale_replies"] += 1           # an earlier request's (late or duplicated) reply
                continue
            return payload

    # -- commands
    def hello(self):
        # the first contact may meet a board still starting (clearing its RAM): a longer wait
        data = self.request("HELLO", timeout=max(self.timeout, 0.25))
        version, max_payload, caps, model_cap, input_cap, result_cap, baked, count = \
            struct.unpack_from("<HHIIIHHH", data)
        if version != VERSION:
            raise ProtocolError(f"The board speaks protocol version {version}, this driver {VERSION}: rebuild "
                                f"the firmware (insitu build) or update insitu")
        names, rest = [], data[struct.calcsize("<HHIIIHHH"):]
        for _ in range(count):
            kind, rest = rest[0], rest[1:]
            name, _, rest = rest.partition(b"\0")
            names.append((kind, name.decode()))
        return {"version": version, "max_payload": max_payload,
                "capabilities": [k for k, bit in CAPABILITIES.items() if caps & bit],
                "methods": [name for name, code in METHODS.items() if name and caps >> (METHODS_SHIFT + code) & 1],
                "model_capacity": model_cap, "input_capacity": input_cap, "result_capacity": result_cap,
                "baked_model": None if not caps & CAPABILITIES["baked_model"] else STATUS.get(baked, ("", "?"))[1],
                "peripherals": names}

    def echo(self, data):
        return self.request("ECHO", data)

    def write(self, region, offset, data, *, progress=None):
        """Write ``data`` at ``offset`` of a region, in chunks of the largest payload; on a link that damages
        long frames the chunks are halved (down to 32 bytes) after a few failed attempts."""
        start = 0
        while start < len(data):
            part = bytes(data[start:start + self.chunk])
            small = self.chunk <= 32
            try:
                self.request("WRITE", struct.pack("<BxxxI", REGIONS[region], offset + start) + part,
                             retries=None if small else 3)
            except LinkError:
                if small:
                    raise
                self.chunk //= 2
                continue
            start += len(part)
            if progress:
                progress(start)

    def commit(self, blob):
        # the board checks the blob's CRC first: allow it about 200 clocks per byte at 12 MHz
        data = self.request("COMMIT", struct.pack("<II", len(blob), zlib.crc32(blob)),
                            timeout=self.timeout + len(blob) * 200 / 12e6)
        layers, input_bytes, outputs, accelerated = struct.unpack("<HIHH", data)
        return {"layers": layers, "input_bytes": input_bytes, "outputs": outputs, "accelerated_layers": accelerated}

    def infer(self, first, count, *, accelerate=False, timeout=None):
        data = self.request("INFER", struct.pack("<HHB", first, count, int(accelerate)), timeout=timeout)
        done, cycles = struct.unpack("<HQ", data)
        return done, cycles

    def results(self, first, count, outputs):
        """``count`` results from ``first``: as many per reply as fit; on a link that damages long frames,
        half as many after a few failed attempts (down to one)."""
        size = 5 + 4 * outputs
        per_frame = max(1, min(self.chunk, MAX_PAYLOAD - 1) // size)
        out, start = [], first
        while start < first + count:
            n = min(per_frame, first + count - start)
            try:
                data = self.request("RESULTS", struct.pack("<HH", start, n), retries=3 if n > 1 else None)
            except LinkError:
                if n == 1:
                    raise
                per_frame = max(1, n // 2)
                self.chunk = max(32, self.chunk // 2)
                continue
            if len(data) != n * size:
                raise ProtocolError(f"RESULTS: {len(data)} bytes for {n} results of {size}")
            start += n
            for i in range(n):
                cls, cycles = struct.unpack_from("<BI", data, i * size)
                scores = list(struct.unpack_from(f"<{outputs}i", data, i * size + 5))
                out.append({"class": cls, "cycles": cycles, "scores": scores})
        return out


def c_header():
    """``protocol.h`` for the firmware: the same numbers as this module."""
    lines = ["/* Generated from insitu.soc.protocol: do not edit. */", "#ifndef INSITU_PROTOCOL_H",
             "#define INSITU_PROTOCOL_H", f"#define PROTO_VERSION {VERSION}", f"#define PROTO_MAX_PAYLOAD {MAX_PAYLOAD}",
             f"#define PROTO_NAK {NAK:#x}", f"#define PROTO_REPLY {REPLY:#x}",
             f"#define PROTO_CRC_POLY {CRC_POLY_REFLECTED:#x}u  /* CRC-32 (zlib.crc32), reflected */"]
    lines += [f"#define CMD_{name} {code:#x}" for name, code in COMMANDS.items()]
    lines += [f"#define STATUS_{name} {code}  /* {text} */" for code, (name, text) in STATUS.items()]
    lines += [f"#define REGION_{name.upper()} {code}" for name, code in REGIONS.items()]
    lines += [f"#define CAP_{name.upper()} {bit}" for name, bit in CAPABILITIES.items()]
    lines.append(f"#define CAP_METHODS_SHIFT {METHODS_SHIFT}")
    return "\n".join(lines + ["#endif", ""])
