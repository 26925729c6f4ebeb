"""The golden models' error for bad input (wrong shapes, out-of-range settings, corrupt images): a
one-line message. Format and description errors derive from it."""

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input to a golden model or a model file: the message names what is wrong, in one line."""
