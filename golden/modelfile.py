"""The compressed model file: one ``.npz`` archive of arrays plus a JSON manifest (``manifest.json``).

Manifest (``format`` ``insitu-model``, ``version`` 1): ``method``, ``dataset`` (name, split, evaluated
accuracies), ``number_formats`` (input gain, activation width) and ``layers``: per layer its ``name``,
``kind``, weight ``shape``, ``method``, method ``params``, requantisation ``shift`` and ``arrays`` (name →
shape and dtype, each stored as ``<layer>/<array>``). Reading checks all of it and raises
:class:`ModelFormatError` with one line; writing goes to a temporary file that is renamed, so a failure leaves
nothing behind.
"""

import io
import json
import os
import tempfile
import zipfile

import numpy as np

from .network import ARCH, Layer, Model

__all__ = ["save", "load", "ModelFormatError", "FORMAT", "VERSION"]

FORMAT = "insitu-model"
VERSION = 1
_ARRAYS = {          # arrays each method must store
    "float": {"weights"},
    "dense": {"codes", "scale"},
    "qgp": {"codes", "scale"},
    "circulant": {"vectors", "spectra_re", "spectra_im"},
    "smartdeal": {"image"},
    "mlg": {"image"},
}


class ModelFormatError(ValueError):
    """A model file that cannot be read: corrupt archive, wrong version, missing or misshapen arrays."""


def save(path, model):
    """Write ``model`` to ``path`` atomically."""
    arrays, layers = {}, []
    for layer in model.layers:
        entry = {"name": layer.name, "kind": layer.kind, "shape": list(layer.shape), "method": layer.method,
                 "params": layer.params, "shift": int(layer.shift), "arrays": {}}
        for key, value in layer.data.items():
            value = np.asarray(value)
            arrays[f"{layer.name}/{key}"] = value
            entry["arrays"][key] = {"shape": list(value.shape), "dtype": str(value.dtype)}
        layers.append(entry)
    manifest = {"format": FORMAT, "version": VERSION, **model.meta, "layers": layers}
    arrays["manifest.json"] = np.frombuffer(json.dumps(manifest, indent=1).encode(), dtype=np.uint8)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load(path):
    """Read a model file; every problem is a one-line :class:`ModelFormatError`."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            blob = f.read()
    except OSError as error:
        raise ModelFormatError(f"Cannot read model file {name}: {error.strerror}") from None
    try:
        archive = np.load(io.BytesIO(blob), allow_pickle=False)
        files = set(archive.files)
        if "manifest.json" not in files:
            raise ModelFormatError(f"{name}: not an insitu model (no manifest.json)")
        manifest = json.loads(archive["manifest.json"].tobytes().decode())
        arrays = {key: archive[key] for key in files if key != "manifest.json"}
    except ModelFormatError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, UnicodeDecodeError, KeyError) as error:
        raise ModelFormatError(f"{name}: corrupt model archive ({str(error).splitlines()[0] or type(error).__name__})") \
            from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFormatError(f"{name}: not an insitu model (format {manifest.get('format')!r})"
                               if isinstance(manifest, dict) else f"{name}: manifest is not a JSON object")
    if manifest.get("version") != VERSION:
        raise ModelFormatError(f"{name}: unsupported model format version {manifest.get('version')!r} "
                               f"(this reads {VERSION})")
    entries = manifest.get("layers")
    if not isinstance(entries, list) or [e.get("name") for e in entries] != [a[0] for a in ARCH]:
        raise ModelFormatError(f"{name}: layers must be {', '.join(a[0] for a in ARCH)}")
    layers = []
    for entry, (lname, kind, shape) in zip(entries, ARCH):
        method = entry.get("method")
        if method not in _ARRAYS:
            raise ModelFormatError(f"{name}: layer {lname} has unknown method {method!r}")
        if tuple(entry.get("shape", ())) != shape or entry.get("kind") != kind:
            raise ModelFormatError(f"{name}: layer {lname} must be a {kind} layer of shape {shape}, "
                                   f"not {entry.get('kind')} {tuple(entry.get('shape', ()))}")
        data = {}
        for key in sorted(_ARRAYS[method] | set(entry.get("arrays", {}))):
            full = f"{lname}/{key}"
            if full not in arrays:
                raise ModelFormatError(f"{name}: layer {lname} ({method}) is missing array {key!r}")
            declared = entry.get("arrays", {}).get(key)
            if declared is None or list(arrays[full].shape) != declared["shape"]:
                raise ModelFormatError(f"{name}: array {full} has shape {arrays[full].shape}, the manifest says "
                                       f"{declared['shape'] if declared else 'nothing'}")
            data[key] = arrays[full]
        if method == "float" and data["weights"].shape != shape:
            raise ModelFormatError(f"{name}: layer {lname} weights must be shaped {shape}, "
                                   f"not {data['weights'].shape}")
        if method in ("dense", "qgp"):
            want = shape if method == "dense" else shape[:2]
            if data["codes"].shape != want:
                raise ModelFormatError(f"{name}: layer {lname} codes must be shaped {want}, "
                                       f"not {data['codes'].shape}")
        shift = entry.get("shift", 0)
        if not isinstance(shift, int) or not 0 <= shift < 48:
            raise ModelFormatError(f"{name}: layer {lname} has an invalid shift {shift!r}")
        layers.append(Layer(name=lname, kind=kind, shape=shape, method=method, data=data,
                            params=entry.get("params", {}), shift=shift))
    meta = {k: v for k, v in manifest.items() if k not in ("format", "version", "layers")}
    model = Model(layers=layers, meta=meta)
    _check_packed(name, model)
    return model


def _check_packed(name, model):
    """Decode every packed layer once so that a corrupt image is reported at load time."""
    from . import mlg, network, smartdeal
    for layer in model.layers:
        try:
            if layer.method in ("qgp", "smartdeal", "mlg", "circulant"):
                network._method_layer(layer)
            w, _ = network.integer_weights(layer)
            if w is not None and w.shape != layer.shape:
                raise ValueError(f"it decodes to shape {w.shape}, not {layer.shape}")
        except (smartdeal.FormatError, mlg.FormatError) as error:
            raise ModelFormatError(f"{name}: layer {layer.name}: {error}") from None
        except (ValueError, TypeError, KeyError) as error:
            raise ModelFormatError(f"{name}: layer {layer.name} ({layer.method}) is inconsistent: {error}") \
                from None
