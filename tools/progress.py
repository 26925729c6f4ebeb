"""Progress of long steps (training epochs, trade-off runs, simulated images): one helper, used everywhere.

On a terminal it is a tqdm bar on standard error; otherwise (logs, CI, a caller's own callback) one line
per step, so that a log still shows where a run is.
"""

import sys

__all__ = ["Progress"]


class Progress:
    """``total`` steps of ``what``; :meth:`step` after each, with a short status (e.g. the loss).

    ``lines``: a print-like callable for line mode; ``print`` on a terminal becomes a tqdm bar."""

    def __init__(self, total, what, lines=print):
        self.total, self.what, self.lines, self.done = total, what, lines, 0
        self._bar = None
        if lines is print and sys.stderr.isatty():
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=what, file=sys.stderr, leave=False, dynamic_ncols=True)

    def step(self, status=""):
        self.done += 1
        if self._bar is not None:
            self._bar.set_postfix_str(status, refresh=False)
            self._bar.update(1)
        else:
            self.lines(f"  {self.what} {self.done}/{self.total}" + (f": {status}" if status else ""))

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
