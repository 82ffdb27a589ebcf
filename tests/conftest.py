"""Fixtures for the template tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.interpreters import (
    PYTHON_VERSIONS,
    missing_message,
    put_found_on_path,
)

if shutil.which("uv") is None:  # pragma: no cover - the Makefile puts uv on PATH
    pytest.exit("uv is not on PATH: run the tests with `make test`", returncode=2)

CACHE = Path(__file__).resolve().parent.parent / ".cache"
os.environ.setdefault("UV_CACHE_DIR", str(CACHE / "uv"))
# One mypy cache per test worker for every render's `make typecheck`: mypy revalidates a cached
# module by its content hash whatever its path, so a file another render already checked
# (byte-identical: most of src/ and tests/, and every dependency) is not checked again, and a
# changed one is, with everything that depends on it. Per worker, so no two mypy runs write one
# cache at once.
os.environ.setdefault(
    "MYPY_CACHE_DIR", str(CACHE / "mypy" / os.environ.get("PYTEST_XDIST_WORKER", "main"))
)

IN_CI = os.environ.get("CI", "").lower() == "true"
# Every python_version a render can ask for, as found on this machine (harness/interpreters.py),
# first on PATH for every command the tests run: a render's uv finds the version its
# .python-version names there. (A missing default version is left to uv, which may download it.)
FOUND = put_found_on_path()
MISSING = [version for version in PYTHON_VERSIONS if version not in FOUND]
if MISSING and IN_CI:
    pytest.exit(missing_message(MISSING), returncode=2)


@pytest.fixture(scope="session")
def python_for() -> Callable[[str], Path]:
    """The interpreter for a python_version, for tests that render one: a missing one fails in
    CI (the session stops above) and skips elsewhere, saying how to provide it."""

    def interpreter(version: str) -> Path:
        found = FOUND.get(version)
        if found is None:
            pytest.skip(missing_message([version]))
        return found

    return interpreter


@pytest.fixture(scope="session")
def releases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A template repository with the working tree as CURRENT and a synthetic NEXT release
    tagged (harness/releases.py), with the rendered paths NEXT changes; built once per worker."""
    from harness.releases import build_releases

    return build_releases(tmp_path_factory)
