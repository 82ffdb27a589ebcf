"""git, run as a subprocess, with errors that say which command failed and why."""

from __future__ import annotations

import subprocess
from pathlib import Path


class FleetError(Exception):
    """A problem with one service or the template, reported for that service only."""


def git(cwd: Path, *args: str, check: bool = True, binary: bool = False) -> str:
    """Run ``git args`` in ``cwd`` and return stdout; raise FleetError with stderr on failure."""
    result = subprocess.run(
        ["git", "-c", "core.quotepath=off", *args],
        cwd=cwd,
        capture_output=True,
        text=not binary,
        check=False,
    )
    if check and result.returncode != 0:
        err = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
        raise FleetError(f"git {' '.join(args)} failed: {err.strip()}")
    out = result.stdout
    return out if isinstance(out, str) else out.decode("utf-8", "replace")


def git_ok(cwd: Path, *args: str) -> bool:
    """Whether ``git args`` succeeds in ``cwd``."""
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False).returncode == 0
