"""The rendered GitHub Actions CI is hardened: zizmor (offline audits) finds nothing in any
GitHub variant, every action is pinned to a full commit SHA with its version beside it; and
dependency updates (Dependabot on GitHub, Renovate on GitLab) keep uv.lock, the pins and the
Dockerfile's images current, which they can read because every FROM names its image literally."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.interpreters import PYTHON_VERSIONS, base_image
from harness.support import render
from tests.test_render import VARIANTS

pytestmark = pytest.mark.render

GITHUB_VARIANTS = {
    name: answers
    for name, answers in VARIANTS.items()
    if answers.get("ci_provider", "github") == "github"
}
ZIZMOR = Path(sys.executable).with_name("zizmor")
# `uses: owner/repo@<40 hex>  # vX.Y.Z`: a SHA cannot be moved the way a tag can.
PINNED = re.compile(r"^\s*-?\s*uses: [\w.-]+/[\w./-]+@[0-9a-f]{40}  # v\d+\.\d+\.\d+$")


SHELLCHECK = Path(sys.executable).with_name("shellcheck")


def _shellcheck_run_steps(workflow: Path) -> list[str]:
    """shellcheck's findings in ``workflow``'s ``run:`` steps, as actionlint runs it: bash, with
    each ``${{ }}`` expression as a plain word."""
    findings = []
    for job in yaml.safe_load(workflow.read_text())["jobs"].values():
        for step in job.get("steps", []):
            if "run" not in step:
                continue
            script = re.sub(r"\$\{\{.*?\}\}", "EXPRESSION", step["run"])
            result = subprocess.run(
                [str(SHELLCHECK), "--shell=bash", "--format=gcc", "-"],
                input=script,
                capture_output=True,
                text=True,
                check=False,
            )
            findings += [f"{workflow.name}: {line}" for line in result.stdout.splitlines()]
    return findings


def test_shellcheck_finds_nothing_and_would_find_sc2046(tmp_path: Path) -> None:
    project = render(tmp_path / "service")
    workflows = sorted((project / ".github/workflows").glob("*.yml"))
    assert workflows
    assert [f for workflow in workflows for f in _shellcheck_run_steps(workflow)] == []
    unquoted = tmp_path / "unquoted.yml"
    unquoted.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: git switch $(git rev-parse HEAD)\n"
    )
    assert any("SC2046" in f for f in _shellcheck_run_steps(unquoted))


@pytest.mark.parametrize("answers", GITHUB_VARIANTS.values(), ids=GITHUB_VARIANTS.keys())
def test_zizmor_finds_nothing(tmp_path: Path, answers: dict[str, Any]) -> None:
    project = render(tmp_path / "service", answers)
    result = subprocess.run(
        [str(ZIZMOR), "--offline", "--format", "plain", ".github"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout, result.stdout
    for workflow in (project / ".github/workflows").glob("*.yml"):
        text = workflow.read_text()
        uses = [line for line in text.splitlines() if "uses:" in line]
        assert uses, workflow
        assert [line for line in uses if not PINNED.match(line)] == [], workflow
        # A deliberate exception is suppressed inline and says why.
        for ignore in re.findall(r"# zizmor: ignore\[[\w,-]+\](.*)", text):
            assert ignore.strip(" -:"), f"{workflow.name}: a zizmor ignore without its reason"


CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")


def _schema_check(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    """``path`` against the schema its tool publishes (vendored in check-jsonschema, offline)."""
    command = [str(CHECK_JSONSCHEMA), "--builtin-schema", f"vendor.{schema}", str(path)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_dependency_updates_cover_the_lock_the_pins_and_the_images(tmp_path: Path) -> None:
    github = render(tmp_path / "github")
    dependabot = github / ".github/dependabot.yml"
    checked = _schema_check("dependabot", dependabot)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    updates = {u["package-ecosystem"]: u for u in yaml.safe_load(dependabot.read_text())["updates"]}
    # uv.lock (the git hooks included: they run from it), the SHA-pinned actions and the
    # Dockerfile's FROM lines; each weekly, grouped, a week after a release.
    assert set(updates) == {"uv", "github-actions", "docker"}
    assert all(
        u["directory"] == "/"
        and u["schedule"]["interval"] == "weekly"
        and [group["patterns"] for group in u["groups"].values()] == [["*"]]
        and u["cooldown"]["default-days"] == 7
        for u in updates.values()
    )
    # The lock moves; pyproject.toml's ranges (the template's lines and the team's) stay.
    assert updates["uv"]["versioning-strategy"] == "increase-if-necessary"
    # The base image's Python moves with the python_version answer, never by a pull request.
    (python,) = updates["docker"]["ignore"]
    assert {base_image(v).split(":")[0] for v in PYTHON_VERSIONS} == {python["dependency-name"]}
    assert set(python["update-types"]) == {
        "version-update:semver-major",
        "version-update:semver-minor",
    }
    assert not (github / "renovate.json").exists()
    # The schema check can fail: an ecosystem Dependabot does not know.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        dependabot.read_text().replace("package-ecosystem: uv", "package-ecosystem: uvx")
    )
    assert _schema_check("dependabot", broken).returncode != 0

    gitlab = render(tmp_path / "gitlab", {"ci_provider": "gitlab"})
    renovate = gitlab / "renovate.json"
    checked = _schema_check("renovate", renovate)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = json.loads(renovate.read_text())
    # pyproject.toml and uv.lock; the Dockerfile's FROM lines.
    assert config["enabledManagers"] == ["pep621", "dockerfile"]
    (python,) = [rule for rule in config["packageRules"] if "matchPackageNames" in rule]
    assert python["matchManagers"] == ["dockerfile"]
    assert python["matchPackageNames"] == [base_image(PYTHON_VERSIONS[0]).split(":")[0]]
    assert set(python["matchUpdateTypes"]) == {"major", "minor"}
    assert python["enabled"] is False
    assert config["rangeStrategy"] == "update-lockfile"
    assert config["lockFileMaintenance"]["enabled"] is True  # the indirect dependencies too
    assert not (gitlab / ".github").exists()
    broken = tmp_path / "broken.json"
    broken.write_text(renovate.read_text().replace('"update-lockfile"', '"lockfile"'))
    assert _schema_check("renovate", broken).returncode != 0

    other = render(tmp_path / "none", {"ci_provider": "none"})
    assert not (other / ".github").exists()
    assert not (other / "renovate.json").exists()


# A FROM line's image, after any flags (`--platform=...`); a stage name (`AS build`) follows it.
FROM_IMAGE = re.compile(r"^FROM\s+(?:--\S+\s+)*(\S+)", re.MULTILINE | re.IGNORECASE)


def from_images(dockerfile: str) -> list[str]:
    """The image each FROM line of ``dockerfile`` names, as written."""
    return FROM_IMAGE.findall(dockerfile)


@pytest.mark.parametrize("version", PYTHON_VERSIONS)
def test_every_from_names_the_base_image_of_its_python(tmp_path: Path, version: str) -> None:
    """Dependabot reads no ARG in FROM (dependabot-core#2057): both stages name the image of
    includes/python.jinja literally, and the Dockerfile says how to build on another one."""
    project = render(tmp_path / "service", {"python_version": version})
    dockerfile = (project / "Dockerfile").read_text()
    image = base_image(version)
    assert image.startswith(f"python:{version}-slim-")
    images = from_images(dockerfile)
    assert [name for name in images if "$" in name] == []
    assert images == [image, image]
    assert not re.search(r"^ARG BASE_IMAGE", dockerfile, re.MULTILINE)
    assert f"--build-context {image}=docker-image://registry.internal/{image} ." in dockerfile
    assert f"docker tag <your image> {image}\n" in dockerfile
    # What the check looks for: a FROM with a variable is found.
    assert from_images("ARG BASE_IMAGE=x\nFROM --platform=linux/amd64 ${BASE_IMAGE} AS b\n") == [
        "${BASE_IMAGE}"
    ]
