"""The whole-network pipeline with its host link: :class:`~insitu.soc.link.LinkEndpoint` around a
:class:`~insitu.tools.network_pipeline.NetworkPipeline`, so that the host's protocol driver
(:func:`insitu.tools.deploy.run_model` with the board's baked model) runs images on it, over a serial port
or, in tests, in the simulator (:class:`~insitu.soc.link.SimLink`). Weights the pipeline keeps in SPRAM
(no bitstream initialises it) go first, through :func:`load_weights`."""

import numpy as np
from amaranth import Module
from amaranth.lib import io, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import Out

from ..soc.link import LOADED_LAYER, LinkEndpoint, UARTLink
from ..hdl.params import ParameterError

__all__ = ["DEFAULT_IMAGES", "link_endpoint", "uart_link", "check_baud", "method_capabilities", "NetworkBoard",
           "link_cost", "budget_with_link", "load_weights", "run_over_link"]

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
    loaded = [s.layer for s in pipeline.plan.stages if s.loaded]
    return LinkEndpoint(pipeline, channels=channels, pixels=pixels, classes=pipeline.classes, images=images,
                        methods=method_capabilities(model), load_bytes=len(pipeline.load_image), loaded_layers=loaded)


def check_baud(clock_hz, baud):
    """Clocks per bit of a UART at ``baud`` on a ``clock_hz`` clock; a one-line error below four."""
    cpb = round(clock_hz / baud)
    if cpb < 4:
        raise ParameterError(f"{baud} baud is too fast for a {clock_hz / 1e6:g} MHz clock (at least 4 clocks a bit)")
    return cpb


def uart_link(pipeline, *, clock_hz, baud, images=DEFAULT_IMAGES):
    """:func:`link_endpoint` behind a UART of ``baud`` at ``clock_hz``."""
    return UARTLink(link_endpoint(pipeline, images=images), clocks_per_bit=round(clock_hz / baud))


class NetworkBoard(wiring.Component):
    """The pipeline as a board runs it: behind its host link on the board's UART pins (``uart`` resource,
    the receive line through a two-flop synchroniser). The build's harness supplies the clock; ``o``
    pulses once per frame the link sends, which the harness folds into its LED (it blinks with traffic).

    Members
    -------
    o : Out(stream.Signature(1))
    """

    def __init__(self, pipeline, *, clock_hz, baud, images=DEFAULT_IMAGES):
        cpb = check_baud(clock_hz, baud)
        self._pipeline = pipeline
        self._link = uart_link(pipeline, clock_hz=clock_hz, baud=baud, images=images)
        self.baud = round(clock_hz / cpb)
        super().__init__({"o": Out(stream.Signature(1))})

    pipeline = property(lambda self: self._pipeline)
    link = property(lambda self: self._link)
    plan = property(lambda self: self._pipeline.plan)
    stages = property(lambda self: self._pipeline.stages)

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = self._link
        try:
            uart = platform.request("uart", 0, dir={"tx": "-", "rx": "-"})
        except Exception:
            raise ParameterError(f"{type(platform).__name__} has no UART resource for the network's host "
                                 f"link (build with --link none)") from None
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.d.comb += tx.o.eq(link.tx)
        m.submodules.rx_sync = FFSynchronizer(rx.i, link.rx, init=1)
        # the LED toggles with each byte the link sends
        m.d.comb += [self.o.valid.eq(link.tx_strobe), self.o.payload.eq(1)]
        return m


def link_cost(model, board, images=DEFAULT_IMAGES):
    """The link's resources as the plan counts them (``logic``, ``blocks``, ``spram``), measured on this
    project's builds. The iCE40 boards are UP5Ks, where its buffers are one SPRAM block, outside the plan's
    block RAM budget."""
    from .network_plan import ebr_blocks
    logic = {"ice40": 1950, "ecp5": 1800}[board.family]     # 1,931 LC; 1,781 LUT (lean model, seed 1)
    if board.family == "ice40":
        return {"logic": logic, "blocks": 0, "spram": 1}
    size = LinkEndpoint.buffer_bytes(int(np.prod(model.input_shape)), model.output_shape[0], images)
    return {"logic": logic, "blocks": ebr_blocks(size, 8, board.family)}


