"""The whole-network design: a model file compiled into one layer-pipelined streaming circuit.

Its modules: :mod:`insitu.tools.network_plan` (the plan, with the stage estimates of
:mod:`insitu.tools.network_stages`), :mod:`insitu.tools.network_pipeline` (the circuit),
:mod:`insitu.tools.network_sim` (the circuit in the compiled simulation) and this one, the ``network``
design of ``insitu build``.

:func:`~insitu.tools.network_plan.plan` turns a :class:`~insitu.golden.network.Model` into stages, one block per weight layer with
the glue between them (:mod:`insitu.hdl.network`), picks each block's parallelism so that the stages are
balanced within the board's resources, and estimates every stage's cycles per image and resources.
:func:`~insitu.tools.network_pipeline.build_pipeline` elaborates a plan into a
:class:`~insitu.tools.network_pipeline.NetworkPipeline`: raw pixels in (one transfer per
pixel, the integer input of :func:`~insitu.golden.network.quantise_input`), class scores out, every weight
on chip in its method's stored form. No processor is involved.

Blocks per layer (what the method stores is what the block holds):

=============  ==========  =============================================================================
kind           method      block
=============  ==========  =============================================================================
conv2d         qgp         :class:`~insitu.hdl.MuxConv` in :class:`~insitu.hdl.Conv2d`; ``parallel``
conv2d         dense       :class:`~insitu.hdl.DenseConv` in :class:`~insitu.hdl.Conv2d`; ``parallel``
conv2d         smartdeal   :class:`~insitu.hdl.streamconv.StreamConv` fed by ``SmartDealWeights``
conv2d         mlg         :class:`~insitu.hdl.streamconv.StreamConv` fed by ``InSituGenerator``; ``lanes``
conv2d         escalate    :class:`~insitu.hdl.BasisFirstConv` in :class:`~insitu.hdl.Conv2d`
linear         dense       :class:`~insitu.hdl.DenseMatVec`; ``lanes``; or, when the block RAMs run out on
                           the iCE40UP5K, :class:`~insitu.hdl.streammatvec.StreamMatVec` fed by
                           :class:`~insitu.hdl.ramweights.RamWeights` (SPRAM); ``lanes``
linear         circulant   :class:`~insitu.hdl.CirculantMatVec`
=============  ==========  =============================================================================

Between weight layers: bias and ReLU (:class:`~insitu.hdl.network.BiasRelu`), pooling
(:class:`~insitu.hdl.pool.Pool`), requantisation by the previous layer's shift, strided outputs
(:class:`~insitu.hdl.network.Decimate`), and before a fully connected layer the reorder of
:class:`~insitu.hdl.network.Flatten`. The scores leave through :class:`~insitu.hdl.network.Scores`.

Every link is a valid/ready stream and the chain has no forks or joins, so no FIFO depth can deadlock it
(the tests run every pipeline with random stalls on both ends); FIFOs are sized for throughput only:

* after each convolution's PE, ``2 · groups`` transfers: the window generator keeps going while the PE
  emits a pixel's channel groups;
* in front of each fully connected block, one whole input vector (``n`` values, block RAM): the block
  takes a vector, then computes, so without room for the next vector the layers before it would wait
  through every computation. With it, the interval is the slowest stage's, not the sum of two.

A dense fully connected layer after a feature map takes its values in arrival order (its weight columns
permuted at build time); a circulant one needs the ``(channel, row, column)`` order and gets a
:class:`~insitu.hdl.network.Flatten` reorder buffer.

SPRAM has no initial contents, so a layer there is loaded at run time: the pipeline gains a ``load`` byte
stream and takes no image until its bytes are in. ``--link none`` builds put
:class:`~insitu.tools.network_pipeline.LoadFirst` in front, as the compiled simulation does: the first
transfers of the input stream are the load. Behind the host link (``--link uart``) the host sends them:
the link's ``HELLO`` names the layers, region-0 WRITEs stream the bytes into ``load`` and INFER waits for
the COMMIT (:mod:`insitu.soc.link`, :func:`insitu.tools.network_link.load_weights`). On the iCE40UP5K the
link's buffers take one of the four SPRAM blocks.
"""

from dataclasses import dataclass

import numpy as np

from ..hdl.params import ParameterError
from .design_params import Params, param
from .network_pipeline import LoadFirst, build_pipeline
from .network_plan import PlanError, parse_budget

__all__ = ["NetworkParams", "network", "describe_network", "parts"]


