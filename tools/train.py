"""``insitu train``: train the float digits CNN with PyTorch (CPU), then fine-tune every compressed variant.

Needs the optional extra: ``pip install -e ".[train]"``. Fine-tuning is projected training with a
straight-through estimator: the forward pass uses the weights the method can represent (the projection of
:func:`insitu.tools.compress.project`) and 8-bit activations quantised exactly as the integer golden
model does (scales chained from the weight scales and the calibrated shifts); the gradient updates the
float weights as if the projection were the identity. QGP is pruned progressively: three taps per kernel,
then one, then binarised; SmartDeal's coefficient density falls to its target over the first half. Seeds are fixed; the result is reproducible on the CPU.
"""

import numpy as np

from ..golden import datasets, description, network
from ..golden.description import DIGITS_CNN
from . import compress

__all__ = ["require_torch", "train_float", "finetune", "train_all", "tradeoff", "tradeoff_settings", "FINETUNE",
           "TRADEOFF"]

#: Fine-tuning schedule per method (epochs, Adam learning rate). Circulant projection of fc1 loses most at
#: first and needs the longest run to recover.
FINETUNE = {"dense": (30, 2e-3), "qgp": (30, 2e-3), "circulant": (100, 3e-3), "smartdeal": (60, 2e-3),
            "mlg": (30, 2e-3)}

#: Settings swept by :func:`tradeoff`, loosest first; the last one is what ``insitu train`` commits.
TRADEOFF = {
    "smartdeal": [{"conv2": 0.6, "fc1": 0.25}, {"conv2": 0.4, "fc1": 0.15}, {"conv2": 0.3, "fc1": 0.11},
                  {"conv2": 0.25, "fc1": 0.08}],
    "mlg": [{"conv2": (6, 16), "fc1": (1, 24)}, {"conv2": (4, 12), "fc1": (1, 12)},
            {"conv2": (4, 10), "fc1": (1, 8)}, {"conv2": (3, 8), "fc1": (1, 6)}],
}


class TorchMissing(RuntimeError):
    pass


def require_torch():
    try:
        import torch
    except ImportError:
        raise TorchMissing("PyTorch is not installed; training needs the optional extra: "
                           "pip install -e \".[train]\" (or pip install torch==2.13.0)") from None
    return torch


def _net(torch, arrays):
    return {name: torch.nn.Parameter(torch.tensor(np.asarray(w), dtype=torch.float32))
            for name, w in arrays.items()}


def _forward(torch, model, params, x, weights_of=None, act_scales=None):
    """``model``'s layers in float on ``x`` (the float input); ``weights_of(layer, param)`` gives the weights
    to use, ``act_scales`` the input LSB of each weight layer after the first, where the integer path
    requantises (None: float activations)."""
    F = torch.nn.functional
    first = True
    for layer in model.layers:
        a = layer.attrs
        if layer.is_weight:
            if act_scales is not None and not first:
                s = act_scales[layer.name]
                lo, hi = -(1 << (model.formats["act_width"] - 1)), (1 << (model.formats["act_width"] - 1)) - 1
                q = torch.clamp(torch.floor(x / s + 0.5), lo, hi) * s
                x = x + (q - x).detach()
            first = False
            p = params[layer.name]
            w = p if weights_of is None else weights_of(layer, p)
            b = params.get(layer.name + ".bias")
            x = F.conv2d(x, w, b, stride=a["stride"], padding=a["padding"]) if layer.kind == "conv2d" \
                else F.linear(x, w, b)
        elif layer.kind == "relu":
            x = F.relu(x)
        elif layer.kind == "pool":
            if a["mode"] == "max":
                x = F.max_pool2d(x, a["k"], a["stride"])
            else:
                x = F.avg_pool2d(x, a["k"], a["stride"]) * (a["k"] ** 2 if a["mode"] == "sum" else 1)
        elif layer.kind == "flatten":
            x = x.reshape(len(x), -1)
    return x


def _arrays(model):
    """``{name: weights, name.bias: bias}`` of a model's weight layers (float)."""
    out = {}
    for layer in model.weight_layers:
        out[layer.name] = network.float_weights(layer)
        if "bias" in layer.data:
            out[layer.name + ".bias"] = layer.data["bias"]
    return out


def _float_input(model, raw):
    return raw * model.formats["input_scale"]


def _batches(rng, n, size):
    order = rng.permutation(n)
    return [order[i:i + size] for i in range(0, n, size)]


