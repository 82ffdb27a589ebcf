"""The fleet tool (`python -m fleet`) against a synthetic template and fleet with ground truth
(tests/fleet_synthetic.py): exact drift, exact plans, plans that match what `update` does,
waves, bad input, and the HTML report in a real headless browser.

The fleet lives on a memory file system when the machine has one (/dev/shm): these tests are
dominated by git and Copier creating and deleting many small files.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.cli import repositories
from fleet.environment import without_make_variables
from fleet.ownership import RENDER_TOOL, globmatch, parse
from harness.support import (
    REPO_ROOT,
    commit_all,
    copy_project,
    copy_working_tree,
    ensure_debian_package,
    git,
    init_repo,
)
from tests.browser import CHROMIUM
from tests.fleet_synthetic import LATEST, Truth, build_fleet, build_template

pytestmark = pytest.mark.xdist_group("fleet")


def fleet_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the tool as users do, from this checkout."""
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **TOOL_ENV, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )


def fleet_json(*args: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    done = fleet_cli(*args, "--json", env=env)
    assert done.returncode in (0, 1), done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


# The tool's own scratch directory (TMPDIR of its runs), next to the fleet; set by `scratch`.
TOOL_ENV: dict[str, str] = {}


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="fleet-tests-", dir=base))
    (path / "tmp").mkdir()
    TOOL_ENV["TMPDIR"] = str(path / "tmp")  # only the tool's runs: this process's stays put
    yield path
    TOOL_ENV.clear()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def template(scratch: Path) -> Path:
    return build_template(scratch / "template")


@pytest.fixture(scope="module")
def fleet(template: Path, scratch: Path) -> list[Truth]:
    services = build_fleet(template, scratch / "fleet")
    assert len(services) >= 50
    return services


@pytest.fixture(scope="module")
def status(fleet: list[Truth], scratch: Path) -> dict[Path, dict[str, Any]]:
    results = fleet_json(
        "status", *[str(t.path) for t in fleet], "--cache-dir", str(scratch / "cache")
    )
    return {Path(r["path"]): r for r in results}


@pytest.fixture(scope="module")
def plan(fleet: list[Truth], scratch: Path) -> dict[Path, dict[str, Any]]:
    results = fleet_json(
        "plan",
        "--to",
        LATEST,
        "--jobs",
        "2",
        "--cache-dir",
        str(scratch / "cache"),
        *[str(t.path) for t in fleet],
    )
    return {Path(r["path"]): r for r in results}


def head_state(path: Path) -> tuple[str, str]:
    """HEAD's commit and the work tree's status: what "never touches it" must leave alone."""
    if not (path / ".git").exists():
        return ("", "".join(sorted(p.name for p in path.iterdir())))
    return (git(path, "rev-parse", "HEAD"), git(path, "status", "--porcelain"))


# --- The ownership map ---------------------------------------------------------------------------


# One table for the one ownership matcher (template/tools/ownership.py), which the fleet tool
# imports and every render's `make lint` runs (tests/test_ownership.py runs the same table on a
# render's copy).
GLOB_CASES = [
    ("src/a/core/x.py", "src/a/core/**", True),
    ("src/a/core/deep/x.py", "src/a/core/**", True),
    ("src/a/corex/x.py", "src/a/core/**", False),
    ("x.py", "**/x.py", True),
    ("a/b/x.py", "**/x.py", True),
    (".env.example", "*", True),
    ("a/b", "*", False),
    ("a/.hidden", "a/*", True),
    ("Dockerfile", "Dockerfile", True),
    ("sub/Dockerfile", "Dockerfile", False),
    ("a1.py", "a?.py", True),
    ("a/1.py", "a?1.py", False),
    ("v2", "v[0-9]", True),
    ("vx", "v[!x]", False),
    ("a+b(c).txt", "a+b(c).txt", True),
    ("docs", "docs/**", True),
    ("docs/a.md", "docs/**", True),
    ("a.py", "[ab].py", True),
    ("c.py", "[ab].py", False),
    ("src/a/b.py", "src/*.py", False),
]


