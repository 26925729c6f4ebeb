"""The channel-group stream format that joins the layer blocks of a whole-network pipeline, and the counter
its stages share (:mod:`insitu.hdl.network`, :mod:`insitu.hdl.pool`).

Between two weight layers the values travel as *channel groups*: per pixel, in raster order, ``groups``
transfers of ``lanes`` channels each (channel ``g·lanes + l`` in lane ``l`` of transfer ``g``), which is how
a :class:`~insitu.hdl.pe.ConvPE` with ``parallel = lanes`` emits them. A fully connected layer's output is
the same with one pixel.
"""

from amaranth import Mux, Signal, signed, unsigned
from amaranth.lib import data

__all__ = ["group_layout", "scores_layout", "Counter"]


def group_layout(width, lanes):
    """One transfer of a channel-group stream: ``lanes`` signed ``width``-bit values."""
    return data.ArrayLayout(signed(width), lanes)


def scores_layout(width, classes):
    """One class score per transfer; ``last`` marks an image's final score, when ``klass`` is the index of
    its largest score (the first of equal ones, as ``numpy.argmax``)."""
    return data.StructLayout({"score": signed(width), "klass": unsigned(max(1, (classes - 1).bit_length())),
                              "last": 1})


class Counter:
    """A wrapping counter that advances on ``m``'s ``step`` (``reset`` puts it back to 0); ``.last`` is true
    at its final value. ``.last`` is a register updated with the value, so the logic it enables starts from
    a flip-flop, not from a comparator."""

    def __init__(self, m, modulus, name):
        self.value = Signal(range(max(modulus, 2)), name=name)
        self.last = Signal(init=modulus == 1, name=f"{name}_last")
        self._m, self._modulus = m, modulus

    def step(self, carry=1):
        with self._m.If(carry):
            self._m.d.sync += [self.value.eq(Mux(self.last, 0, self.value + 1)),
                               self.last.eq(Mux(self.last, self._modulus == 1, self.value == self._modulus - 2))]

    def reset(self):
        self._m.d.sync += [self.value.eq(0), self.last.eq(self._modulus == 1)]
