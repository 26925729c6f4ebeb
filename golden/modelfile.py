"""The compressed model file: one ``.npz`` archive of arrays plus a JSON manifest (``manifest.json``).

Manifest (``format`` ``insitu-model``, ``version`` 2): the network description (``input`` shape and
``layers``, see :mod:`insitu.golden.description`), ``formats`` (input scale and gain, activation width),
``method`` and ``dataset`` (name, split, evaluated accuracies), and per weight layer its ``method``, method
``params``, requantisation ``shift``, weight ``shape`` and ``arrays`` (name → shape and dtype, each stored as
``<layer>/<array>``).

Version 1 files (the digits CNN, four weight layers ``conv1``, ``conv2``, ``fc1``, ``fc2``) still load: they
become :data:`insitu.golden.description.DIGITS_CNN`. Reading checks everything and raises
:class:`ModelFormatError` with one line; writing goes to a temporary file that is renamed, so a failure
leaves nothing behind.
"""

import io
import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

from . import description, methods
from .errors import InputError
from .network import FORMATS, Layer, Model, check_accumulators

__all__ = ["save", "load", "ModelFormatError", "FORMAT", "VERSION"]

FORMAT = "insitu-model"
VERSION = 2
#: Arrays a weight layer may hold besides its method's: the float bias and its calibrated integer form.
_BIAS = ("bias", "bias_q")


class ModelFormatError(InputError):
    """A model file that cannot be read: corrupt archive, wrong version, missing or misshapen arrays."""


def save(path, model):
    """Write ``model`` to ``path`` atomically (readable by everyone, like any file the user writes)."""
    if not isinstance(model, Model):
        raise TypeError(f"Model must be an insitu.golden.network.Model, not {type(model).__name__}")
    arrays, layers = {}, []
    for layer in model.layers:
        entry = layer.spec()
        if layer.is_weight:
            entry.update(method=layer.method, shape=list(layer.shape), params=layer.params,
                         shift=int(layer.shift), arrays={})
            for key, value in layer.data.items():
                value = np.asarray(value)
                arrays[f"{layer.name}/{key}"] = value
                entry["arrays"][key] = {"shape": list(value.shape), "dtype": str(value.dtype)}
        layers.append(entry)
    meta = {k: v for k, v in model.meta.items() if k not in ("format", "version", "input", "layers", "formats")}
    manifest = {"format": FORMAT, "version": VERSION, **meta, "input": list(model.input_shape),
                "formats": model.formats, "layers": layers}
    arrays["manifest.json"] = np.frombuffer(json.dumps(manifest, indent=1).encode(), dtype=np.uint8)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _read(name):
    try:
        with open(name, "rb") as f:
            blob = f.read()
    except OSError as error:
        raise ModelFormatError(f"Cannot read model file {name}: {error.strerror}") from None
    try:
        archive = np.load(io.BytesIO(blob), allow_pickle=False)
        if not hasattr(archive, "files"):
            raise ModelFormatError(f"{name}: not an insitu model (a single array, not an archive)")
        files = set(archive.files)
        if "manifest.json" not in files:
            raise ModelFormatError(f"{name}: not an insitu model (no manifest.json)")
        manifest = json.loads(archive["manifest.json"].tobytes().decode())
        arrays = {key: archive[key] for key in files if key != "manifest.json"}
    except ModelFormatError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, UnicodeDecodeError, KeyError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "allow_pickle" in first or "pickle" in first.lower():
            first = "not an .npz archive of arrays"
        raise ModelFormatError(f"{name}: corrupt model archive ({first})") from None
    if not isinstance(manifest, dict):
        raise ModelFormatError(f"{name}: manifest is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise ModelFormatError(f"{name}: not an insitu model (format {manifest.get('format')!r})")
    return manifest, arrays


_V1 = (("conv1", "conv", (8, 1, 3, 3)), ("conv2", "conv", (16, 8, 3, 3)), ("fc1", "fc", (64, 256)),
       ("fc2", "fc", (10, 64)))


def _upgrade_v1(name, manifest):
    """The version 2 manifest of a version 1 file (the digits CNN)."""
    entries = manifest.get("layers")
    if not isinstance(entries, list) or [e.get("name") if isinstance(e, dict) else None for e in entries] \
            != [a[0] for a in _V1]:
        raise ModelFormatError(f"{name}: layers must be {', '.join(a[0] for a in _V1)}")
    for entry, (lname, kind, shape) in zip(entries, _V1):
        if tuple(entry.get("shape", ())) != shape or entry.get("kind") != kind:
            raise ModelFormatError(f"{name}: layer {lname} must be a {kind} layer of shape {shape}, "
                                   f"not {entry.get('kind')} {tuple(entry.get('shape', ()))}")
    by_name = {e["name"]: e for e in entries}
    layers = []
    for spec in description.DIGITS_CNN["layers"]:
        spec = dict(spec)
        if spec["name"] in by_name:
            old = by_name[spec["name"]]
            spec.update({k: old.get(k) for k in ("method", "params", "shift", "arrays", "shape")})
        layers.append(spec)
    meta = {k: v for k, v in manifest.items() if k not in ("format", "version", "layers", "number_formats")}
    return {**meta, "input": description.DIGITS_CNN["input"], "formats": dict(FORMATS), "layers": layers}


def load(path):
    """Read a model file; every problem is a one-line :class:`ModelFormatError`."""
    name = os.fspath(path)
    manifest, arrays = _read(name)
    version = manifest.get("version")
    if version == 1:
        manifest = _upgrade_v1(name, manifest)
    elif version != VERSION:
        raise ModelFormatError(f"{name}: unsupported model format version {version!r} (this reads 1 and {VERSION})")
    formats = manifest.get("formats")
    if not isinstance(formats, dict) or set(formats) != set(FORMATS) or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in formats.values()) \
            or formats["act_width"] not in range(2, 17):
        raise ModelFormatError(f"{name}: number formats must give {', '.join(FORMATS)} as positive numbers "
                               f"(act_width 2 to 16)")
    entries = manifest.get("layers")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ModelFormatError(f"{name}: 'layers' must be a list of objects")
    stored = ("method", "params", "shift", "arrays", "shape")
    try:
        input_shape, specs = description.from_dict(
            {"input": manifest.get("input"), "layers": [{k: v for k, v in e.items() if k not in stored}
                                                        for e in entries]})
    except description.DescriptionError as error:
        raise ModelFormatError(f"{name}: {error}") from None
    shapes = description.infer_shapes(input_shape, specs)
    layers = []
    for entry, spec, (in_shape, _) in zip(entries, specs, shapes):
        attrs = {k: v for k, v in spec.items() if k not in ("kind", "name")}
        layer = Layer(spec["name"], spec["kind"], attrs)
        wshape = description.weight_shape(spec, in_shape)
        if wshape is not None:
            _load_weights(name, layer, entry, wshape, arrays)
        layers.append(layer)
    meta = {k: v for k, v in manifest.items() if k not in ("format", "version", "layers", "input", "formats")}
    try:
        model = Model(input_shape, layers, meta, formats)
    except description.DescriptionError as error:
        raise ModelFormatError(f"{name}: {error}") from None
    _check_packed(name, model)
    return model


