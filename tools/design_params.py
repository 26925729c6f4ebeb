"""The base of the design parameter dataclasses (their fields become ``insitu build`` options)."""

import dataclasses
from dataclasses import field

from ..hdl.params import ParameterError

__all__ = ["param", "Params", "divides"]


def param(default, help, kind="positive", choices=None):
    return field(default=default, metadata={"help": help, "kind": kind, "choices": choices})


class Params:
    """Base of the parameter dataclasses: ``resolved()`` checks what no single option can (relations between
    options, named as on the command line) and fills in derived defaults, before anything is built."""

    def check(self):
        """Raise a one-line ValueError naming the options when they do not fit together."""

    def floor(self):
        """Lower bounds of what the design needs, from its parameters alone (nothing is built):
        ``{"logic": (cells, why), "memory": (bits, why)}``, either may be missing."""
        return {}

    def derived(self):
        """These parameters with derived defaults filled in (subclasses override)."""
        return self

    def resolved(self):
        """Checked (each field, then their relations) and with derived defaults filled in."""
        check_fields(self)
        self.check()
        return self.derived()


def divides(option, value, what, total):
    if value < 1 or total % value:
        raise ParameterError(f"--{option} {value} must divide {what} ({total})")


_RULES = {"positive": ("a positive integer", lambda v: v >= 1),
          "non-negative": ("a non-negative integer", lambda v: v >= 0),
          "odd": ("an odd integer >= 1", lambda v: v >= 1 and v % 2 == 1),
          "integer": ("an integer", lambda v: True)}


def check_fields(params):
    """Each field against its kind, as the command line checks its options (so that parameters built in
    Python, or read from a sweep spec, are refused the same way): one line naming the option."""
    for f in dataclasses.fields(params):
        kind, value, option = f.metadata.get("kind"), getattr(params, f.name), "--" + f.name.replace("_", "-")
        if value is None and f.default is None:
            continue                                       # optional, derived later
        if kind in _RULES:
            what, accept = _RULES[kind]
            if not isinstance(value, int) or isinstance(value, bool) or not accept(value):
                raise ParameterError(f"{option} must be {what}, not {value!r}")
        elif kind == "fraction":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise ParameterError(f"{option} must be a number in [0, 1], not {value!r}")
        elif kind == "flag":
            if not isinstance(value, bool):
                raise ParameterError(f"{option} is a flag (true or false), not {value!r}")
        elif kind == "text":
            if not isinstance(value, str) or not value:
                raise ParameterError(f"{option} must be a non-empty string, not {value!r}")
        elif kind == "files":
            if not isinstance(value, (tuple, list)) or not value or not all(isinstance(v, str) for v in value):
                raise ParameterError(f"{option} must be one or more file paths, not {value!r}")
        elif kind == "choice" and value not in f.metadata["choices"]:
            raise ParameterError(f"{option} must be one of {', '.join(map(str, f.metadata['choices']))}, "
                                 f"not {value!r}")

