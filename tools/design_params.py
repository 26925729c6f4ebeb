"""The base of the design parameter dataclasses (their fields become ``insitu build`` options)."""

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

    def resolved(self):
        self.check()
        return self


def divides(option, value, what, total):
    if value < 1 or total % value:
        raise ParameterError(f"--{option} {value} must divide {what} ({total})")
