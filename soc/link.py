"""The host link of a pipeline on a board: the framed protocol of :mod:`insitu.soc.protocol` in logic.

The SoC's runtime firmware speaks the protocol through its CPU. A whole-network pipeline has no CPU, so
:class:`LinkEndpoint` speaks it in hardware, with the same frames, commands and host driver
(:class:`insitu.soc.protocol.Client`, :func:`insitu.tools.deploy.run_model` with the board's baked model):

* frames are COBS-decoded and CRC-checked as the bytes arrive; a bad frame is answered with a NAK;
* ``HELLO`` describes the board: a baked model (the pipeline), the methods it runs, the input and result
  capacity; ``ECHO`` echoes;
* ``WRITE`` (region 1) stores input images. Region 0 (the model) takes the weights a pipeline keeps in
  SPRAM (its ``load`` stream, :attr:`insitu.tools.network_pipeline.NetworkPipeline.load_image`), which no
  bitstream can initialise: each WRITE's bytes stream into ``load`` in order. A WRITE may repeat bytes
  already loaded (they are skipped) but not leave a gap (``RANGE``). Without such weights region 0 has no
  room: they are all in the logic;
* ``COMMIT`` (with SPRAM weights) answers ``OK`` once all of them are in, ``NO_MODEL`` before, and
  ``BAD_MODEL`` for a blob of another length; the next region-0 WRITE at offset 0 starts a reload. Without
  them ``COMMIT`` is refused (``NO_ROOM``);
* ``INFER`` streams images from the input region through the pipeline and stores each image's class,
  cycles and scores in the wire format of ``RESULTS``, which copies them out (``NO_MODEL`` while SPRAM
  weights are missing);
* ``HELLO``'s baked model is ``OK``, or ``NO_MODEL`` while SPRAM weights are missing; its model capacity
  is their byte count and its entries name their layers (kind :data:`LOADED_LAYER`);
* unknown commands get ``BAD_COMMAND``;
* the last reply is kept: a repeated request (same command and sequence number, its reply lost) is
  answered from it again, never executed twice.

Frames, inputs and results share one byte-wide single-port memory (:class:`insitu.hdl.bytemem.ByteMemory`): SPRAM on the
iCE40UP5K (whose block RAMs a pipeline needs), block RAM elsewhere. One state machine does everything a
byte at a time; a UART byte takes ``10 × clocks_per_bit`` clocks, so it is never the bottleneck. Replies
are COBS-encoded as they are built (each block's code byte is reserved and written when the block ends),
so sending one, or the kept one again, only streams its bytes.

:class:`UARTLink` puts the endpoint behind an 8N1 UART (:class:`insitu.hdl.uart.UARTRx`,
:class:`~insitu.hdl.uart.UARTTx`).
"""

import struct

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..hdl.bytemem import ByteMemory
from ..hdl.params import ParameterError, abandon, check_int
from ..hdl.uart import UARTRx, UARTTx

__all__ = ["crc32_update", "CRC_RESIDUE", "LOADED_LAYER", "LinkEndpoint", "UARTLink"]

#: the kind of a ``HELLO`` entry that names a layer whose weights the host loads (region 0)
LOADED_LAYER = 0x80


def _protocol():
    from . import protocol
    return protocol


def crc32_update(crc, byte):
    """One byte of the CRC-32 register (reflected, the register of ``zlib.crc32`` before its final XOR)."""
    crc ^= byte
    for _ in range(8):
        crc = (crc >> 1) ^ (_protocol().CRC_POLY_REFLECTED if crc & 1 else 0)
    return crc


def _residue():
    # The register run over a frame's body and then its CRC (little endian) ends at one value, whatever
    # the body.
    crc, body = 0xFFFFFFFF, b"insitu"
    for byte in body:
        crc = crc32_update(crc, byte)
    for byte in struct.pack("<I", crc ^ 0xFFFFFFFF):
        crc = crc32_update(crc, byte)
    return crc


#: the CRC register after a good frame's body and CRC
CRC_RESIDUE = _residue()




def _encoded(n):
    """The most bytes COBS makes of ``n`` bytes (a code byte per block of at most 254), before the closing zero."""
    return n + n // 254 + 1


