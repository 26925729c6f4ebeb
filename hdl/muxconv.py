"""Multiplexer convolution (Quantized Guided Pruning): one ±1 weight per k×k kernel, no multipliers."""

from amaranth import Array

from .params import ParameterError
from .pe import ConvPE

__all__ = ["MuxConv"]


class MuxConv(ConvPE):
    """QGP convolution PE: per (output, input) channel pair a k²:1 multiplexer and a conditional negate.

    For each output channel ``o`` the result is ``Σ_ci ±window[index[o, ci]][ci]``: the stored tap index
    drives a k²:1 multiplexer over the window of input channel ``ci``, the stored sign bit negates it, and
    an adder tree sums over the input channels. There are no multipliers and no DSP blocks.

    Throughput: one window every ``c_out / parallel`` clocks (``parallel · c_in`` kernel operations per
    clock). Golden twin: :func:`insitu.golden.qgp.muxconv2d` (via :class:`~insitu.hdl.Conv2d`).

    Weight code of one (output, input) pair, ``code_width = index_width + 1`` bits::

        code = index | (negate << index_width)      index_width = ceil(log2(k²)), 0 for k = 1

    Parameters
    ----------
    c_in, c_out : int
        Input and output channels.
    k : int
        Kernel size, odd, ``>= 1``.
    act_width : int
        Signed activation width.
    parallel : int
        Output channels produced per clock; divides ``c_out``.
    requant : (int, int) or None
        ``(shift, out_width)`` to requantise through :class:`~insitu.hdl.Requantize`, or ``None`` to output
        accumulators of ``acc_width`` bits.
    init : (c_out, c_in) array of int, optional
        Initial weight codes.
    """

    @property
    def index_width(self):
        return (self.k * self.k - 1).bit_length()

    @property
    def code_width(self):
        return self.index_width + 1

    @property
    def terms_per_lane(self):
        return self.c_in

    @property
    def term_range(self):
        # ±x for a signed act_width-bit x: -(-2**(w-1)) = 2**(w-1) is reachable.
        return -(1 << (self.act_width - 1)), 1 << (self.act_width - 1)

    def _check_code(self, code):
        super()._check_code(code)
        if code & ((1 << self.index_width) - 1) >= self.k * self.k:
            raise ParameterError(f"Weight code {code!r} selects tap {code & ((1 << self.index_width) - 1)}, "
                                 f"but a {self.k}x{self.k} kernel has {self.k * self.k} taps")

    def _operands(self, window, codes):
        for ci in range(self.c_in):
            code = codes[ci]
            taps = Array(window[t][ci] for t in range(self.k * self.k))
            selected = taps[code[:self.index_width]] if self.index_width else taps[0]
            yield selected, code[self.index_width]

    def _term(self, selected, negate):
        # Conditional negate on one carry chain: -x = ~x + 1.
        return (selected ^ negate.replicate(len(selected)).as_signed()) + negate
