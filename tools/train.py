"""``insitu train``: train the float digits CNN with PyTorch (CPU), then fine-tune every compressed variant.

Needs the optional extra: ``pip install -e ".[train]"``. Fine-tuning is projected training with a
straight-through estimator: the forward pass uses the weights the method can represent (the projection of
:func:`insitu.tools.compress.project`) and 8-bit activations quantised exactly as the integer golden
model does (scales chained from the weight scales and the calibrated shifts); the gradient updates the
float weights as if the projection were the identity. QGP is pruned progressively: three taps per kernel,
then one, then binarised; SmartDeal's coefficient density falls to its target over the first half. Seeds are fixed; the result is reproducible on the CPU.
"""

import numpy as np

from ..golden import circulant, network
from . import compress

__all__ = ["require_torch", "train_float", "finetune", "train_all", "tradeoff", "FINETUNE", "TRADEOFF"]

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


def _net(torch, weights):
    params = {name: torch.nn.Parameter(torch.tensor(np.asarray(w), dtype=torch.float32))
              for name, w in weights.items()}
    return params


def _forward(torch, params, x, weights_of=None, act_scales=None):
    """The network in float; ``weights_of(name, param)`` gives the weights to use, ``act_scales`` the
    8-bit activation quantiser of each layer's output (None: float activations)."""
    F = torch.nn.functional
    for n, (name, kind, _) in enumerate(network.ARCH):
        w = params[name] if weights_of is None else weights_of(name, params[name])
        x = F.conv2d(x, w, padding=1) if kind == "conv" else x @ w.T
        if name == "conv2":
            x = F.avg_pool2d(x, 2) * 4
        if n == len(network.ARCH) - 1:
            return x
        x = F.relu(x)
        if act_scales is not None:
            s = act_scales[name]
            q = torch.clamp(torch.floor(x / s + 0.5), 0, 127) * s
            x = x + (q - x).detach()
        if name == "conv2":
            x = x.reshape(len(x), -1)


def _batches(rng, n, size):
    order = rng.permutation(n)
    return [order[i:i + size] for i in range(0, n, size)]


