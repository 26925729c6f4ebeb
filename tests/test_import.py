"""ONNX import: the float path of an imported model against onnxruntime (an independent reference), compression
of imported descriptions with every applicable method, and one-line refusals of what insitu cannot import."""

import numpy as np
import pytest

from insitu.golden import description, modelfile, network
from insitu.tools import compress
from insitu.tools.cli import main

from helpers import random_weights as seeded_weights

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from insitu.tools.onnx_import import ImportError_, load_onnx  # noqa: E402

#: The digits CNN as a framework exports it: its 2x2 sum pool becomes an average pool.
DIGITS_CNN_AVG = {"input": [1, 8, 8], "layers": [
    dict(layer, mode="avg") if layer["kind"] == "pool" else layer for layer in description.DIGITS_CNN["layers"]]}
DESCRIPTIONS = {"digits-cnn": DIGITS_CNN_AVG, "digits-deep": description.DIGITS_DEEP,
                "digits-mlp": description.DIGITS_MLP}


def random_weights(desc, seed):
    return seeded_weights(desc, seed, bias_scale=0.1, dtype=np.float32)


def to_onnx(desc, weights, biases, *, linear="gemm", flatten="Flatten", opset=13):
    """An ONNX graph for a description, written here with onnx.helper (not by insitu)."""
    shape, specs = description.from_dict(desc)
    nodes, inits, current = [], [], "input"

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    for n, spec in enumerate(specs):
        out, name, kind = f"t{n}", spec["name"], spec["kind"]
        if kind == "conv2d":
            ins = [current, const(name + ".w", weights[name])] + ([const(name + ".b", biases[name])]
                                                               if spec["bias"] else [])
            p = spec["padding"]
            nodes.append(helper.make_node("Conv", ins, [out], name=name, kernel_shape=[spec["k"]] * 2,
                                          strides=[spec["stride"]] * 2, pads=[p] * 4))
        elif kind == "relu":
            nodes.append(helper.make_node("Relu", [current], [out], name=name))
        elif kind == "pool":
            op = {"max": "MaxPool", "avg": "AveragePool"}[spec["mode"]]
            nodes.append(helper.make_node(op, [current], [out], name=name, kernel_shape=[spec["k"]] * 2,
                                          strides=[spec["stride"]] * 2))
        elif kind == "flatten":
            if flatten == "Flatten":
                nodes.append(helper.make_node("Flatten", [current], [out], name=name, axis=1))
            else:
                nodes.append(helper.make_node("Reshape", [current, const(name + ".shape", np.array([1, -1]))],
                                              [out], name=name))
        elif kind == "linear":
            w = weights[name]
            b = biases.get(name, np.zeros(w.shape[0], np.float32))
            if linear == "gemm":
                nodes.append(helper.make_node("Gemm", [current, const(name + ".w", w), const(name + ".b", b)],
                                              [out], name=name, transB=1))
            elif linear == "gemm-t":
                nodes.append(helper.make_node("Gemm", [current, const(name + ".w", w.T.copy()),
                                                       const(name + ".b", b)], [out], name=name))
            else:
                nodes.append(helper.make_node("MatMul", [current, const(name + ".w", w.T.copy())], [out + "m"],
                                              name=name))
                nodes.append(helper.make_node("Add", [out + "m", const(name + ".b", b)], [out], name=name + "_add"))
        current = out
    out_shape = description.infer_shapes(shape, specs)[-1][1]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            [1, *shape])],
                              [helper.make_tensor_value_info(current, TensorProto.FLOAT, [1, *out_shape])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def onnxruntime_scores(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: img[None].astype(np.float32)})[0] for img in images])


def assert_agree(model, path, images):
    """Identical argmax on every image, logits within 1e-4 relative (to the largest logit of the image)."""
    ours = network.forward_float(model, images)
    ref = onnxruntime_scores(path, images * model.formats["input_scale"])
    np.testing.assert_array_equal(ours.argmax(1), ref.argmax(1))
    scale = np.abs(ref).max(axis=1, keepdims=True)
    assert np.max(np.abs(ours - ref) / scale) < 1e-4


@pytest.mark.parametrize("name, linear, flatten", [
    ("digits-cnn", "gemm", "Flatten"), ("digits-deep", "matmul", "Reshape"), ("digits-mlp", "gemm-t", "Flatten")])
