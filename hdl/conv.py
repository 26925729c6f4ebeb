"""A whole convolution layer: sliding window generator feeding a processing element."""

from amaranth import Module
from amaranth.lib import wiring

from .params import ParameterTypeError, validated
from .pe import ConvPE
from .basisfirst import BasisFirstConv
from .streamconv import StreamConv
from .window import SlidingWindow

__all__ = ["Conv2d"]


class Conv2d(wiring.Component):
    """Stride-1 2-D convolution over a raster pixel stream: :class:`SlidingWindow` → ``pe``.

    Pixels (``pe.c_in`` channels each) stream in raster order; results stream out as ``pe.c_out / pe.parallel``
    transfers per output pixel, output pixels in raster order. Golden twins: :func:`insitu.golden.qgp.muxconv2d`
    for a :class:`MuxConv`, :func:`insitu.golden.conv.conv2d` for a :class:`DenseConv` or :class:`StreamConv`.

    Parameters
    ----------
    pe : ConvPE or StreamConv
        The processing element (``MuxConv``, ``DenseConv`` or ``StreamConv``); it becomes the submodule ``pe``.
    width, height : int
        Input image size.
    padding : int
        Zero padding on each border, ``0 <= padding <= pe.k // 2``.

    Members
    -------
    i : In(stream.Signature(pixel_layout(pe.c_in, pe.act_width)))
    o : Out(stream), the PE's output.
    """

    @validated
    def __init__(self, pe, *, width, height, padding):
        if not isinstance(pe, (ConvPE, StreamConv, BasisFirstConv)):
            raise ParameterTypeError(f"Processing element must be a MuxConv, DenseConv, StreamConv or BasisFirstConv, "
                                     f"not {pe!r}")
        self._pe = pe
        self._window = SlidingWindow(channels=pe.c_in, act_width=pe.act_width, k=pe.k,
                                     width=width, height=height, padding=padding)
        super().__init__({"i": self._window.signature.members["i"],
                          "o": pe.signature.members["o"]})

    pe = property(lambda self: self._pe)
    window = property(lambda self: self._window)
    out_width = property(lambda self: self._window.out_width)
    out_height = property(lambda self: self._window.out_height)

    def elaborate(self, platform):
        m = Module()
        m.submodules.window = self._window
        m.submodules.pe = self._pe
        wiring.connect(m, wiring.flipped(self.i), self._window.i)
        wiring.connect(m, self._window.o, self._pe.i)
        wiring.connect(m, self._pe.o, wiring.flipped(self.o))
        return m
