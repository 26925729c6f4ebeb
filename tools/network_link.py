"""The whole-network pipeline with its host link: :class:`~insitu.hdl.link.LinkEndpoint` around a
:class:`~insitu.tools.network_pipeline.NetworkPipeline`, so that the host's protocol driver
(:func:`insitu.tools.deploy.run_model` with the board's baked model) runs images on it, over a serial port
or, in tests, in the simulator (:class:`~insitu.hdl.link.SimLink`)."""

import numpy as np

from ..hdl.link import LinkEndpoint, UARTLink

__all__ = ["DEFAULT_IMAGES", "link_endpoint", "uart_link", "method_capabilities"]

#: image slots of the link's buffers (the host's batch): the protocol driver batches at most 64
DEFAULT_IMAGES = 32


def method_capabilities(model):
    """The ``HELLO`` capability bits of the methods ``model``'s weight layers use."""
    from ..soc import protocol
    from ..soc.modelblob import METHODS
    bits = 0
    for layer in model.weight_layers:
        bits |= 1 << (protocol.METHODS_SHIFT + METHODS[layer.method])
    return bits


def link_endpoint(pipeline, *, images=DEFAULT_IMAGES):
    """A :class:`LinkEndpoint` around ``pipeline``: its input images are ``quantise_input``'s values, one
    transfer per pixel with every channel (a flattened input: one value per transfer)."""
    model = pipeline.plan.model
    shape = model.input_shape
    channels, pixels = (shape[0], int(np.prod(shape[1:]))) if len(shape) == 3 else (1, int(np.prod(shape)))
    return LinkEndpoint(pipeline, channels=channels, pixels=pixels, classes=pipeline.classes, images=images,
                        methods=method_capabilities(model))


def uart_link(pipeline, *, clock_hz, baud, images=DEFAULT_IMAGES):
    """:func:`link_endpoint` behind a UART of ``baud`` at ``clock_hz``."""
    return UARTLink(link_endpoint(pipeline, images=images), clocks_per_bit=round(clock_hz / baud))
