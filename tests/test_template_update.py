"""Template updates arrive green: every `copier update` (Renovate's exact command included) leaves
a uv.lock that matches pyproject.toml, and the scheduled CI job opens or refreshes one pull/merge
request with the update, the re-lock and the checks' results.

The template versions are built here: ``OLD`` is the working tree with one dependency floor
lower, so an update changes pyproject.toml's dependencies and a lock not made again goes stale.
The forge is faked at its CLI's process boundary only (``gh``/``glab`` on PATH, recording their
arguments and answering ``pr list``/``mr list``); git pushes for real, to a bare repository.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.environment import without_make_variables
from harness.support import (
    commit_all,
    copy_project,
    copy_working_tree,
    git,
    init_repo,
    replace_once,
    run,
)
from tests.test_update import COPIER_BIN, NEW

pytestmark = [pytest.mark.render, pytest.mark.xdist_group("template-update")]

OLD = "0.0.1"
NEW_FLOOR, OLD_FLOOR = '"hypothesis>=6.100",', '"hypothesis>=6.0",'
BRANCH = f"template-update/{NEW}"

FAKE_FORGE = r'''#!/usr/bin/env python3
"""A fake gh/glab: records each call, answers the list commands from a state file."""
import json, os, sys
from pathlib import Path

state = Path(os.environ["FAKE_FORGE_STATE"])
requests = json.loads(state.read_text()) if state.exists() else []
with open(os.environ["FAKE_FORGE_LOG"], "a") as log:
    log.write(json.dumps([Path(sys.argv[0]).name, *sys.argv[1:]]) + "\n")
command = sys.argv[1:3]
if command in (["pr", "list"], ["mr", "list"]):
    print(json.dumps(requests))
elif command in (["pr", "create"], ["mr", "create"]):
    requests.append({"number": len(requests) + 1, "iid": len(requests) + 1})
    state.write_text(json.dumps(requests))
    print("https://forge.invalid/request/%d" % len(requests))
'''


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = init_repo(tmp_path_factory.mktemp("template") / "repo")
    copy_working_tree(repo)
    replace_once(repo / "template/pyproject.toml.jinja", NEW_FLOOR, OLD_FLOOR)
    commit_all(repo, f"Release {OLD}", tag=OLD)
    replace_once(repo / "template/pyproject.toml.jinja", OLD_FLOOR, NEW_FLOOR)
    commit_all(repo, f"Release {NEW}", tag=NEW)
    return repo


def _locked_service(template_repo: Path, dst: Path, answers: dict[str, str] | None = None) -> Path:
    """A service rendered from OLD with its uv.lock committed, as every real service has."""
    project = copy_project(template_repo, dst, OLD, answers)
    run(["uv", "lock"], cwd=project)
    commit_all(project, "Lock dependencies")
    return project


def _lock_matches(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["uv", "lock", "--check"], cwd=project, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("skip_answered", [True, False], ids=["skip-answered", "all-answers"])
def test_renovates_exact_update_command_leaves_a_matching_lock(
    template_repo: Path, tmp_path: Path, skip_answered: bool
) -> None:
    project = _locked_service(template_repo, tmp_path / "svc")
    # Renovate 44's copier manager runs exactly this (with --trust when scripts are allowed).
    command = [COPIER_BIN, "update", *(["--skip-answered"] if skip_answered else [])]
    command += ["--defaults", "--trust", "--answers-file", ".copier-answers.yml"]
    command += ["--vcs-ref", NEW]
    result = run(command, cwd=project)
    assert NEW_FLOOR in (project / "pyproject.toml").read_text()
    assert "Locked again" in result.stdout + result.stderr
    matches = _lock_matches(project)
    assert matches.returncode == 0, matches.stdout + matches.stderr


def test_without_the_update_task_the_lock_would_be_stale(
    template_repo: Path, tmp_path: Path
) -> None:
    """The control: the same update with the template's tasks skipped leaves uv.lock stale, so
    the test above proves the task's re-lock."""
    project = _locked_service(template_repo, tmp_path / "svc")
    command = [COPIER_BIN, "update", "--defaults", "--trust", "--skip-tasks", "--vcs-ref", NEW]
    run(command, cwd=project)
    stale = _lock_matches(project)
    assert stale.returncode != 0, stale.stdout + stale.stderr