def test_import_matches_onnxruntime_and_compresses(name, linear, flatten, tmp_path):
    desc = DESCRIPTIONS[name]
    weights, biases = random_weights(desc, 7)
    path = tmp_path / f"{name}.onnx"
    onnx.save(to_onnx(desc, weights, biases, linear=linear, flatten=flatten), path)
    model = load_onnx(path)
    assert [l.kind for l in model.layers] == [s["kind"] for s in description.from_dict(desc)[1]]
    xtr, _, xte, _ = network.digits_split()
    assert_agree(model, path, xte)                                  # all 360 test images
    for method in compress.METHODS:                                  # every method, where it applies
        out = compress.compress_model(model, method, xtr[:64])
        scores = network.forward_int(out, xte[:8])
        assert scores.shape == (8, 10) and scores.dtype == np.int64
        modelfile.save(tmp_path / "m.npz", out)
        np.testing.assert_array_equal(network.forward_int(modelfile.load(tmp_path / "m.npz"), xte[:8]), scores)


def test_pytorch_sequential_through_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    from insitu.tools.onnx_import import from_torch
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
        torch.nn.Linear(32, 10))
    path = from_torch(net, (1, 8, 8), tmp_path / "net.onnx")
    model = load_onnx(path)
    _, _, xte, _ = network.digits_split()
    assert_agree(model, path, xte)
    with torch.no_grad():
        ref = net(torch.tensor(xte / 16.0, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(network.forward_float(model, xte), ref, rtol=1e-4, atol=1e-4)


def test_import_cli(tmp_path, capsys):
    weights, biases = random_weights(description.DIGITS_MLP, 3)
    onnx.save(to_onnx(description.DIGITS_MLP, weights, biases), tmp_path / "mlp.onnx")
    assert main(["import", str(tmp_path / "mlp.onnx"), "-o", str(tmp_path / "mlp.npz")]) == 0
    assert "float test accuracy" in capsys.readouterr().out
    assert main(["compress", str(tmp_path / "mlp.npz"), "--layer-method", "fc3=circulant",
                 "-o", str(tmp_path / "c.npz")]) == 1
    assert "Layer fc3: circulant block size 16 must divide both dimensions of the 10x64 matrix" in \
        capsys.readouterr().err
    assert main(["compress", str(tmp_path / "mlp.npz"), "--method", "smartdeal", "--layer-method", "fc1=mlg",
                 "-o", str(tmp_path / "c.npz")]) == 0
    assert modelfile.load(tmp_path / "c.npz").methods() == {"fc1": "mlg", "fc2": "smartdeal", "fc3": "dense"}


def _graph_with(node, inits=(), in_shape=(1, 1, 8, 8), out_shape=(1, 8, 8, 8), opset=13):
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, out_shape)],
                              list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


W = numpy_helper.from_array(np.ones((8, 1, 3, 3), np.float32), "w")


@pytest.mark.parametrize("case, msg", [
    ("sigmoid", r"node s \(Sigmoid\): unsupported operator; insitu imports Conv, Relu, MaxPool"),
    ("groups", r"node c \(Conv\): group 2 is not supported \(only group 1\)"),
    ("dilation", r"node c \(Conv\): dilation \[2, 2\] is not supported"),
    ("pads", r"node c \(Conv\): asymmetric pads \[1, 0, 1, 0\] are not supported"),
    ("opset", r"ONNX opset 11; insitu imports opset 13 or newer$"),
    ("dynamic", r"input input has a dynamic dimension 2 \(h\); export it with a fixed shape$"),
    ("not-onnx", r"not an ONNX model"),
    ("missing", r"Cannot read ONNX model .*: no such file$"),
])
def test_import_refusals(case, msg, tmp_path):
    path = tmp_path / "bad.onnx"
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    if case == "sigmoid":
        model = _graph_with(helper.make_node("Sigmoid", ["input"], ["o"], name="s"))
    elif case == "groups":
        model = _graph_with(helper.make_node("Conv", ["input", "w"], ["o"], name="c", group=2, **conv), [W])
    elif case == "dilation":
        model = _graph_with(helper.make_node("Conv", ["input", "w"], ["o"], name="c", dilations=[2, 2], **conv), [W])
    elif case == "pads":
        model = _graph_with(helper.make_node("Conv", ["input", "w"], ["o"], name="c", kernel_shape=[3, 3],
                                             pads=[1, 0, 1, 0]), [W])
    elif case == "opset":
        model = _graph_with(helper.make_node("Relu", ["input"], ["o"], name="r"), opset=11)
    elif case == "dynamic":
        model = _graph_with(helper.make_node("Relu", ["input"], ["o"], name="r"), in_shape=("n", 1, "h", 8))
    if case == "not-onnx":
        path.write_bytes(b"\x00\x01 this is not a protobuf \xff" * 10)
    elif case != "missing":
        onnx.save(model, path)
    with pytest.raises(ImportError_, match=msg):
        load_onnx(path)
    out = tmp_path / "out.npz"
    assert main(["import", str(path), "-o", str(out)]) == 1
    assert not out.exists()