@pytest.mark.parametrize(("path", "pattern", "expected"), GLOB_CASES)
def test_glob_semantics_match_globstar_and_dotglob(path: str, pattern: str, expected: bool) -> None:
    assert globmatch(path, pattern) is expected


def test_the_fleet_tool_uses_the_renders_matcher() -> None:
    assert globmatch.__module__ == "_render_ownership"
    assert Path(sys.modules[globmatch.__module__].__file__ or "") == RENDER_TOOL


def test_ownership_map_lists_and_refuses_a_malformed_map() -> None:
    owners = parse("template_owned: [src/**]\nteam_owned: [src/settings.py]\nshared: []\n")
    assert owners.owners("src/main.py") == ["template_owned"]
    assert owners.owners("src/settings.py") == ["template_owned", "team_owned"]
    assert owners.owners("README.md") == []
    with pytest.raises(ValueError, match="team_owned must be a list"):
        parse("team_owned: settings.py\n")


# --- status ------------------------------------------------------------------------------------


@pytest.mark.render
def test_status_drift_is_exact_for_every_service(
    fleet: list[Truth], status: dict[Path, dict[str, Any]]
) -> None:
    wrong = []
    for truth in fleet:
        got = status[truth.path]
        if (got["error"] is not None) != truth.error or (
            not truth.error and got["drift"] != truth.drift
        ):
            wrong.append((truth.path.name, truth.kind, got["drift"], got["error"], truth.drift))
    assert wrong == []
    kinds = {t.kind for t in fleet if t.drift}
    assert kinds == {"modified", "deleted"}, "the fleet must hold both kinds of drift"


@pytest.mark.render
def test_status_versions_behind_and_answers(
    fleet: list[Truth], status: dict[Path, dict[str, Any]], template: Path
) -> None:
    untagged = git(template, "rev-list", "-n1", "2.0.0^").strip()
    behind = {"0.9.0": 3, "1.0.0": 2, "1.1.0": 1, "2.0.0": 0}
    for truth in fleet:
        got = status[truth.path]
        if truth.kind in ("not-a-repo", "no-answers"):
            assert got["template_version"] is None
            continue
        expected = truth.version if truth.version in behind else untagged[:12]
        assert got["template_version"] == expected, truth
        assert got["latest"] == LATEST
        assert got["behind"] == behind.get(str(truth.version), 1)
        assert (got["days_behind"] > 0) == (got["behind"] > 0)
        if got["behind"]:
            assert (
                got["behind_since"]
                == {3: "2020-02-01", 2: "2020-03-01", 1: "2020-05-01"}[got["behind"]]
            )
        assert got["answers"]["owner"].startswith("team-")
        if truth.version == "0.9.0":
            assert got["drift"] is None
            assert "no .template-ownership.yml" in " ".join(got["warnings"])


@pytest.mark.render
def test_status_renders_once_per_version_and_answers(
    fleet: list[Truth], status: dict[Path, dict[str, Any]], scratch: Path
) -> None:
    """Cost follows distinct (version, answers) pairs: the disk cache holds one render per pair
    that a readable, clean service needed, however many services share it."""
    pairs = {
        (r["commit"], json.dumps(r["answers"], sort_keys=True))
        for r in status.values()
        if r["error"] is None
    }
    cached = list((scratch / "cache").glob("render-*.json"))
    assert len(cached) == len(pairs) < len([t for t in fleet if not t.error])
    again = fleet_cli(
        "status",
        "--progress",
        "--cache-dir",
        str(scratch / "cache"),
        *[str(t.path) for t in fleet[:12]],
    )
    assert "fleet: 0 render(s) for 12 service(s)" in again.stderr, again.stderr


