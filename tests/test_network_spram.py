"""Dense fully connected layers in SPRAM: the plan moves them there when the block RAMs run out on the
iCE40UP5K, the pipeline loads their weights at run time through its ``load`` stream, and the compiled
pipeline stays bit-exact with the integer golden model."""

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from insitu.boards import get_board
from insitu.golden import modelfile, network
from insitu.hdl.params import ParameterError
from insitu.tools import compress
from insitu.tools.network_pipeline import LoadFirst, NetworkPipeline, weight_image
from insitu.tools.network_sim import CompiledNetwork
from insitu.tools.network_plan import PlanError, parse_budget, plan

from helpers import random_model

MODELS = modelfile.__file__.rsplit("/", 2)[0] + "/models"
ICE = get_board("icebreaker")

#: a flatten of a multi-channel map into two dense linear layers (their columns permuted to arrival order)
PIPE = {"input": [2, 6, 6], "layers": [
    {"kind": "conv2d", "name": "c1", "c_out": 4, "k": 3, "padding": 1, "bias": True},
    {"kind": "relu"}, {"kind": "pool", "mode": "max", "k": 2}, {"kind": "flatten"},
    {"kind": "linear", "name": "f1", "features": 12, "bias": True}, {"kind": "relu"},
    {"kind": "linear", "name": "f2", "features": 5}]}


def _small_model(seed=5):
    model = random_model(PIPE, seed)
    rng = np.random.default_rng(seed)
    raw = rng.integers(-12, 13, size=(30, *model.input_shape))
    # c1 as QGP: its two input channels' 18 int8 products in logic would not fit the UP5K beside the rest
    return compress.compress_model(model, "dense", raw[:16], layer_methods={"c1": "qgp"}), raw


def _both_in_spram(model):
    """The least parallel plan with two block RAMs fewer than it needs: both linear layers move to SPRAM."""
    full = plan(model, ICE, target_fps=1)
    assert not any(s.loaded for s in full.stages)
    budget = dict(full.budget, blocks=full.totals()["blocks"] - 2)
    return plan(model, ICE, target_fps=1, budget=budget)


def test_the_plan_puts_a_dense_fc_that_overflows_block_ram_into_spram():
    model = modelfile.load(f"{MODELS}/digits-mixed.npz")          # QGP convolutions, int8 fc1 64×256
    the_plan = plan(model, ICE)
    stages = {s.layer: s for s in the_plan.stages}
    fc1, fc2 = stages["fc1"], stages["fc2"]
    assert fc1.loaded and fc1.block == "StreamMatVec+RamWeights" and fc1.memory == "SPRAM"
    assert "33 of the 30 blocks" in fc1.why
    assert not fc2.loaded and fc2.block == "DenseMatVec"
    totals = the_plan.totals()
    assert totals["blocks"] <= 30 and 1 <= totals["spram"] <= 4 and totals["logic"] <= the_plan.budget["logic"]
    assert the_plan.load_bytes == 64 * 256
    text = the_plan.format()
    assert "SPRAM: int8 rows written at run time" in text and "weights loaded at run time: fc1 (16,384 bytes" in text
    # the ECP5 has block RAM enough and no SPRAM; without SPRAM in the budget the iCE40 refuses, with the way out
    assert not any(s.loaded for s in plan(model, get_board("ulx3s-85f")).stages)
    with pytest.raises(PlanError, match=r"block RAMs .* layer fc1 \(dense linear: 33\). Layer fc1's 131,072 weight "
                                        r"bits would fit the SPRAM, which this budget does not give: compress fc1"):
        plan(model, ICE, budget=parse_budget("spram=0", ICE))


def test_spram_budgets_parse_and_are_checked():
    assert parse_budget("", ICE)["spram"] == 4 and parse_budget("", get_board("ulx3s-85f"))["spram"] == 0
    assert parse_budget("spram=2", ICE)["spram"] == 2
    with pytest.raises(ParameterError, match=r"^--budget: the icebreaker has 4 SPRAM blocks, not 5$"):
        parse_budget("spram=5", ICE)


def test_a_plan_that_needs_more_spram_than_the_budget_is_refused():
    model, _ = _small_model()
    full = plan(model, ICE, target_fps=1)
    budget = dict(full.budget, blocks=full.totals()["blocks"] - 2, spram=1)
    with pytest.raises(PlanError, match=r"2 SPRAMs against a budget of 1, most for layer f\d .*Compress a dense "
                                        r"fully connected layer"):
        plan(model, ICE, target_fps=1, budget=budget)


@pytest.mark.parametrize("lanes,stall", [(1, 0.5), (8, 0.3)])
def test_spram_layers_load_at_run_time_and_stay_bit_exact(lanes, stall):
    """Two SPRAM layers share the load stream (the second's bytes follow the first's); the compiled pipeline
    takes them first, then every image, with random stalls on both ends; its clocks start after the load."""
    model, raw = _small_model()
    the_plan = _both_in_spram(model)
    assert [s.layer for s in the_plan.stages if s.loaded] == ["f1", "f2"]
    for s in the_plan.stages:
        if s.loaded:
            s.value = lanes
    pipeline = NetworkPipeline(the_plan)
    # f1 is 12 x 36, f2 5 x 12, whatever the lanes (the loader pads a row to whole transfers); the host
    # builds the same bytes from the model alone
    assert len(pipeline.load_image) == the_plan.load_bytes == 12 * 36 + 5 * 12
    assert weight_image(model, ["f1", "f2"]) == pipeline.load_image
    assert weight_image(model, ["f2"]) == pipeline.load_image[12 * 36:]
    with pytest.raises(ValueError, match="c1 is not a dense fully connected layer"):
        weight_image(model, ["c1"])
    sim = CompiledNetwork(pipeline)
    scores, classes, clocks = sim.infer(raw, seed=lanes, stall=stall)
    want = network.forward_int(model, raw)
    assert np.array_equal(scores, want) and np.array_equal(classes, want.argmax(axis=1))
    # without stalls, images back to back: the interval of the slowest stage, counted after the load
    _, _, clocks = sim.infer(raw, seed=1)
    assert clocks / len(raw) < 1.5 * the_plan.cycles


