"""``insitu train``: train the float digits CNN with PyTorch (CPU), then fine-tune every compressed variant.

Needs the optional extra: ``pip install -e ".[train]"``. Fine-tuning is projected training with a
straight-through estimator: the forward pass uses the weights the method can represent (the projection of
:func:`insitu.tools.compress.project`) and 8-bit activations quantised exactly as the integer golden
model does (scales chained from the weight scales and the calibrated shifts); the gradient updates the
float weights as if the projection were the identity. QGP is pruned progressively: three taps per kernel,
then one, then binarised; SmartDeal's coefficient density falls to its target over the first half. Seeds are fixed; the result is reproducible on the CPU.
"""

import numpy as np

from ..golden import datasets, description, methods, network
from ..golden.description import DIGITS_CNN
from . import compress, qat
from ..hdl.params import ParameterError
from .progress import Progress

__all__ = ["require_torch", "train_float", "finetune", "train_all", "train_seeds", "tradeoff", "tradeoff_settings",
           "FINETUNE", "TRADEOFF"]

#: Fine-tuning schedule per method (epochs, Adam learning rate), from the method registry.
FINETUNE = {m: methods.get(m).finetune for m in methods.names(compressed=True)}

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
    """``model``'s layers in float on ``x`` (the float input); ``weights_of(layer)`` gives the weights to
    use (default: the parameter of the layer's name), ``act_scales`` the input LSB of each weight layer
    after the first, where the integer path requantises (None: float activations)."""
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
            w = params[layer.name] if weights_of is None else weights_of(layer)
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


