"""Reproducible builds: a render's uv.lock is committed, CI refuses a missing or stale one, the
image installs exactly what it pins (the e2e suite builds that image), `make sbom` lists it, and
the git hooks run from it offline."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from harness.support import OFFLINE, commit_all, git, render, run

pytestmark = pytest.mark.render


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A default render, installed, with its uv.lock committed; and what the first install said."""
    project = render(tmp_path_factory.mktemp("locked") / "service")
    commit_all(project, "Render")
    install = run(["make", "install"], cwd=project)
    assert (project / "uv.lock").is_file()
    # Not ignored, and the first install says to commit it.
    assert git(project, "status", "--porcelain").splitlines() == ["?? uv.lock"]
    commit_all(project, "Lock dependencies")
    return project, install.stdout


def test_the_lock_is_committed_checked_in_ci_and_used_by_the_image(
    locked: tuple[Path, str],
) -> None:
    project, first_install = locked
    assert "commit it" in first_install
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
    try:
        pyproject.write_text(
            text.replace("dependencies = [\n", 'dependencies = [\n    "six",\n', 1)
        )
        assert pyproject.read_text() != text
        stale = subprocess.run(
            ["make", "install", "SYNC_FLAGS=--locked"], cwd=project, capture_output=True, text=True
        )
        assert stale.returncode != 0
        assert "uv.lock" in stale.stderr + stale.stdout
    finally:
        pyproject.write_text(text)


def _locked_runtime_packages(project: Path) -> set[tuple[str, str]]:
    """(name, version) of every runtime package uv.lock pins: what the image installs."""
    exported = run(
        ["uv", "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "--quiet"],
        cwd=project,
    ).stdout
    pins = re.findall(r"^([A-Za-z0-9._-]+)==([^\s;]+)", exported, flags=re.MULTILINE)
    return {(name.lower(), version) for name, version in pins}


def test_make_sbom_lists_exactly_the_locked_runtime_packages(locked: tuple[Path, str]) -> None:
    project, _ = locked
    run(["make", "sbom"], cwd=project, env=OFFLINE)
    text = (project / "sbom.cdx.json").read_text()
    validator = JsonStrictValidator(SchemaVersion.V1_5)
    assert validator.validate_str(text) is None
    bom = json.loads(text)
    # The validator checks formats too: one malformed download URL fails it.
    broken = json.loads(text)
    broken["components"][0]["externalReferences"][0]["url"] = "https://files.example/a b"
    assert validator.validate_str(json.dumps(broken)) is not None
    assert bom["metadata"]["component"]["name"] == "my-service"
    listed = {(c["name"].lower(), c["version"]) for c in bom["components"]}
    runtime = _locked_runtime_packages(project)
    assert listed == runtime
    names = {name for name, _ in listed}
    assert {"fastapi", "httpx2", "aiohttp", "uvicorn"} <= names
    assert not {"pytest", "copier", "mypy", "ruff", "pre-commit"} & names  # no dev tool
    assert all(c["purl"] == f"pkg:pypi/{c['name']}@{c['version']}" for c in bom["components"])
    # A generated file: never committed by accident.
    assert git(project, "status", "--porcelain") == ""
    # CI keeps it with the run that built and tested the image (GitLab's variant: below).
    e2e_job = (project / ".github/workflows/ci.yml").read_text().split("\n  e2e:\n")[1]
    assert "- run: make sbom\n" in e2e_job
    assert re.search(r"uses: actions/upload-artifact@[0-9a-f]{40}  # v\d", e2e_job)
    assert "path: sbom.cdx.json" in e2e_job


def test_the_git_hooks_are_local_and_run_offline_from_the_lock(
    locked: tuple[Path, str], tmp_path: Path
) -> None:
    project, _ = locked
    config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
    # Nothing fetched from a repository at a movable tag: every hook runs from the lock.
    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    hooks = {hook["id"]: hook for hook in config["repos"][0]["hooks"]}
    assert {"check-merge-conflict", "ruff-check", "ruff-format", "mypy"} <= set(hooks)
    assert all(hook["entry"].startswith("uv run --frozen ") for hook in hooks.values())
    offline = {**OFFLINE, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}
    hooks_run = ["uv", "run", "--frozen", "pre-commit", "run", "--all-files"]
    clean = run(hooks_run, cwd=project, env=offline)
    assert "Failed" not in clean.stdout, clean.stdout
    # They can fail: a leftover conflict marker (copier update leaves them outside a git merge).
    leftover = project / "src/my_service/leftover.py"
    leftover.write_text("<<<<<<< before updating\nA = 1\n=======\nA = 2\n>>>>>>> after updating\n")
    git(project, "add", str(leftover))
    try:
        found = subprocess.run(
            hooks_run, cwd=project, env={**os.environ, **offline}, capture_output=True, text=True
        )
        assert found.returncode != 0
        assert "Merge conflict string" in found.stdout, found.stdout
    finally:
        git(project, "rm", "--quiet", "--force", str(leftover))


def test_gitlab_ci_installs_from_the_lock(tmp_path: Path) -> None:
    project = render(tmp_path / "service", {"ci_provider": "gitlab"})
    ci = (project / ".gitlab-ci.yml").read_text()
    assert ci.count("make install SYNC_FLAGS=--locked") == 2
    assert "files: [uv.lock]" in ci
    e2e_job = ci.split("\ne2e:\n")[1].split("\n\n")[0]
    assert "- make sbom" in e2e_job
    assert "cyclonedx: [sbom.cdx.json]" in e2e_job