def budget_with_link(budget, model, board, images=DEFAULT_IMAGES):
    """``(the plan's budget, the link's cost)``: ``budget`` less what the link takes (:func:`link_cost`)."""
    link = link_cost(model, board, images)
    plan_budget = {key: max(0, value - link.get(key, 0)) for key, value in budget.items()}
    return plan_budget, link


def load_weights(transport, model, *, progress=None):
    """Send the weights a board's pipeline keeps in SPRAM, if it has any: its ``HELLO`` names their layers
    (entries of kind :data:`~insitu.soc.link.LOADED_LAYER`) and gives their byte count; the host builds
    them from ``model`` (:func:`~insitu.tools.network_pipeline.weight_image`), WRITEs them to region 0 and
    COMMITs. Returns the layers loaded (none when every weight is in the bitstream). A board built for
    another model is refused before anything is sent."""
    from ..soc.protocol import Client
    from .deploy import DeployError
    from .network_pipeline import weight_image
    client = Client(transport)
    board = client.hello()
    layers = [name for kind, name in board["peripherals"] if kind == LOADED_LAYER]
    if not layers:
        return []
    try:
        image = weight_image(model, layers)
    except ValueError as error:
        raise DeployError(f"The board's pipeline loads the weights of {', '.join(layers)}, which this model "
                          f"cannot give ({error}): build the board for this model") from None
    if len(image) != board["model_capacity"]:
        raise DeployError(f"The board's pipeline loads {board['model_capacity']:,} bytes of weights for "
                          f"{', '.join(layers)}; this model has {len(image):,}: build the board for this model")
    if progress:
        progress(f"Loading the weights of {', '.join(layers)} ({len(image):,} bytes) into the board's SPRAM ...")
    client.write("model", 0, image)
    client.commit(image)
    return layers


def run_over_link(model, images, *, labels=None, board, target_fps=None, budget=None, stall=0.0, seed=0,
                  images_per_batch=DEFAULT_IMAGES, progress=None):
    """Run ``images`` on ``model``'s pipeline behind its link, planned for ``board`` as ``--link uart``
    builds it, in Amaranth's simulator (:class:`~insitu.soc.link.SimLink`, seeded stalls on both byte
    streams), driven by the host side of the protocol (:func:`insitu.tools.deploy.run_model`, the board's
    baked model). Every score is checked against the golden model; the report adds the wire bytes per
    image and the images/s they allow at 115200 and 3,000,000 baud."""
    from ..soc.link_sim import SimLink
    from .deploy import run_model
    from .network_pipeline import build_pipeline
    from .network_plan import parse_budget
    budget, _ = budget_with_link(budget or parse_budget("", board), model, board, images_per_batch)
    pipeline, the_plan = build_pipeline(model, board, target_fps=target_fps, budget=budget)
    if progress:
        progress(the_plan.format())
    link = SimLink(link_endpoint(pipeline, images=images_per_batch), clock_hz=the_plan.frequency, seed=seed,
                   stall=stall)
    loaded = load_weights(link, model, progress=progress)
    report = run_model(model, images, link, labels=labels, load=False, paths=("software",), progress=progress)
    report["peripherals"] = [name for name in report["peripherals"] if name not in loaded]
    report["weights_loaded"] = loaded
    path = report.pop("paths")["software"]
    report.update({"design": "network-link", "board": board.name, "clock_mhz": the_plan.frequency / 1e6,
                   "stall": stall, "simulated_clocks": link.cycles,
                   **{k: v for k, v in path.items() if k != "images_per_second_compute_at_12MHz"}})
    report["per_image"] = report.pop("per_image")
    return report
