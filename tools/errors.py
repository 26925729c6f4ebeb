"""The command line's own error: a one-line message, exit status 1."""

__all__ = ["CLIError"]


class CLIError(Exception):
    """A user-facing problem the command line reports in one line."""