def _epoch(opt, batches, budget, loss_of):
    """One optimiser step per batch (``loss_of(indices)`` gives its loss), at most ``budget`` steps (None: all);
    returns the last loss and the steps taken."""
    taken = 0
    for idx in batches:
        loss = loss_of(idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        taken += 1
        if budget is not None and taken >= budget:
            break
    return loss, taken


def _batches(rng, n, size):
    order = rng.permutation(n)
    return [order[i:i + size] for i in range(0, n, size)]


class _Deterministic:
    """One thread, deterministic kernels, fixed seeds: the same weights on every run on one machine (another
    CPU's float kernels round differently)."""

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


def _weight_specs(desc):
    """``(spec, weight shape)`` of every weight layer of description ``desc``, in order."""
    input_shape, specs = description.from_dict(desc)
    for spec, (i, _) in zip(specs, description.infer_shapes(input_shape, specs)):
        shape = description.weight_shape(spec, i)
        if shape is not None:
            yield spec, shape


def train_float(desc=DIGITS_CNN, data=None, *, epochs=40, seed=0, lr=3e-3, batch=64, progress=print,
                steps=None):
    """Train a float model of description ``desc`` on ``data`` (a :class:`~insitu.golden.datasets.Dataset`,
    the digits by default). Weights start He-normal from ``seed``, biases at zero."""
    torch = require_torch()
    data = data or datasets.digits()
    input_shape, specs = description.from_dict(desc)
    if input_shape != data.input_shape:
        raise ParameterError(f"The description's input is {input_shape}, the data set's images are {data.input_shape}")
    with _Deterministic(torch, seed):
        g = torch.Generator().manual_seed(seed)
        weights, biases = {}, {}
        for spec, shape in _weight_specs(desc):
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
        with Progress(epochs, "float epochs", progress) as bar:
            for epoch in range(epochs):
                loss, taken = _epoch(opt, _batches(rng, len(x), batch), None if steps is None else steps - done,
                                     lambda idx: torch.nn.functional.cross_entropy(
                                         _forward(torch, model, params, x[idx]), y[idx]))
                done += taken
                bar.step(f"loss {loss.item():.4f}")
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
        factors = {}                 # layer name -> its factored parametrisation (tools.qat)
        arrays = _arrays(model)
        for layer in model.weight_layers:
            name, s = chosen[layer.name]
            f = qat.factored(name, network.float_weights(layer), layer.kind, s)
            if f is not None:
                factors[layer.name] = f
                del arrays[layer.name]
                arrays.update({f"{layer.name}/{n}": v for n, v in f.init.items()})
        x = torch.tensor(_float_input(model, data.x_train), dtype=torch.float32)
        y = torch.tensor(data.y_train)
        params = _net(torch, arrays)
        opt = torch.optim.Adam(params.values(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        rng = np.random.default_rng(seed)
        done = 0
        label = method or "mixed"
        strength = 1.0

        def factor_arrays(lname):
            return {n: params[f"{lname}/{n}"].detach().numpy().astype(np.float64) for n in factors[lname].init}

        def current():
            plain = {n: p for n, p in params.items() if "/" not in n}
            for layer in model.weight_layers:       # factored layers: their stored form is used, not these
                if layer.name in factors:
                    plain[layer.name] = torch.tensor(network.float_weights(layer))
            stored = {n: f.finish(factor_arrays(n)) for n, f in factors.items()}
            return compress.compress_model(_with_params(model, plain), method, calib, layer_methods=layer_methods,
                                           settings=settings, stored=stored)

        def weights_of(layer):
            if layer.name in factors:
                f = factors[layer.name]
                q = f.quantised(factor_arrays(layer.name), strength)
                ste = {}
                for n in f.init:
                    p = params[f"{layer.name}/{n}"]
                    ste[n] = p + (torch.tensor(q[n], dtype=torch.float32) - p).detach()
                return f.combine(torch, ste)
            p = params[layer.name]
            w = p.detach().numpy().astype(np.float64)
            name, s = chosen[layer.name]
            target = _qgp_keep(w, phase) if name == "qgp" and phase else compress.project(layer, w, name, s, strength)
            return p + (torch.tensor(target, dtype=torch.float32) - p).detach()

        with Progress(epochs, f"{label} epochs", progress) as bar:
            for epoch in range(epochs):
                phase = 3 if epoch < epochs // 3 else 1 if epoch < 2 * epochs // 3 else 0
                strength = min(1.0, (epoch + 1) / max(1, 2 * epochs // 3))  # SmartDeal sparsity eases in
                scales = {name: s[0] for name, s in network.activation_scales(current()).items()}
                loss, taken = _epoch(opt, _batches(rng, len(x), batch), None if steps is None else steps - done,
                                     lambda idx: torch.nn.functional.cross_entropy(
                                         _forward(torch, model, params, x[idx], weights_of, scales), y[idx]))
                done += taken
                sched.step()
                bar.step(f"loss {loss.item():.4f}")
                if steps is not None and done >= steps:
                    break
        return current()


def _save_models(out_dir, prefix, models, data, progress):
    """Record each model's test accuracy and write it to ``out_dir/<prefix>-<name>.npz``; returns the paths."""
    import os
    from ..golden import modelfile
    from .evaluate import record_accuracy
    paths = {}
    for name, m in models.items():
        acc = record_accuracy(m, data)
        path = os.path.join(out_dir, f"{prefix}-{name}.npz")
        modelfile.save(path, m)
        paths[name] = path
        integer = "" if acc["integer"] is None else f", integer {acc['integer']:.4f}"
        progress(f"  {path}: test accuracy float {acc['float']:.4f}{integer}")
    return paths


def train_all(out_dir, *, desc=DIGITS_CNN, data=None, prefix="digits", epochs=40, finetune_epochs=None, seed=0,
              progress=print):
    """Train the float model and fine-tune every method; write ``<prefix>-<method>.npz`` files to ``out_dir``."""
    import os
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
    return _save_models(out_dir, prefix, models, data, progress)


def check_layer_methods(desc, layer_methods):
    """Refuse, before any training, a ``{layer: method}`` that names no weight layer of ``desc`` or gives a
    layer a method that cannot take it (one line, as :func:`insitu.tools.compress.plan` says it)."""
    weights = {spec["name"]: np.zeros(shape, np.float32) for spec, shape in _weight_specs(desc)}
    compress.plan(network.from_description(desc, weights, {}), None, layer_methods)


def train_mixed(out_dir, layer_methods, *, desc=DIGITS_CNN, data=None, prefix="digits", epochs=40,
                finetune_epochs=None, seed=0, progress=print):
    """Train the float model and fine-tune one model with a method per layer (``{layer: method}``; the
    layers not named stay int8). Writes ``<prefix>-float.npz`` and ``<prefix>-mixed.npz``; fine-tuning
    takes the longest schedule and the smallest learning rate of the methods named."""
    import os
    check_layer_methods(desc, layer_methods)
    data = data or datasets.digits()
    named = sorted(set(layer_methods.values()) - {"dense"}) or ["dense"]
    ep = finetune_epochs or max(FINETUNE[m][0] for m in named)
    lr = min(FINETUNE[m][1] for m in named)
    os.makedirs(out_dir, exist_ok=True)
    progress("Training the float model ...")
    model = train_float(desc, data, epochs=epochs, seed=seed, progress=progress)
    meta = {"dataset": data.meta(), "training": {"seed": seed, "epochs": epochs,
                                                  "finetune": {"mixed": {"epochs": ep, "lr": lr}}}}
    model.meta.update(meta)
    progress(f"Fine-tuning {', '.join(f'{n}={m}' for n, m in layer_methods.items())} ...")
    mixed = finetune(model, None, layer_methods=layer_methods, data=data, epochs=ep, lr=lr, seed=seed,
                     progress=progress)
    mixed.meta.update(meta, method="mixed", layer_methods=dict(layer_methods))
    return _save_models(out_dir, prefix, {"float": model, "mixed": mixed}, data, progress)


def tradeoff_settings(method, setting):
    """Per-layer settings of one :data:`TRADEOFF` point (SmartDeal: density; MLG: ranks (bi, bo))."""
    if method == "smartdeal":
        return {name: {"density": v} for name, v in setting.items()}
    return {name: {"bi": v[0], "bo": v[1]} for name, v in setting.items()}


def train_seeds(out_dir, seeds, *, desc=DIGITS_CNN, data=None, prefix="digits", epochs=40, finetune_epochs=None,
                progress=print):
    """:func:`train_all` for every seed: the first seed's models go to ``out_dir``, the others are measured and
    dropped. Writes and returns ``<prefix>-seeds.json``: per method the test accuracies of every seed, their
    mean and standard deviation, the drop against each seed's float model, and the weight memory ratio."""
    import os
    import tempfile
    from ..golden import modelfile
    from .provenance import write_json_atomic
    data = data or datasets.digits()
    per_seed = {}
    for n, seed in enumerate(seeds):
        progress(f"Seed {seed} ({n + 1}/{len(seeds)})")
        with tempfile.TemporaryDirectory() as tmp:
            paths = train_all(out_dir if n == 0 else tmp, desc=desc, data=data, prefix=prefix, epochs=epochs,
                              finetune_epochs=finetune_epochs, seed=seed, progress=progress)
            per_seed[seed] = {m: modelfile.load(p) for m, p in paths.items()}
    methods = {}
    for method in per_seed[seeds[0]]:
        models = [per_seed[seed][method] for seed in seeds]
        floats = [per_seed[seed]["float"].meta["accuracy"]["float"] for seed in seeds]
        ints = [m.meta["accuracy"]["integer"] for m in models]
        entry = {"float_accuracy": _stats([m.meta["accuracy"]["float"] for m in models])}
        if ints[0] is not None:
            entry["integer_accuracy"] = _stats(ints)
            entry["drop_points"] = _stats([100 * (f - i) for f, i in zip(floats, ints)])
            layers = [[l for l in m.weight_layers if l.method == method] or m.weight_layers for m in models]
            entry["int8_over_stored"] = _stats([
                sum(8 * int(np.prod(l.shape)) for l in ls) / sum(network.layer_storage_bits(l) for l in ls)
                for ls in layers])
        methods[method] = entry
    summary = {"format": "insitu-seeds/1", "dataset": data.meta(), "seeds": list(seeds), "methods": methods}
    path = os.path.join(out_dir, f"{prefix}-seeds.json")
    write_json_atomic(path, summary)
    progress(f"written: {path}")
    return summary


def _stats(values):
    values = [float(v) for v in values]
    return {"values": [round(v, 4) for v in values], "mean": round(float(np.mean(values)), 4),
            "std": round(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, 4)}


def tradeoff(float_models, which=("smartdeal", "mlg"), *, progress=print):
    """Fine-tune each method at every setting of :data:`TRADEOFF` from each float digits model (one per
    seed, ``{seed: model}``); returns accuracy (per seed, mean and standard deviation) against weight memory.

    Each point is a full fine-tuning run per seed (same schedule as :func:`train_all`), measured in integer
    golden inference on the test split, with memory counted from the packed arrays of the compressed layers.
    """
    data = datasets.digits()
    points = []
    runs = sum(len(TRADEOFF[method]) for method in which) * len(float_models)
    with Progress(runs, "trade-off runs", progress) as bar:
        for method in which:
            for setting in TRADEOFF[method]:
                accs, stored, int8 = [], [], 0
                for seed, model in float_models.items():
                    ep, lr = FINETUNE[method]
                    m = finetune(model, method, settings=tradeoff_settings(method, setting), data=data, epochs=ep,
                                 lr=lr, seed=seed, progress=lambda _: None)
                    layers = [layer for layer in m.weight_layers if layer.method == method]
                    stored.append(sum(network.layer_storage_bits(layer) for layer in layers))
                    int8 = sum(8 * int(np.prod(layer.shape)) for layer in layers)
                    accs.append(network.accuracy(m, data.x_test, data.y_test))
                    bar.step(f"{method} {setting} seed {seed}: accuracy {accs[-1]:.4f}")
                acc = _stats(accs)
                point = {"method": method, "setting": {k: list(v) if isinstance(v, tuple) else v
                                                       for k, v in setting.items()},
                         "seeds": list(float_models), "integer_accuracy": acc["mean"],
                         "integer_accuracy_std": acc["std"], "integer_accuracy_per_seed": acc["values"],
                         "stored_bits": stored, "dense_int8_bits": int8,
                         "int8_over_stored": round(int8 / float(np.mean(stored)), 2)}
                progress(f"{method} {setting}: accuracy {acc['mean']:.4f} ± {acc['std']:.4f} at "
                         f"{point['int8_over_stored']}x")
                points.append(point)
    return points
