"""The whole-network pipeline (`insitu build --design network`): its glue stages against NumPy with random
data and stalls, the compiled pipeline against the integer golden model on every digits test image and on
odd shapes, and the plan's choices and refusals."""

import numpy as np
import pytest
from amaranth.hdl import Fragment

from insitu.boards import get_board
from insitu.golden import modelfile, network
from insitu.golden.network import _pool
from insitu.hdl.network import BiasRelu, Decimate, Flatten, Gather, Pool, Scores, Serialise
from insitu.hdl.params import ParameterError
from insitu.hdl.testing import simulate_stream
from insitu.tools import compress
from insitu.tools.network_pipeline import NetworkPipeline
from insitu.tools.network_sim import CompiledNetwork
from insitu.tools.network_plan import PlanError, parse_budget, plan

from helpers import random_model

MODELS = modelfile.__file__.rsplit("/", 2)[0] + "/models"


def _groups(x, lanes):
    """Feature maps ``(n, C, H, W)`` as channel-group payloads in stream order."""
    n, c, h, w = x.shape
    return [[int(v) for v in x[i, g * lanes:(g + 1) * lanes, y, q]]
            for i in range(n) for y in range(h) for q in range(w) for g in range(c // lanes)]


def _ungroup(payloads, n, c, h, w):
    a = np.array(payloads).reshape(n, h, w, c)
    return a.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("mode,k,lanes,groups,h,w,seed", [
    ("sum", 2, 1, 3, 5, 7, 1), ("max", 2, 2, 2, 4, 4, 2), ("max", 3, 1, 1, 7, 8, 3), ("sum", 1, 3, 1, 3, 2, 4)])
def test_pool_matches_the_golden_pool(mode, k, lanes, groups, h, w, seed):
    rng = np.random.default_rng(seed)
    c = lanes * groups
    x = rng.integers(-2000, 2000, size=(3, c, h, w))
    x[0, :, 0, 0] = -2000                                  # extremes
    dut = Pool(width=12, lanes=lanes, groups=groups, image_width=w, image_height=h, k=k, mode=mode)
    want = _pool(x, {"k": k, "stride": k, "mode": mode}, average=False)
    got, _ = simulate_stream(dut, _groups(x, lanes), want.size // lanes, seed=seed, stall=0.3)
    assert np.array_equal(_ungroup(got, 3, c, h // k, w // k), want)


def test_flatten_reorders_to_channel_major():
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, size=(3, 5, 3, 2))
    stream_order = x.transpose(0, 2, 3, 1).reshape(-1).tolist()
    got, _ = simulate_stream(Flatten(width=8, channels=5, height=3, image_width=2), stream_order, x.size,
                             seed=5, stall=0.4)
    assert got == x.reshape(-1).tolist()


def test_gather_and_serialise_regroup_channels():
    rng = np.random.default_rng(6)
    x = rng.integers(-128, 128, size=(2, 6, 2, 3))
    got, _ = simulate_stream(Gather(width=8, lanes=2, groups=3), _groups(x, 2), 12, seed=6, stall=0.3)
    assert got == _groups(x, 6)
    got, _ = simulate_stream(Serialise(width=8, lanes=3), _groups(x, 3), x.size, seed=7, stall=0.3)
    assert got == [v for p in _groups(x, 3) for v in p]


def test_bias_relu_and_decimate():
    rng = np.random.default_rng(8)
    x = rng.integers(-500, 500, size=(2, 4, 5, 3))
    bias = rng.integers(-300, 300, size=4)
    dut = BiasRelu(width=10, lanes=2, groups=2, bias=bias.tolist(), relu=True)
    got, _ = simulate_stream(dut, _groups(x, 2), x.size // 2, seed=8, stall=0.3)
    assert np.array_equal(_ungroup(got, 2, 4, 5, 3), np.maximum(x + bias[None, :, None, None], 0))
    dut = Decimate(width=10, lanes=4, groups=1, image_width=3, image_height=5, stride=2)
    want = x[:, :, ::2, ::2]
    got, _ = simulate_stream(dut, _groups(x, 4), want.size // 4, seed=9, stall=0.3)
    assert np.array_equal(_ungroup(got, 2, 4, 3, 2), want)


@pytest.mark.parametrize("classes,seed,stall", [(4, 1, 0.3), (10, 2, 0.5), (1, 3, 0.2), (3, 4, 0.0)])
def test_scores_carry_the_first_largest_class(classes, seed, stall):
    rng = np.random.default_rng(seed)
    scores = rng.integers(-4, 4, (12, classes))       # a small range, so that ties are common
    scores[0] = -128                                  # every score at the bottom of the range ...
    scores[1] = 127                                   # ... and at the top
    got, _ = simulate_stream(Scores(width=8, classes=classes), [int(v) for v in scores.flat], scores.size,
                             seed=seed, stall=stall)
    assert [g["score"] for g in got] == [int(v) for v in scores.flat]
    assert [g["klass"] for g in got if g["last"]] == [int(np.argmax(r)) for r in scores]
    assert [g["last"] for g in got] == ([0] * (classes - 1) + [1]) * len(scores)


@pytest.mark.parametrize("seed,stall", [(1, 0.0), (2, 0.3), (3, 0.7)])
def test_skid_passes_every_payload_in_order_and_its_ready_is_a_register(seed, stall):
    from amaranth import signed
    from insitu.hdl.skid import Skid
    from insitu.hdl.testing import run
    rng = np.random.default_rng(seed)
    payloads = [int(v) for v in rng.integers(-512, 512, 300)]
    got, cycles = simulate_stream(Skid(signed(10)), payloads, len(payloads), seed=seed, stall=stall)
    assert got == payloads
    if not stall:
        assert cycles <= len(payloads) + 2           # one transfer per clock, no added latency

    # Within a clock, o.ready never changes i.ready (it goes only into the register's enable).
    dut, seen = Skid(signed(10)), []

    async def probe(ctx):
        for n in range(200):
            ctx.set(dut.i.valid, int(rng.integers(2)))
            ctx.set(dut.i.payload, int(rng.integers(-512, 512)))
            readies = []
            for ready in (0, 1):
                ctx.set(dut.o.ready, ready)
                readies.append(ctx.get(dut.i.ready))
            seen.append(readies)
            ctx.set(dut.o.ready, int(rng.integers(2)))
            await ctx.tick()
    run(dut, [probe])
    assert all(a == b for a, b in seen) and {a for a, _ in seen} == {0, 1}


@pytest.fixture(scope="module")
def digits_test():
    return network.digits_split()[2:]


@pytest.mark.parametrize("name", ["qgp", "circulant", "smartdeal", "mlg"])
def test_digits_pipeline_is_bit_exact_on_every_test_image(name, digits_test):
    model = modelfile.load(f"{MODELS}/digits-{name}.npz")
    x, labels = digits_test
    the_plan = plan(model, get_board("ulx3s-85f"))
    sim = CompiledNetwork(NetworkPipeline(the_plan))
    want = network.forward_int(model, x)
    scores, classes, clocks = sim.infer(x, seed=3, stall=0.25)
    assert len(x) == 360
    assert np.array_equal(scores, want)
    assert np.array_equal(classes, want.argmax(axis=1))
    assert (classes == labels).mean() > 0.9


#: strided convolution, biases, max and sum pooling, a flatten of a multi-channel map, two linear layers
PIPE = {"input": [2, 9, 7], "layers": [
    {"kind": "conv2d", "name": "c1", "c_out": 6, "k": 3, "stride": 2, "padding": 1, "bias": True},
    {"kind": "relu"}, {"kind": "pool", "mode": "max", "k": 2},
    {"kind": "conv2d", "name": "c2", "c_out": 8, "k": 3, "padding": 1, "bias": True},
    {"kind": "pool", "mode": "sum", "k": 1}, {"kind": "relu"}, {"kind": "flatten"},
    {"kind": "linear", "name": "f1", "features": 10, "bias": True}, {"kind": "relu"},
    {"kind": "linear", "name": "f2", "features": 5}]}


@pytest.mark.parametrize("method,parallel,layer", [
    ("dense", 1, "c2"), ("qgp", 2, "c2"), ("escalate", 1, "c2"), ("smartdeal", 1, "c2"), ("mlg", 3, "c2"),
    ("smartdeal", 1, "f1"), ("mlg", 1, "f1")])
def test_odd_shapes_are_bit_exact_with_any_parallelism(method, parallel, layer):
    model = random_model(PIPE, 4)
    rng = np.random.default_rng(4)
    raw = rng.integers(-12, 13, size=(40, *model.input_shape))
    # f1 takes 8·2·2 = 32 values: SmartDeal rows of 11 triples (the last one padded), MLG 1×1 factors
    model = compress.compress_model(model, "dense", raw[:16], layer_methods={layer: method})
    the_plan = plan(model, get_board("ulx3s-85f"), target_fps=1)          # the least parallel plan
    for stage in the_plan.stages:
        if parallel in stage.choices:
            stage.value = parallel
    sim = CompiledNetwork(NetworkPipeline(the_plan))
    scores, classes, _ = sim.infer(raw, seed=11, stall=0.5)
    want = network.forward_int(model, raw)
    assert np.array_equal(scores, want)
    assert np.array_equal(classes, want.argmax(axis=1))


def test_plans_refuse_what_does_not_fit_naming_the_layer_and_resource():
    model = modelfile.load(f"{MODELS}/digits-qgp.npz")
    with pytest.raises(PlanError, match=r"does not fit the icebreaker: .* block RAMs .* layer fc1 \(dense linear"):
        plan(model, get_board("icebreaker"), budget=parse_budget("spram=0", get_board("icebreaker")))
    with pytest.raises(PlanError, match=r"[0-9,]+ LUTs against a budget of 500, most for layer conv2"):
        plan(model, get_board("ulx3s-85f"), budget={"logic": 500, "dsp": 156, "blocks": 208})
    # its int8 conv1 in logic: nine full 8×8 products (measured 5,642 LC in all when the plan let it through)
    with pytest.raises(PlanError, match=r"logic cells against a budget of 4,224, most for layer conv1 \(dense "
                                        r"conv2d: [0-9,]+\)\. Compress layer conv1, e\.g\. insitu train "
                                        r"--layer-method conv1=qgp$"):
        plan(model, get_board("icebreaker"))


def test_more_budget_or_a_lower_target_changes_the_plan_as_asked():
    model = modelfile.load(f"{MODELS}/digits-qgp.npz")
    board = get_board("ulx3s-85f")
    slow = plan(model, board, target_fps=1)
    assert all(s.value == 1 for s in slow.stages)
    fast = plan(model, board)
    assert fast.fps > 10 * slow.fps
    assert all(fast.totals()[k] <= fast.budget[k] for k in ("logic", "dsp", "blocks"))
    aimed = plan(model, board, target_fps=50_000)
    assert aimed.fps >= 50_000 and aimed.totals()["logic"] <= fast.totals()["logic"]
    text = fast.format()
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        assert layer in text


def test_dsp_builds_plan_the_ice40_multipliers_into_its_dsp_blocks():
    """``insitu build --dsp`` reaches the plan: on the iCE40 the multipliers then count against the 8 DSPs
    instead of the logic, and a plan that needs more DSPs is refused with the way out."""
    from insitu.tools import designs
    board = get_board("icebreaker")
    model = modelfile.load(f"{MODELS}/digits-lean-mixed.npz")
    logic, dsp = plan(model, board), plan(model, board, dsp=True)
    assert logic.totals()["dsp"] == 0 and 0 < dsp.totals()["dsp"] <= 8
    assert dsp.totals()["logic"] < logic.totals()["logic"] - 1000
    with pytest.raises(PlanError, match=r"DSPs against a budget of 8, most for layer conv1 .*Without --dsp the "
                                        r"iCE40 build makes multipliers in logic"):
        plan(modelfile.load(f"{MODELS}/digits-qgp.npz"), board, dsp=True)
    design = designs.get_design("network")
    params = design.params(model=f"{MODELS}/digits-lean-mixed.npz")
    for flag, where in ((False, "logic"), (True, "DSP blocks")):
        top, info = designs.instantiate(design, params, frequency=48e6, board=board, dsp=flag)
        assert info["multipliers_in"] == where and info["estimate"]["dsp"] == (8 if flag else 0)
        Fragment.get(top, None)          # elaborated once, as a build would


@pytest.mark.parametrize("text,msg", [("lc=abc", "not lc=N"), ("foo=3", "not lc=N"), ("dsp=-1", "not lc=N")])
def test_budget_errors_are_one_line(text, msg):
    with pytest.raises(ParameterError, match=msg):
        parse_budget(text, get_board("icebreaker"))
    assert parse_budget("lc=4000,bram=20", get_board("icebreaker")) == {"logic": 4000, "dsp": 8, "blocks": 20,
                                                                        "spram": 4}


def test_layers_without_a_pipeline_block_are_refused_by_name():
    model = random_model({"input": [1, 8, 8], "layers": [
        {"kind": "conv2d", "name": "c1", "c_out": 4, "k": 3, "padding": 1},
        {"kind": "pool", "mode": "avg", "k": 2, "stride": 1}, {"kind": "flatten"},
        {"kind": "linear", "name": "f1", "features": 3}]}, 1)
    model = compress.compress_model(model, "dense", np.zeros((4, 1, 8, 8), int))
    with pytest.raises(PlanError, match="only non-overlapping pooling"):
        plan(model, get_board("ulx3s-85f"))


def test_insitu_run_design_network_cli(tmp_path, monkeypatch, capsys):
    from insitu.tools.cli import main
    monkeypatch.chdir(tmp_path)
    model = f"{MODELS}/digits-qgp.npz"
    assert main(["run", "--design", "network", "--sim", "--model", model, "--images", "30", "--stall", "0.2",
                 "--json", "r.json"]) == 0
    out = capsys.readouterr().out
    assert "mismatches against the golden model: 0" in out and "cycles per image:" in out
    import json
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["images"] == 30 and report["mismatches"] == 0 and report["provenance"]["command"]
    # a board over its link: the port must open; --path and --baked are the SoC's
    assert main(["run", "--design", "network", "--port", str(tmp_path / "no-such-port"), "--model", model]) == 1
    assert "Cannot open" in capsys.readouterr().err
    assert main(["run", "--design", "network", "--port", "/dev/null", "--model", model, "--path", "software"]) == 1
    assert "--path applies to --design soc only" in capsys.readouterr().err
    assert main(["run", "--design", "network", "--sim", "--model", model, "--faults", "0.01"]) == 1
    assert "--faults applies to --design soc only" in capsys.readouterr().err
    assert main(["run", "--sim", "--model", model, "--budget", "lc=5"]) == 1
    assert "--budget applies to --design network --sim only" in capsys.readouterr().err
    assert main(["run", "--sim", "--model", model, "--board", "icebreaker"]) == 1
    assert "--board applies to --design network --sim only" in capsys.readouterr().err
    assert main(["run", "--design", "network", "--sim", "--model", model, "--board", "icebreaker", "--budget",
                 "spram=0"]) == 1
    assert "does not fit the icebreaker" in capsys.readouterr().err


def test_build_design_network_needs_a_model(tmp_path, monkeypatch, capsys):
    from insitu.tools.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--board", "ulx3s-85f", "--design", "network"]) == 1
    assert "--design network needs --model FILE" in capsys.readouterr().err


@pytest.mark.synth
def test_real_build_of_the_digits_network(tmp_path, monkeypatch, capsys):
    """The QGP digits model as one pipeline on the ECP5-85F: it places and routes, and the printed plan sits
    next to the measured resources."""
    import json

    from insitu.tools.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--board", "ulx3s-85f", "--design", "network", "--model", f"{MODELS}/digits-qgp.npz",
                 "--json", "r.json"]) == 0
    out = capsys.readouterr().out
    assert "estimate vs measured LUT" in out and "estimate vs measured DSP" in out and "fc1" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["design"] == "network" and report["resources"]["DSP"]["used"] > 0
    assert [row["layer"] for row in report["design_info"]["plan"]] == ["conv1", "conv2", "fc1", "fc2"]
    # measured per layer, as the plan estimates it: each block, the glue between them, the board's harness
    parts = report["design_info"]["breakdown"]["parts"]
    assert set(parts) == {"conv1", "conv2", "fc1", "fc2", "glue", "harness"}
    assert abs(sum(p["logic"] for p in parts.values()) - report["resources"]["LUT"]["used"]) <= len(parts)
    assert sum(p.get("dsp", 0) for p in parts.values()) == report["resources"]["DSP"]["used"]
    assert parts["fc1"]["dsp"] > 0 and parts["conv2"].get("dsp", 0) == 0       # QGP: no multipliers
    assert "resources per part" in out and "est. LUT" in out


@pytest.mark.slow
def test_bench_network_compares_the_pipeline_with_the_soc(tmp_path, monkeypatch):
    import json

    from insitu.tools.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "network", "--model", f"{MODELS}/digits-qgp.npz", "--boards", "ulx3s-85f",
                 "--soc-images", "2", "--json", "b.json"]) == 0
    rows = {r["design"]: r for r in json.loads((tmp_path / "b.json").read_text())["rows"]}
    assert set(rows) == {"pipeline", "soc-accelerator", "soc-software"}
    assert all(r["mismatches"] == 0 for r in rows.values())
    assert rows["pipeline"]["images_per_second"] > 100 * rows["soc-accelerator"]["images_per_second"]
