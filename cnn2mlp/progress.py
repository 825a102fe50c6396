"""A status line on a terminal's stderr for the long steps: the passes, the check."""
from __future__ import annotations

import sys
import time


class Progress:
    """One status line on a terminal's stderr (``[ 5/17] conv-to-dense 3.1 s``), shown once
    a compile has run for ``after`` seconds and cleared at the end. Never on a pipe or a
    file, so that logs and error output stay one line."""

    def __init__(self, enabled: bool, after: float = 2.0) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.after = after
        self.start = time.perf_counter()
        self.shown = False

    def step(self, index: int, total: int, name: str) -> None:
        elapsed = time.perf_counter() - self.start
        if self.enabled and elapsed >= self.after:
            print(f"\r[{index + 1:>2}/{total}] {name:<24} {elapsed:6.1f} s", end="",
                  file=sys.stderr, flush=True)
            self.shown = True

    def say(self, text: str) -> None:
        """A status line of one's own (``check: 32/100 inputs``), shown at once."""
        if self.enabled:
            elapsed = time.perf_counter() - self.start
            print(f"\r{text:<36} {elapsed:6.1f} s", end="", file=sys.stderr, flush=True)
            self.shown = True

    def done(self) -> None:
        if self.shown:
            print("\r" + " " * 46 + "\r", end="", file=sys.stderr, flush=True)
            self.shown = False
