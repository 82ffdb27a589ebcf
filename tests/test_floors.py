"""The render's dependency floors hold: with every direct dependency at its lowest allowed version
(uv's ``lowest-direct`` resolution), the default render passes its lint, its type check and its
whole unit suite on the oldest and the newest ``python_version``, and on each one from which the
floors change (newer Pythons need newer releases of the dependencies that ship wheels).

The other render tests lock the highest versions, so without this test a floor is a promise that
nothing checks: a service may lock any version at or above it. The whole suite runs in one
process, as a service's CI runs it, because some failures need an order of tests (a test that
leaves an event loop unclosed fails a later test's ``gc.collect()``, not its own).
How to find the first version that passes when a floor fails: docs/releasing.md.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from harness.interpreters import PYTHON_VERSIONS, reported_version
from harness.support import REPO_ROOT, pytest_summary, render, run

pytestmark = pytest.mark.render

# Where a floor depends on the Python (`python.floor(python_version, {"3.11": ..., "3.14": ...})`
# in the render's pyproject.toml, includes/python.jinja): each Python from which a set of floors
# holds.
PER_PYTHON_FLOOR = re.compile(r"python\.floor\(python_version, (\{[^}]*\})\)")


def floor_sets_start() -> set[str]:
    """The Pythons from which a per-Python floor changes (3.14 where 3.11-3.13 share one)."""
    template = (REPO_ROOT / "template/pyproject.toml.jinja").read_text()
    return {since for found in PER_PYTHON_FLOOR.findall(template) for since in json.loads(found)}


# The oldest and the newest choice, and each Python whose floors differ from the one before it:
# the versions that share their floors with an older one add time, and rarely a failure.
FLOOR_PYTHONS = sorted(
    {PYTHON_VERSIONS[0], PYTHON_VERSIONS[-1], *floor_sets_start()} & set(PYTHON_VERSIONS),
    key=Version,
)
# Every uv call of the render's make targets (`uv sync`, `uv run`) resolves with it, so each one
# keeps the lowest versions instead of locking the highest again.
LOWEST = {"UV_RESOLUTION": "lowest-direct"}


def floors(pyproject: Path) -> dict[str, Version]:
    """The ``>=`` floor of every direct dependency (the project's and its dev group's) that has
    one, by normalized name."""
    project = tomllib.loads(pyproject.read_text())
    requirements = [
        *project["project"]["dependencies"],
        *project.get("dependency-groups", {}).get("dev", []),
    ]
    found = {}
    for requirement in map(Requirement, requirements):
        for spec in requirement.specifier:
            if spec.operator == ">=":
                found[canonicalize_name(requirement.name)] = Version(spec.version)
    return found


def locked_versions(lock: Path) -> dict[str, Version]:
    """The version uv.lock holds for every package, by normalized name."""
    packages = tomllib.loads(lock.read_text())["package"]
    return {
        canonicalize_name(package["name"]): Version(package["version"])
        for package in packages
        if "version" in package
    }


@pytest.mark.parametrize("version", FLOOR_PYTHONS)
def test_lowest_direct_versions_pass_the_renders_checks(
    tmp_path: Path, version: str, python_for: Callable[[str], Path]
) -> None:
    python_for(version)  # a missing interpreter fails in CI, skips elsewhere; never downloaded
    project = render(tmp_path / "service", {"python_version": version})
    run(["make", "install"], cwd=project, env=LOWEST)
    assert reported_version([str(project / ".venv/bin/python")], project) == version
    lock = project / "uv.lock"
    assert 'resolution-mode = "lowest-direct"' in lock.read_text()
    # Each floor is what gets installed: a floor that another dependency's own requirement pushes
    # up (pytest's, under pytest-asyncio's) would promise a version no render can lock.
    locked = locked_versions(lock)
    pushed_up = {
        name: f">={floor} locks {locked.get(name)}"
        for name, floor in floors(project / "pyproject.toml").items()
        if locked.get(name) != floor
    }
    assert pushed_up == {}, "raise these floors to what they lock"
    run(["make", "lint"], cwd=project, env=LOWEST)
    run(["make", "typecheck"], cwd=project, env=LOWEST)
    result = run(["make", "test"], cwd=project, env=LOWEST)
    summary = pytest_summary(result.stdout)
    assert re.match(r"\d+ passed", summary), summary
    assert "skipped" not in summary and "failed" not in summary, summary
    # The checks ran at the floors: no make target locked the highest versions again.
    assert locked_versions(lock) == locked
