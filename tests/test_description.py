"""Network descriptions: shape inference, one-line refusals, integer inference of any description against a
loop-by-loop reference written here, biases, the method registry, and the CIFAR-10 reader."""

import json
import pickle

import numpy as np
import pytest

from insitu.golden import datasets, description, methods, modelfile, network
from insitu.golden.description import DescriptionError
from insitu.tools import compress
from insitu.tools.cli import main

from helpers import ODD, random_model


@pytest.mark.parametrize("name, shapes", [
    ("digits-cnn", [(8, 8, 8), (8, 8, 8), (16, 8, 8), (16, 4, 4), (16, 4, 4), (256,), (64,), (64,), (10,)]),
    ("digits-deep", [(16, 8, 8), (16, 8, 8), (16, 8, 8), (16, 8, 8), (32, 4, 4), (32, 4, 4), (32, 2, 2),
                     (128,), (64,), (64,), (10,)]),
    ("cifar-vgg", [(16, 32, 32), (16, 32, 32), (16, 32, 32), (16, 32, 32), (16, 16, 16), (32, 16, 16),
                   (32, 16, 16), (32, 16, 16), (32, 16, 16), (32, 8, 8), (64, 8, 8), (64, 8, 8), (64, 4, 4),
                   (1024,), (128,), (128,), (10,)]),
])
def test_shapes_are_inferred(name, shapes):
    shape, layers = description.from_dict(description.BUILTIN[name])
    assert [o for _, o in description.infer_shapes(shape, layers)] == shapes


@pytest.mark.parametrize("layers, msg", [
    ([{"kind": "conv3d"}], r"^Layer 0: unknown kind 'conv3d'; choose one of: conv2d, linear, pool, relu, flatten$"),
    ([{"kind": "conv2d", "c_out": 4}], r"^Layer conv2d0 \(conv2d\): missing attribute 'k'$"),
    ([{"kind": "conv2d", "c_out": 4, "k": 2}], r"^Layer conv2d0 \(conv2d\): k must be odd, not 2$"),
    ([{"kind": "conv2d", "c_out": 4, "k": 3, "dilation": 2}],
     r"^Layer conv2d0 \(conv2d\): unknown attribute 'dilation'; conv2d takes c_out, k, stride, padding, bias$"),
    ([{"kind": "linear", "features": 10}],
     r"^Layer linear0 \(linear\): needs a flat input, not \(1, 8, 8\); add a flatten layer before it$"),
    ([{"kind": "flatten"}, {"kind": "conv2d", "c_out": 4, "k": 3}],
     r"^Layer conv2d1 \(conv2d\): needs a \(channels, height, width\) input, not \(64,\)"),
    ([{"kind": "conv2d", "c_out": 4, "k": 11}], r"smaller than the 11x11 kernel$"),
    ([{"kind": "relu", "name": "a"}, {"kind": "relu", "name": "a"}], r"^Layer 1: name 'a' is used twice$"),
    ([{"kind": "pool", "mode": "median", "k": 2}], r"mode must be one of sum, avg, max, not 'median'$"),
    ([{"kind": "linear", "features": 0}], r"features must be in range \[1, 65535\], not 0$"),
    ([], r"^A description needs a non-empty list of layers$"),
])
def test_bad_descriptions(layers, msg):
    with pytest.raises(DescriptionError, match=msg):
        description.from_dict({"input": [1, 8, 8], "layers": layers})


