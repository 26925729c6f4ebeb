"""Amaranth components of insitu: convolution PEs, window generation, FFT, block-circulant layers,
requantisation."""

from .basisfirst import BasisFirstConv
from .circulant import CirculantMatVec
from .conv import Conv2d
from .densematvec import DenseMatVec
from .denseconv import DenseConv
from .fft import FFT
from .muxconv import MuxConv
from .requantize import Requantize
from .window import SlidingWindow

__all__ = ["BasisFirstConv", "CirculantMatVec", "Conv2d", "DenseConv", "DenseMatVec", "FFT", "MuxConv", "Requantize",
           "SlidingWindow"]
