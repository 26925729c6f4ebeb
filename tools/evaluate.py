"""``insitu evaluate``: accuracy against weight memory for every compressed model, on the digits test split."""

import os

import numpy as np

from ..golden import modelfile, network
from ..hdl.params import ParameterError
from .provenance import write_json_atomic
from .compress import compressed_layers
from .report import format_table

__all__ = ["record_accuracy", "evaluate", "format_evaluation", "plot", "default_models", "load_tradeoff", "MODEL_DIR"]

MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")


def default_models():
    """The committed digits models, float first, then every method of the registry."""
    from ..golden import methods
    return [os.path.join(MODEL_DIR, f"digits-{m}.npz") for m in methods.names()]


def record_accuracy(model, data=None):
    """Store the test-split accuracies (float path, and integer path unless the model is float) in ``meta``
    (``data``: a :class:`~insitu.golden.datasets.Dataset`, the digits by default)."""
    from ..golden import datasets
    data = data or datasets.digits()
    xte, yte = data.x_test, data.y_test
    acc = {"float": network.accuracy(model, xte, yte, integer=False),
           "integer": None if model.meta.get("method") == "float" else network.accuracy(model, xte, yte),
           "test_images": int(len(xte))}
    model.meta["accuracy"] = acc
    return acc


def _bits(model, names=None):
    return sum(network.layer_storage_bits(layer) for layer in model.weight_layers
               if names is None or layer.name in names)


TRADEOFF_PATH = os.path.join(MODEL_DIR, "digits-tradeoff.json")


def load_tradeoff(path=TRADEOFF_PATH):
    """The trade-off sweep written by ``insitu train --tradeoff`` (``None`` for no path); a missing or
    malformed file is a one-line ValueError naming it."""
    import json
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as error:
        raise ParameterError(f"Cannot read trade-off file {path}: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ParameterError(f"{path}: not a JSON trade-off file ({error})") from None
    if not isinstance(data, dict) or data.get("format") != "insitu-tradeoff/2" or \
            not isinstance(data.get("points"), list):
        raise ParameterError(f"{path} is not an insitu trade-off file (format insitu-tradeoff/2)")
    return data


def evaluate(paths, *, json_path=None, plot_path=None, tradeoff=None):
    """Evaluate each model file; returns the result dict (also written to ``json_path``, plotted to ``plot_path``).

    ``tradeoff`` (from :func:`load_tradeoff`) adds the accuracy/compression sweeps to the result and the plot.
    """
    _, _, xte, yte = network.digits_split()
    rows = []
    reference = None
    for path in paths:
        model = modelfile.load(path)
        method = model.meta.get("method", "?")
        float_acc = network.accuracy(model, xte, yte, integer=False)
        int_acc = None if method == "float" else network.accuracy(model, xte, yte)
        if method == "float":
            reference = float_acc
        names = compressed_layers(model)
        layer_weights = sum(int(np.prod(layer.shape)) for layer in model.weight_layers if layer.name in names)
        stored = _bits(model, names)
        rows.append({
            "model": os.path.basename(path), "method": method,
            "float_accuracy": round(float_acc, 4), "integer_accuracy": None if int_acc is None else round(int_acc, 4),
            "compressed_layers": names,
            "stored_bits": stored, "dense_int8_bits": layer_weights * 8, "float32_bits": layer_weights * 32,
            "int8_over_stored": round(layer_weights * 8 / stored, 2),
            "model_bits": _bits(model),
        })
    for row in rows:
        acc = row["integer_accuracy"]
        row["drop_vs_float_points"] = (round(100 * (reference - acc), 2)
                                       if reference is not None and acc is not None else None)
    result = {"format": "insitu-evaluate/1", "dataset": "sklearn digits test split (360 images)",
              "float_reference_accuracy": reference, "rows": rows}
    if tradeoff:
        result["tradeoff"] = tradeoff["points"]
        result["tradeoff_float_reference_accuracy"] = tradeoff["float_reference_accuracy"]
    if plot_path:
        plot(result, plot_path)
        result["plot"] = plot_path
    if json_path:
        write_json_atomic(json_path, result)
    return result


def format_evaluation(result):
    return format_table(
        ["method", "float acc", "integer acc", "drop (pts)", "layers", "stored bits", "int8 bits", "int8/stored",
         "model bits"],
        [(r["method"], r["float_accuracy"], r["integer_accuracy"], r["drop_vs_float_points"],
          ",".join(r["compressed_layers"]), r["stored_bits"], r["dense_int8_bits"], r["int8_over_stored"],
          r["model_bits"]) for r in result["rows"]])


def plot(result, path):
    """Accuracy against whole-model weight memory (PNG), written atomically."""
    try:
        import matplotlib
        import matplotlib.ticker
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("The plot needs matplotlib: pip install matplotlib") from None
    curves = result.get("tradeoff")
    fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(11 if curves else 6, 4), squeeze=False)
    ax = axes[0][0]
    markers = "osD^vP*X"
    for n, r in enumerate(result["rows"]):
        acc = r["integer_accuracy"] if r["integer_accuracy"] is not None else r["float_accuracy"]
        ax.scatter(r["model_bits"] / 8192, 100 * acc, s=50, marker=markers[n % len(markers)],
                   label=f"{r['method']}: {r['model_bits'] / 8192:.1f} KiB, {100 * acc:.2f} %")
    ax.margins(x=0.2, y=0.15)
    ax.legend(fontsize=8, loc="lower right")     # methods often share a point: a legend, not labels
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks([1, 2, 5, 10, 20, 50, 100])
    ax.set_xlabel("weight memory of the whole model (KiB)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digits: accuracy against weight memory")
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax = axes[0][1]
        for method in dict.fromkeys(p["method"] for p in curves):
            pts = sorted((p["int8_over_stored"], 100 * p["integer_accuracy"], 100 * p["integer_accuracy_std"])
                         for p in curves if p["method"] == method)
            xs, ys, es = zip(*pts)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=f"{method} (mean ± sd, {len(curves[0]['seeds'])} seeds)")
        # the sweep's own reference: its float models (the mean over its seeds)
        ref = result.get("tradeoff_float_reference_accuracy")
        if ref is not None:
            ax.axhline(100 * ref, color="grey", lw=1, label="float reference")
            ax.axhline(100 * ref - 1, color="grey", lw=1, ls="--", label="1 point below float")
            low, high = ax.get_ylim()
            ax.set_ylim(min(low, 100 * ref - 1.5), max(high, 100 * ref + 0.5))   # keep both lines in view
        ax.set_xlabel("int8 bits / stored bits of the compressed layers")
        ax.set_ylabel("test accuracy, integer golden (%)")
        ax.set_title("fine-tuned trade-off sweep")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
