"""Reproducible builds: a render's uv.lock is committed, CI refuses a missing or stale one, and
the image installs exactly what it pins (the e2e suite builds that image)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import commit_all, git, render, run

pytestmark = pytest.mark.render


def test_the_lock_is_committed_checked_in_ci_and_used_by_the_image(tmp_path: Path) -> None:
    project = render(tmp_path / "service")
    commit_all(project, "Render")
    install = run(["make", "install"], cwd=project)
    assert (project / "uv.lock").is_file()
    # Not ignored, and the first install says to commit it.
    assert git(project, "status", "--porcelain").splitlines() == ["?? uv.lock"]
    assert "commit it" in install.stdout
    commit_all(project, "Lock dependencies")
    # What CI runs passes with the committed lock, and leaves the tree clean (`make update`
    # needs a clean tree).
    run(["make", "install", "SYNC_FLAGS=--locked"], cwd=project)
    assert git(project, "status", "--porcelain") == ""
    ci = (project / ".github/workflows/ci.yml").read_text()
    assert ci.count("make install SYNC_FLAGS=--locked") == 2
    assert "make install\n" not in ci
    dockerfile = (project / "Dockerfile").read_text()
    assert "COPY pyproject.toml uv.lock" in dockerfile
    assert "uv export --frozen --no-dev" in dockerfile
    assert "--require-hashes" in dockerfile
    assert "pip install --quiet --no-deps ." in dockerfile
    # A dependency added without locking again fails CI's install.
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace("dependencies = [\n", 'dependencies = [\n    "six",\n', 1))
    assert pyproject.read_text() != text
    stale = subprocess.run(
        ["make", "install", "SYNC_FLAGS=--locked"], cwd=project, capture_output=True, text=True
    )
    assert stale.returncode != 0
    assert "uv.lock" in stale.stderr + stale.stdout


def test_gitlab_ci_installs_from_the_lock(tmp_path: Path) -> None:
    project = render(tmp_path / "service", {"ci_provider": "gitlab"})
    ci = (project / ".gitlab-ci.yml").read_text()
    assert ci.count("make install SYNC_FLAGS=--locked") == 2
    assert "files: [uv.lock]" in ci
