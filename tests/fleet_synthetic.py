"""A tiny Copier template with four releases and a fleet of services rendered from it, each with
its ground truth: what `fleet status` must report and what `fleet plan`/`update` to the latest
release must do. `tests/test_fleet.py` checks the tool against it; `python -m
tests.fleet_synthetic` measures the tool on it (the figures in docs/fleet.md).

Releases (tags in a temporary git repository):

- ``0.9.0``: before the ownership map existed (status reports its drift as unknown);
- ``1.0.0``: the ownership map, a migration-free baseline;
- ``1.1.0``: changes a template-owned line (``core/app.py``) and adds a file, with a migration;
- an untagged commit after ``1.1.0`` (services copied from it record a bare commit);
- ``2.0.0``: changes the ``policy`` line of the shared ``pyproject.toml`` (which some teams
  edit: a conflict) and ships a second migration.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.support import commit_all, git, init_repo, render

RELEASES = ["0.9.0", "1.0.0", "1.1.0", "2.0.0"]
LATEST = "2.0.0"
UNTAGGED = "untagged"  # the commit after 1.1.0, recorded as a describe string by Copier

_COPIER_YML = """\
_subdirectory: template
_answers_file: .copier-answers.yml
_templates_suffix: .jinja
_skip_if_exists:
  - "src/{{ package }}/settings.py"

owner:
  type: str
  default: team-a
use_db:
  type: bool
  default: false
package:
  type: str
  default: svc
"""

_MIGRATIONS = {
    "1.1.0": """\
_migrations:
  - version: "1.1.0"
    command: ["{{ _copier_python }}", "-c", "print('migration 1.1.0: did its work')"]
    when: "{{ _stage == 'before' }}"
""",
    "2.0.0": """\
  - version: "2.0.0"
    command: ["{{ _copier_python }}", "-c", "print('migration 2.0.0: did its work')"]
    when: "{{ _stage == 'after' }}"