def test_the_pipeline_reloads_its_weights_between_images():
    """In Amaranth's simulator: ``i`` waits for the load; after images, other weights load and the next
    images use them."""
    import copy
    model, raw = _small_model()
    other = copy.deepcopy(model)
    rng = np.random.default_rng(9)
    for layer in other.weight_layers:
        if layer.kind == "linear":
            layer.data["codes"] = rng.integers(-127, 128, size=layer.shape).astype(layer.data["codes"].dtype)
    pipeline = NetworkPipeline(_both_in_spram(model))
    other_pipeline = NetworkPipeline(_both_in_spram(other))
    Fragment.get(other_pipeline, None)           # built only for its load image
    rounds = [(pipeline.load_image, model), (other_pipeline.load_image, other), (pipeline.load_image, model)]
    q = network.quantise_input(model, raw[:2])
    pixels = q.transpose(0, 2, 3, 1).reshape(2, -1, q.shape[1])
    layout = pipeline.i.payload.shape()
    classes = pipeline.classes
    scores = []

    async def collect(ctx):
        ctx.set(pipeline.o.ready, 1)
        async for _, _, valid, score in ctx.tick().sample(pipeline.o.valid, pipeline.o.payload.score):
            if valid:
                scores.append(score)

    async def drive(ctx):
        for number, (image, _) in enumerate(rounds):
            for byte in image:
                ctx.set(pipeline.load.valid, 1)
                ctx.set(pipeline.load.payload, byte)
                await ctx.tick()
                assert not ctx.get(pipeline.i.ready)
            ctx.set(pipeline.load.valid, 0)
            for picture in pixels:
                for pixel in picture:
                    ctx.set(pipeline.i.payload, layout.const([int(v) for v in pixel]))
                    ctx.set(pipeline.i.valid, 1)
                    await ctx.tick().until(pipeline.i.ready)
                ctx.set(pipeline.i.valid, 0)
            while len(scores) < (number + 1) * len(pixels) * classes:      # no image in flight
                await ctx.tick()

    sim = Simulator(pipeline)
    sim.add_clock(1e-6)
    sim.add_process(collect)
    sim.add_testbench(drive)
    sim.run()
    want = [network.forward_int(m, raw[:2]).reshape(-1).tolist() for _, m in rounds]
    assert want[0] != want[1]
    assert scores == [v for w in want for v in w]


def test_link_builds_load_spram_through_the_link_and_harness_builds_load_first():
    from insitu.hdl.params import abandon
    from insitu.tools import designs
    design = designs.get_design("network")
    model = f"{MODELS}/digits-mixed.npz"
    # behind the link (its buffers take one SPRAM block) fc1's weights still go to SPRAM, loaded by the host
    top, info = designs.instantiate(design, design.params(model=model, link="uart", budget="lc=5280"),
                                    frequency=48e6, board=ICE)
    endpoint = top.link.endpoint
    assert info["link_estimate"]["spram"] == 1 and info["plan_budget"]["spram"] == 3
    assert endpoint.load_bytes == info["load_bytes"] == 16384 and b"\x80fc1\0" in endpoint.hello
    from amaranth.back import rtlil
    text = rtlil.convert(top.link, name="top", platform=ICE.platform())     # the board top requests pins
    assert text.count("SB_SPRAM256KA") >= 2                  # the link's buffers and fc1's weights
    abandon(top)
    top, info = designs.instantiate(design, design.params(model=model), frequency=48e6, board=ICE)
    assert isinstance(top, LoadFirst) and info["load_bytes"] == 16384
    assert len(top.i.payload) == 8
    from amaranth.back import rtlil
    assert "SB_SPRAM256KA" in rtlil.convert(top, platform=ICE.platform())      # fc1 at 4 lanes: 2 blocks


def test_the_host_loads_spram_weights_over_the_link_and_every_score_matches():
    """``insitu run --design network --sim --link``'s path: the host reads the layers from HELLO, builds their
    bytes from the model, WRITEs and COMMITs them, then runs images through the link (Amaranth's simulator,
    stalls on both byte streams)."""
    from insitu.tools.network_link import run_over_link
    model, raw = _small_model()
    full = plan(model, ICE, target_fps=1)
    budget = dict(parse_budget("", ICE), blocks=full.totals()["blocks"] - 2)
    report = run_over_link(model, raw[:3], board=ICE, budget=budget, target_fps=1, stall=0.2, seed=2,
                           images_per_batch=2)
    assert report["weights_loaded"] == ["f1", "f2"] and report["peripherals"] == []
    assert report["images"] == 3 and report["mismatches"] == 0
