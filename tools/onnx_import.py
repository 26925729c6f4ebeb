"""``insitu import``: a sequential ONNX model (opset 13 or newer) as an insitu float model.

Read with the ``onnx`` package. The graph must be a chain (each node consumes the previous one's output)
with one input of fixed shape ``(N, C, H, W)`` or ``(N, F)`` (only the batch dimension may be dynamic), and
only these operators:

============================ ==========================================================================
``Conv``                     square odd kernel, equal strides, symmetric equal pads, no dilation, group 1
``Relu``
``MaxPool``, ``AveragePool`` square kernel, equal strides, no padding, ``ceil_mode`` 0
``Flatten`` / ``Reshape``    to ``(N, features)`` only
``Gemm``                     ``alpha = beta = 1``, ``transA = 0``, any ``transB``
``MatMul`` (+ ``Add``)       a constant weight matrix, then optionally a constant bias
``Identity``, ``Dropout``    skipped (inference)
============================ ==========================================================================

Anything else is one :class:`ImportError_` line naming the node, its operator and what is supported.
PyTorch ``nn.Sequential`` models are exported to ONNX first (:func:`from_torch`, the ``train`` extra).
"""

import os

import numpy as np

from ..golden import description, network
from ..golden.errors import InputError

__all__ = ["ImportError_", "load_onnx", "from_torch", "SUPPORTED", "MIN_OPSET"]

MIN_OPSET = 13
SUPPORTED = ("Conv", "Relu", "MaxPool", "AveragePool", "Flatten", "Reshape", "Gemm", "MatMul", "Add",
             "Identity", "Dropout")


class ImportError_(InputError):
    """An ONNX model insitu cannot import (one line: the node, the op, what is supported)."""


def _onnx():
    try:
        import onnx
        import onnx.numpy_helper
    except ImportError:
        raise ImportError_("Importing ONNX needs the onnx package: pip install onnx") from None
    return onnx


def _attrs(node):
    onnx = _onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _where(node):
    return f"node {node.name or '(unnamed)'} ({node.op_type})"


def _refuse(node, what):
    raise ImportError_(f"{_where(node)}: {what}; insitu imports {', '.join(SUPPORTED)}")


def _square(node, values, what):
    values = list(values)
    if len(values) != 2 or values[0] != values[1]:
        _refuse(node, f"{what} {values} must be two equal values")
    return int(values[0])


def load_onnx(path, formats=None):
    """A float :class:`~insitu.golden.network.Model` of an ONNX file (``formats``: its number formats,
    default ``network.FORMATS`` when the input is 1×8×8, else a float input in [-1, 1])."""
    onnx = _onnx()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImportError_(f"Cannot read ONNX model {path}: no such file")
    try:
        model = onnx.load(path)
    except Exception as error:      # protobuf's DecodeError and friends
        raise ImportError_(f"{path}: not an ONNX model ({type(error).__name__})") from None
    if not model.graph.node:
        raise ImportError_(f"{path}: not an ONNX model (no graph nodes)")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        raise ImportError_(f"{path}: ONNX opset {opset}; insitu imports opset {MIN_OPSET} or newer")
    try:
        return _convert(onnx, model, formats)
    except (ImportError_, description.DescriptionError) as error:
        raise ImportError_(f"{path}: {error}") from None


