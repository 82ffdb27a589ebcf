"""Render the template with the default answers and with each question flipped, then run each
render's own workflow: no Jinja left, ruff, ruff format, mypy --strict and its pytest suite."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.interpreters import DEFAULT_PYTHON_VERSION, PYTHON_VERSIONS, reported_version
from harness.support import project_files, pytest_summary, render, run

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


# Variants whose render differs from the defaults' only in files that no step of the render's
# workflow reads (CI configuration, the ownership map, the catalog entry): the workflow would run
# on the same inputs, so it runs once, under "defaults", and a test checks that the inputs match.
SAME_WORKFLOW_AS_DEFAULTS = ("gitlab", "no-ci")
WORKFLOW_VARIANTS = {k: v for k, v in VARIANTS.items() if k not in SAME_WORKFLOW_AS_DEFAULTS}
# What `make install`, `lint`, `typecheck` and `test` read, besides every Python file.
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


@pytest.mark.parametrize("answers", WORKFLOW_VARIANTS.values(), ids=WORKFLOW_VARIANTS.keys())
def test_render_passes_its_own_checks(
    tmp_path: Path, answers: dict[str, Any], python_for: Callable[[str], Path]
) -> None:
    version = answers.get("python_version", DEFAULT_PYTHON_VERSION)
    if version != DEFAULT_PYTHON_VERSION:  # without it here, uv may still download the default
        python_for(version)
    project = render(tmp_path / "service", answers)
    assert _leftover_jinja(project) == []
    run(["make", "install"], cwd=project)
    # uv chose the interpreter from the render's own .python-version.
    assert reported_version([str(project / ".venv/bin/python")], project) == version
    run(["make", "lint"], cwd=project)
    run(["make", "typecheck"], cwd=project)
    result = run(["make", "test"], cwd=project)
    summary = pytest_summary(result.stdout)
    assert re.match(r"\d+ passed", summary), summary
    assert "skipped" not in summary and "failed" not in summary, summary


@pytest.mark.parametrize("variant", SAME_WORKFLOW_AS_DEFAULTS)
def test_a_variant_checked_as_the_defaults_gives_the_workflow_the_same_inputs(
    tmp_path: Path, variant: str
) -> None:
    """Its checks are the defaults' run: every file the workflow reads is the defaults' own."""
    project = render(tmp_path / variant, VARIANTS[variant])
    defaults = render(tmp_path / "defaults")
    assert _leftover_jinja(project) == []
    inputs, expected = _workflow_inputs(project), _workflow_inputs(defaults)
    assert "pyproject.toml" in inputs and any(path.startswith("src/") for path in inputs)
    assert [
        path for path in inputs.keys() | expected.keys() if inputs.get(path) != expected.get(path)
    ] == []
    assert project_files(project) != project_files(defaults)  # it is a variant: CI files differ


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
