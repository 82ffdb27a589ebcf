"""`make demo` is the template's first impression: it must keep working, and its phases (happy
call, retries, breaker open, recovery) must keep checking what they show."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.support import REPO_ROOT

pytestmark = [pytest.mark.xdist_group("demo"), pytest.mark.render]

PHASE_CHECKS = [
    "ok: the inbound and the outbound line share trace_id",
    "ok: two retry lines, each with its wait",
    "ok: no downstream call was made",
    "ok: the breaker went half-open, probed, and closed",
    "every phase behaved as promised",
]


def test_demo_runs_every_phase_and_checks_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tools.demo"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"make demo failed:\n{done.stdout}\n{done.stderr}"
    missing = [check for check in PHASE_CHECKS if check not in done.stdout]
    assert not missing, f"the demo no longer shows {missing}:\n{done.stdout}"
