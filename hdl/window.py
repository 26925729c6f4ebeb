"""Sliding k×k window over a raster pixel stream, with line buffers in block RAM."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import check_int, check_kernel, validated
from .bram import block_ram

__all__ = ["SlidingWindow", "pixel_layout", "window_layout"]


def pixel_layout(channels, width):
    """One pixel: ``channels`` signed ``width``-bit values."""
    return data.ArrayLayout(signed(width), channels)


def window_layout(channels, width, k):
    """A k×k window, taps in row-major order (tap ``t = row * k + col``), each tap one pixel."""
    return data.ArrayLayout(pixel_layout(channels, width), k * k)


class SlidingWindow(wiring.Component):
    """Turn a raster stream of pixels into a stream of k×k windows (stride 1, zero padding).

    Pixels arrive in raster order, one per transfer, ``height × width`` per frame, frames back to back.
    One window is emitted per output pixel, in raster order: ``(height + 2p − k + 1) × (width + 2p − k + 1)``
    windows per frame, where ``p`` is ``padding``. Window tap ``(r, c)`` of output pixel ``(y, x)`` is input
    pixel ``(y − p + r, x − p + c)``, or zero outside the image; this is :func:`insitu.golden.conv.windows`.

    The generator walks an extended raster of ``(height + p) × (width + p)`` positions, one per clock
    when neither side stalls. Positions inside the image consume a pixel; the ``p`` extra columns and
    rows insert zeros. Because the extra positions are always zero, the window's top and left borders
    read zeros from the line buffers and the previous row's tail, so no masking logic is needed.
    After reset the line buffers are cleared (``width + p`` clocks) before the first pixel is accepted.
    Throughput: one raster position per clock; latency from the transfer of the pixel that completes a
    window to that window's ``valid`` is one clock (:attr:`latency`, with :attr:`startup` and
    :attr:`cycles_per_frame`, tested clock by clock).

    The ``k − 1`` line buffers are one block RAM of depth ``width + p`` and width
    ``(k − 1) · channels · act_width`` bits.

    Parameters
    ----------
    channels : int
        Channels per pixel.
    act_width : int
        Signed activation width in bits.
    k : int
        Kernel size, odd, ``>= 1``.
    width, height : int
        Image size in pixels.
    padding : int
        Zero padding on each border, ``0 <= padding <= k // 2``.

    Members
    -------
    i : In(stream.Signature(pixel_layout(channels, act_width)))
    o : Out(stream.Signature(window_layout(channels, act_width, k)))
    """

    @validated
    def __init__(self, *, channels, act_width, k, width, height, padding):
        check_int(channels, "Channel count", 1)
        check_int(act_width, "Activation width", 2, 32)
        check_kernel(k)
        check_int(padding, "Padding", 0, k // 2)
        check_int(width, "Image width", max(1, k - 2 * padding))
        check_int(height, "Image height", max(1, k - 2 * padding))
        self._channels, self._act_width, self._k = channels, act_width, k
        self._width, self._height, self._padding = width, height, padding
        super().__init__({
            "i": In(stream.Signature(pixel_layout(channels, act_width))),
            "o": Out(stream.Signature(window_layout(channels, act_width, k))),
        })

    channels = property(lambda self: self._channels)
    act_width = property(lambda self: self._act_width)
    k = property(lambda self: self._k)
    width = property(lambda self: self._width)
    height = property(lambda self: self._height)
    padding = property(lambda self: self._padding)
    out_width = property(lambda self: self._width + 2 * self._padding - self._k + 1)
    out_height = property(lambda self: self._height + 2 * self._padding - self._k + 1)
    #: clocks from the transfer of the pixel (or the extra zero position) that completes a window to its
    #: ``valid``
    latency = 1
    #: clocks after reset before the first pixel is taken (the line buffers, if any, are cleared)
    startup = property(lambda self: 0 if self._k == 1 else self._width + self._padding)
    #: clocks per frame without stalls: the extended raster of ``(height + p) × (width + p)`` positions
    cycles_per_frame = property(lambda self: (self._height + self._padding) * (self._width + self._padding))

    def elaborate(self, platform):
        m = Module()
        k, p = self.k, self.padding
        ext_w, ext_h = self.width + p, self.height + p
        pixel = pixel_layout(self.channels, self.act_width)

        x = Signal(range(ext_w))
        y = Signal(range(ext_h))
        last_x = x == ext_w - 1
        x_next = Mux(last_x, 0, x + 1)
        y_next = Mux(last_x, Mux(y == ext_h - 1, 0, y + 1), y)
        # Whether the position takes a pixel, and whether it completes a window, are registers (set with
        # ``x`` and ``y``), so the handshake (``advance``, ``i.ready``) is a few gates from flip-flops and
        # no comparator of the position lies on it.
        def consume_at(xv, yv):
            return (xv < self.width) & (yv < self.height)

        def emit_at(xv, yv):
            return (xv >= k - 1 - p) & (yv >= k - 1 - p)

        consume = Signal(init=1)
        emit = Signal(init=(k - 1 - p) <= 0)

        window = Signal(window_layout(self.channels, self.act_width, k))
        clearing = Signal(init=k > 1)
        advance = Signal()
        m.d.comb += [
            advance.eq(~clearing & (~self.o.valid | self.o.ready) & (self.i.valid | ~consume)),
            self.i.ready.eq(~clearing & (~self.o.valid | self.o.ready) & consume),
            self.o.payload.eq(window),
        ]

        incoming = Signal(pixel)
        m.d.comb += incoming.eq(Mux(consume, self.i.payload, 0))
        column = [incoming]
        if k > 1:
            # One memory word holds the k-1 rows above the current row at this column, oldest first.
            # Collision-free when the raster is at least 3 wide (see the write timing below).
            wr, rd = block_ram(m, "lines", shape=data.ArrayLayout(pixel, k - 1), depth=ext_w,
                               collision_free=ext_w >= 3)
            # Prefetch: the read port always presents the word for the position being processed.
            m.d.comb += rd.addr.eq(Mux(clearing, 0, Mux(advance, x_next, x)))
            column = [rd.data[r] for r in range(k - 1)] + column
            # Writes land one clock late, so that no logic sits between the block RAM's (slow,
            # unregistered) output and its input: the word written is the window's newest column (rows
            # 1 … k−1), which the advance has just registered; while clearing, the window is still at
            # its reset value, zero. The position read next is never the one being written late (the
            # raster is at least 2 wide when k > 1), and the read port is transparent, so a read of the
            # address written in the same clock returns the new word. That only happens on a raster 2
            # wide (the late write of position x and the read for position x + 2): from 3 up, no clock
            # reads the address it writes (while clearing, the writes trail the reads of address 0 by
            # at least two positions), so the memory needs no read-during-write bypass.
            m.d.comb += [wr.data[r].eq(window[(r + 1) * k + k - 1]) for r in range(k - 1)]
            with m.If(clearing):
                m.d.sync += [wr.addr.eq(x), wr.en.eq(1), x.eq(x_next),
                             consume.eq(consume_at(x_next, y)), emit.eq(emit_at(x_next, y))]
                with m.If(last_x):
                    m.d.sync += clearing.eq(0)
            with m.Else():
                m.d.sync += [wr.addr.eq(x), wr.en.eq(advance)]

        with m.If(advance):
            for r in range(k):
                for c in range(k - 1):
                    m.d.sync += window[r * k + c].eq(window[r * k + c + 1])
                m.d.sync += window[r * k + k - 1].eq(column[r])
            m.d.sync += [self.o.valid.eq(emit), x.eq(x_next), y.eq(y_next),
                         consume.eq(consume_at(x_next, y_next)), emit.eq(emit_at(x_next, y_next))]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
