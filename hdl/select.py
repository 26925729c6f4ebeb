"""Selects shared by the PEs."""

from amaranth import Array

__all__ = ["pick"]


def pick(items, index):
    """``items[index]`` as a multiplexer; a single item needs none (and yosys' abc9 mis-maps a select on a
    zero-width index: ``GetSize(conn.first) == GetSize(conn.second)`` fails in ECP5 synthesis)."""
    items = list(items)
    return items[0] if len(items) == 1 else Array(items)[index]