class _Deterministic:
    """One thread, deterministic kernels, fixed seeds: the same weights on every run and machine."""

    def __init__(self, torch, seed):
        self.torch, self.seed = torch, seed

    def __enter__(self):
        t = self.torch
        self.threads, self.deterministic = t.get_num_threads(), t.are_deterministic_algorithms_enabled()
        t.set_num_threads(1)
        t.use_deterministic_algorithms(True)
        t.manual_seed(self.seed)
        return self

    def __exit__(self, *exc):
        self.torch.set_num_threads(self.threads)
        self.torch.use_deterministic_algorithms(self.deterministic)


def train_float(desc=DIGITS_CNN, data=None, *, epochs=40, seed=0, lr=3e-3, batch=64, progress=print,
                steps=None):
    """Train a float model of description ``desc`` on ``data`` (a :class:`~insitu.golden.datasets.Dataset`,
    the digits by default). Weights start He-normal from ``seed``, biases at zero."""
    torch = require_torch()
    data = data or datasets.digits()
    input_shape, specs = description.from_dict(desc)
    if input_shape != data.input_shape:
        raise ValueError(f"The description's input is {input_shape}, the data set's images are {data.input_shape}")
    with _Deterministic(torch, seed):
        g = torch.Generator().manual_seed(seed)
        weights, biases = {}, {}
        for spec, (i, _) in zip(specs, description.infer_shapes(input_shape, specs)):
            shape = description.weight_shape(spec, i)
            if shape is None:
                continue
            fan_in = int(np.prod(shape[1:]))
            weights[spec["name"]] = (torch.randn(shape, generator=g) * np.sqrt(2.0 / fan_in)).numpy()
            if spec["bias"]:
                biases[spec["name"]] = np.zeros(shape[0], np.float32)
        model = network.from_description(desc, weights, biases, formats=data.formats)
        params = _net(torch, _arrays(model))
        x = torch.tensor(_float_input(model, data.x_train), dtype=torch.float32)
        y = torch.tensor(data.y_train)
        opt = torch.optim.Adam(params.values(), lr=lr)
        rng = np.random.default_rng(seed)
        done = 0
        with _progress(progress, epochs, "float") as bar:
            for epoch in range(epochs):
                for idx in _batches(rng, len(x), batch):
                    loss = torch.nn.functional.cross_entropy(_forward(torch, model, params, x[idx]), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    done += 1
                    if steps is not None and done >= steps:
                        break
                bar(f"loss {loss.item():.4f}")
                if steps is not None and done >= steps:
                    break
    return _with_params(model, params, meta={"dataset": data.meta()})


def _with_params(model, params, meta=None):
    """A float model of ``model``'s description holding ``params``."""
    arrays = {n: p.detach().numpy().astype(np.float32) for n, p in params.items()}
    weights = {n: v for n, v in arrays.items() if not n.endswith(".bias")}
    biases = {n[:-5]: v for n, v in arrays.items() if n.endswith(".bias")}
    return network.from_description(model.description(), weights, biases, dict(meta or model.meta),
                                    model.formats)


class _progress:
    """Per-epoch progress lines (``progress`` is a print-like callable), one per epoch."""

    def __init__(self, progress, epochs, what):
        self.progress, self.epochs, self.what, self.epoch = progress, epochs, what, 0

    def __enter__(self):
        return self

    def __call__(self, text):
        self.epoch += 1
        self.progress(f"  {self.what} epoch {self.epoch}/{self.epochs}: {text}")

    def __exit__(self, *exc):
        return False


def _qgp_keep(w, taps):
    """Keep the ``taps`` largest-magnitude taps of each kernel (float), the rest zero."""
    flat = w.reshape(w.shape[0], w.shape[1], -1)
    order = np.argsort(-np.abs(flat), axis=2, kind="stable")
    mask = np.zeros_like(flat, dtype=bool)
    np.put_along_axis(mask, order[..., :taps], True, axis=2)
    return (flat * mask).reshape(w.shape)


def finetune(model, method=None, *, layer_methods=None, settings=None, data=None, epochs=30, seed=0, lr=2e-3,
             progress=print, steps=None, batch=64):
    """Quantisation-aware fine-tuning of a float ``model`` for a method (or a method per layer, as
    :func:`insitu.tools.compress.plan` chooses); returns the compressed model.

    The forward pass uses the weights each layer's method can represent (its projection) and the integer
    path's activation quantisers; straight-through estimators pass the gradient to the float weights."""
    torch = require_torch()
    data = data or datasets.digits()
    chosen = compress.plan(model, method, layer_methods, settings)
    calib = data.x_train[:256]
    with _Deterministic(torch, seed):
        x = torch.tensor(_float_input(model, data.x_train), dtype=torch.float32)
        y = torch.tensor(data.y_train)
        params = _net(torch, _arrays(model))
        opt = torch.optim.Adam(params.values(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        rng = np.random.default_rng(seed)
        done = 0
        label = method or "mixed"

        def current():
            return compress.compress_model(_with_params(model, params), method, calib,
                                           layer_methods=layer_methods, settings=settings)

        with _progress(progress, epochs, label) as bar:
            for epoch in range(epochs):
                phase = 3 if epoch < epochs // 3 else 1 if epoch < 2 * epochs // 3 else 0
                strength = min(1.0, (epoch + 1) / max(1, 2 * epochs // 3))  # SmartDeal sparsity eases in
                compressed = current()
                scales = {name: s[0] for name, s in network.activation_scales(compressed).items()}

                def weights_of(layer, p):
                    w = p.detach().numpy().astype(np.float64)
                    name, s = chosen[layer.name]
                    if name == "qgp" and phase:
                        target = _qgp_keep(w, phase)
                    else:
                        target = compress.project(layer, w, name, s, strength)
                    return p + (torch.tensor(target, dtype=torch.float32) - p).detach()

                for idx in _batches(rng, len(x), batch):
                    out = _forward(torch, model, params, x[idx], weights_of, scales)
                    loss = torch.nn.functional.cross_entropy(out, y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    done += 1
                    if steps is not None and done >= steps:
                        break
                sched.step()
                bar(f"loss {loss.item():.4f}")
                if steps is not None and done >= steps:
                    break
        return current()


def train_all(out_dir, *, desc=DIGITS_CNN, data=None, prefix="digits", epochs=40, finetune_epochs=None, seed=0,
              progress=print):
    """Train the float model and fine-tune every method; write ``<prefix>-<method>.npz`` files to ``out_dir``."""
    import os
    from ..golden import modelfile
    from .evaluate import record_accuracy
    data = data or datasets.digits()
    os.makedirs(out_dir, exist_ok=True)
    progress("Training the float model ...")
    model = train_float(desc, data, epochs=epochs, seed=seed, progress=progress)
    meta = {"dataset": data.meta(), "training": {
        "seed": seed, "epochs": epochs,
        "finetune": {m: {"epochs": finetune_epochs or e, "lr": lr} for m, (e, lr) in FINETUNE.items()}}}
    model.meta.update(meta)
    models = {"float": model}
    for method in compress.METHODS:
        progress(f"Fine-tuning {method} ...")
        ep, lr = FINETUNE[method]
        models[method] = finetune(model, method, data=data, epochs=finetune_epochs or ep, lr=lr, seed=seed,
                                  progress=progress)
        models[method].meta.update(meta, method=method)
    paths = {}
    for method, m in models.items():
        acc = record_accuracy(m, data)
        path = os.path.join(out_dir, f"{prefix}-{method}.npz")
        modelfile.save(path, m)
        paths[method] = path
        integer = "" if acc["integer"] is None else f", integer {acc['integer']:.4f}"
        progress(f"  {path}: test accuracy float {acc['float']:.4f}{integer}")
    return paths


def tradeoff_settings(method, setting):
    """Per-layer settings of one :data:`TRADEOFF` point (SmartDeal: density; MLG: ranks (bi, bo))."""
    if method == "smartdeal":
        return {name: {"density": v} for name, v in setting.items()}
    return {name: {"bi": v[0], "bo": v[1]} for name, v in setting.items()}


def tradeoff(model, methods=("smartdeal", "mlg"), *, seed=0, progress=print):
    """Fine-tune each method at every setting of :data:`TRADEOFF` from the float digits ``model``; returns
    accuracy against weight memory.

    Each point is a full fine-tuning run (same schedule as :func:`train_all`), measured in integer golden
    inference on the test split, with memory counted from the packed arrays of the compressed layers.
    """
    data = datasets.digits()
    points = []
    for method in methods:
        for n, setting in enumerate(TRADEOFF[method]):
            progress(f"Trade-off {method} {n + 1}/{len(TRADEOFF[method])}: {setting} ...")
            ep, lr = FINETUNE[method]
            m = finetune(model, method, settings=tradeoff_settings(method, setting), data=data, epochs=ep, lr=lr,
                         seed=seed, progress=progress)
            layers = [layer for layer in m.weight_layers if layer.method == method]
            stored = sum(network.layer_storage_bits(layer) for layer in layers)
            int8 = sum(8 * int(np.prod(layer.shape)) for layer in layers)
            point = {"method": method, "setting": {k: list(v) if isinstance(v, tuple) else v
                                                   for k, v in setting.items()},
                     "integer_accuracy": round(network.accuracy(m, data.x_test, data.y_test), 4),
                     "stored_bits": stored, "dense_int8_bits": int8, "int8_over_stored": round(int8 / stored, 2)}
            progress(f"  accuracy {point['integer_accuracy']:.4f} at {point['int8_over_stored']}x")
            points.append(point)
    return points
