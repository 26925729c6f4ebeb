"""Amaranth components of insitu: convolution PEs, window generation, requantisation."""

from .conv import Conv2d
from .denseconv import DenseConv
from .muxconv import MuxConv
from .requantize import Requantize
from .window import SlidingWindow

__all__ = ["Conv2d", "DenseConv", "MuxConv", "Requantize", "SlidingWindow"]