@pytest.mark.render
def test_bad_input_gets_a_message_and_is_never_touched(fleet: list[Truth]) -> None:
    broken = [t for t in fleet if t.error]
    before = {t.path: head_state(t.path) for t in broken}
    paths = [str(t.path) for t in broken]
    messages = {
        "not-a-repo": "is not a git repository",
        "no-answers": "has no .copier-answers.yml",
        "dirty": "uncommitted changes (Dockerfile)",
    }
    for command in (["status"], ["plan", "--to", LATEST], ["update", "--to", LATEST]):
        results = fleet_json(*command, *paths)
        for truth, result in zip(broken, results, strict=True):
            assert messages[truth.kind] in result["error"], (command, result)
            if command[0] != "status":
                assert result["outcome"] == "error"
    assert {t.path: head_state(t.path) for t in broken} == before


@pytest.mark.render
def test_a_ref_that_does_not_exist_is_reported_per_service(fleet: list[Truth]) -> None:
    services = [t for t in fleet if t.kind == "untouched"][:2]
    before = [head_state(t.path) for t in services]
    for command in ("plan", "update"):
        results = fleet_json(command, "--to", "9.9.9", *[str(t.path) for t in services])
        assert [r["outcome"] for r in results] == ["error", "error"]
        assert all("has no ref '9.9.9'" in r["error"] for r in results)
    assert [head_state(t.path) for t in services] == before
    assert all(not git(t.path, "branch", "--list", "template-update/*") for t in services)


@pytest.mark.render
def test_an_older_ref_is_refused_before_anything_runs(fleet: list[Truth]) -> None:
    service = next(t for t in fleet if t.version == LATEST and t.kind == "untouched")
    before = head_state(service.path)
    for command in ("plan", "update"):
        (result,) = fleet_json(command, "--to", "1.0.0", str(service.path))
        assert result["outcome"] == "error"
        assert (
            "1.0.0 (1.0.0) is older than the service's template version (2.0.0)"
            in (result["error"])
        )
    assert head_state(service.path) == before


@pytest.mark.render
def test_progress_goes_to_stderr_only_when_asked(fleet: list[Truth], scratch: Path) -> None:
    paths = [str(t.path) for t in fleet[10:13]]
    cache = ["--cache-dir", str(scratch / "cache")]
    quiet = fleet_cli("status", "--json", *cache, *paths)
    assert quiet.stderr == "" and len(json.loads(quiet.stdout)) == 3
    loud = fleet_cli("status", "--json", "--progress", *cache, *paths)
    assert "[3/3] status" in loud.stderr and len(json.loads(loud.stdout)) == 3
    # Text for people: one line a service.
    text = fleet_cli("status", *cache, *paths)
    modified = fleet[12]
    assert (modified.version, modified.kind) == ("1.0.0", "modified")
    assert (
        f"{modified.path}: 1.0.0 (latest 2.0.0, 2 behind), drift: modified src/billing/core/app.py"
    ) in text.stdout.splitlines()
    assert text.stderr == "" and len(text.stdout.splitlines()) == 3


def test_repository_lists_from_files(tmp_path: Path) -> None:
    (tmp_path / "fleet.txt").write_text("# the payments services\nsvc-a\n\n  svc-b  # new\n")
    (tmp_path / "more.txt").write_text("/abs/svc-c\nsvc-a\n")
    found = repositories([f"@{tmp_path / 'fleet.txt'}", "other"], [str(tmp_path / "more.txt")])
    assert found == [
        tmp_path / "svc-a",
        tmp_path / "svc-b",
        Path("other").absolute(),
        Path("/abs/svc-c"),
    ]


# --- plan and update ---------------------------------------------------------------------------