def _convert(onnx, model, formats):
    g = model.graph
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1 or len(g.output) != 1:
        raise ImportError_(f"the graph must have one input and one output, not {len(inputs)} and {len(g.output)}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = []
    for n, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(d.dim_value)
        elif n == 0:
            shape.append(1)                       # a dynamic batch dimension is fine
        else:
            raise ImportError_(f"input {inputs[0].name} has a dynamic dimension {n} "
                               f"({d.dim_param or '?'}); export it with a fixed shape")
    if len(shape) not in (2, 4):
        raise ImportError_(f"input {inputs[0].name} must be (N, C, H, W) or (N, F), not {tuple(shape)}")
    input_shape = tuple(shape[1:])
    layers, weights, biases = [], {}, {}
    current = inputs[0].name
    counts = {"conv2d": 0, "linear": 0}
    flat_sizes = {}
    nodes = list(g.node)
    i = 0
    while i < len(nodes):
        node = nodes[i]
        i += 1
        op = node.op_type
        if op == "Constant":
            consts[node.output[0]] = onnx.numpy_helper.to_array(_attrs(node)["value"])
            continue
        if op not in SUPPORTED:
            _refuse(node, "unsupported operator")
        if not node.input or node.input[0] != current:
            _refuse(node, f"the graph is not a chain (it reads {list(node.input)}, the chain is at {current!r})")
        a = _attrs(node)
        if op in ("Identity", "Dropout"):
            pass
        elif op == "Relu":
            layers.append({"kind": "relu"})
        elif op == "Conv":
            w = consts.get(node.input[1]) if len(node.input) > 1 else None
            if w is None or w.ndim != 4:
                _refuse(node, "weights must be a constant (c_out, c_in, k, k) initializer")
            if a.get("group", 1) != 1:
                _refuse(node, f"group {a['group']} is not supported (only group 1)")
            if any(d != 1 for d in a.get("dilations", [1, 1])):
                _refuse(node, f"dilation {list(a['dilations'])} is not supported (only 1)")
            if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                _refuse(node, "auto_pad is not supported (give explicit pads)")
            k = _square(node, a.get("kernel_shape", w.shape[2:]), "kernel")
            stride = _square(node, a.get("strides", [1, 1]), "strides")
            pads = list(a.get("pads", [0, 0, 0, 0]))
            if len(set(pads)) != 1:
                _refuse(node, f"asymmetric pads {pads} are not supported (all four must be equal)")
            counts["conv2d"] += 1
            name = f"conv{counts['conv2d']}"
            layers.append({"kind": "conv2d", "name": name, "c_out": int(w.shape[0]), "k": k, "stride": stride,
                           "padding": int(pads[0]), "bias": len(node.input) > 2 and bool(node.input[2])})
            weights[name] = w
            if layers[-1]["bias"]:
                biases[name] = _const(node, consts, node.input[2], "bias")
        elif op in ("MaxPool", "AveragePool"):
            if any(p != 0 for p in a.get("pads", [0, 0, 0, 0])) or a.get("ceil_mode", 0):
                _refuse(node, "padding and ceil_mode are not supported")
            if any(d != 1 for d in a.get("dilations", [1, 1])):
                _refuse(node, f"dilation {list(a['dilations'])} is not supported")
            k = _square(node, a["kernel_shape"], "kernel")
            stride = _square(node, a.get("strides", [1, 1]), "strides")
            layers.append({"kind": "pool", "mode": "max" if op == "MaxPool" else "avg", "k": k, "stride": stride})
        elif op == "Flatten":
            if a.get("axis", 1) != 1:
                _refuse(node, f"axis {a['axis']} is not supported (only 1)")
            layers.append({"kind": "flatten"})
        elif op == "Reshape":
            target = consts.get(node.input[1]) if len(node.input) > 1 else None
            if target is None or target.ndim != 1 or len(target) != 2 or int(target[0]) not in (-1, 0, 1) \
                    or int(target[1]) == 0 or int(target[1]) < -1:
                _refuse(node, f"only a reshape to (N, features) is supported, not {target}")
            layers.append({"kind": "flatten"})
            if int(target[1]) != -1:
                flat_sizes[len(layers) - 1] = (node, int(target[1]))
        elif op in ("Gemm", "MatMul"):
            w = _const(node, consts, node.input[1], "weight matrix")
            if op == "Gemm":
                if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
                    _refuse(node, "only alpha = beta = 1 and transA = 0 are supported")
                w = w if a.get("transB", 0) else w.T
                bias = _const(node, consts, node.input[2], "bias") if len(node.input) > 2 and node.input[2] \
                    else None
            else:
                w, bias = w.T, None
                if i < len(nodes) and nodes[i].op_type == "Add" and node.output[0] in nodes[i].input:
                    add = nodes[i]
                    other = [n for n in add.input if n != node.output[0]]
                    bias = _const(add, consts, other[0], "bias")
                    node, i = add, i + 1
            if w.ndim != 2:
                _refuse(node, f"weights must be a matrix, not shape {w.shape}")
            if bias is not None:
                bias = bias.reshape(-1)
            counts["linear"] += 1
            name = f"fc{counts['linear']}"
            layers.append({"kind": "linear", "name": name, "features": int(w.shape[0]), "bias": bias is not None})
            weights[name] = w
            if bias is not None:
                biases[name] = bias
        elif op == "Add":
            _refuse(node, "an Add must follow a MatMul (as its bias)")
        current = node.output[0]
    if current != g.output[0].name:
        raise ImportError_(f"the chain ends at {current!r}, not at the graph output {g.output[0].name!r}")
    desc = {"input": list(input_shape), "layers": layers}
    if formats is None:
        formats = dict(network.FORMATS) if input_shape == (1, 8, 8) else \
            {"input_scale": 1.0, "input_gain": 127.0, "act_width": 8}
    try:
        out = network.from_description(desc, weights, biases, {"imported_from": "onnx"}, formats)
    except (ValueError, TypeError) as error:
        raise ImportError_(str(error)) from None
    for index, (node, size) in flat_sizes.items():
        if out.layers[index].out_shape != (size,):
            _refuse(node, f"reshape to {size} features, but its input holds {out.layers[index].out_shape[0]}")
    return out


def _const(node, consts, name, what):
    value = consts.get(name)
    if value is None:
        _refuse(node, f"its {what} must be a constant initializer")
    return np.asarray(value, dtype=np.float64)


def from_torch(module, input_shape, path, *, opset=17):
    """Export a PyTorch ``nn.Sequential`` to ONNX at ``path`` (fixed shape ``(1, *input_shape)``)."""
    import warnings
    from .train import require_torch
    torch = require_torch()
    module = module.eval()
    with warnings.catch_warnings():
        # the TorchScript exporter needs no onnxscript; PyTorch marks it deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, torch.zeros(1, *input_shape), path, dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["output"])
    return path
