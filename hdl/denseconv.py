"""Dense integer convolution: the multiply-accumulate baseline every compression ratio is measured against."""

from .pe import ConvPE
from .params import check_int, validated

__all__ = ["DenseConv"]


class DenseConv(ConvPE):
    """Dense convolution PE with signed ``weight_width``-bit weights and multiply-accumulate.

    The same interface as :class:`~insitu.hdl.MuxConv`: for each output channel ``o`` the result is
    ``Σ_ci Σ_t weight[o, ci, t] · window[t][ci]`` over the k² taps, one adder tree of ``c_in · k²``
    products per lane. Throughput: one window every ``c_out / parallel`` clocks.

    Weight code of one (output, input) pair: ``k²`` two's-complement weights of ``weight_width`` bits,
    tap ``t`` in bits ``[t·weight_width, (t+1)·weight_width)``.
    """

    @validated
    def __init__(self, *, weight_width=8, **kwargs):
        check_int(weight_width, "Weight width", 2, 18)
        self._weight_width = weight_width
        super().__init__(**kwargs)

    weight_width = property(lambda self: self._weight_width)

    @property
    def code_width(self):
        return self.k * self.k * self._weight_width

    @property
    def terms_per_lane(self):
        return self.c_in * self.k * self.k

    @property
    def term_range(self):
        a, b = 1 << (self.act_width - 1), 1 << (self._weight_width - 1)
        return -max(a * (b - 1), (a - 1) * b), a * b

    def _operands(self, window, codes):
        ww = self._weight_width
        for ci in range(self.c_in):
            for t in range(self.k * self.k):
                yield window[t][ci], codes[ci][t * ww:(t + 1) * ww].as_signed()

    def _term(self, activation, weight):
        return activation * weight
