"""Whole-network golden inference, the model file format and the committed digits models."""

import json
import os

import numpy as np
import pytest

from insitu.golden import fixed, methods, modelfile, network
from insitu.tools import compress
from insitu.tools.cli import main
from insitu.tools.evaluate import default_models

MODELS = dict(zip(methods.names(), default_models()))


def random_float_model(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"conv1": (8, 1, 3, 3), "conv2": (16, 8, 3, 3), "fc1": (64, 256), "fc2": (10, 64)}
    return compress.float_model({name: rng.normal(size=shape) * np.sqrt(2 / np.prod(shape[1:]))
                                 for name, shape in shapes.items()})


def reference_int(model, images):
    """An independent NumPy evaluation: padded loops for the convolutions, dense products elsewhere.

    A block-circulant layer's integers are its fixed-point FFT's, which no other computation reproduces
    bit for bit: there the golden product carries the chain on, after it is checked against the dense
    product of the expanded quantised matrix within the golden model's stated worst-case bound."""
    x = np.asarray(images, dtype=np.int64) * 7
    for n, layer in enumerate(model.weight_layers):
        if layer.method == "circulant":
            from insitu.golden import circulant
            c = methods.get("circulant").decode(layer)
            acc = circulant.matvec(c, x)
            dense = (x @ circulant.expand_quantised(c).T) / circulant.output_scale(c)
            assert np.abs(acc - dense).max() <= circulant.error_bound(c, x)
        else:
            w, _ = network.integer_weights(layer)
            if layer.kind == "conv2d":
                xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
                acc = np.zeros((len(x), w.shape[0], 8, 8), dtype=np.int64)
                for r in range(3):
                    for c in range(3):
                        acc += np.einsum("nchw,oc->nohw", xp[:, :, r:r + 8, c:c + 8], w[:, :, r, c])
            else:
                acc = x @ w.T
        if layer.name == "conv2":
            acc = acc[:, :, 0::2, 0::2] + acc[:, :, 1::2, 0::2] + acc[:, :, 0::2, 1::2] + acc[:, :, 1::2, 1::2]
        if n == 3:
            return acc
        x = np.clip(np.floor((np.maximum(acc, 0) + (1 << layer.shift >> 1)) / 2 ** layer.shift), -128, 127)
        x = x.astype(np.int64).reshape(len(x), *x.shape[1:]) if layer.name != "conv2" else \
            x.astype(np.int64).reshape(len(x), -1)


@pytest.mark.parametrize("method", compress.METHODS)
def test_golden_network_equals_independent_numpy(method):
    xtr, _, xte, _ = network.digits_split()
    model = compress.compress_model(random_float_model(1), method, xtr[:64])
    np.testing.assert_array_equal(network.forward_int(model, xte[:6]), reference_int(model, xte[:6]))


def test_requantize_matches_reference_rounding():
    acc = np.array([0, 1, 2, 3, 255, 256, 100000])
    assert list(fixed.requantize(acc, 1, 8)) == [0, 1, 1, 2, 127, 127, 127]


def test_digits_split_is_fixed():
    xtr, ytr, xte, yte = network.digits_split()
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8)
    assert np.bincount(yte).min() >= 35          # stratified
    assert xtr.max() == 16 and xtr.min() == 0


@pytest.mark.parametrize("method", ["float", *compress.METHODS])
def test_model_file_round_trip(method, tmp_path):
    xtr = network.digits_split()[0][:64]
    model = random_float_model(2)
    if method != "float":
        model = compress.compress_model(model, method, xtr)
    path = tmp_path / "m.npz"
    modelfile.save(path, model)
    back = modelfile.load(path)
    assert [layer.method for layer in back.layers] == [layer.method for layer in model.layers]
    assert [layer.shift for layer in back.layers] == [layer.shift for layer in model.layers]
    np.testing.assert_array_equal(network.forward_float(back, xtr[:4]), network.forward_float(model, xtr[:4]))
    if method != "float":
        np.testing.assert_array_equal(network.forward_int(back, xtr[:4]), network.forward_int(model, xtr[:4]))


def _saved(tmp_path, method="smartdeal"):
    model = compress.compress_model(random_float_model(3), method, network.digits_split()[0][:32])
    path = tmp_path / "m.npz"
    modelfile.save(path, model)
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    return path, arrays, json.loads(arrays["manifest.json"].tobytes())