""",
}

_OWNERSHIP = """\
# Who owns which file of the render.
template_owned:
  - src/{{ package }}/core/**
  - src/{{ package }}/main.py
  - Dockerfile
  - Makefile
  - .template-ownership.yml
  - .copier-answers.yml
team_owned:
  - src/{{ package }}/settings.py
shared:
  - pyproject.toml
  - README.md
"""

# make lint fails on conflict markers (as the real template's does); make test fails while the
# service has a FAIL_TESTS file, so that tests can make a service fail on purpose.
_MAKEFILE = """\
.PHONY: lint test
lint:
\t@! git grep -nE '^(<{7}|={7}|>{7})( |$$)' -- . ':!Makefile'
test:
\t@if [ -e FAIL_TESTS ]; then echo "tests failed: $$(cat FAIL_TESTS)"; exit 1; fi
\t@echo "1 passed"
"""


def _template_files(release: str) -> dict[str, str]:
    """The template's files at ``release`` (``UNTAGGED`` sits between 1.1.0 and 2.0.0)."""
    order = [*RELEASES[:3], UNTAGGED, RELEASES[3]]
    at = order.index(release)
    package = "template/src/{{ package }}"
    files = {
        "template/{{ _copier_conf.answers_file }}.jinja": (
            "# Changes here will be overwritten by Copier\n{{ _copier_answers|to_nice_yaml -}}\n"
        ),
        "template/Makefile": _MAKEFILE,
        "template/Dockerfile": 'FROM python:3.11-slim\nCOPY . /app\nCMD ["python", "-m", "app"]\n',
        "template/README.md.jinja": "# {{ package }}\n\nOwned by {{ owner }}.\n\n## Notes\n\n-\n",
        "template/pyproject.toml.jinja": (
            '[project]\nname = "{{ package }}"\nversion = "0.1.0"\n'
            '{% if use_db %}dependencies = ["sqlalchemy"]\n{% endif %}'
            f'\n[tool.service]\npolicy = "{"strict" if at >= 4 else "relaxed"}"\n'
            "timeout = 30\n"
        ),
        f"{package}/main.py.jinja": "from {{ package }}.core.app import build\n\napp = build()\n",
        f"{package}/settings.py.jinja": 'OWNER = "{{ owner }}"\nDEBUG = False\n',
        f"{package}/core/app.py.jinja": (
            "def build():\n"
            f'    name = "{"service" if at >= 2 else "app"}"\n'
            '    return {"name": name, "db": {{ use_db }}}\n'
            '\n\ndef health():\n    return "ok"\n'
            "\n\ndef version():\n    return 1\n"
        ),
    }
    if at >= 1:
        files["template/.template-ownership.yml.jinja"] = _OWNERSHIP
    if at >= 2:
        files[f"{package}/core/util.py"] = "def helper():\n    return 42\n"
    if at == 3:
        files[f"{package}/core/util.py"] += "\n\nVERSION_HINT = 'between releases'\n"
    copier_yml = _COPIER_YML
    if at >= 2:
        copier_yml += _MIGRATIONS["1.1.0"]
    if at >= 4:
        copier_yml += _MIGRATIONS["2.0.0"]
    files["copier.yml"] = copier_yml
    files["CHANGELOG.md"] = _changelog(at)
    return files


def _changelog(at: int) -> str:
    sections = {
        "2.0.0": "### Changed\n- **breaking**: `policy` is now `strict`.\n"
        "- **migration**: prints a line.\n",
        "1.1.0": "### Added\n- `core/util.py`.\n- **migration**: prints a line.\n",
        "1.0.0": "### Added\n- The ownership map.\n",
        "0.9.0": "### Added\n- First release.\n",
    }
    released = [v for v in RELEASES if RELEASES.index(v) <= at - (1 if at >= 3 else 0)]
    body = "# Changelog\n\n## Unreleased\n\n"
    for version in reversed(released):
        body += f"## {version} - {_date(version)}\n\n{sections[version]}\n"
    return body


def _date(release: str) -> str:
    """Release dates in the past, a month apart, so every service that is behind has been for
    a while (the untagged commit is dated between 1.1.0 and 2.0.0)."""
    order = [*RELEASES[:3], UNTAGGED, RELEASES[3]]
    return f"2020-{order.index(release) + 1:02d}-01"


def build_template(root: Path) -> Path:
    """The template repository with every release tagged, in ``root``."""
    repo = init_repo(root)
    for release in [*RELEASES[:3], UNTAGGED, RELEASES[3]]:
        stamp = f"{_date(release)}T12:00:00+00:00"
        os.environ["GIT_AUTHOR_DATE"] = os.environ["GIT_COMMITTER_DATE"] = stamp
        for child in list(repo.iterdir()):
            if child.name != ".git":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        for relative, text in _template_files(release).items():
            (repo / relative).parent.mkdir(parents=True, exist_ok=True)
            (repo / relative).write_text(text)
        try:
            commit_all(repo, f"Template {release}", tag=None if release == UNTAGGED else release)
        finally:
            del os.environ["GIT_AUTHOR_DATE"], os.environ["GIT_COMMITTER_DATE"]
    return repo


@dataclass
class Truth:
    """What the tool must find in one service."""

    path: Path
    kind: str
    version: str | None  # the recorded template version (a release, or a commit description)
    error: bool = False
    drift: list[dict[str, str]] | None = field(default_factory=list)  # None: unknown
    plan: str = "clean"  # clean, conflicts or error, updating to LATEST
    conflicts: list[str] = field(default_factory=list)
    fails_tests: bool = False


_ANSWERS = [
    {"owner": "team-a", "use_db": False, "package": "orders"},
    {"owner": "team-b", "use_db": True, "package": "orders"},
    {"owner": "team-c", "use_db": False, "package": "billing"},
]
# Per version: the kinds of service rendered from it. Each kind's edits are below.
_KINDS = [
    "untouched",
    "team",
    "modified",
    "deleted",
    "conflict",
    "untouched",
    "team",
    "modified",
    "conflict",
    "failing",
]


def _edit(service: Path, package: str, kind: str, version: str) -> Truth:
    """Apply ``kind``'s edits to a fresh render and say what the tool must find."""
    truth = Truth(service, kind, version)
    src = service / "src" / package
    if kind == "team":
        # Team-owned and shared seams: never drift, and they merge cleanly.
        (src / "settings.py").write_text('OWNER = "someone else"\nDEBUG = True\n')
        readme = service / "README.md"
        readme.write_text(readme.read_text().replace("-\n", "- on call: #ops\n"))
        (service / "src" / package / "extra.py").write_text("EXTRA = 1\n")
    elif kind == "modified":
        # A template-owned file edited away from the changed line: drift, but a clean update.
        app = src / "core" / "app.py"
        app.write_text(app.read_text() + "\n\n# patched locally\n")
        truth.drift = [{"path": f"src/{package}/core/app.py", "state": "modified"}]
    elif kind == "deleted":
        (service / "Dockerfile").unlink()
        truth.drift = [{"path": "Dockerfile", "state": "deleted"}]
    elif kind == "conflict":
        # The shared line 2.0.0 changes: a conflict on the way to 2.0.0.
        pyproject = service / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace('"relaxed"', '"custom"'))
        if version != LATEST:
            truth.plan, truth.conflicts = "conflicts", ["pyproject.toml"]
    elif kind == "failing":
        (service / "FAIL_TESTS").write_text("a test the team broke\n")
        truth.fails_tests = version != LATEST
    if version == "0.9.0":
        truth.drift = None  # no ownership map at that version
    return truth


def build_fleet(template: Path, root: Path, copies: int = 1) -> list[Truth]:
    """Render services from every release (and the untagged commit), apply each kind's edits,
    commit, and add three broken repositories: ``copies`` x 5 versions x 10 kinds + 3. Each
    (version, answers) pair is rendered once and copied, as the tool itself would cache it."""
    untagged = git(template, "rev-list", "-n1", "2.0.0^").strip()
    renders: dict[tuple[str, int], Path] = {}
    fleet: list[Truth] = []
    number = 0
    for copy in range(copies):
        for version in [*RELEASES, UNTAGGED]:
            for kind in _KINDS:
                # Services of one kind share answers, as teams that render alike do.
                choice = (_KINDS.index(kind) + copy) % len(_ANSWERS)
                answers = _ANSWERS[choice]
                ref = untagged if version == UNTAGGED else version
                if (ref, choice) not in renders:
                    renders[ref, choice] = render(
                        root / "renders" / f"{number}", answers, src=template, vcs_ref=ref
                    )
                service = root / f"svc-{number:03d}"
                number += 1
                shutil.copytree(renders[ref, choice], service)
                git(service, "init", "--quiet", "--initial-branch=main")
                commit_all(service, "Render")
                recorded = str(_recorded_commit(service))
                truth = _edit(service, str(answers["package"]), kind, recorded)
                commit_all(service, f"{kind} edits")
                fleet.append(truth)
    shutil.rmtree(root / "renders")
    fleet.extend(_broken(template, root))
    return fleet


def _recorded_commit(service: Path) -> str:
    import yaml

    answers: dict[str, Any] = yaml.safe_load((service / ".copier-answers.yml").read_text())
    return str(answers["_commit"])


def _broken(template: Path, root: Path) -> list[Truth]:
    """Not a git repository, no answers file, a dirty work tree."""
    plain = root / "svc-not-a-repo"
    plain.mkdir()
    (plain / "README.md").write_text("# not a repository\n")
    bare = init_repo(root / "svc-no-answers")
    (bare / "README.md").write_text("# no answers\n")
    commit_all(bare, "Just a README")
    dirty = render(root / "svc-dirty", _ANSWERS[0], src=template, vcs_ref="1.0.0")
    git(dirty, "init", "--quiet", "--initial-branch=main")
    commit_all(dirty, "Render")
    (dirty / "Dockerfile").write_text("FROM scratch\n")  # uncommitted
    return [
        Truth(plain, "not-a-repo", None, error=True, drift=[], plan="error"),
        Truth(bare, "no-answers", None, error=True, drift=[], plan="error"),
        Truth(dirty, "dirty", "1.0.0", error=True, drift=[], plan="error"),
    ]


def _fleet_json(args: list[str], cache: Path | None = None) -> tuple[list[dict[str, Any]], float]:
    command = [sys.executable, "-m", "fleet", *args, "--json"]
    if cache is not None:
        command += ["--cache-dir", str(cache)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout), elapsed


def measure(copies: int) -> None:
    """Build a fleet, time status and plan, score them against the ground truth; print markdown."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        template = build_template(root / "template")
        fleet = build_fleet(template, root / "fleet", copies)
        paths = [str(t.path) for t in fleet]
        status, status_time = _fleet_json(["status", *paths])
        _, warm_time = _fleet_json(["status", *paths], root / "cache")
        _, cached_time = _fleet_json(["status", *paths], root / "cache")
        plan, plan_time = _fleet_json(["plan", "--to", LATEST, "--jobs", "2", *paths])
        _fleet_json(["plan", "--to", LATEST, "--jobs", "2", *paths], root / "cache")  # fill
        _, plan_cached = _fleet_json(["plan", "--to", LATEST, *paths], root / "cache")
        by_path = {Path(r["path"]): r for r in status}
        drift_ok = sum(
            1
            for t in fleet
            if (by_path[t.path]["error"] is not None) == t.error
            and (t.error or by_path[t.path]["drift"] == t.drift)
        )
        plans = {Path(r["path"]): r for r in plan}
        plan_ok = sum(
            1
            for t in fleet
            if plans[t.path]["outcome"] == t.plan and plans[t.path]["conflicts"] == t.conflicts
        )
        renders = len(
            {(r["commit"], json.dumps(r["answers"])) for r in status if r["error"] is None}
        )
        print(f"services: {len(fleet)}, distinct (version, answers) pairs: {renders}")
        print(
            f"status: {status_time:.1f} s (cold), {warm_time:.1f} s (filling the disk cache), "
            f"{cached_time:.1f} s (disk cache warm)"
        )
        trials = len(
            {
                git(t.path, "rev-parse", "HEAD^{tree}")
                for t in fleet
                if not t.error and t.version != LATEST
            }
        )
        print(
            f"plan --to {LATEST} --jobs 2: {plan_time:.1f} s ({trials} trial updates); "
            f"{plan_cached:.1f} s with the disk cache warm"
        )
        print(f"drift exact: {drift_ok}/{len(fleet)}; plan exact: {plan_ok}/{len(fleet)}")
        print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=1, help="services per (version, kind)")
    measure(parser.parse_args().copies)
