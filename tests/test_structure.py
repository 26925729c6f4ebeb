"""How the project holds together. The import direction between the packages, read from the sources:
``golden`` (the NumPy reference) and ``hdl`` (the blocks) stand alone, ``soc`` builds on ``hdl``, ``boards`` on ``hdl`` and ``soc``, and only
``tools`` (the command line) brings the golden models and the hardware together. And the command line
reports the project's own errors in one line, and nothing else."""

import argparse
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("golden", "hdl", "soc", "boards", "tools")
ALLOWED = {"golden": set(), "hdl": set(), "soc": {"hdl"}, "boards": {"hdl", "soc"},
           "tools": {"golden", "hdl", "soc", "boards"}}


def imported_packages(path):
    """The insitu packages a module imports (relative imports resolved against its own location)."""
    module = path.relative_to(ROOT).with_suffix("").parts      # e.g. ("soc", "accel", "conv")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module[:len(module) - node.level]
                parts = (*base, *(node.module.split(".") if node.module else ()))
            else:
                parts = tuple((node.module or "").split("."))
                parts = parts[1:] if parts[:1] == ("insitu",) else ()
            if parts and parts[0] in PACKAGES:
                found.add(parts[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "insitu" and len(parts) > 1 and parts[1] in PACKAGES:
                    found.add(parts[1])
    return found


def test_import_direction():
    wrong = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for other in imported_packages(path) - ALLOWED[package] - {package}:
                wrong.append(f"{path.relative_to(ROOT)} imports {other}")
    assert wrong == []


def test_the_reader_sees_relative_imports():
    """The checker itself: a relative import two levels up is resolved to its package."""
    assert "hdl" in imported_packages(ROOT / "soc" / "accel" / "conv.py")
    assert "golden" in imported_packages(ROOT / "tools" / "netrun.py")


def test_the_command_line_reports_only_the_projects_errors(monkeypatch, capsys):
    """A parameter error is one line; a plain ValueError (a bug, not the user's input) keeps its traceback."""
    import pytest

    from insitu.hdl.params import ParameterError
    from insitu.tools import cli, demo

    def refuse(**kwargs):
        raise ParameterError("Image count must be positive")
    monkeypatch.setattr(demo, "run_demo", refuse)
    assert cli.main(["demo"]) == 1
    assert capsys.readouterr().err == "insitu demo: error: Image count must be positive\n"

    def bug(**kwargs):
        raise ValueError("operands could not be broadcast together")
    monkeypatch.setattr(demo, "run_demo", bug)
    with pytest.raises(ValueError, match="broadcast"):
        cli.main(["demo"])


def test_every_command_prints_its_help(capsys):
    """Help texts go through argparse's %-formatting: a bare percent sign in one breaks --help."""
    from insitu.tools.cli import make_parser
    parser = make_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in commands:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([name, "--help"])
        assert exit_.value.code == 0, name
        assert "usage: insitu " + name in capsys.readouterr().out


def test_the_blocks_load_on_first_use():
    """``insitu.hdl`` imports a block's module only when the block is asked for, so a result's provenance
    names the blocks it used and no others; unknown names fail as attributes do."""
    import subprocess
    import sys
    code = ("import sys, insitu.hdl as h\n"
            "assert 'insitu.hdl.fft' not in sys.modules and 'insitu.hdl.pe' not in sys.modules\n"
            "from insitu.hdl import FFT\n"
            "assert FFT.__module__ == 'insitu.hdl.fft' and 'insitu.hdl.pe' not in sys.modules\n"
            "assert set(h.__all__) <= set(dir(h)) and h.MuxConv.__name__ == 'MuxConv'\n"
            "try:\n    h.NoSuchBlock\nexcept AttributeError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "module 'insitu.hdl' has no attribute 'NoSuchBlock'"