def _rewrite(path, arrays, manifest=None):
    if manifest is not None:
        arrays["manifest.json"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize("case, msg", [
    ("version", r"unsupported model format version 9 \(this reads 1 and 2\)$"),
    ("format", r"not an insitu model \(format 'other'\)$"),
    ("missing", r"layer fc1 \(smartdeal\) is missing array 'image'$"),
    ("shape", r"layer conv2 must be a conv2d layer of shape \(16, 8, 3, 3\), not conv2d \(16, 8, 5, 5\)$"),
    ("array-shape", r"array conv2/image has shape \(3,\), the manifest says \[\d+\]$"),
    ("method", r"layer conv1 has unknown method 'magic'$"),
    ("image", r"layer fc1: SmartDeal data is truncated"),
    ("no-manifest", r"not an insitu model \(no manifest.json\)$"),
])
def test_corrupt_model_files(tmp_path, case, msg):
    path, arrays, manifest = _saved(tmp_path)
    if case == "version":
        manifest["version"] = 9
    elif case == "format":
        manifest["format"] = "other"
    elif case == "missing":
        del arrays["fc1/image"]
    elif case == "shape":
        manifest["layers"][2]["shape"] = [16, 8, 5, 5]
    elif case == "array-shape":
        arrays["conv2/image"] = arrays["conv2/image"][:3]
    elif case == "method":
        manifest["layers"][0]["method"] = "magic"
    elif case == "image":
        arrays["fc1/image"] = arrays["fc1/image"][:10]
        manifest["layers"][6]["arrays"]["image"]["shape"] = [10]
    elif case == "no-manifest":
        del arrays["manifest.json"]
        manifest = None
    _rewrite(path, arrays, manifest)
    with pytest.raises(modelfile.ModelFormatError, match=msg):
        modelfile.load(path)


def test_corrupt_archive(tmp_path):
    path, _, _ = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(modelfile.ModelFormatError, match=r"corrupt model archive"):
        modelfile.load(path)
    with pytest.raises(modelfile.ModelFormatError, match=r"^Cannot read model file .*nope.npz"):
        modelfile.load(tmp_path / "nope.npz")


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    model = random_float_model(4)
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(RuntimeError):
        modelfile.save(tmp_path / "m.npz", model)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("method", list(MODELS))
def test_committed_models_reproduce_recorded_accuracy(method):
    model = modelfile.load(MODELS[method])
    _, _, xte, yte = network.digits_split()
    recorded = model.meta["accuracy"]
    assert network.accuracy(model, xte, yte, integer=False) == recorded["float"]
    if method != "float":
        assert network.accuracy(model, xte, yte) == recorded["integer"]
        # and by the test's own integer forward, not the function that recorded it
        assert np.mean(np.argmax(reference_int(model, xte), axis=1) == yte) == recorded["integer"]


def test_compress_cli_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert main(["compress", str(bad), "--method", "qgp", "-o", str(tmp_path / "o.npz")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "corrupt model archive" in err
    assert not (tmp_path / "o.npz").exists()


def test_compress_cli_from_plain_npz(tmp_path, capsys):
    model = random_float_model(5)
    np.savez(tmp_path / "w.npz", **{layer.name: layer.data["weights"] for layer in model.weight_layers})
    assert main(["compress", str(tmp_path / "w.npz"), "--method", "dense", "-o", str(tmp_path / "d.npz")]) == 0
    assert modelfile.load(tmp_path / "d.npz").meta["method"] == "dense"
    np.savez(tmp_path / "w2.npz", conv1=np.zeros((8, 1, 5, 5)))
    assert main(["compress", str(tmp_path / "w2.npz"), "--method", "dense", "-o", str(tmp_path / "e.npz")]) == 1
    assert "Layer conv1 weights must be shaped (8, 1, 3, 3), not (8, 1, 5, 5)" in capsys.readouterr().err


def test_evaluate_writes_json_and_plot(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", MODELS["float"], MODELS["qgp"], "--json", "e.json", "--plot", "e.png"]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert [r["method"] for r in result["rows"]] == ["float", "qgp"]
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    assert {p["method"] for p in result["tradeoff"]} == {"smartdeal", "mlg"}


@pytest.mark.parametrize("method", ["smartdeal", "mlg"])
def test_committed_tradeoff_matches_committed_models(method):
    """The sweep's point at the committed settings is the committed model (same memory, same accuracy)."""
    from insitu.tools.evaluate import load_tradeoff
    from insitu.tools.evaluate import evaluate
    model = modelfile.load(MODELS[method])
    settings = {layer.name: layer.params["density"] if method == "smartdeal" else
                [layer.params["bi"], layer.params["bo"]] for layer in model.weight_layers if layer.method == method}
    sweep = load_tradeoff()
    point, = [p for p in sweep["points"] if p["method"] == method and p["setting"] == settings]
    row, = evaluate([MODELS[method]])["rows"]
    first = sweep["seeds"].index(model.meta["training"]["seed"])
    assert point["stored_bits"][first] == row["stored_bits"]
    assert point["integer_accuracy_per_seed"][first] == row["integer_accuracy"]


def test_training_is_deterministic():
    """One thread, deterministic kernels, fixed seeds: training and fine-tuning twice give the same bits."""
    pytest.importorskip("torch")
    from insitu.tools import train
    runs = [train.train_float(epochs=3, seed=0, progress=lambda s: None) for _ in range(2)]
    for ours, again in zip(*(r.weight_layers for r in runs)):
        np.testing.assert_array_equal(ours.data["weights"], again.data["weights"])
    committed = modelfile.load(MODELS["float"])
    tuned = [train.finetune(committed, "mlg", epochs=2, lr=0.005, seed=0, progress=lambda s: None) for _ in range(2)]
    for ours, again in zip(*(t.weight_layers for t in tuned)):
        for key in ours.data:
            np.testing.assert_array_equal(ours.data[key], again.data[key])


#: how far the committed models' test accuracy may be from a retraining's: on another CPU the float kernels
#: (oneDNN, MKL) round differently, and forty epochs carry the difference into the weights (up to 0.4 in
#: fc1, measured), so the bits are the committed ones only on the machine that trained them
RETRAIN_ACCURACY_BOUND = 0.015


def test_training_reproduces_the_committed_models():
    """The committed float model, and MLG fine-tuned from it, come from their recorded recipe: retraining
    gives the same test accuracy (float, and integer golden for MLG) within RETRAIN_ACCURACY_BOUND."""
    pytest.importorskip("torch")
    from insitu.tools import train
    _, _, xte, yte = network.digits_split()
    committed = modelfile.load(MODELS["float"])
    training = committed.meta["training"]
    model = train.train_float(epochs=training["epochs"], seed=training["seed"], progress=lambda s: None)
    assert abs(network.accuracy(model, xte, yte, integer=False)
               - network.accuracy(committed, xte, yte, integer=False)) <= RETRAIN_ACCURACY_BOUND
    epochs, lr = training["finetune"]["mlg"]["epochs"], training["finetune"]["mlg"]["lr"]
    mlg = train.finetune(committed, "mlg", epochs=epochs, lr=lr, seed=training["seed"], progress=lambda s: None)
    theirs = modelfile.load(MODELS["mlg"])
    assert [(a.method, a.data.keys()) for a in mlg.weight_layers] == \
        [(b.method, b.data.keys()) for b in theirs.weight_layers]
    assert abs(network.accuracy(mlg, xte, yte) - network.accuracy(theirs, xte, yte)) <= RETRAIN_ACCURACY_BOUND


def test_tradeoff_file_errors(tmp_path, capsys):
    bad = tmp_path / "t.json"
    bad.write_text('{"format": ')
    assert main(["evaluate", MODELS["dense"], "--tradeoff", str(bad), "--json", str(tmp_path / "e.json")]) == 1
    assert "t.json: not a JSON trade-off file" in capsys.readouterr().err
    assert main(["evaluate", MODELS["dense"], "--tradeoff", str(tmp_path / "nosuch.json")]) == 1
    assert "Cannot read trade-off file" in capsys.readouterr().err
    assert not (tmp_path / "e.json").exists()


def test_training_smoke():
    pytest.importorskip("torch")
    from insitu.tools import train
    float_model = train.train_float(epochs=1, steps=3, progress=lambda s: None)
    assert [layer.name for layer in float_model.weight_layers] == ["conv1", "conv2", "fc1", "fc2"]
    model = train.finetune(float_model, "qgp", epochs=1, steps=1, progress=lambda s: None)
    assert model.meta["method"] == "qgp" and model.layer("conv2").method == "qgp"


def test_training_without_torch_says_what_to_install(monkeypatch):
    import builtins
    real = builtins.__import__
    def fake(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("no torch")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", fake)
    from insitu.tools import train
    with pytest.raises(train.TorchMissing, match=r'pip install -e "\.\[train\]"'):
        train.require_torch()
