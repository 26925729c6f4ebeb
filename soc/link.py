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
byte at a time; a UART byte takes ``10 × clocks_per_bit`` clocks, so it is never the bottleneck.

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
        # memory map: the request frame, a NAK, the kept reply, the input images, the result slots
        self.FRAME, self.NAK = 0, self._frame_max
        self.REPLY = self.NAK + 8
        self.INPUTS = self.REPLY + self._frame_max
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
        """Bytes of :class:`ByteMemory` an endpoint needs: two frames, a NAK, ``images`` inputs and results."""
        return 2 * (4 + _protocol().MAX_PAYLOAD + 4) + 8 + images * (input_bytes + 5 + 4 * classes)

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
        base = Signal(range(self.size))             # where the frame being built (or sent) starts
        at = Signal(range(self._frame_max + 1))     # bytes built
        out_cmd, out_seq = Signal(8), Signal(8)
        out_len = Signal(16)                        # payload bytes (status included), while building
        out_status = Signal(8)
        has_status = Signal()
        source = Signal(range(4))                   # 0 none, 1 HELLO table, 2 memory copy, 3 registers
        count = Signal(16)                          # data bytes left
        src = Signal(range(self.size))
        reply_total = Signal(range(self._frame_max + 1))
        have_last, last_cmd, last_seq = Signal(), Signal(8), Signal(8)
        total = Signal(range(self._frame_max + 1))  # bytes of the frame being sent
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

        emit_en, emit_value = Signal(), Signal(8)

        def emit(value):
            m.d.comb += [emit_en.eq(1), emit_value.eq(value)]

        with m.If(emit_en):
            m.d.comb += [mem.addr.eq(base + at), mem.w_data.eq(emit_value), mem.w_en.eq(1),
                         crc_in.eq(emit_value), crc_en.eq(1)]
            m.d.sync += at.eq(at + 1)

        m.d.comb += out_len.eq(count + has_status)

        def reply(code, *, src_kind=0, data_len=0):
            # the frame's other fields were set when the request was accepted
            m.d.sync += [out_status.eq(code), source.eq(src_kind), count.eq(data_len)]

        # --- INFER: the feeder (input bytes → pipeline) and the collector (scores → result slots) ------
        first, n_images = arg16
        # Products with the slot numbers only after their range checks, on as few bits as a slot needs.
        slot = first[:max(1, self._images.bit_length())]
        # (registered in CHECK, like the range checks: multipliers on the ECP5)
        input_offset, result_offset = Signal(range(self.size)), Signal(range(self.size))
        most_results = (p.MAX_PAYLOAD - 1) // size          # results in one reply
        result_bytes = Signal(8)
        count_next = Signal(16)
        capacity = self._images * self.input_bytes
        cap_bits = capacity.bit_length()
        write_out_of_range, slots_out_of_range, too_many_results = Signal(), Signal(), Signal()
        m.d.comb += count_next.eq(count - 1)
        feed_left = Signal(16)
        feed_addr, feed_pixel_addr = Signal(range(self.size)), Signal(range(self.size))
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
        done = Signal(16)
        coll_state = Signal(2)                      # 0 idle, 1 score bytes, 2 class and cycles
        coll_byte = Signal(3)
        coll_slot = Signal(range(self.size))      # the image's result slot
        coll_addr = Signal(range(self.size))      # the next byte it writes
        score = Signal(pipe.o.payload.score.shape())
        score32 = Signal(signed(32))                # sign-extended for the wire's i32
        m.d.comb += score32.eq(score)
        klass, is_last = Signal(8), Signal()
        cycles, image_cycles, since = Signal(40), Signal(32), Signal(32)    # 40 bits: 3 hours at 100 MHz
        tail = Cat(klass, image_cycles)

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
                                              (offset[:cap_bits] + (length[:9] - 8) > capacity)),
                        slots_out_of_range.eq(first + n_images > self._images),
                        too_many_results.eq(n_images > most_results),
                        input_offset.eq(_times(slot, self.input_bytes)), result_offset.eq(_times(slot, size)),
                        result_bytes.eq(_times(n_images[:8], size)),
                    ]
                    if L:
                        start = Mux(committed, 0, loaded)       # a WRITE after COMMIT starts a reload
                        behind = Signal(32)                     # bytes of it loaded already
                        m.d.comb += behind.eq(start - offset)
                        m.d.sync += [
                            load_bad.eq((offset > start) | (offset + (length - 8) > L)),
                            load_skip.eq(Mux(behind > length - 8, length - 8, behind)),
                            commit_len_bad.eq(Cat(args[0], args[1], args[2], args[3]) != L),
                        ]
                    m.next = "DECIDE"
            with m.State("DECIDE"):
                with m.If(~frame_good):
                    m.d.sync += [out_cmd.eq(p.NAK), out_seq.eq(Mux(n >= 2, seq, 0)), has_status.eq(0), source.eq(0),
                                 count.eq(0), base.eq(self.NAK), at.eq(0), crc.eq(0xFFFFFFFF), is_reply.eq(0)]
                    m.next = "HEADER"
                with m.Elif(have_last & (cmd == last_cmd) & (seq == last_seq)):
                    m.d.sync += [base.eq(self.REPLY), total.eq(reply_total), is_reply.eq(1)]
                    m.next = "SEND"
                with m.Else():
                    m.d.sync += [last_cmd.eq(cmd), last_seq.eq(seq), have_last.eq(0),
                                 out_cmd.eq(cmd | p.REPLY), out_seq.eq(seq), has_status.eq(1),
                                 base.eq(self.REPLY), at.eq(0), crc.eq(0xFFFFFFFF), is_reply.eq(1)]
                    m.next = "DISPATCH"

            with m.State("DISPATCH"):
                m.next = "HEADER"
                with m.Switch(cmd):
                    with m.Case(p.COMMANDS["HELLO"]):
                        reply(status["OK"], src_kind=1, data_len=len(self.hello))
                        m.d.sync += rom_base.eq(0)
                    with m.Case(p.COMMANDS["ECHO"]):
                        reply(status["OK"], src_kind=2, data_len=Mux(length < p.MAX_PAYLOAD, length, 0))
                        m.d.sync += src.eq(self.FRAME + 4)
                    with m.Case(p.COMMANDS["WRITE"]):
                        with m.If(length < 8):
                            reply(status["MALFORMED"])
                        if L:
                            with m.Elif(args[0] == p.REGIONS["model"]):
                                with m.If(load_bad):
                                    reply(status["RANGE"])
                                with m.Else():
                                    m.d.sync += [src.eq(self.FRAME + 12 + load_skip), count.eq(length - 8 - load_skip),
                                                 loaded.eq(Mux(committed, 0, loaded)), committed.eq(0)]
                                    m.next = "LOAD_READ"
                        with m.Elif(write_out_of_range):
                            reply(status["RANGE"])
                        with m.Else():
                            m.d.sync += [src.eq(self.FRAME + 12), feed_addr.eq(self.INPUTS + offset),
                                         count.eq(length - 8)]
                            m.next = "WRITE_READ"
                    with m.Case(p.COMMANDS["INFER"]):
                        with m.If(length < 5):
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
                                         done.eq(0), coll_state.eq(0), coll_slot.eq(self.RESULTS + result_offset),
                                         coll_addr.eq(self.RESULTS + 5 + result_offset), cycles.eq(0), since.eq(0)]
                            m.next = "INFER"
                    with m.Case(p.COMMANDS["RESULTS"]):
                        with m.If(length < 4):
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
                            with m.If(length < 8):
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
                m.d.sync += [cycles.eq(cycles + 1), since.eq(since + 1)]
                # The collector owns the memory port while it writes; the feeder reads when it is free.
                with m.Switch(coll_state):
                    with m.Case(0):
                        m.d.comb += pipe.o.ready.eq(1)
                        with m.If(pipe.o.valid):
                            m.d.sync += [score.eq(pipe.o.payload.score), klass.eq(pipe.o.payload.klass),
                                         is_last.eq(pipe.o.payload.last), coll_state.eq(1), coll_byte.eq(0)]
                            with m.If(pipe.o.payload.last):
                                m.d.sync += [image_cycles.eq(since + 1), since.eq(0)]
                    with m.Case(1):                 # the score's four bytes, after the slot's earlier ones
                        m.d.comb += [mem.addr.eq(coll_addr),
                                     mem.w_data.eq(score32.as_unsigned().word_select(coll_byte[:2], 8)),
                                     mem.w_en.eq(1)]
                        m.d.sync += [coll_byte.eq(coll_byte + 1), coll_addr.eq(coll_addr + 1)]
                        with m.If(coll_byte == 3):
                            m.d.sync += [coll_state.eq(Mux(is_last, 2, 0)), coll_byte.eq(0)]
                            with m.If(is_last):
                                m.d.sync += coll_addr.eq(coll_slot)
                    with m.Case(2):                 # the image's class and cycles at the slot's start
                        m.d.comb += [mem.addr.eq(coll_addr),
                                     mem.w_data.eq(tail.word_select(coll_byte, 8)), mem.w_en.eq(1)]
                        m.d.sync += [coll_byte.eq(coll_byte + 1), coll_addr.eq(coll_addr + 1)]
                        with m.If(coll_byte == 4):
                            m.d.sync += [coll_state.eq(0), coll_slot.eq(coll_slot + size),
                                         coll_addr.eq(coll_addr + size + 1), done.eq(done + 1)]

                with m.Switch(feed_phase):
                    with m.Case(0):
                        with m.If((feed_left != 0) & (coll_state == 0)):
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

                with m.If((done == n_images) & (coll_state == 0)):
                    reply(status["OK"], src_kind=3, data_len=10)
                    m.next = "HEADER"

            # header, status, data and CRC into memory at ``base``
            # Header, status, data and CRC into memory at ``base``; each emit waits for the CRC unit.
            with m.State("HEADER"):
                with m.If(~crc_busy):
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
                with m.If(~crc_busy):
                    m.d.comb += [mem.addr.eq(base + at), mem.w_data.eq((~crc).word_select(src[:2], 8)),
                                 mem.w_en.eq(1)]
                    m.d.sync += [at.eq(at + 1), src.eq(src + 1)]
                    with m.If(src[:2] == 3):
                        m.d.sync += total.eq(at + 1)
                        with m.If(is_reply):
                            m.d.sync += reply_total.eq(at + 1)
                        m.next = "SEND"

            # --- sending: COBS encoding from memory ------------------------------------------------------
            pos, scan = Signal(range(self._frame_max + 1)), Signal(range(self._frame_max + 1))
            run = Signal(8)
            k = Signal(8)
            with m.State("SEND"):
                m.d.sync += [pos.eq(0), scan.eq(0), run.eq(0)]
                m.next = "SCAN"
            with m.State("SCAN"):
                with m.If((scan == total) | (run == 254)):
                    m.next = "CODE"
                with m.Else():
                    read(base + scan, "SCAN_CHECK")
            with m.State("SCAN_CHECK"):
                wait()
                with m.If(arrived & (mem.r_data == 0)):
                    m.next = "CODE"
                with m.Elif(arrived):
                    m.d.sync += [run.eq(run + 1), scan.eq(scan + 1)]
                    m.next = "SCAN"
            with m.State("CODE"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(run + 1)]
                with m.If(self.o.ready):
                    m.d.sync += k.eq(0)
                    m.next = "BYTES"
            with m.State("BYTES"):
                with m.If(k == run):
                    m.next = "NEXT"
                with m.Else():
                    read(base + pos + k, "BYTE_OUT")
            with m.State("BYTE_OUT"):
                # the request repeats, so that the byte stays while the stream waits
                m.d.comb += mem.addr.eq(base + pos + k)
                wait()
                with m.If(arrived):
                    m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(mem.r_data)]
                with m.If(arrived & self.o.ready):
                    m.d.sync += k.eq(k + 1)
                    m.next = "BYTES"
            with m.State("NEXT"):
                with m.If(pos + run == total):
                    m.next = "END"
                with m.Elif(run == 254):
                    m.d.sync += [pos.eq(pos + run), scan.eq(pos + run), run.eq(0)]
                    m.next = "SCAN"
                with m.Else():                                  # skip the zero the block stood for
                    m.d.sync += [pos.eq(pos + run + 1), scan.eq(pos + run + 1), run.eq(0)]
                    m.next = "SCAN"
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