@pytest.mark.render
def test_plan_is_exact_for_every_service(
    fleet: list[Truth], plan: dict[Path, dict[str, Any]]
) -> None:
    wrong = [
        (t.path.name, t.kind, t.version, plan[t.path]["outcome"], plan[t.path]["conflicts"])
        for t in fleet
        if (plan[t.path]["outcome"], plan[t.path]["conflicts"]) != (t.plan, t.conflicts)
    ]
    assert wrong == []
    assert {t.plan for t in fleet} == {"clean", "conflicts", "error"}
    versions = {t.version: plan[t.path]["migrations"] for t in fleet if t.kind == "untouched"}
    assert [m["version"] for m in versions["1.0.0"]] == ["1.1.0", "2.0.0"]
    assert [m["version"] for m in versions["1.1.0"]] == ["2.0.0"]
    assert versions[LATEST] == []
    # What the migrations said they did, as the trial update ran them (`fleet plan` prints it
    # under the service's line).
    notes = {t.version: plan[t.path]["migration_notes"] for t in fleet if t.kind == "untouched"}
    assert notes["1.0.0"] == ["migration 1.1.0: did its work", "migration 2.0.0: did its work"]
    assert notes["1.1.0"] == ["migration 2.0.0: did its work"]
    # Planning changed nothing.
    assert all(git(t.path, "status", "--porcelain") == "" for t in fleet if not t.error)