@dataclass(frozen=True)
class NetworkParams(Params):
    model: str = param(None, "model file: the network compiled into one pipeline with every weight on chip",
                       "text")
    target_fps: int = param(None, "images per second to reach at the build clock (default: as fast as the "
                                  "budget allows)")
    budget: str = param(None, "resources the plan may use: lc=N,dsp=N,bram=N,spram=N (default 80 % of the "
                              "board's logic, all its DSPs, block RAMs and SPRAMs)", "text")
    seed: int = param(1, "placement seed", "non-negative")
    link: str = param("none", "host link: none (the pipeline alone, fed by the build harness: for measuring it) "
                              "or uart (the framed protocol of insitu run on the board's UART, in logic: a board "
                              "that insitu run --design network --port talks to)", "choice", ("none", "uart"))
    baud: int = param(115200, "UART bit rate")

    def check(self):
        if not self.model:
            raise ParameterError("--design network needs --model FILE")


def network(p, *, frequency, board, dsp=False):
    from ..golden import modelfile
    if board is None:
        from ..boards import get_board
        board = get_board("ulx3s-85f")
    model = modelfile.load(p.model)
    budget = parse_budget(p.budget, board)
    plan_budget, link = dict(budget), {}
    if p.link == "uart":                    # the link's own logic and buffers come off the plan's budget
        from .network_link import budget_with_link, check_baud
        check_baud(frequency, p.baud)       # before the pipeline is built
        plan_budget, link = budget_with_link(budget, model, board)
    try:
        pipeline, the_plan = build_pipeline(model, board, frequency=frequency, target_fps=p.target_fps,
                                            budget=plan_budget, dsp=dsp)
    except PlanError as error:
        if not link:
            raise
        spram = f" and {link['spram']} SPRAM" if link.get("spram") else ""
        raise PlanError(f"{error} (the budget less the host link's {link['logic']:,} logic cells, "
                        f"{link['blocks']} block RAMs{spram}; give more with --budget, or build --link none)") from None
    info = {"plan": the_plan.table(), "plan_text": the_plan.format(), "estimate": the_plan.totals(),
            "estimated_cycles_per_image": the_plan.cycles, "estimated_images_per_second": round(the_plan.fps),
            "budget": budget, "link": p.link,
            "multipliers_in": "DSP blocks" if dsp or board.family == "ecp5" else "logic",
            "load_bytes": the_plan.load_bytes}
    if p.link == "none":
        # SPRAM weights: the harness's first input transfers load them
        return (LoadFirst(pipeline) if pipeline.load_image else pipeline), info
    from .network_link import NetworkBoard
    top = NetworkBoard(pipeline, clock_hz=frequency, baud=p.baud)
    estimate = dict(info["estimate"])
    for key, value in link.items():
        estimate[key] = estimate.get(key, 0) + value
    info.update({"estimate": estimate, "plan_budget": plan_budget, "link_estimate": link,
                 "uart_baud_at_target_clock": top.baud, "link_images": top.link.endpoint.images})
    return top, info


def describe_network(component, extra):
    model = component.plan.model
    return {"layers": [layer.name for layer in model.weight_layers],
            "methods": sorted({layer.method for layer in model.weight_layers}),
            "weight_bits": int(sum(s.weight_bits for s in component.plan.stages)),
            "dense_int8_weight_bits": int(sum(int(np.prod(layer.shape)) * 8 for layer in model.weight_layers)),
            "stages": [name for name, _ in component.stages],
            "weights_loaded_at_run_time": [s.layer for s in component.plan.stages if s.loaded]}


def parts(component):
    """The parts of a network build's resource breakdown (:func:`insitu.tools.build.breakdown`), as the
    plan estimates them: each weight layer's block (with a convolution's sliding window), ``glue`` for every
    stage between blocks (requantisation, FIFOs, bias, pooling, reordering, the scores, the SPRAM loader), and
    around them ``link``, the host link (UART, protocol endpoint, buffers), or ``load``, the
    :class:`~insitu.tools.network_pipeline.LoadFirst` front of a ``--link none`` build with SPRAM layers."""
    blocks = {s.layer for s in component.plan.stages}
    outside = "load" if isinstance(component, LoadFirst) else "link"
    inside = ("link", "endpoint", "pipeline") if hasattr(component, "link") else \
        ("pipeline",) if isinstance(component, LoadFirst) else ()

    def part(path):
        path = tuple(path)
        if path[:len(inside)] != inside:
            return outside
        path = path[len(inside):]
        return path[0] if path and path[0] in blocks else "glue"
    return part