def test_an_update_fails_loudly_when_it_cannot_lock_again(
    template_repo: Path, tmp_path: Path
) -> None:
    project = _locked_service(template_repo, tmp_path / "svc")
    # PATH without uv: everything else Copier and the task need stays on it.
    dirs = os.environ["PATH"].split(os.pathsep)
    no_uv = os.pathsep.join(d for d in dirs if not (Path(d) / "uv").exists())
    result = subprocess.run(
        [COPIER_BIN, "update", "--defaults", "--trust", "--vcs-ref", NEW],
        cwd=project,
        env={**os.environ, "PATH": no_uv},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    assert "uv is not on PATH to lock it again" in result.stderr, result.stderr


def _runs_when_scheduled(job: dict[str, Any]) -> bool:
    """GitLab's rules, evaluated for a scheduled pipeline: the first rule that matches decides
    (`exists:` taken as true); a job whose rules match nothing does not run."""
    for rule in job.get("rules", [{"when": "on_success"}]):
        condition = rule.get("if")
        if condition is not None:
            matched = re.fullmatch(r'\$CI_PIPELINE_SOURCE ([!=]=) "(\w+)"', condition)
            assert matched, f"a rule this test cannot evaluate: {condition}"
            operator, source = matched.groups()
            if (source == "schedule") != (operator == "=="):
                continue
        return rule.get("when", "on_success") != "never"
    return False


def _workflow_command(project: Path, provider: str) -> str:
    """The command the rendered scheduled job runs, checked against its trigger."""
    if provider == "github":
        workflow = yaml.safe_load((project / ".github/workflows/template-update.yml").read_text())
        triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads `on` as true
        assert triggers["schedule"][0]["cron"], triggers
        job = workflow["jobs"]["template-update"]
        assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
        (step,) = [s for s in job["steps"] if "template_update.py" in s.get("run", "")]
        return str(step["run"])
    pipeline = yaml.safe_load((project / ".gitlab-ci.yml").read_text())
    job = pipeline["template-update"]
    assert job["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "schedule"'}]
    # Every other job stays out of the scheduled pipeline.
    scheduled = [
        name
        for name, other in pipeline.items()
        if isinstance(other, dict) and "script" in other and _runs_when_scheduled(other)
    ]
    assert scheduled == ["template-update"], scheduled
    (command,) = job["script"]
    return str(command)


def _scheduled_run(
    project: Path, provider: str, tmp_path: Path, checks: str | None
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir(exist_ok=True)
    cli = fake_bin / ("gh" if provider == "github" else "glab")
    cli.write_text(FAKE_FORGE)
    cli.chmod(0o755)
    log = tmp_path / "forge.log"
    log.unlink(missing_ok=True)
    env = {
        **without_make_variables(os.environ),
        "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
        "COPIER": COPIER_BIN,
        "FAKE_FORGE_STATE": str(tmp_path / "forge.json"),
        "FAKE_FORGE_LOG": str(log),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
    }
    if checks is not None:
        env["TEMPLATE_UPDATE_CHECKS"] = checks
    result = subprocess.run(
        [sys.executable, "tools/template_update.py", "--forge", provider, "--base", "main"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def _body(call: list[str]) -> str:
    flag = "--body" if "--body" in call else "--description"
    return call[call.index(flag) + 1]


@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_scheduled_job_opens_then_refreshes_one_request_with_the_update(
    template_repo: Path, tmp_path: Path, provider: str
) -> None:
    project = _locked_service(template_repo, tmp_path / "svc", {"ci_provider": provider})
    assert "tools/template_update.py --forge " + provider in _workflow_command(project, provider)
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "--quiet", "--bare", str(origin))
    git(project, "remote", "add", "origin", str(origin))
    git(project, "push", "--quiet", "origin", "main")
    # GitHub runs the real checks once; GitLab the lock check, then a failing one (a refresh).
    first, calls = _scheduled_run(
        project, provider, tmp_path, None if provider == "github" else "uv lock --check"
    )
    assert first.returncode == 0, first.stdout + first.stderr + json.dumps(calls, indent=1)
    (create,) = [c for c in calls if c[2] == "create"]
    if provider == "github":
        assert create[:3] == ["gh", "pr", "create"]
        assert create[create.index("--head") + 1] == BRANCH
        assert create[create.index("--base") + 1] == "main"
        for check in ("make install SYNC_FLAGS=--locked", "make lint", "make test"):
            assert f"| `{check}` | passed |" in _body(create), _body(create)
        assert "opened a pull request" in (tmp_path / "summary.md").read_text()
    else:
        assert create[:3] == ["glab", "mr", "create"]
        assert create[create.index("--source-branch") + 1] == BRANCH
        assert create[create.index("--target-branch") + 1] == "main"
        assert "| `uv lock --check` | passed |" in _body(create), _body(create)
    # The branch on the remote holds the update and a lock made again for it.
    pushed = tmp_path / "pushed"
    git(tmp_path, "clone", "--quiet", "--branch", BRANCH, str(origin), str(pushed))
    assert yaml.safe_load((pushed / ".copier-answers.yml").read_text())["_commit"] == NEW
    assert NEW_FLOOR in (pushed / "pyproject.toml").read_text()
    assert _lock_matches(pushed).returncode == 0
    assert git(project, "status", "--porcelain") == ""

    # The next scheduled run for the same release refreshes that request; a failing check is
    # reported in it, and the job fails so the schedule shows it.
    git(project, "switch", "--quiet", "main")
    second, calls = _scheduled_run(project, provider, tmp_path, "make no-such-target")
    assert second.returncode == 1, second.stdout + second.stderr
    assert [c for c in calls if c[2] == "create"] == []
    (edit,) = [c for c in calls if c[2] in ("edit", "update")]
    assert edit[3] == "1"
    assert "| `make no-such-target` | FAILED |" in _body(edit), _body(edit)
    assert "No rule to make target" in _body(edit), _body(edit)


def test_scheduled_job_does_nothing_when_up_to_date(template_repo: Path, tmp_path: Path) -> None:
    project = copy_project(template_repo, tmp_path / "svc", NEW)
    result, calls = _scheduled_run(project, "github", tmp_path, "false")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Up to date with the template." in result.stdout
    assert calls == []
    assert git(project, "branch", "--list", "template-update/*") == ""