def _frame_bases(frame_max):
    """Where the kept reply (encoded), the NAK (encoded) and the request frame (``frame_max`` bytes,
    decoded) start: the NAK at a multiple of 16 (it is at most 9 bytes)."""
    nak = -(-_encoded(frame_max) // 16) * 16
    return 0, nak, nak + _encoded(8)


def _times(value, constant):
    """``value × constant`` as shifted adds (a multiplier block would be wasted on a constant)."""
    terms = [value << k for k in range(constant.bit_length()) if constant >> k & 1]
    return sum(terms[1:], terms[0]) if terms else Const(0)


class LinkEndpoint(wiring.Component):
    """The protocol's board side for ``pipeline`` (a component with an input stream ``i`` of pixels and an
    output stream ``o`` of :func:`insitu.hdl.network.scores_layout` scores), on wire bytes.

    Parameters
    ----------
    pipeline : wiring.Component
        Becomes the submodule ``pipeline``. One transfer on ``i`` is one pixel: ``channels`` values (an
        ``ArrayLayout``) or one value.
    channels, pixels : int
        The input image: ``channels × pixels`` bytes, stored channel-major as the host sends them
        (``quantise_input(...).reshape(n, -1)``); pixel ``p`` is the transfer of bytes ``c · pixels + p``.
    classes : int
        Scores per image.
    images : int
        Input and result slots (the host's batch).
    methods : int
        The capability bits of the methods the pipeline runs (``protocol.METHODS_SHIFT`` + method code).
    load_bytes : int
        Bytes the pipeline's ``load`` stream takes before it runs (its SPRAM weights); 0: it has none.
    loaded_layers : sequence of str
        The layers those bytes belong to, named in ``HELLO``.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes from the host (the wire: COBS frames, each closed by a zero).
    o : Out(stream.Signature(8))
        Bytes to the host.
    """

    def __init__(self, pipeline, *, channels, pixels, classes, images, methods=0, load_bytes=0, loaded_layers=()):
        try:
            self._init(pipeline, channels, pixels, classes, images, methods, load_bytes, tuple(loaded_layers))
        except Exception:
            abandon(self, pipeline)         # a refused endpoint leaves no half-built parts behind
            raise

    def _init(self, pipeline, channels, pixels, classes, images, methods, load_bytes, loaded_layers):
        check_int(load_bytes, "Weight bytes loaded at run time", 0)
        if load_bytes and "load" not in pipeline.signature.members:
            raise ParameterError("The pipeline has no load stream for weights loaded at run time")
        if bool(load_bytes) != bool(loaded_layers):
            raise ParameterError("Name the layers whose weights are loaded at run time, and only with load_bytes")
        check_int(channels, "Channel count", 1, 255)
        check_int(pixels, "Pixels per image", 1)
        check_int(classes, "Class count", 1, 255)
        check_int(images, "Image slots", 1, 65535)
        p = _protocol()
        self._pipeline = pipeline
        self._channels, self._pixels, self._classes, self._images = channels, pixels, classes, images
        self.result_bytes = 5 + 4 * classes
        self.input_bytes = channels * pixels
        self._frame_max = 4 + p.MAX_PAYLOAD + 4
        self._encoded_max = _encoded(self._frame_max)
        # memory map: the kept reply and a NAK (both encoded, as sent: the reply at 0 and the NAK at a multiple
        # of 16, so that a byte's address is its offset with at most the NAK's bits above it, no adder), the
        # request frame (decoded), the input images, the result slots
        self.REPLY, self.NAK, self.FRAME = _frame_bases(self._frame_max)
        self.INPUTS = self.FRAME + self._frame_max
        self.RESULTS = self.INPUTS + images * self.input_bytes
        self.size = self.buffer_bytes(self.input_bytes, classes, images)
        if self.size > 4 * 32768:
            raise ParameterError(f"The link's buffers need {self.size} bytes for {images} images; at most "
                                 f"{4 * 32768} fit: fewer image slots")
        caps = p.CAPABILITIES["baked_model"] | p.CAPABILITIES["software_path"] | methods
        self._load_bytes, self._loaded_layers = load_bytes, loaded_layers
        self.hello = struct.pack("<HHIIIHHH", p.VERSION, p.MAX_PAYLOAD, caps, load_bytes, images * self.input_bytes,
                                 images, 0, len(loaded_layers))
        self.hello += b"".join(bytes([LOADED_LAYER]) + name.encode() + b"\0" for name in loaded_layers)
        # COMMIT's reply: the layers loaded, input bytes, outputs, none bound to a peripheral
        self.commit_info = struct.pack("<HIHH", len(loaded_layers), self.input_bytes, classes, 0)
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8))})

    pipeline = property(lambda self: self._pipeline)
    images = property(lambda self: self._images)
    load_bytes = property(lambda self: self._load_bytes)

    #: the byte of ``HELLO``'s data that holds the baked model's status (``baked``, u16 little endian)
    BAKED_BYTE = struct.calcsize("<HHIIIH")

    @staticmethod
    def buffer_bytes(input_bytes, classes, images):
        """Bytes of :class:`ByteMemory` an endpoint needs: a request frame, an encoded reply and NAK,
        ``images`` inputs and results."""
        frame = 4 + _protocol().MAX_PAYLOAD + 4
        return _frame_bases(frame)[2] + frame + images * (input_bytes + 5 + 4 * classes)

    def elaborate(self, platform):
        p = _protocol()
        m = Module()
        m.submodules.pipeline = pipe = self._pipeline
        m.submodules.mem = mem = ByteMemory(size=self.size)
        C, HW, classes, size = self._channels, self._pixels, self._classes, self.result_bytes
        status = {name: code for code, (name, _) in p.STATUS.items()}

        # --- receiving: COBS decoding and the CRC as the bytes arrive --------------------------------
        n = Signal(range(self._frame_max + 2))      # decoded bytes
        started, bad, zero_after = Signal(), Signal(), Signal()
        code_left = Signal(8)
        crc = Signal(32)
        cmd, seq = Signal(8), Signal(8)
        length = Signal(16)
        args = Signal(data.ArrayLayout(8, 8))       # the first eight payload bytes
        arg16 = [Cat(args[2 * k], args[2 * k + 1]) for k in range(2)]
        plen = length[:p.MAX_PAYLOAD.bit_length()]  # the length of a good frame (at most MAX_PAYLOAD)
        offset = Cat(args[4], args[5], args[6], args[7])

        # One CRC unit, shared by the receiver (``store``) and the reply builder (``emit``), a bit per clock:
        # a byte takes eight clocks (a byte on the UART takes ten bit times), while ``crc_busy`` holds the
        # next store or emit.
        crc_in, crc_en = Signal(8), Signal()
        crc_shift, crc_bits = Signal(8), Signal(range(9))
        crc_busy = crc_bits != 0
        poly = p.CRC_POLY_REFLECTED
        with m.If(crc_en):
            m.d.sync += [crc_shift.eq(crc_in), crc_bits.eq(8)]
        with m.Elif(crc_busy):
            feedback = crc[0] ^ crc_shift[0]
            m.d.sync += [crc.eq((crc >> 1) ^ Mux(feedback, poly, 0)), crc_shift.eq(crc_shift >> 1),
                         crc_bits.eq(crc_bits - 1)]
        store_en, store_value = Signal(), Signal(8)

        def store(value):
            m.d.comb += [store_en.eq(1), store_value.eq(value)]

        with m.If(store_en):                        # callers store only while the CRC unit is idle
            with m.If(n < self._frame_max):
                m.d.comb += [mem.addr.eq(self.FRAME + n), mem.w_data.eq(store_value), mem.w_en.eq(1),
                             crc_in.eq(store_value), crc_en.eq(1)]
                m.d.sync += n.eq(n + 1)
                with m.Switch(n):
                    with m.Case(0):
                        m.d.sync += cmd.eq(store_value)
                    with m.Case(1):
                        m.d.sync += seq.eq(store_value)
                    with m.Case(2):
                        m.d.sync += length[:8].eq(store_value)
                    with m.Case(3):
                        m.d.sync += length[8:].eq(store_value)
                    for k in range(8):
                        with m.Case(4 + k):
                            m.d.sync += args[k].eq(store_value)
            with m.Else():
                m.d.sync += bad.eq(1)

        # --- building a reply (or a NAK) in memory ----------------------------------------------------
        at = Signal(range(self._frame_max + 1))     # bytes built
        out_status = Signal(8)
        has_status = Signal()
        source = Signal(range(4))                   # 0 none, 1 HELLO table, 2 memory copy, 3 registers
        # data bytes left: at most a payload (a good frame's length is at most MAX_PAYLOAD) or the ROM
        most_data = max(p.MAX_PAYLOAD, len(self.hello) + len(self.commit_info))
        count = Signal(range(most_data + 1))
        out_len = Signal(range(most_data + 2))      # payload bytes (status included), while building
        src = Signal(range(self.size))
        reply_total = Signal(range(self._encoded_max + 1))   # encoded bytes of the kept reply
        nak_total = Signal(range(_encoded(8) + 1))          # and of the NAK
        have_last, last_cmd, last_seq = Signal(), Signal(8), Signal(8)
        is_reply = Signal()
        hello = Array(Const(b, 8) for b in self.hello)
        # weights loaded at run time into the pipeline's ``load`` stream (SPRAM)
        L = self._load_bytes
        loaded = Signal(range(L + 1))               # bytes of the current load streamed in
        committed = Signal()                        # all of them in and COMMITted: the model is there
        load_bad, commit_len_bad = Signal(), Signal()
        load_skip = Signal(16)                      # bytes of a WRITE already loaded
        rom_base = Signal(range(len(self.hello) + 1))   # HELLO's data, or COMMIT's after it
        rom = Array(Const(b, 8) for b in self.hello + self.commit_info)

        # Frames are COBS-encoded as they are built, so that sending only streams them: each block's code
        # byte is reserved (``code_at``) and written when a zero ends the block (the zero itself is not
        # stored) or it reaches 254 bytes (code 0xFF, written a clock later: ``patch``). An emitted byte
        # is registered (``pending``) and written the clock after: where it goes depends on its value.
        emit_en, emit_value, emit_crc = Signal(), Signal(8), Signal()
        pending, pending_value = Signal(), Signal(8)
        wp = Signal(range(self._encoded_max + 1))   # the encoded frame's next byte
        code_at, patch_at = Signal(range(self._encoded_max)), Signal(range(self._encoded_max))
        block = Signal(range(255))                  # data bytes of the block being built
        after_full = Signal()                       # the block follows a full one and is still empty
        patch = Signal()
        frame_off = Signal(range(self._encoded_max + 1))
        # the memory address of a byte of the frame being built or sent: the reply's, or the NAK's
        frame_addr = Mux(is_reply, frame_off, self.NAK | frame_off[:4])

        def emit(value, *, crc=True):
            """Append ``value`` to the frame (and to its CRC unless ``crc`` is false)."""
            m.d.comb += [emit_en.eq(1), emit_value.eq(value), emit_crc.eq(crc)]

        def begin_frame():
            m.d.sync += [at.eq(0), wp.eq(1), code_at.eq(0), block.eq(0), after_full.eq(0), crc.eq(0xFFFFFFFF)]

        with m.If(emit_en):
            with m.If(emit_crc):
                m.d.comb += [crc_in.eq(emit_value), crc_en.eq(1)]
            m.d.sync += [at.eq(at + 1), pending.eq(1), pending_value.eq(emit_value)]
        busy = pending | patch                      # the frame's bytes still being written
        with m.If(pending):                         # the clock after an emit: no other user of the memory
            m.d.comb += [mem.addr.eq(frame_addr), mem.w_en.eq(1)]
            m.d.sync += [pending.eq(0), after_full.eq(0)]
            with m.If(pending_value == 0):          # the block ends: its code, and the next one's place
                m.d.comb += [frame_off.eq(code_at), mem.w_data.eq(block + 1)]
                m.d.sync += [code_at.eq(wp), wp.eq(wp + 1), block.eq(0)]
            with m.Else():
                m.d.comb += [frame_off.eq(wp), mem.w_data.eq(pending_value)]
                with m.If(block == 253):            # a full block: 0xFF at its code, the next one's place
                    m.d.sync += [patch.eq(1), patch_at.eq(code_at), code_at.eq(wp + 1), wp.eq(wp + 2),
                                 block.eq(0), after_full.eq(1)]
                with m.Else():
                    m.d.sync += [wp.eq(wp + 1), block.eq(block + 1)]
        with m.If(patch):                           # and the clock after that
            m.d.comb += [frame_off.eq(patch_at), mem.addr.eq(frame_addr), mem.w_data.eq(0xFF), mem.w_en.eq(1)]
            m.d.sync += patch.eq(0)

        m.d.comb += out_len.eq(count + has_status)

        def reply(code, *, src_kind=0, data_len=0):
            # the frame's other fields were set when the request was accepted
            m.d.sync += [out_status.eq(code), source.eq(src_kind), count.eq(data_len)]

        # --- INFER: the feeder (input bytes → pipeline) and the collector (scores → result slots) ------
        first, n_images = arg16
        # Products with the slot numbers only after their range checks, on as few bits as a slot needs.
        slot_bits = max(1, self._images.bit_length())
        slot = first[:slot_bits]
        # (registered in CHECK, like the range checks: multipliers on the ECP5)
        input_offset, result_offset = Signal(range(self.size)), Signal(range(self.size))
        most_results = (p.MAX_PAYLOAD - 1) // size          # results in one reply
        result_bytes = Signal(8)
        count_next = Signal(16)
        capacity = self._images * self.input_bytes
        cap_bits = capacity.bit_length()
        write_out_of_range, slots_out_of_range, too_many_results = Signal(), Signal(), Signal()
        m.d.comb += count_next.eq(count - 1)
        feed_left = Signal(range(self._images + 1))     # INFER's images: at most the slots (checked)
        feed_pixel_addr = Signal(range(self.size))  # the pixel's first byte; its channels are HW apart
        feed_addr = Signal(range(self.size)) if C > 1 else feed_pixel_addr
        feed_pixel, feed_ch = Signal(range(HW)), Signal(range(C))
        feed_phase = Signal(2)                      # 0 read, 1 wait and capture, 2 push
        # Reads: a state requests, the next waits ``lat`` clocks for the byte (ByteMemory.LATENCY).
        lat, feed_lat = Signal(range(ByteMemory.LATENCY)), Signal(range(ByteMemory.LATENCY))
        first_wait = ByteMemory.LATENCY - 1
        arrived = lat == 0

        def read(addr, then):
            """Request the byte at ``addr``; state ``then`` has it on ``mem.r_data`` once ``arrived``."""
            m.d.comb += mem.addr.eq(addr)
            m.d.sync += lat.eq(first_wait)
            m.next = then

        def wait():
            with m.If(~arrived):
                m.d.sync += lat.eq(lat - 1)

        def copy_step(then):
            """A copy out of the request frame: with ``count`` bytes left, read the one at ``src`` for state
            ``then``; with none, reply OK."""
            with m.If(count == 0):
                reply(status["OK"])
                m.next = "HEADER"
            with m.Else():
                read(src, then)
        in_layout = pipe.i.payload.shape()
        lanes = Signal(in_layout)
        lane_list = [lanes[c] for c in range(C)] if isinstance(in_layout, data.ArrayLayout) else [lanes]
        m.d.comb += pipe.i.payload.eq(lanes)
        done = Signal(range(self._images + 1))
        coll_tail = Signal()                        # 0: score bytes, 1: the image's class and cycles
        coll_byte = Signal(3)
        coll_addr = Signal(range(self.size))        # the next byte it writes
        score32 = Signal(signed(32))                # the stream's score, sign-extended for the wire's i32
        m.d.comb += score32.eq(pipe.o.payload.score)
        klass = Signal(8)
        cycles = Signal(40)                         # INFER's clocks (40 bits: 3 hours at 100 MHz)
        since = Signal(32)                          # clocks since the previous image's last score
        tail = Cat(klass, since)                    # held while the collector writes it

        with m.FSM():
            with m.State("RX"):
                m.d.comb += self.i.ready.eq(~crc_busy)
                b = self.i.payload
                with m.If(self.i.valid & ~crc_busy):
                    with m.If(b == 0):
                        with m.If(started):
                            m.d.sync += started.eq(0)
                            m.next = "CHECK"
                    with m.Elif(~started):
                        m.d.sync += [started.eq(1), code_left.eq(b - 1), zero_after.eq(b != 0xFF), n.eq(0),
                                     bad.eq(0), crc.eq(0xFFFFFFFF)]
                    with m.Elif(code_left == 0):
                        with m.If(zero_after):
                            store(0)
                        m.d.sync += [code_left.eq(b - 1), zero_after.eq(b != 0xFF)]
                    with m.Else():
                        store(b)
                        m.d.sync += code_left.eq(code_left - 1)

            frame_good = Signal()
            with m.State("CHECK"):
                with m.If(~crc_busy):          # the last byte's CRC first
                    # The frame's checks and the requests' range checks, registered for the next states
                    # (they are long carry chains).
                    m.d.sync += [
                        frame_good.eq(~bad & (code_left == 0) & (n >= 8) & (length == n - 8) & (crc == CRC_RESIDUE)),
                        write_out_of_range.eq((args[0] != p.REGIONS["inputs"]) | offset[cap_bits:].any() |
                                              (offset[:cap_bits] + (plen - 8) > capacity)),
                        slots_out_of_range.eq(first[slot_bits:].any() | n_images[slot_bits:].any() |
                                              (first[:slot_bits] + n_images[:slot_bits] > self._images)),
                        too_many_results.eq(n_images > most_results),
                        input_offset.eq(_times(slot, self.input_bytes)), result_offset.eq(_times(slot, size)),
                        # used only when n_images <= most_results
                        result_bytes.eq(_times(n_images[:max(1, most_results.bit_length())], size)),
                    ]
                    if L:
                        start = Mux(committed, 0, loaded)       # a WRITE after COMMIT starts a reload
                        behind = Signal(32)                     # bytes of it loaded already
                        m.d.comb += behind.eq(start - offset)
                        m.d.sync += [
                            load_bad.eq((offset > start) | (offset + (plen - 8) > L)),
                            load_skip.eq(Mux(behind > plen - 8, plen - 8, behind)),
                            commit_len_bad.eq(Cat(args[0], args[1], args[2], args[3]) != L),
                        ]
                    m.next = "DECIDE"
            with m.State("DECIDE"):
                with m.If(~frame_good):
                    m.d.sync += [has_status.eq(0), source.eq(0),
                                 count.eq(0), is_reply.eq(0)]
                    begin_frame()
                    m.next = "HEADER"
                with m.Elif(have_last & (cmd == last_cmd) & (seq == last_seq)):
                    m.d.sync += is_reply.eq(1)
                    m.next = "SEND"
                with m.Else():
                    m.d.sync += [last_cmd.eq(cmd), last_seq.eq(seq), have_last.eq(0),
                                 has_status.eq(1),
                                 is_reply.eq(1)]
                    begin_frame()
                    m.next = "DISPATCH"

            with m.State("DISPATCH"):
                m.next = "HEADER"
                with m.Switch(cmd):
                    with m.Case(p.COMMANDS["HELLO"]):
                        reply(status["OK"], src_kind=1, data_len=len(self.hello))
                        m.d.sync += rom_base.eq(0)
                    with m.Case(p.COMMANDS["ECHO"]):
                        reply(status["OK"], src_kind=2, data_len=Mux(plen < p.MAX_PAYLOAD, plen, 0))
                        m.d.sync += src.eq(self.FRAME + 4)
                    with m.Case(p.COMMANDS["WRITE"]):
                        with m.If(plen < 8):
                            reply(status["MALFORMED"])
                        if L:
                            with m.Elif(args[0] == p.REGIONS["model"]):
                                with m.If(load_bad):
                                    reply(status["RANGE"])
                                with m.Else():
                                    m.d.sync += [src.eq(self.FRAME + 12 + load_skip), count.eq(plen - 8 - load_skip),
                                                 loaded.eq(Mux(committed, 0, loaded)), committed.eq(0)]
                                    m.next = "LOAD_READ"
                        with m.Elif(write_out_of_range):
                            reply(status["RANGE"])
                        with m.Else():
                            m.d.sync += [src.eq(self.FRAME + 12), feed_addr.eq(self.INPUTS + offset),
                                         count.eq(plen - 8)]
                            m.next = "WRITE_READ"
                    with m.Case(p.COMMANDS["INFER"]):
                        with m.If(plen < 5):
                            reply(status["MALFORMED"])
                        if L:
                            with m.Elif(~committed):
                                reply(status["NO_MODEL"])
                        with m.Elif(slots_out_of_range):
                            reply(status["RANGE"])
                        with m.Else():
                            m.d.sync += [feed_left.eq(n_images), feed_pixel.eq(0), feed_ch.eq(0),
                                         feed_phase.eq(0), feed_addr.eq(self.INPUTS + input_offset),
                                         feed_pixel_addr.eq(self.INPUTS + input_offset),
                                         done.eq(0), coll_tail.eq(0), coll_byte.eq(0),
                                         coll_addr.eq(self.RESULTS + 5 + result_offset), cycles.eq(0), since.eq(0)]
                            m.next = "INFER"
                    with m.Case(p.COMMANDS["RESULTS"]):
                        with m.If(plen < 4):
                            reply(status["MALFORMED"])
                        with m.Elif(slots_out_of_range | too_many_results):
                            reply(status["RANGE"])
                        with m.Else():
                            reply(status["OK"], src_kind=2, data_len=result_bytes)
                            m.d.sync += src.eq(self.RESULTS + result_offset)
                    with m.Case(p.COMMANDS["COMMIT"]):
                        if not L:
                            reply(status["NO_ROOM"])
                        else:
                            with m.If(plen < 8):
                                reply(status["MALFORMED"])
                            with m.Elif(commit_len_bad):
                                reply(status["BAD_MODEL"])
                            with m.Elif(loaded != L):
                                reply(status["NO_MODEL"])
                            with m.Else():
                                reply(status["OK"], src_kind=1, data_len=len(self.commit_info))
                                m.d.sync += [rom_base.eq(len(self.hello)), committed.eq(1)]
                    with m.Default():
                        reply(status["BAD_COMMAND"])

            if L:
                with m.State("LOAD_READ"):          # stream a region-0 WRITE's data into the pipeline's load
                    copy_step("LOAD_PUSH")
                with m.State("LOAD_PUSH"):
                    m.d.comb += mem.addr.eq(src)    # the request repeats: the byte stays while load waits
                    wait()
                    with m.If(arrived):
                        m.d.comb += [pipe.load.valid.eq(1), pipe.load.payload.eq(mem.r_data)]
                        with m.If(pipe.load.ready):
                            m.d.sync += [src.eq(src + 1), count.eq(count_next), loaded.eq(loaded + 1)]
                            m.next = "LOAD_READ"

            with m.State("WRITE_READ"):             # copy a WRITE's data from the frame to the inputs
                copy_step("WRITE_WRITE")
            with m.State("WRITE_WRITE"):
                wait()
                with m.If(arrived):
                    m.d.comb += [mem.addr.eq(feed_addr), mem.w_data.eq(mem.r_data), mem.w_en.eq(1)]
                    m.d.sync += [src.eq(src + 1), feed_addr.eq(feed_addr + 1), count.eq(count_next)]
                    m.next = "WRITE_READ"

            with m.State("INFER"):
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(~coll_tail):
                    m.d.sync += since.eq(since + 1)
                # The collector owns the memory port while it writes; the feeder reads when it is free.
                with m.If(~coll_tail):
                    # A score's four bytes, written from the stream, which holds the score until it is taken
                    # with the last one; an image's last score is followed by its class and cycles.
                    with m.If(pipe.o.valid):
                        m.d.comb += [mem.addr.eq(coll_addr), mem.w_en.eq(1),
                                     mem.w_data.eq(score32.as_unsigned().word_select(coll_byte[:2], 8))]
                        m.d.sync += [coll_byte.eq(coll_byte + 1), coll_addr.eq(coll_addr + 1)]
                        with m.If(coll_byte[:2] == 3):
                            m.d.comb += pipe.o.ready.eq(1)
                            m.d.sync += coll_byte.eq(0)
                            with m.If(pipe.o.payload.last):     # to the slot's start
                                m.d.sync += [klass.eq(pipe.o.payload.klass), coll_tail.eq(1),
                                             coll_addr.eq(coll_addr + 1 - size)]
                with m.Else():                      # the image's class and cycles at the slot's start
                    m.d.comb += [mem.addr.eq(coll_addr),
                                 mem.w_data.eq(tail.word_select(coll_byte, 8)), mem.w_en.eq(1)]
                    m.d.sync += [coll_byte.eq(coll_byte + 1), coll_addr.eq(coll_addr + 1)]
                    with m.If(coll_byte == 4):      # to the next slot's scores; the next image's count
                        m.d.sync += [coll_tail.eq(0), coll_byte.eq(0), coll_addr.eq(coll_addr + size + 1),
                                     done.eq(done + 1), since.eq(len(tail) // 8)]    # has the tail's clocks


                with m.Switch(feed_phase):
                    with m.Case(0):
                        with m.If((feed_left != 0) & ~coll_tail & ~pipe.o.valid):
                            m.d.comb += mem.addr.eq(feed_addr)
                            m.d.sync += [feed_phase.eq(1), feed_lat.eq(first_wait)]
                    with m.Case(1):
                        with m.If(feed_lat != 0):
                            m.d.sync += feed_lat.eq(feed_lat - 1)
                        with m.Else():
                            with m.Switch(feed_ch):
                                for c, lane in enumerate(lane_list):
                                    with m.Case(c):
                                        m.d.sync += lane.eq(mem.r_data.as_signed())
                            with m.If(feed_ch == C - 1):
                                m.d.sync += feed_phase.eq(2)
                            with m.Else():
                                m.d.sync += [feed_ch.eq(feed_ch + 1), feed_addr.eq(feed_addr + HW), feed_phase.eq(0)]
                    with m.Case(2):
                        m.d.comb += pipe.i.valid.eq(1)
                        with m.If(pipe.i.ready):
                            m.d.sync += [feed_ch.eq(0), feed_phase.eq(0)]
                            with m.If(feed_pixel == HW - 1):
                                step = 1 + self.input_bytes - HW        # to the next image's first byte
                                m.d.sync += [feed_pixel.eq(0), feed_left.eq(feed_left - 1),
                                             feed_addr.eq(feed_pixel_addr + step),
                                             feed_pixel_addr.eq(feed_pixel_addr + step)]
                            with m.Else():
                                m.d.sync += [feed_pixel.eq(feed_pixel + 1), feed_addr.eq(feed_pixel_addr + 1),
                                             feed_pixel_addr.eq(feed_pixel_addr + 1)]

                with m.If((done == n_images[:len(done)]) & ~coll_tail):
                    reply(status["OK"], src_kind=3, data_len=10)
                    m.next = "HEADER"

            # Header, status, data and CRC, encoded into the reply's or the NAK's place; each emit waits for
            # the CRC unit.
            with m.State("HEADER"):
                with m.If(~crc_busy):
                    # the request's command and sequence number stay until the next request
                    out_cmd = Mux(is_reply, cmd | p.REPLY, p.NAK)
                    out_seq = Mux(n >= 2, seq, 0)           # a NAK for a frame too short for one: 0
                    emit(Array([out_cmd, out_seq, out_len[:8], out_len[8:]])[at[:2]])
                    with m.If(at == 3):
                        m.next = "STATUS"
            with m.State("STATUS"):
                with m.If(~crc_busy):
                    with m.If(has_status):
                        emit(out_status)
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(crc_busy):
                    pass
                with m.Elif(count == 0):
                    m.d.sync += src.eq(0)
                    m.next = "CRC"
                with m.Elif(source == 1):
                    if not L:
                        emit(hello[(at - 5)[:5]])
                    else:                           # HELLO or COMMIT data; the baked status as it is now
                        index = Signal(range(len(rom)))
                        m.d.comb += index.eq(rom_base + at - 5)
                        emit(Mux(index == self.BAKED_BYTE, Mux(committed, status["OK"], status["NO_MODEL"]),
                                 rom[index]))
                    m.d.sync += count.eq(count_next)
                with m.Elif(source == 3):
                    emit(Cat(n_images, cycles, Const(0, 24)).word_select((at - 5)[:4], 8))
                    m.d.sync += count.eq(count_next)
                with m.Else():                                  # a copy: read, then emit
                    read(src, "DATA_COPY")
            with m.State("DATA_COPY"):
                wait()
                with m.If(arrived):
                    emit(mem.r_data)
                    m.d.sync += [src.eq(src + 1), count.eq(count_next)]
                    m.next = "DATA"
            with m.State("CRC"):
                with m.If(~crc_busy & ~busy):
                    emit((~crc).word_select(src[:2], 8), crc=False)
                    m.d.sync += src.eq(src + 1)
                    with m.If(src[:2] == 3):
                        m.next = "CLOSE"
            with m.State("CLOSE"):                  # the last block's code; a block after a full one and
                with m.If(~busy):                   # still empty is dropped
                    end = Mux(after_full, code_at, wp)
                    with m.If(~after_full):
                        m.d.comb += [frame_off.eq(code_at), mem.addr.eq(frame_addr), mem.w_data.eq(block + 1),
                                     mem.w_en.eq(1)]
                    with m.If(is_reply):
                        m.d.sync += reply_total.eq(end)
                    with m.Else():
                        m.d.sync += nak_total.eq(end)
                    m.next = "SEND"

            # --- sending: the encoded frame from memory, then the zero that ends it ----------------------
            k = Signal(range(self._encoded_max + 1))
            with m.State("SEND"):
                m.d.sync += k.eq(0)
                m.next = "BYTES"
            with m.State("BYTES"):
                with m.If(k == Mux(is_reply, reply_total, nak_total)):
                    m.next = "END"
                with m.Else():
                    m.d.comb += frame_off.eq(k)
                    read(frame_addr, "BYTE_OUT")
            with m.State("BYTE_OUT"):
                # the request repeats, so that the byte stays while the stream waits
                m.d.comb += [frame_off.eq(k), mem.addr.eq(frame_addr)]
                wait()
                with m.If(arrived):
                    m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(mem.r_data)]
                with m.If(arrived & self.o.ready):
                    m.d.sync += k.eq(k + 1)
                    m.next = "BYTES"
            with m.State("END"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(0)]
                with m.If(self.o.ready):
                    with m.If(is_reply):
                        m.d.sync += have_last.eq(1)
                    m.next = "RX"
        return m


class UARTLink(wiring.Component):
    """:class:`LinkEndpoint` behind an 8N1 UART at ``clocks_per_bit`` clocks a bit.

    Members
    -------
    rx : In(1), tx : Out(1)
        The serial lines (idle high).
    tx_strobe : Out(1)
        A byte starts on ``tx`` (for an activity LED).
    """

    def __init__(self, endpoint, *, clocks_per_bit):
        self._endpoint = endpoint
        self._rx_uart = UARTRx(clocks_per_bit=clocks_per_bit)
        self._tx_uart = UARTTx(clocks_per_bit=clocks_per_bit)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "tx_strobe": Out(1)})

    endpoint = property(lambda self: self._endpoint)

    def elaborate(self, platform):
        m = Module()
        m.submodules.endpoint = ep = self._endpoint
        m.submodules.uart_rx = rx = self._rx_uart
        m.submodules.uart_tx = tx = self._tx_uart
        wiring.connect(m, rx.o, ep.i)
        wiring.connect(m, ep.o, tx.i)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx), self.tx_strobe.eq(tx.i.valid & tx.i.ready)]
        return m
