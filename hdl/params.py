"""Parameter validation shared by the components (``hdl``, ``soc``): one message shape, ``TypeError`` for a
value of the wrong type, ``ValueError`` for one out of range."""

import functools
from contextlib import contextmanager

__all__ = ["ParameterError", "ParameterTypeError", "check_int", "check_kernel", "signed_width", "abandon", "validating",
           "validated"]


class ParameterError(ValueError):
    """A parameter out of range: a one-line message naming it (the command line reports it as is)."""


class ParameterTypeError(TypeError):
    """A parameter of the wrong type: a one-line message naming it."""


def check_int(value, name, minimum, maximum=None, *, what="an integer"):
    """Validate an integer parameter; raise ``TypeError``/``ValueError`` with the project's message shape."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ParameterTypeError(f"{name} must be {what}, not {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in range [{minimum}, {maximum}]"
        raise ParameterError(f"{name} must be {what} {bound}, not {value!r}")
    return value


def signed_width(lo, hi):
    """Smallest signed width holding every integer in ``[lo, hi]`` (same rule as ``golden.fixed``)."""
    return max(1, (hi.bit_length() + 1) if hi > 0 else 1, ((-lo - 1).bit_length() + 1) if lo < 0 else 1)


def check_kernel(k):
    """Validate a kernel size: an odd integer >= 1."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0:
        raise ParameterError(f"Kernel size must be an odd integer >= 1, not {k!r}")
    return k


class _Abandoned:
    """What a component becomes when its constructor refused its parameters: a plain object, which nothing
    elaborates and which therefore has nothing to warn about when it is collected."""


def abandon(*components):
    """Turn half-built components (their constructor is raising) into inert objects, so that the parameter
    error is the only thing the user sees (no ``UnusedElaboratable`` warning for an object that never
    existed as far as they are concerned). Plain Python: no Amaranth internals."""
    for component in components:
        component.__class__ = _Abandoned


@contextmanager
def validating(component):
    """Wrap a component's parameter checks: if one fails, the half-built component is abandoned."""
    try:
        yield
    except Exception:
        abandon(component)
        raise


def validated(init):
    """Decorate a component's ``__init__`` so that a parameter error raises cleanly (see :func:`validating`)."""
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        with validating(self):
            init(self, *args, **kwargs)
    return wrapper