def _load_weights(name, layer, entry, shape, arrays):
    lname = layer.name
    try:
        entry_method = methods.get(entry.get("method"))
    except ValueError:
        raise ModelFormatError(f"{name}: layer {lname} has unknown method {entry.get('method')!r}") from None
    if tuple(entry.get("shape", shape)) != shape:
        raise ModelFormatError(f"{name}: layer {lname} must be a {layer.kind} layer of shape {shape}, "
                               f"not {layer.kind} {tuple(entry['shape'])}")
    declared_arrays = entry.get("arrays", {})
    if not isinstance(declared_arrays, dict):
        raise ModelFormatError(f"{name}: layer {lname} 'arrays' must be an object")
    unknown = set(declared_arrays) - set(entry_method.arrays) - set(_BIAS)
    if unknown:
        raise ModelFormatError(f"{name}: layer {lname} ({entry_method.name}) has unknown array "
                               f"{sorted(unknown)[0]!r}")
    data = {}
    for key in sorted(set(entry_method.arrays) | set(declared_arrays)):
        full = f"{lname}/{key}"
        if full not in arrays:
            raise ModelFormatError(f"{name}: layer {lname} ({entry_method.name}) is missing array {key!r}")
        declared = declared_arrays.get(key)
        if not isinstance(declared, dict) or list(arrays[full].shape) != declared.get("shape"):
            raise ModelFormatError(f"{name}: array {full} has shape {arrays[full].shape}, the manifest says "
                                   f"{declared.get('shape') if isinstance(declared, dict) else 'nothing'}")
        data[key] = arrays[full]
    layer.method, layer.data, layer.shape = entry_method.name, data, shape
    want = dict(entry_method.array_shapes(layer))
    if layer.attrs.get("bias"):
        if "bias" not in data:
            raise ModelFormatError(f"{name}: layer {lname} ({entry_method.name}) is missing array 'bias'")
        want.update({key: (shape[0],) for key in _BIAS if key in data})
    elif set(_BIAS) & set(data):
        raise ModelFormatError(f"{name}: layer {lname} stores a bias but its description has none")
    for key, want_shape in want.items():
        if data[key].shape != tuple(want_shape):
            raise ModelFormatError(f"{name}: layer {lname} {key} must be shaped {tuple(want_shape)}, "
                                   f"not {data[key].shape}")
    for key, value in data.items():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise ModelFormatError(f"{name}: layer {lname} array {key} holds NaN or infinite values")
    params = entry.get("params", {})
    if not isinstance(params, dict):
        raise ModelFormatError(f"{name}: layer {lname} 'params' must be an object")
    shift = entry.get("shift", 0)
    if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift < 48:
        raise ModelFormatError(f"{name}: layer {lname} has an invalid shift {shift!r}")
    layer.params, layer.shift = params, shift


def _check_packed(name, model):
    """Decode every weight layer once so that a corrupt image is reported at load time."""
    from . import escalate, mlg, smartdeal
    for layer in model.weight_layers:
        try:
            layer.entry.decode(layer)
            w, _ = layer.entry.integer_weights(layer)
            if w is not None and w.shape != layer.shape:
                raise InputError(f"it decodes to shape {w.shape}, not {layer.shape}")
        except (smartdeal.FormatError, mlg.FormatError, escalate.FormatError) as error:
            raise ModelFormatError(f"{name}: layer {layer.name}: {error}") from None
        except (ValueError, TypeError, KeyError) as error:
            raise ModelFormatError(f"{name}: layer {layer.name} ({layer.method}) is inconsistent: {error}") \
                from None
    if all(layer.method != "float" for layer in model.weight_layers):
        try:
            check_accumulators(model)
        except ValueError as error:
            raise ModelFormatError(f"{name}: {error}") from None
