"""Fixtures for the template tests."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.interpreters import (
    PYTHON_VERSIONS,
    missing_message,
    put_found_on_path,
)
from harness.support import SHARED_MYPY_CACHE

if shutil.which("uv") is None:  # pragma: no cover - the Makefile puts uv on PATH
    pytest.exit("uv is not on PATH: run the tests with `make test`", returncode=2)

# Bytecode is written whatever the environment says: every render's processes, the Copier and
# fleet commands the tests start, and the workers themselves would otherwise compile every
# module they import again, each time (seconds per process).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False
CACHE = Path(__file__).resolve().parent.parent / ".cache"
os.environ.setdefault("UV_CACHE_DIR", str(CACHE / "uv"))


def pytest_configure(config: pytest.Config) -> None:
    """One mypy cache per worker for every render's type check (harness.support.typecheck).

    Set, not defaulted: the workers inherit the controller's environment, which already names
    the controller's cache, and two workers on one cache race on its modules and its mtimes."""
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    os.environ[SHARED_MYPY_CACHE] = str(CACHE / "mypy" / worker)


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


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A directory that every pytest-xdist worker of this session shares (the pattern of
    pytest-xdist's docs, "Making session-scoped fixtures execute only once")."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if worker_id != "master" else base


@pytest.fixture(scope="session")
def once_per_session(session_dir: Path) -> Callable[[str, str, Callable[[], object]], str]:
    """``once(key, who, work)``: the first caller of ``key`` in the session, on any worker, runs
    ``work`` under a file lock and records its outcome; a later caller waits for the lock and
    gets that outcome instead of running it again: the name of the caller that ran it, or the
    same failure, saying whose. For work whose result depends only on ``key``."""
    import fcntl
    import json

    records = session_dir / "once"
    records.mkdir(exist_ok=True)

    def once(key: str, who: str, work: Callable[[], object]) -> str:
        record = records / f"{key}.json"
        with open(records / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if record.exists():
                done = json.loads(record.read_text())
                if done["error"] is not None:
                    pytest.fail(f"{key} failed, run by {done['by']}:\n{done['error']}")
                return str(done["by"])
            try:
                work()
            except BaseException as error:
                record.write_text(json.dumps({"by": who, "error": str(error)[-6000:]}))
                raise
            record.write_text(json.dumps({"by": who, "error": None}))
            return who

    return once