def train_float(*, epochs=40, seed=0, progress=print, steps=None):
    """Train the float model on the digits training split; returns ``{name: weights}``."""
    torch = require_torch()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    xtr, ytr, _, _ = network.digits_split()
    x = torch.tensor(xtr / 16.0, dtype=torch.float32)
    y = torch.tensor(ytr)
    init = {}
    g = torch.Generator().manual_seed(seed)
    for name, kind, shape in network.ARCH:
        fan_in = int(np.prod(shape[1:]))
        init[name] = (torch.randn(shape, generator=g) * np.sqrt(2.0 / fan_in)).numpy()
    params = _net(torch, init)
    opt = torch.optim.Adam(params.values(), lr=3e-3)
    rng = np.random.default_rng(seed)
    done = 0
    for epoch in range(epochs):
        for idx in _batches(rng, len(x), 64):
            loss = torch.nn.functional.cross_entropy(_forward(torch, params, x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if steps is not None and done >= steps:
                break
        progress(f"  float epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}")
        if steps is not None and done >= steps:
            break
    return {name: p.detach().numpy().astype(np.float32) for name, p in params.items()}


def _qgp_keep(w, taps):
    """Keep the ``taps`` largest-magnitude taps of each kernel (float), the rest zero."""
    flat = w.reshape(w.shape[0], w.shape[1], -1)
    order = np.argsort(-np.abs(flat), axis=2, kind="stable")
    mask = np.zeros_like(flat, dtype=bool)
    np.put_along_axis(mask, order[..., :taps], True, axis=2)
    return (flat * mask).reshape(w.shape)


def _act_scales(model):
    """The float value of one integer LSB of each layer's output activations."""
    scales, s_in = {}, 1.0 / network.INPUT_GAIN / 16.0
    for layer in model.layers[:-1]:
        if layer.method == "circulant":
            s_w = circulant.output_scale(network._method_layer(layer))
        else:
            s_w = network.integer_weights(layer)[1]
        s_in = s_in * s_w * 2.0 ** layer.shift
        scales[layer.name] = s_in
    return scales


def finetune(weights, method, *, epochs=30, seed=0, lr=2e-3, progress=print, steps=None):
    """Projected fine-tuning of float ``weights`` for ``method``; returns the compressed model."""
    torch = require_torch()
    torch.manual_seed(seed)
    xtr, ytr, _, _ = network.digits_split()
    calib = xtr[:256]
    x = torch.tensor(xtr / 16.0, dtype=torch.float32)
    y = torch.tensor(ytr)
    params = _net(torch, weights)
    opt = torch.optim.Adam(params.values(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    rng = np.random.default_rng(seed)
    takes = compress.compressed_layers(method)
    done = 0

    def current():
        return compress.compress_model(compress.float_model({n: p.detach().numpy() for n, p in params.items()}),
                                       method, calib)

    for epoch in range(epochs):
        phase = (3 if epoch < epochs // 3 else 1 if epoch < 2 * epochs // 3 else 0) if method == "qgp" else 0
        strength = min(1.0, (epoch + 1) / max(1, 2 * epochs // 3))  # SmartDeal sparsity eases in
        scales = _act_scales(current())

        def weights_of(name, p):
            w = p.detach().numpy().astype(np.float64)
            if method == "qgp" and name in takes and phase:
                target = _qgp_keep(w, phase)
            else:
                target = compress.project(name, w, method, strength)
            return p + (torch.tensor(target, dtype=torch.float32) - p).detach()

        for idx in _batches(rng, len(x), 64):
            out = _forward(torch, params, x[idx], weights_of, scales)
            loss = torch.nn.functional.cross_entropy(out, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if steps is not None and done >= steps:
                break
        sched.step()
        progress(f"  {method} epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}")
        if steps is not None and done >= steps:
            break
    return current()


def train_all(out_dir, *, epochs=40, finetune_epochs=None, seed=0, progress=print):
    """Train the float model and fine-tune every method; write ``digits-<method>.npz`` files to ``out_dir``."""
    import os
    from ..golden import modelfile
    from .evaluate import record_accuracy
    os.makedirs(out_dir, exist_ok=True)
    progress("Training the float model ...")
    weights = train_float(epochs=epochs, seed=seed, progress=progress)
    meta = {"dataset": {"name": "sklearn digits", "split": "train_test_split(test_size=0.2, random_state=0, "
                        "stratify=y)"}, "training": {"seed": seed, "epochs": epochs,
                                                     "finetune": {m: {"epochs": finetune_epochs or e, "lr": lr}
                                                                  for m, (e, lr) in FINETUNE.items()}}}
    models = {"float": compress.float_model(weights, meta)}
    for method in compress.METHODS:
        progress(f"Fine-tuning {method} ...")
        ep, lr = FINETUNE[method]
        models[method] = finetune(weights, method, epochs=finetune_epochs or ep, lr=lr, seed=seed,
                                  progress=progress)
        models[method].meta.update(meta, method=method)
    paths = {}
    for method, model in models.items():
        record_accuracy(model)
        path = os.path.join(out_dir, f"digits-{method}.npz")
        modelfile.save(path, model)
        paths[method] = path
        progress(f"  {path}: test accuracy float {model.meta['accuracy']['float']:.4f}, "
                 f"integer {model.meta['accuracy']['integer']}")
    return paths


def _settings(method):
    return compress._SD_DENSITY if method == "smartdeal" else compress._MLG_RANKS


def tradeoff(weights, methods=("smartdeal", "mlg"), *, seed=0, progress=print):
    """Fine-tune each method at every setting of :data:`TRADEOFF`; returns accuracy against weight memory.

    Each point is a full fine-tuning run (same schedule as :func:`train_all`), measured in integer golden
    inference on the test split, with memory counted from the packed arrays of the compressed layers.
    """
    _, _, xte, yte = network.digits_split()
    points = []
    for method in methods:
        table = _settings(method)
        saved = dict(table)
        takes = compress.compressed_layers(method)
        try:
            for setting in TRADEOFF[method]:
                table.update(setting)
                progress(f"Trade-off {method} {setting} ...")
                ep, lr = FINETUNE[method]
                model = finetune(weights, method, epochs=ep, lr=lr, seed=seed, progress=lambda _: None)
                layers = [layer for layer in model.layers if layer.name in takes]
                stored = sum(network.layer_storage_bits(layer) for layer in layers)
                int8 = sum(8 * int(np.prod(layer.shape)) for layer in layers)
                point = {"method": method, "setting": {k: list(v) if isinstance(v, tuple) else v
                                                       for k, v in setting.items()},
                         "integer_accuracy": round(network.accuracy(model, xte, yte), 4),
                         "stored_bits": stored, "dense_int8_bits": int8, "int8_over_stored": round(int8 / stored, 2)}
                progress(f"  accuracy {point['integer_accuracy']:.4f} at {point['int8_over_stored']}x")
                points.append(point)
        finally:
            table.clear()
            table.update(saved)
    return points