@pytest.mark.render
def test_plan_works_when_scratch_and_service_are_on_different_file_systems(
    fleet: list[Truth], plan: dict[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The fleet lives in memory when it can; a scratch directory on disk then sits on another
    file system, where a hard-linking clone would fail."""
    service = next(t for t in fleet if t.version == "1.0.0" and t.kind == "conflict")
    (result,) = fleet_json("plan", "--to", LATEST, str(service.path), env={"TMPDIR": str(tmp_path)})
    assert (result["outcome"], result["conflicts"]) == ("conflicts", ["pyproject.toml"]), result
    assert result == plan[service.path]


GH_STAND_IN = """#!/bin/sh
printf '%s\\n' "$@" > "$RECORD_DIR/$(basename "$PWD").args"
echo "https://example.invalid/pull/1"
"""


@pytest.mark.render
def test_update_does_what_plan_predicted_on_a_branch(
    fleet: list[Truth], plan: dict[Path, dict[str, Any]], tmp_path: Path
) -> None:
    # One service of each kind on 1.0.0 (the dirty one included), two already on the target and
    # two copied from the untagged commit: each way an update can go, without updating the whole
    # fleet (services of one kind on one version have identical trees, so identical updates).
    chosen = list({t.kind: t for t in reversed(fleet) if t.version == "1.0.0"}.values())[::-1]
    chosen += [t for t in fleet if t.version == LATEST][:2]
    untagged = [t for t in fleet if t.version and t.version.count("-") == 2]
    chosen += [t for t in untagged if t.kind in ("conflict", "team")][:2]
    mains = {t.path: head_state(t.path) for t in chosen}
    bin_dir, records = tmp_path / "bin", tmp_path / "records"
    bin_dir.mkdir()
    records.mkdir()
    (bin_dir / "gh").write_text(GH_STAND_IN)
    (bin_dir / "gh").chmod(stat.S_IRWXU)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RECORD_DIR": str(records)}
    results = fleet_json(
        "update",
        "--to",
        LATEST,
        "--wave-size",
        "100",
        "--max-failure-rate",
        "1",
        "--jobs",
        "2",
        "--open-pr",
        *[str(t.path) for t in chosen],
        env=env,
    )
    for truth, result in zip(chosen, results, strict=True):
        predicted = plan[truth.path]
        expected = {
            "error": "error",
            "conflicts": "conflicts",
            "clean": "failed" if truth.fails_tests else "updated",
        }[predicted["outcome"]]
        if truth.version == LATEST:
            expected = "skipped"
        assert (result["outcome"], result["conflicts"]) == (expected, predicted["conflicts"]), (
            truth,
            result,
        )
        assert head_state(truth.path) == mains[truth.path], "the original branch changed"
        if expected in ("updated", "conflicts", "failed"):
            _check_branch(truth, result, records)


def _check_branch(truth: Truth, result: dict[str, Any], records: Path) -> None:
    branch = f"template-update/{LATEST}"
    assert result["branch"] == branch
    answers = yaml.safe_load(git(truth.path, "show", f"{branch}:.copier-answers.yml"))
    assert answers["_commit"] == LATEST
    assert (
        git(truth.path, "rev-parse", f"{branch}^").strip()
        == git(truth.path, "rev-parse", "main").strip()
    )
    body = Path(result["pr_body"]).read_text()
    assert "### 2.0.0 - 2020-05-01" in body and "`policy` is now `strict`" in body
    assert "## Diff stat" in body and ".copier-answers.yml" in body
    assert "2.0.0: `{{ _copier_python }} -c print('migration 2.0.0: did its work')`" in body
    if result["outcome"] == "conflicts":
        assert "`pyproject.toml`" in body
    if result["outcome"] == "failed":
        assert "make test failed" in result["error"] and "a test the team broke" in result["error"]
    args = (records / f"{truth.path.name}.args").read_text().splitlines()
    assert args[:6] == ["pr", "create", "--head", branch, "--base", "main"], args
    assert result["pr"] == {"tool": "gh", "url": "https://example.invalid/pull/1", "error": None}


@pytest.mark.render
def test_waves_stop_after_a_wave_that_fails_too_often(fleet: list[Truth]) -> None:
    """Wave 1 (failing, untouched): 1 of 2 failed, more than 40%: wave 2 is never attempted."""
    pool = [t for t in fleet if t.version == "1.1.0"]
    failing = next(t for t in pool if t.kind == "failing")
    others = [t for t in pool if t.kind == "untouched"][:1] + [t for t in pool if t.kind == "team"]
    order = [failing, *others[:3]]
    done = fleet_cli(
        "update",
        "--json",
        "--to",
        LATEST,
        "--wave-size",
        "2",
        "--max-failure-rate",
        "0.4",
        "--jobs",
        "2",
        *[str(t.path) for t in order],
    )
    assert done.returncode == 1
    results = json.loads(done.stdout)
    assert [r["outcome"] for r in results] == ["failed", "updated", "skipped", "skipped"]
    assert "not attempted" in results[2]["error"]
    assert f"wave 1: 1 of 2 updates failed (more than 40%): {failing.path.name}" in done.stderr
    assert not git(order[2].path, "branch", "--list", "template-update/*")


# --- report ------------------------------------------------------------------------------------


def chromium() -> str:
    """Debian's chromium; installed when missing in CI, never skipped there."""
    ensure_debian_package("chromium", [CHROMIUM])
    return CHROMIUM


def browse(html: Path, *mode: str, profile: Path) -> subprocess.CompletedProcess[str]:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *mode,
        html.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.render
def test_report_renders_in_a_headless_browser(
    fleet: list[Truth], plan: dict[Path, dict[str, Any]], scratch: Path, tmp_path: Path
) -> None:
    output = tmp_path / "fleet-report.html"
    done = fleet_cli(
        "report",
        "--output",
        str(output),
        "--cache-dir",
        str(scratch / "cache"),
        *[str(t.path) for t in fleet],
    )
    assert done.returncode == 1, done.stderr  # the broken services are errors
    html = output.read_text()
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")
    dom = browse(output, "--dump-dom", profile=tmp_path / "profile").stdout
    labels = {r["template_version"] for r in fleet_json("status", str(fleet[0].path))}
    assert labels == {"0.9.0"}
    versions = {t.version for t in fleet if t.version}
    assert dom.count('class="bar"') == len(versions) + 1  # and one bar for "unreadable"
    services = dom.split('id="services"')[1].split("</table>")[0]
    assert services.count("<tr>") == 1 + len(fleet)
    hotspots = dom.split('id="hotspots"')[1].split("</table>")[0]
    assert "pyproject.toml" in hotspots and "Dockerfile" in hotspots
    shot = tmp_path / "report.png"
    browse(output, f"--screenshot={shot}", "--window-size=1200,1400", profile=tmp_path / "p2")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_glab_opens_a_merge_request_with_the_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GitLab path of --open-pr: no origin remote, so nothing is pushed; glab gets the
    branches, the title and the body."""
    from fleet.update import open_pull_request

    service = init_repo(tmp_path / "svc")
    commit_all(service, "Render")
    branch = f"template-update/{LATEST}"
    git(service, "branch", branch)
    body = tmp_path / "body.md"
    body.write_text("the body\n")
    (tmp_path / "glab").write_text(GH_STAND_IN)
    (tmp_path / "glab").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RECORD_DIR", str(tmp_path))
    result = {"branch": branch, "pr_body": str(body), "target": LATEST}
    opened = open_pull_request(service, result, "main", "glab")
    assert opened == {"tool": "glab", "url": "https://example.invalid/pull/1", "error": None}
    args = (tmp_path / "svc.args").read_text().splitlines()
    assert args[:6] == ["mr", "create", "--source-branch", branch, "--target-branch", "main"]
    assert args[args.index("--description") + 1] == "the body" and args[-1] == "--yes"


# --- The real template -------------------------------------------------------------------------


@pytest.mark.render
def test_status_on_this_template_reports_drift_by_its_ownership_map(tmp_path: Path) -> None:
    """This repository's working tree, committed and tagged in a temporary repository: an
    untouched render has no drift; a hand-edited template-owned file is modified and a deleted
    one deleted, while edits to team-owned and shared files are not drift. The files the tool
    leaves unchecked (no list or several) are exactly those the render's own ownership tool
    finds with other than one owner: both read the map the same way. (That every file has
    exactly one owner is tests/test_ownership.py's to check.)"""
    repo = init_repo(tmp_path / "template")
    copy_working_tree(repo)
    commit_all(repo, "The working tree", tag="99.0.0")
    untouched = copy_project(repo, tmp_path / "untouched", "99.0.0")
    edited = tmp_path / "edited"
    shutil.copytree(untouched, edited)
    app = edited / "src/my_service/core/app.py"
    app.write_text(app.read_text() + "\n# a local patch\n")
    (edited / "Dockerfile").unlink()
    settings = edited / "src/my_service/settings.py"
    settings.write_text(settings.read_text() + "\n# the team's own setting\n")
    readme = edited / "README.md"
    readme.write_text(readme.read_text() + "\nOn call: #payments-oncall\n")
    commit_all(edited, "Local edits")
    clean, drifted = fleet_json("status", str(untouched), str(edited))
    assert (clean["error"], clean["drift"]) == (None, [])
    assert clean["template_version"] == "99.0.0" and clean["behind"] == 0
    assert drifted["error"] is None
    assert drifted["drift"] == [
        {"path": "Dockerfile", "state": "deleted"},
        {"path": "src/my_service/core/app.py", "state": "modified"},
    ]
    unchecked = sorted(w.split(" matches ")[0] for w in clean["warnings"])
    assert unchecked == _not_one_owner_per_the_render(untouched)
    assert drifted["warnings"] == clean["warnings"]


def _not_one_owner_per_the_render(project: Path) -> list[str]:
    """Rendered files with no owner or several, as the render's tools/ownership.py sees them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "render_ownership", project / "tools/ownership.py"
    )
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    sys.modules["render_ownership"] = tool
    spec.loader.exec_module(tool)
    ownership = tool.load_map(project)
    files = git(project, "ls-files").split()
    return sorted(
        path
        for path in files
        if path != ".copier-answers.yml" and len(tool.owners(path, ownership)) != 1
    )


# --- Changing answers with --data (this template's python_version) ------------------------------

# make lint and make test of a rendered service would install it (uv sync, a download): a
# stand-in `make` records that update ran them, in the service's git directory, and passes.
MAKE_STAND_IN = """#!/bin/sh
echo "make $*" >> "$(git rev-parse --absolute-git-dir)/make-calls"
"""


@dataclass
class PythonFleet:
    """Services of this template at 99.0.0 on python_version 3.11: two identical ones, and one
    from a fork whose 99.0.0 does not offer 3.13 yet (Copier refuses the value there)."""

    template: Path
    first: Path
    second: Path
    fork: Path

    @property
    def paths(self) -> list[str]:
        return [str(self.first), str(self.fork), str(self.second)]


@pytest.fixture(scope="module")
def python_fleet(scratch: Path) -> PythonFleet:
    root = scratch / "python"
    template = init_repo(root / "template")
    copy_working_tree(template)
    commit_all(template, "The working tree", tag="99.0.0")
    fork = init_repo(root / "fork")
    copy_working_tree(fork)
    config = (fork / "copier.yml").read_text()
    assert '    - "3.12"\n    - "3.13"\n' in config
    (fork / "copier.yml").write_text(config.replace('    - "3.13"\n', "", 1))
    commit_all(fork, "A fork without Python 3.13", tag="99.0.0")
    services = root / "services"
    first = copy_project(template, services / "orders-api", "99.0.0", {"python_version": "3.11"})
    second = services / "billing-api"
    shutil.copytree(first, second)
    forked = copy_project(fork, services / "legacy-api", "99.0.0", {"python_version": "3.11"})
    return PythonFleet(template, first, second, forked)


@pytest.mark.render
def test_plan_with_data_shows_the_answer_change(python_fleet: PythonFleet) -> None:
    before = {p: head_state(Path(p)) for p in python_fleet.paths}
    done = fleet_cli(
        "plan", "--json", "--to", "99.0.0", "--data", "python_version=3.13", *python_fleet.paths
    )
    assert done.returncode == 1, done.stderr  # the fork's service is an error
    first, fork, second = json.loads(done.stdout)
    assert (first["outcome"], first["conflicts"], first["error"]) == ("clean", [], None), first
    assert first["data"] == {"python_version": "3.13"}
    assert {".copier-answers.yml", ".python-version", "pyproject.toml", "Dockerfile"} <= set(
        first["changed"]
    )
    assert second == {**first, "path": str(python_fleet.second)}  # one trial for both
    # A value Copier refuses is that service's error, in Copier's words; the others are planned.
    assert fork["outcome"] == "error" and fork["data"] == {"python_version": "3.13"}
    assert "Invalid choice for 'python_version': '3.13'" in fork["error"], fork
    assert {p: head_state(Path(p)) for p in python_fleet.paths} == before
    text = fleet_cli(
        "plan", "--to", "99.0.0", "--data", "python_version=3.13", str(python_fleet.first)
    )
    # The one migration is the version-less keep_team_files, which runs on every update.
    assert [m["version"] for m in first["migrations"]] == [None], first["migrations"]
    assert "keep_team_files.py" in first["migrations"][0]["command"]
    assert text.stdout == (
        f"{python_fleet.first}: 99.0.0 -> 99.0.0 with python_version=3.13: clean; migrations: 1\n"
    ), text.stderr


@pytest.mark.render
def test_update_with_data_moves_the_service_on_a_branch(
    python_fleet: PythonFleet, tmp_path: Path
) -> None:
    (tmp_path / "make").write_text(MAKE_STAND_IN)
    (tmp_path / "make").chmod(stat.S_IRWXU)
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    services = [python_fleet.fork, python_fleet.first]
    before = {p: head_state(p) for p in services}
    done = fleet_cli(
        "update",
        "--json",
        "--to",
        "99.0.0",
        "--data",
        "python_version=3.13",
        "--max-failure-rate",
        "1",
        *map(str, services),
        env=env,
    )
    assert done.returncode == 1, done.stderr
    fork, first = json.loads(done.stdout)
    # The fork refuses 3.13: a failure with Copier's message, no branch left behind.
    assert fork["outcome"] == "failed" and fork["branch"] is None, fork
    assert "Invalid choice for 'python_version': '3.13'" in fork["error"]
    assert not git(python_fleet.fork, "branch", "--list", "template-update/*")
    branch = "template-update/99.0.0-python_version=3.13"
    assert (first["outcome"], first["branch"], first["error"]) == ("updated", branch, None), first
    assert first["data"] == {"python_version": "3.13"}
    assert first["checks"] == {"make lint": "passed", "make test": "passed"}
    calls = (python_fleet.first / ".git" / "make-calls").read_text()
    assert calls == "make lint\nmake test\n"
    answers = yaml.safe_load(git(python_fleet.first, "show", f"{branch}:.copier-answers.yml"))
    assert answers["python_version"] == "3.13" and answers["_commit"] == "99.0.0"
    pyproject = git(python_fleet.first, "show", f"{branch}:pyproject.toml")
    assert 'requires-python = ">=3.13"' in pyproject
    assert git(python_fleet.first, "show", "main:pyproject.toml").count('">=3.11"') == 1
    message = git(python_fleet.first, "log", "-1", "--format=%B", branch)
    assert message.startswith("Update the service template to 99.0.0 with python_version=3.13\n")
    assert "- `python_version=3.13`" in message
    assert Path(first["pr_body"]).name == "99.0.0-python_version=3.13.md"
    assert {p: head_state(p) for p in services} == before
    # Once the branch exists, the same move is skipped rather than redone.
    (again,) = fleet_json(
        "update",
        "--to",
        "99.0.0",
        "--data",
        "python_version=3.13",
        str(python_fleet.first),
        env=env,
    )
    assert again["outcome"] == "skipped" and "exists already" in again["error"]


@pytest.mark.render
def test_data_for_a_question_the_template_does_not_ask_is_refused_before_anything_runs(
    python_fleet: PythonFleet,
) -> None:
    before = {p: head_state(Path(p)) for p in python_fleet.paths}
    for command in ("plan", "update"):
        done = fleet_cli(
            command,
            "--json",
            "--to",
            "99.0.0",
            "--data",
            "python_version=3.13",
            "--data",
            "python=3.13",
            *python_fleet.paths,
        )
        assert (done.returncode, done.stdout) == (2, ""), done
        assert "--data python: not a question of the template" in done.stderr
        assert "its questions: service_name, package_name," in done.stderr
        assert "python_version" in done.stderr.split("its questions:")[1]
    assert {p: head_state(Path(p)) for p in python_fleet.paths} == before
    for malformed in ("python_version", "=3.13"):
        done = fleet_cli("plan", "--to", "99.0.0", "--data", malformed, *python_fleet.paths)
        assert done.returncode == 2 and "is not KEY=VALUE" in done.stderr, done.stderr


@pytest.mark.render
def test_plan_with_an_answer_already_given_changes_nothing(python_fleet: PythonFleet) -> None:
    (result,) = fleet_json(
        "plan", "--to", "99.0.0", "--data", "python_version=3.11", str(python_fleet.second)
    )
    assert (result["outcome"], result["changed"], result["data"]) == (
        "clean",
        [],
        {"python_version": "3.11"},
    )


def test_a_services_make_sees_none_of_the_outer_makes_variables() -> None:
    outer = {
        "MAKEFLAGS": " -j2 --jobserver-auth=3,4 -- PYTEST_ARGS=-p\\ no:cacheprovider JOBS=2",
        "MFLAGS": "-j2",
        "MAKELEVEL": "1",
        "PYTEST_ARGS": "-p no:cacheprovider",
        "JOBS": "2",
        "HOME": "/home/ci",
    }
    assert without_make_variables(outer) == {"HOME": "/home/ci"}
    assert without_make_variables({"HOME": "/h", "JOBS": "4"}) == {"HOME": "/h", "JOBS": "4"}
