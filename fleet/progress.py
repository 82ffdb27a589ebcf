"""Progress on stderr for long runs: on when stderr is a terminal, unless --json; --progress
forces it on (for logs), so stdout stays machine-readable either way."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``[3/50] plan svc-003`` lines, rewritten in place on a terminal."""

    def __init__(self, total: int, verb: str, enabled: bool, stream: TextIO = sys.stderr) -> None:
        self.total, self.verb, self.enabled, self.stream = total, verb, enabled, stream
        self.count = 0
        self.started = time.monotonic()
        self.tty = stream.isatty()

    def step(self, name: str) -> None:
        """Say that work on ``name`` starts."""
        self.count += 1
        if not self.enabled:
            return
        line = f"[{self.count}/{self.total}] {self.verb} {name}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        """Close the line and say how long the run took."""
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        end = "\r\033[K" if self.tty else ""
        self.stream.write(f"{end}{self.verb}: {self.count} services in {elapsed:.1f} s\n")
        self.stream.flush()


def wanted(json_output: bool, forced: bool, stream: TextIO = sys.stderr) -> bool:
    """Whether to show progress: forced, or on a terminal when the output is not JSON."""
    return forced or (stream.isatty() and not json_output)
