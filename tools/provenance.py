"""Where a result came from: the git commit, a hash of the sources that produce hardware results, and the
``insitu`` command line that wrote it.

Every result file (build reports, benches, the SoC simulation) carries this as ``"provenance"``, so that
:func:`stale` can tell, without building anything, whether the code at hand still produces it, and
``insitu results --update`` can run its command again.

The hashed sources are everything a build, a bench or a simulation runs: ``hdl/``, ``soc/`` (with the
firmware and the CXXRTL driver), ``boards/``, ``golden/`` and the tools that turn parameters into
hardware (:data:`SOURCES`). Command-line plumbing, training and reporting are left out: they do not change
a number in a result.

**Scope.** A result records, besides the hash of all of them (``source_hash``), the hash of each hashed
source it could have used (``sources``): every hashed Python file its process had imported when it was
written, and the hashed files that are not Python (firmware, C++ drivers: they are compiled, not imported)
whose compiling module it imported (:data:`COMPILED_BY`: the firmware by :mod:`insitu.soc.firmware`, the
CXXRTL drivers by the simulations that build them; a non-Python file no module claims counts for every
result). A result is stale when one of those changed or is gone, or when a non-Python source its modules
would compile was added. A module that was never imported cannot have changed a number, so an edit to the
network compiler no longer invalidates a SoC simulation that never loaded it, and an edit to the firmware no
longer invalidates a block's build. Work spread over other processes (a sweep's dask workers) records what each
point's process imported (:data:`scope`). Results that record only ``source_hash`` are compared as a whole.
"""

import contextvars
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["SOURCES", "COMPILED_BY", "compiled_by", "source_files", "source_hash", "provenance", "file_hash",
           "stale", "command", "scope", "used_sources", "write_json_atomic", "write_result"]

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("hdl", "soc", "boards", "golden", "tools/build.py", "tools/designs.py", "tools/designs_stream.py",
           "tools/designs_soc.py", "tools/designs_network.py", "tools/network_plan.py", "tools/network_stages.py",
           "tools/network_pipeline.py", "tools/network_sim.py",
           "tools/design_params.py", "tools/bench.py", "tools/bench_circulant.py",
           "tools/bench_decode.py", "tools/bench_escalate.py", "tools/bench_network.py", "tools/netrun.py",
           "tools/blob.py", "tools/deploy.py", "tools/network_link.py")
_SUFFIXES = {".py", ".c", ".h", ".S", ".ld", ".cc", ".in"}          # .in: the linker script template
#: non-Python sources (a file, or a folder ending in "/") and the module that compiles them into a result
COMPILED_BY = {"soc/firmware/": "soc/firmware.py", "soc/cxxrtl_driver.cc": "soc/cxxrtl.py",
               "soc/stream_driver.cc": "soc/compiled_stream.py"}

#: the ``insitu`` arguments of the command being run (set by the command line), recorded in results
command = contextvars.ContextVar("insitu_command", default=None)
#: which hashed sources a result records: ``"imported"`` (those this process imported, plus every non-Python
#: source), ``"all"``, or a ``{name: hash}`` of sources other processes used for it (a sweep's points),
#: recorded with this process's own
scope = contextvars.ContextVar("insitu_provenance_scope", default="imported")


def source_files(root=ROOT):
    """The hashed source files, sorted, as paths relative to ``root``."""
    files = []
    for entry in SOURCES:
        path = root / entry
        if path.is_dir():
            files += [p for p in path.rglob("*") if p.suffix in _SUFFIXES and "__pycache__" not in p.parts]
        elif path.exists():
            files.append(path)
    return sorted(p.relative_to(root).as_posix() for p in files)


def source_hash(root=ROOT):
    """SHA-256 over the names and contents of :func:`source_files` (the first 16 hex digits)."""
    digest = hashlib.sha256()
    for name in source_files(root):
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def file_hash(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _git(*args):
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def compiled_by(name):
    """The module that compiles the non-Python source ``name`` (:data:`COMPILED_BY`), or ``None`` when no
    module claims it (then every result depends on it)."""
    for entry, module in COMPILED_BY.items():
        if name == entry or (entry.endswith("/") and name.startswith(entry)):
            return module
    return None


def _depends(name, modules):
    """Whether a result whose process imported the hashed Python files ``modules`` depends on ``name``."""
    if name.endswith(".py"):
        return name in modules
    owner = compiled_by(name)
    return owner is None or owner in modules


def used_sources(root=ROOT, modules=None):
    """The hashed sources a result made in this process could depend on, as ``{name: hash}``: the hashed
    Python files among ``modules`` (default: every module imported so far) and the hashed non-Python files
    those modules compile (:func:`compiled_by`)."""
    root = Path(root).resolve()
    files = source_files(root)
    imported = set()
    for module in list((sys.modules if modules is None else modules).values()):
        path = getattr(module, "__file__", None)
        if not path:
            continue
        try:
            imported.add(Path(path).resolve().relative_to(root).as_posix())
        except ValueError:
            continue
    return {name: file_hash(root / name) for name in files if _depends(name, imported)}


def provenance(inputs=()):
    """The provenance block of a result: commit, whether the hashed sources differ from it, the source
    hash, the hashes of the sources it could have used (see the module's notes on scope), the command, and
    the hashes of ``inputs`` (other files the result was made from, e.g. a model)."""
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", *SOURCES)) if commit else None
    argv = command.get()
    extra = scope.get()
    if extra == "all":
        sources = {name: file_hash(ROOT / name) for name in source_files()}
    else:
        sources = {**(extra if isinstance(extra, dict) else {}), **used_sources()}
    return {"git_commit": commit, "sources_modified": dirty, "source_hash": source_hash(),
            "sources": sources, "command": None if argv is None else ["insitu", *argv],
            "inputs": {_name(path): file_hash(path) for path in inputs}}


def write_json_atomic(path, obj):
    """Write JSON to ``path`` through a temporary file and a rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_result(path, result, inputs=()):
    """Write a result file with its provenance (see :func:`provenance`)."""
    result["provenance"] = provenance(inputs)
    write_json_atomic(path, result)


def _name(path):
    """``path`` relative to the checkout when it is inside it (as results name their inputs)."""
    path = Path(path).resolve()
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def stale(result, root=ROOT):
    """Why ``result`` (a loaded result file) no longer describes the code at ``root``, or ``None``."""
    block = result.get("provenance") if isinstance(result, dict) else None
    if not block:
        return "it records no provenance"
    recorded = block.get("sources")
    if isinstance(recorded, dict):
        files = source_files(root)
        present = set(files)
        for name, digest in sorted(recorded.items()):
            if name not in present:
                return f"its source {name} is gone"
            if file_hash(root / name) != digest:
                return f"its source {name} changed"
        added = [name for name in files
                 if not name.endswith(".py") and name not in recorded and _depends(name, recorded)]
        if added:
            return f"a source it would have compiled was added: {added[0]}"
    elif block.get("source_hash") != source_hash(root):
        return f"it was made by other sources ({block.get('source_hash')}, these are {source_hash(root)})"
    for path, digest in (block.get("inputs") or {}).items():
        if not (root / path).exists() or file_hash(root / path) != digest:
            return f"its input {path} changed"
    return None
