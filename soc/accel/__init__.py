"""Accelerators as bus peripherals: a convolution layer (:class:`ConvAccel`, ``Conv2d`` around a PE whose
weights come from a weight source object: :class:`StagedWeights` for QGP codes or int8, :class:`SmartDealRows`,
:class:`MLGFactors`), a dense fully connected layer (:func:`DenseAccel`) and a block-circulant layer
(:func:`CirculantAccel`), fully connected layers decoded on chip (:func:`SmartDealDenseAccel`,
:func:`MLGDenseAccel`), each behind a register bank (:mod:`.matvec` documents the matrix-vector registers,
:mod:`.decoded` the decoded sources' weight registers).

One file per concern: :mod:`.common` (registers, FIFOs, output formats), :mod:`.conv`, :mod:`.decoded`,
:mod:`.matvec`.

ConvAccel
---------

The CPU writes the weight codes into the PE's weight memory, streams pixels into an input FIFO, starts
the layer and reads accumulators from an output FIFO. Registers (generated into the firmware header like
every other):

============ ======================================================================================
register     fields
============ ======================================================================================
``ctrl``     ``start`` (w): run one frame; ``clear`` (w): stop, empty the FIFOs, drop a partial frame, clear
             error flags (weights are kept)
``status``   ``busy``, ``done``, ``in_full``, ``out_valid``, ``err_overflow`` (a pixel word was
             written to a full input FIFO), ``err_no_weights`` (started before any weight was written)
``count``    ``outputs`` (r): accumulators produced in the current/last frame
``levels``   ``in_free`` (r): words the input FIFO can take; ``out_level`` (r): words waiting
``out_cfg``  ``pack`` (rw): ReLU and requantisation to [0, 127] (round half up at ``shift``), four
             outputs per word; ``pair`` (rw): accumulators saturated to int16, two per word; neither:
             one accumulator per word; ``shift`` (rw)
``w_stage``  ``code`` (w): shift one weight code (QGP) or one int8 weight (dense) into the staging
             register (input channel 0 first)
``w_commit`` ``group``, ``lane`` (w): write the staged codes as that output channel's word
``in_data``  ``data`` (w): four int8 channels of a pixel (channel 4n in bits 0–7); ``ceil(c_in/4)``
             words per pixel, pixels in raster order
``out_data`` ``data`` (rc): one accumulator (sign-extended) or four packed outputs, output channels in
             order per pixel
============ ======================================================================================
"""

from .conv import ConvAccel, StagedWeights
from .decoded import MLGConvAccel, MLGDenseAccel, MLGFactors, SmartDealConvAccel, SmartDealDenseAccel, SmartDealRows
from .matvec import CirculantAccel, DenseAccel, MatVecAccel

__all__ = ["ConvAccel", "StagedWeights", "SmartDealRows", "MLGFactors", "SmartDealConvAccel", "MLGConvAccel",
           "MatVecAccel", "DenseAccel", "CirculantAccel", "SmartDealDenseAccel", "MLGDenseAccel"]
