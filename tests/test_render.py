"""Render the template with the default answers and with each question flipped, then run each
render's own workflow: no Jinja left, ruff, ruff format, mypy --strict and its pytest suite."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.interpreters import DEFAULT_PYTHON_VERSION, PYTHON_VERSIONS, reported_version
from harness.support import SHARED_MYPY_CACHE, project_files, pytest_summary, render, run, typecheck

pytestmark = pytest.mark.render

# One render per answer that changes what is rendered; each flips one question from its default.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "named": {
        "service_name": "orders-api",
        "description": 'Orders: "quoted" & <escaped> text',
        "owner": "team-orders@example.com",
        "http_port": "9000",
    },
    # A long package name: every template-owned line that holds it still passes lint.
    "package-name": {"package_name": "orders_fulfilment_platform_core"},
    "no-example-client": {"include_example_client": False},
    "no-metrics": {"include_metrics": False},
    "no-otlp": {"include_otlp_exporter": False},
    "gitlab": {"ci_provider": "gitlab"},
    "no-ci": {"ci_provider": "none"},
    # Each python_version other than the default (which "defaults" runs), under that interpreter.
    **{
        f"python-{version}": {"python_version": version}
        for version in PYTHON_VERSIONS
        if version != DEFAULT_PYTHON_VERSION
    },
}

# The openings of a Jinja expression, statement or comment; `{}}` in Python or YAML is not one.
JINJA_LEFTOVER = re.compile(r"\{\{-?\s*[A-Za-z_]|\{%-?\s|\s-?%\}|\{#-?\s")


# Not Jinja: Prometheus's alert templates (`{{ $labels.host }}`) and Grafana's legend formats
# (`"legendFormat": "{{route}}"`) in the observability files, and the examples quoting them.
PROMETHEUS_TEMPLATE = re.compile(r"\{\{ \$(labels\.\w+|value) \}\}")
# Not Jinja either: GitHub Actions expressions in the workflows (`${{ vars.TEMPLATE_DRIFT }}`).
GITHUB_EXPRESSION = re.compile(r"\$\{\{ [^{}]* \}\}")
GRAFANA_LEGEND = re.compile(r'^\s*"legendFormat": "(\{\{\w+\}\}|[\w ])*",?$')


def _leftover_jinja(project: Path) -> list[str]:
    found = []
    for path in project.rglob("*"):
        if ".git" in path.parts or ".venv" in path.parts or not path.is_file():
            continue
        if path.suffix == ".jinja" or JINJA_LEFTOVER.search(path.name):
            found.append(f"{path}: template file name")
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if GRAFANA_LEGEND.match(line):
                continue
            line_without_others = GITHUB_EXPRESSION.sub("", PROMETHEUS_TEMPLATE.sub("", line))
            if JINJA_LEFTOVER.search(line_without_others):
                found.append(f"{path.relative_to(project)}:{number}: {line.strip()}")
    return found


# What `make install`, `lint`, `typecheck` and `test` read, besides every Python file. Not read:
# the CI files, the ownership map, the catalog entry, the answers file (by lint's drift report
# alone, which compares the template-owned files with a render of the same answers, and which
# tests/test_ownership.py checks).
WORKFLOW_FILES = (
    "pyproject.toml",
    "uv.lock",
    "Makefile",
    ".python-version",
    ".env.example",
    "docs/architecture.md",  # tests/core/test_architecture.py reads its module table
)
WORKFLOW_DIRS = ("src/", "tests/", "tools/", "typings/")


def _workflow_inputs(project: Path) -> dict[str, bytes]:
    return {
        path: content
        for path, content in project_files(project).items()
        if path.endswith((".py", ".pyi"))
        or path in WORKFLOW_FILES
        or path.startswith(WORKFLOW_DIRS)
    }


def workflow_digest(project: Path) -> str:
    """The hash of every file the render's workflow reads: renders with the same one (``gitlab``
    and ``no-ci`` have the defaults') would run the same checks on the same inputs."""
    digest = hashlib.sha256()
    for path, content in sorted(_workflow_inputs(project).items()):
        digest.update(f"{path}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:16]


def _passes_its_workflow(project: Path, version: str) -> None:
    run(["make", "install"], cwd=project)
    # uv chose the interpreter from the render's own .python-version.
    assert reported_version([str(project / ".venv/bin/python")], project) == version
    run(["make", "lint"], cwd=project)
    typecheck(project)
    result = run(["make", "test"], cwd=project)
    summary = pytest_summary(result.stdout)
    assert re.match(r"\d+ passed", summary), summary
    assert "skipped" not in summary and "failed" not in summary, summary


@pytest.mark.parametrize("variant", VARIANTS)
def test_render_passes_its_own_checks(
    tmp_path: Path,
    variant: str,
    python_for: Callable[[str], Path],
    once_per_session: Callable[[str, str, Callable[[], object]], str],
) -> None:
    """Each render leaves no Jinja and passes its workflow; renders whose workflow inputs are
    identical (the same digest) run it once in the session, whichever comes first."""
    answers = VARIANTS[variant]
    version = answers.get("python_version", DEFAULT_PYTHON_VERSION)
    if version != DEFAULT_PYTHON_VERSION:  # without it here, uv may still download the default
        python_for(version)
    project = render(tmp_path / "service", answers)
    assert _leftover_jinja(project) == []
    key = f"workflow-{workflow_digest(project)}"
    once_per_session(key, variant, lambda: _passes_its_workflow(project, version))


def test_the_workflow_digest_covers_what_the_workflow_reads(tmp_path: Path) -> None:
    """A variant that changes only CI files shares the defaults' digest; one that changes the
    code, or only the Python version, does not."""
    defaults = render(tmp_path / "defaults")
    digest = workflow_digest(defaults)
    assert workflow_digest(render(tmp_path / "gitlab", VARIANTS["gitlab"])) == digest
    assert workflow_digest(render(tmp_path / "no-ci", VARIANTS["no-ci"])) == digest
    assert workflow_digest(render(tmp_path / "no-otlp", VARIANTS["no-otlp"])) != digest
    (defaults / ".python-version").write_text("3.12\n")
    assert workflow_digest(defaults) != digest


def test_answers_change_what_is_rendered(tmp_path: Path) -> None:
    full = render(tmp_path / "full")
    bare = render(
        tmp_path / "bare",
        {
            "include_example_client": False,
            "include_metrics": False,
            "include_otlp_exporter": False,
            "ci_provider": "none",
        },
    )
    assert (full / "src/my_service/users.py").exists()
    assert not (bare / "src/my_service/users.py").exists()
    assert (full / "src/my_service/core/metrics.py").exists()
    assert not (bare / "src/my_service/core/metrics.py").exists()
    assert "prometheus-client" not in (bare / "pyproject.toml").read_text()
    assert "otlp" not in (bare / "pyproject.toml").read_text()
    assert "otlp" not in (bare / "src/my_service/core/tracing.py").read_text().lower()
    assert (full / ".github/workflows/ci.yml").exists()
    assert not (bare / ".github").exists()
    assert not (bare / ".gitlab-ci.yml").exists()
    answers = (full / ".copier-answers.yml").read_text()
    assert "_commit:" in answers
    assert "service_name: my-service" in answers


def test_named_answers_reach_the_render(tmp_path: Path) -> None:
    project = render(tmp_path / "svc", VARIANTS["named"])
    assert (project / "src/orders_api/__init__.py").exists()
    settings = (project / "src/orders_api/core/settings.py").read_text()
    assert 'env_prefix="ORDERS_API_"' in settings
    assert 'SERVICE_NAME = "orders-api"' in settings
    assert "Field(9000," in settings
    assert "EXPOSE 9000" in (project / "Dockerfile").read_text()
    assert 'name = "orders-api"' in (project / "pyproject.toml").read_text()


def test_the_shared_mypy_cache_never_serves_another_renders_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two renders whose files match in relative path, size and mtime (``my_service`` and
    ``orders_api`` are names of one length) but not in content: on a cache that holds the
    first's modules, plain mypy takes them for the second's (and records them as its own);
    harness.support.typecheck does not."""
    first = render(tmp_path / "first")
    second = render(tmp_path / "second", {"service_name": "orders-api"})
    for project in (first, second):
        run(["make", "install"], cwd=project)
        for path in project.glob("**/*.py"):
            if ".venv" not in path.parts:
                os.utime(path, (900_000_000, 900_000_000))  # before any of typecheck()
    plain = tmp_path / "plain-cache"
    run(["make", "typecheck"], cwd=first, env={"MYPY_CACHE_DIR": str(plain)})
    shared = shutil.copytree(plain, tmp_path / "shared-cache")
    with pytest.raises(AssertionError, match=r'module named "my_service\.'):
        run(["make", "typecheck"], cwd=second, env={"MYPY_CACHE_DIR": str(plain)})
    monkeypatch.setenv(SHARED_MYPY_CACHE, str(shared))
    assert "Success: no issues found" in typecheck(second).stdout


def test_each_test_worker_type_checks_on_a_mypy_cache_of_its_own() -> None:
    """The workers inherit the controller's environment; each must still name its own cache,
    since two mypy runs on one cache race on its modules (tests/conftest.py)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    assert Path(os.environ[SHARED_MYPY_CACHE]).name == worker
