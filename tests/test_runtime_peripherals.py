"""The firmware runtime on SoCs with accelerator peripherals (each compiled simulation is its own SoC, so
these are in a file of their own: pytest-xdist gives each file to one worker), and a model baked into
the image."""

import numpy as np
import pytest

from insitu.golden import modelfile, network
from insitu.soc import protocol
from insitu.soc.firmware import FIRMWARE_DIR
from insitu.tools.blob import pack_model
from insitu.tools.deploy import run_model

from helpers import odd_model

MODELS = FIRMWARE_DIR.parent.parent / "models"


@pytest.mark.parametrize("method, bound", [("dense", ["c2", "f1"]), ("qgp", ["c2", "f1"]), ("smartdeal", ["c2", "f1"]),
                                           ("mlg", ["c2", "f1"]), ("circulant", ["c1", "f1", "f2"])])
def test_layers_run_on_matching_peripherals(tmp_path, method, bound):
    """The odd-shaped model on an SoC with the peripherals its layers match (c2: a convolution peripheral,
    int8, QGP, SmartDeal or MLG; f1: a fully connected one, int8 or decoded on chip from SmartDeal rows or
    MLG factors; c1 has stride 2 and stays in software), and the circulant description (c1 int8; f1, f2
    circulant): both paths equal the golden model."""
    pytest.importorskip("ziglang")
    from insitu.tools.deploy import sim_transport
    model = odd_model(method, seed=7)
    raw = np.random.default_rng(9).integers(-12, 13, size=(6, *model.input_shape))
    transport = sim_transport(tmp_path, accelerate_for=model, progress=lambda *a: None)
    report = run_model(model, raw, transport, paths=("software", "accelerator"))
    assert report["peripherals"] == bound and report["accelerated_layers"] == len(bound)
    golden = network.forward_int(model, raw).tolist()
    for path in report["paths"].values():
        assert path["mismatches"] == 0 and [p["scores"] for p in path["per_image"]] == golden
    assert report["paths"]["accelerator"]["cycles_per_image"] < report["paths"]["software"]["cycles_per_image"]


def test_a_baked_model_runs_from_reset_or_is_refused_by_name(tmp_path, monkeypatch):
    """Baked into the image: ready at reset (its activations get the RAM they need first); a model
    whose activations cannot fit is reported, not silently dropped."""
    pytest.importorskip("ziglang")
    import insitu.tools.deploy as deploy
    from insitu.soc.modelblob import HEADER
    model = modelfile.load(MODELS / "digits-dense.npz")
    _, _, xte, _ = network.digits_split()
    transport = deploy.sim_transport(tmp_path / "a", model=model, progress=lambda *a: None)
    assert protocol.Client(transport).hello()["baked_model"] == "ok"
    assert run_model(model, xte[:1], transport, load=False)["mismatches"] == 0

    def huge(m):                                       # a blob claiming a million-element activation
        data = bytearray(pack_model(m))
        at = 4 * HEADER.index("max_activation")
        data[at:at + 4] = (1 << 20).to_bytes(4, "little")
        return bytes(data)
    small = odd_model("dense")
    monkeypatch.setattr(deploy, "pack_model", huge)
    transport = deploy.sim_transport(tmp_path / "b", model=small, progress=lambda *a: None)
    monkeypatch.undo()
    with pytest.raises(deploy.DeployError, match="refused its baked model: the model does not fit"):
        run_model(small, np.zeros((1, *small.input_shape)), transport, load=False)