def test_description_files_and_cli_errors(tmp_path, capsys):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(description.DIGITS_MLP))
    assert description.from_dict(description.DIGITS_MLP) == description.load_json(path)
    path.write_text('{"input": [1, 8, 8], "layers": [')
    with pytest.raises(DescriptionError, match=r"a.json: not a JSON description"):
        description.load_json(path)
    assert main(["train", "--arch", str(path), "--out-dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a JSON description" in err and not (tmp_path / "o").exists()


def reference_int(model, raw):
    """Integer inference written out loop by loop, independent of golden.network: padding, stride, pools,
    biases and requantisation at the next weight layer's input."""
    x = np.floor(raw * model.formats["input_gain"] + 0.5).astype(np.int64)
    pending = None
    for layer in model.layers:
        a = layer.attrs
        if layer.is_weight:
            if pending is not None:
                s = pending.shift
                x = np.clip((x + ((1 << s) >> 1)) // (1 << s), -128, 127)
            w, _ = network.integer_weights(layer)
            bias = layer.data.get("bias_q", np.zeros(w.shape[0], np.int64)).astype(np.int64)
            if layer.kind == "conv2d":
                n, c, h, wd = x.shape
                k, st, p = a["k"], a["stride"], a["padding"]
                xp = np.zeros((n, c, h + 2 * p, wd + 2 * p), np.int64)
                xp[:, :, p:p + h, p:p + wd] = x
                ho, wo = (h + 2 * p - k) // st + 1, (wd + 2 * p - k) // st + 1
                out = np.zeros((n, w.shape[0], ho, wo), np.int64)
                for y in range(ho):
                    for q in range(wo):
                        patch = xp[:, :, y * st:y * st + k, q * st:q * st + k]
                        out[:, :, y, q] = np.einsum("ncij,ocij->no", patch, w) + bias
                x = out
            else:
                x = x @ w.T + bias
            pending = layer
        elif layer.kind == "relu":
            x = np.where(x > 0, x, 0)
        elif layer.kind == "pool":
            k, st = a["k"], a["stride"]
            n, c, h, wd = x.shape
            ho, wo = (h - k) // st + 1, (wd - k) // st + 1
            out = np.zeros((n, c, ho, wo), np.int64)
            for y in range(ho):
                for q in range(wo):
                    win = x[:, :, y * st:y * st + k, q * st:q * st + k].reshape(n, c, -1)
                    out[:, :, y, q] = win.max(axis=2) if a["mode"] == "max" else win.sum(axis=2)
            x = out
        elif layer.kind == "flatten":
            x = x.reshape(len(x), -1)
    return x


@pytest.mark.parametrize("desc", [ODD, description.DIGITS_DEEP, description.DIGITS_MLP], ids=["odd", "deep", "mlp"])
@pytest.mark.parametrize("method", ["dense", "qgp", "smartdeal", "mlg"])
def test_integer_path_of_any_description_equals_loop_reference(desc, method):
    rng = np.random.default_rng(11)
    model = random_model(desc, 5)
    raw = rng.integers(-12, 13, size=(24, *model.input_shape))
    out = compress.compress_model(model, method, raw[:16], layer_methods={
        layer.name: method for layer in model.weight_layers
        if not methods.get(method).refuses(layer.kind, layer.shape)})
    assert any("bias_q" in layer.data for layer in out.weight_layers)
    np.testing.assert_array_equal(network.forward_int(out, raw[16:]), reference_int(out, raw[16:]))


def test_float_path_tracks_integer_path():
    """On int8 weights the integer scores, scaled by the accumulator LSB, stay near the float path (within 5%
    of the score range: 8-bit activations after each of three layers)."""
    model = random_model(description.DIGITS_DEEP, 6)
    xtr, _, xte, _ = network.digits_split()
    model.formats = dict(network.FORMATS)
    out = compress.compress_model(model, "dense", xtr[:256])
    lsb = network.activation_scales(out)[out.weight_layers[-1].name][1]
    ints = network.forward_int(out, xte[:50]) * lsb
    floats = network.forward_float(out, xte[:50])
    assert np.max(np.abs(ints - floats)) < 0.05 * np.ptp(floats)


def test_mixed_methods_and_refusals():
    xtr = network.digits_split()[0][:32]
    model = random_model(description.DIGITS_CNN, 1)
    model.formats = dict(network.FORMATS)
    out = compress.compress_model(model, layer_methods={"conv2": "qgp", "fc1": "circulant"}, calibration=xtr)
    assert out.methods() == {"conv1": "dense", "conv2": "qgp", "fc1": "circulant", "fc2": "dense"}
    assert out.meta["method"] == "mixed"
    with pytest.raises(ValueError, match=r"^Layer fc1: qgp compresses conv2d layers, not linear$"):
        compress.compress_model(model, layer_methods={"fc1": "qgp"}, calibration=xtr)
    with pytest.raises(ValueError, match=r"^Model has no weight layer 'conv9'"):
        compress.compress_model(model, layer_methods={"conv9": "qgp"}, calibration=xtr)
    with pytest.raises(ValueError, match=r"^Layer methods must read LAYER=METHOD"):
        compress.parse_layer_methods("conv2:qgp")
    with pytest.raises(ValueError, match=r"^Unknown method 'magic'; choose one of: float, dense, qgp"):
        compress.parse_layer_methods("conv2=magic")


def test_accumulator_width_is_checked_before_work():
    desc = {"input": [2000, 3, 3], "layers": [{"kind": "conv2d", "name": "c", "c_out": 2, "k": 3, "padding": 1},
                                              {"kind": "pool", "mode": "sum", "k": 3}, {"kind": "flatten"},
                                              {"kind": "linear", "name": "f", "features": 2}]}
    model = network.from_description(desc, {"c": np.ones((2, 2000, 3, 3)), "f": np.ones((2, 2))})
    with pytest.raises(ValueError, match=r"^Layer c: accumulators may reach \d+, more than 32 bits hold"):
        compress.compress_model(model, "dense", np.zeros((1, 2000, 3, 3), np.int64))


@pytest.mark.parametrize("images, error, msg", [
    (np.full((2, 1, 8, 8), np.nan), ValueError, r"^Images contain NaN or infinite values$"),
    (np.full((2, 1, 8, 8), 40), ValueError, r"^Image value 40 is out of range: at input gain 7"),
    (np.zeros((2, 1, 16, 16)), ValueError, r"^Images must be shaped \(n, 1, 8, 8\), not \(2, 1, 16, 16\)$"),
    (np.array([["a"] * 64]).reshape(1, 1, 8, 8), TypeError, r"^Images must be a numeric array"),
])
def test_bad_images(images, error, msg):
    model = modelfile.load(network_default("dense"))
    with pytest.raises(error, match=msg):
        network.predict(model, images)


def network_default(method):
    from insitu.tools.evaluate import MODEL_DIR
    return f"{MODEL_DIR}/digits-{method}.npz"


def test_bad_float_weights_and_save():
    with pytest.raises(ValueError, match=r"^Layer conv1 weights contain NaN or infinite values$"):
        compress.float_model({"conv1": np.full((8, 1, 3, 3), np.nan), "conv2": np.zeros((16, 8, 3, 3)),
                              "fc1": np.zeros((64, 256)), "fc2": np.zeros((10, 64))})
    with pytest.raises(TypeError, match=r"^Model must be an insitu.golden.network.Model, not str$"):
        modelfile.save("x.npz", "not a model")


def test_version_2_round_trip_with_biases(tmp_path):
    model = random_model(ODD, 3)
    raw = np.random.default_rng(0).integers(-12, 13, size=(8, *model.input_shape))
    out = compress.compress_model(model, "smartdeal", raw)
    modelfile.save(tmp_path / "m.npz", out)
    back = modelfile.load(tmp_path / "m.npz")
    assert back.description() == out.description() and back.formats == out.formats
    np.testing.assert_array_equal(network.forward_int(back, raw), network.forward_int(out, raw))
    np.testing.assert_array_equal(network.forward_float(back, raw), network.forward_float(out, raw))


def fake_cifar(path, n=12, seed=0):
    """A stand-in CIFAR-10 python directory, same format, a handful of images per batch."""
    rng = np.random.default_rng(seed)
    path.mkdir()
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, size=n).tolist(), b"batch_label": name.encode()}
        with open(path / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar10_reader(tmp_path):
    fake_cifar(tmp_path / "cifar-10-batches-py")
    data = datasets.load(f"cifar10:{tmp_path}")
    assert data.x_train.shape == (24, 3, 32, 32) and data.x_test.shape == (12, 3, 32, 32)
    assert data.x_train.dtype == np.uint8 and data.input_shape == (3, 32, 32)
    with pytest.raises(datasets.DatasetError, match=r"does not exist; download https://www.cs.toronto.edu"):
        datasets.load(f"cifar10:{tmp_path}/nope")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(datasets.DatasetError, match=r"test_batch: not a CIFAR-10 python batch"):
        datasets.load(f"cifar10:{tmp_path}")


def test_train_vgg_on_cifar_stand_in(tmp_path, capsys):
    pytest.importorskip("torch")
    fake_cifar(tmp_path / "c")
    out = tmp_path / "models"
    assert main(["train", "--arch", "cifar-vgg", "--data", f"cifar10:{tmp_path / 'c'}", "--epochs", "1",
                 "--finetune-epochs", "1", "--out-dir", str(out)]) == 0
    model = modelfile.load(out / "cifar-vgg-qgp.npz")
    assert model.input_shape == (3, 32, 32) and model.methods()["conv2"] == "qgp"
    assert model.meta["dataset"]["name"] == "cifar10"


@pytest.mark.parametrize("argv, msg", [
    (["compress", "m.npz", "--method", "qgp", "-o", "afile/o.npz"], r"-o afile/o.npz: .*afile is a file, not a directory"),
    (["evaluate", "--json", "."], r"--json \. is a directory, not a file"),
    (["evaluate", "--plot", "x.txt"], r"--plot writes a PNG image"),
    (["import", "net.onnx", "-o", "afile/deeper/x.npz"], r"-o afile/deeper/x.npz: .*afile is a file"),
])
def test_outputs_are_checked_before_work(argv, msg, tmp_path, monkeypatch, capsys):
    import re
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(msg, err)
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]


def test_outputs_get_their_directories(tmp_path, monkeypatch):
    from insitu.tools.evaluate import MODEL_DIR
    monkeypatch.chdir(tmp_path)
    assert main(["compress", f"{MODEL_DIR}/digits-float.npz", "--method", "dense", "-o", "a/b/m.npz"]) == 0
    assert main(["evaluate", "a/b/m.npz", "--json", "c/e.json", "--plot", "d/e.png"]) == 0
    assert (tmp_path / "a/b/m.npz").exists() and (tmp_path / "c/e.json").exists() and (tmp_path / "d/e.png").exists()


def test_compress_refuses_other_files_in_one_line(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.save([1, 2], tmp_path / "l.pt")
    torch.save(torch.zeros(3), tmp_path / "t.pt")
    (tmp_path / "x.pt").write_text("hello")
    (tmp_path / "r.npz").write_bytes(np.random.default_rng(0).bytes(300))
    cases = {"l.pt": r"l.pt: not a PyTorch state dict \(a dict of tensors\), but list$",
             "t.pt": r"t.pt: not a PyTorch state dict \(a dict of tensors\), but Tensor$",
             "x.pt": r"x.pt: not a PyTorch file \(\w+\)$",
             "r.npz": r"r.npz: corrupt model archive \(not an .npz archive of arrays\)$"}
    import re
    for name, msg in cases.items():
        assert main(["compress", str(tmp_path / name), "--method", "qgp", "-o", str(tmp_path / "o.npz")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and re.search(msg, err.strip()), err
    assert not (tmp_path / "o.npz").exists()


def test_small_promises(tmp_path, monkeypatch, capsys):
    """evaluate writes nothing unasked; model files are written like any file (umask); the compiled
    simulation's cache follows XDG_CACHE_HOME; ECP5 clock names are plain; --version."""
    import os
    from insitu.soc.cxxrtl import cache_dir
    from insitu.tools.build import parse_reports
    from insitu.tools.evaluate import MODEL_DIR
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", f"{MODEL_DIR}/digits-dense.npz"]) == 0
    assert list(tmp_path.iterdir()) == [] and "written" not in capsys.readouterr().out
    old = os.umask(0o022)
    try:
        modelfile.save(tmp_path / "m.npz", modelfile.load(f"{MODEL_DIR}/digits-dense.npz"))
    finally:
        os.umask(old)
    assert (tmp_path / "m.npz").stat().st_mode & 0o777 == 0o644
    monkeypatch.delenv("INSITU_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "insitu" / "cxxrtl"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "report.json").write_text(json.dumps(
        {"utilization": {}, "fmax": {"$glbnet$clk": {"achieved": 120.5, "constraint": 100.0}}}))
    _, clocks = parse_reports("ecp5", tmp_path / "b")
    assert clocks == [{"name": "clk", "achieved_mhz": 120.5, "target_mhz": 100.0, "met": True}]
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("insitu ")


def test_train_one_model_with_a_method_per_layer(tmp_path, capsys):
    """--layer-method fine-tunes one mixed model (layers not named stay int8); a bad layer or method is
    refused before any training."""
    pytest.importorskip("torch")
    out = tmp_path / "models"
    assert main(["train", "--arch", "digits-mlp", "--layer-method", "fc2=circulant", "--epochs", "1",
                 "--finetune-epochs", "1", "--out-dir", str(out)]) == 0
    model = modelfile.load(out / "digits-mlp-mixed.npz")
    assert model.methods() == {"fc1": "dense", "fc2": "circulant", "fc3": "dense"}
    assert model.meta["layer_methods"] == {"fc2": "circulant"} and model.meta["accuracy"]["integer"] is not None
    assert sorted(p.name for p in out.iterdir()) == ["digits-mlp-float.npz", "digits-mlp-mixed.npz"]
    for argv, msg in ((["--layer-method", "conv9=qgp"], "has no weight layer 'conv9'; its weight layers are fc1, fc2, fc3"),
                      (["--layer-method", "fc1=qgp"], "Layer fc1: qgp compresses conv2d layers, not linear"),
                      (["--layer-method", "fc1=qgp", "--seeds", "2"], "--layer-method trains one mixed model")):
        assert main(["train", "--arch", "digits-mlp", "--out-dir", str(tmp_path / "none"), *argv]) == 1
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1
    assert not (tmp_path / "none").exists()
