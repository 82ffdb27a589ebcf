"""`fleet update`: the update itself, service by service, in waves.

Each service gets a branch `template-update/<version>` from its current HEAD; the branch it was
on is never changed, and the service is back on it afterwards. On the branch: the same Copier
update `plan` predicts with, the service's own `make lint` and `make test`, a commit whose
message is the pull-request body, and optionally the pull request itself. A wave whose failure
rate exceeds the limit stops the run, so a broken release reaches few services.

With ``--data KEY=VALUE`` the update also changes those answers (a fleet's move to a new
Python, say), and the branch, commit and pull request say so: `template-update/<version>-KEY=VALUE`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from fleet import notes
from fleet.environment import without_make_variables
from fleet.gitutil import FleetError, git
from fleet.plan import (
    answers_unchanged,
    apply_update,
    conflicts,
    describe_data,
    migrations,
    prepare,
)
from fleet.template import Template

TemplateFor = Callable[[str], Template]
CHECKS = ("lint", "test")
COMMIT_IDENTITY = ("fleet", "fleet@localhost.invalid")


@dataclass(frozen=True)
class Options:
    ref: str
    wave_size: int = 10
    max_failure_rate: float = 0.0
    open_pr: bool = False
    pr_tool: str = "auto"  # auto, gh or glab
    check_timeout: float = 1800
    jobs: int = 1  # services of a wave updated at the same time
    data: dict[str, str] = field(default_factory=dict)  # answers to change (Copier's --data)


def empty_result(path: Path) -> dict[str, Any]:
    return {
        "path": str(path),
        "outcome": "error",
        "template_version": None,
        "target": None,
        "branch": None,
        "conflicts": [],
        "migrations": [],
        "checks": {},
        "commit": None,
        "pr_body": None,
        "pr": None,
        "data": {},
        "error": None,
    }


def branch_name(label: str, data: Mapping[str, str]) -> str:
    """``template-update/<version>``, then each changed answer as ``-KEY=VALUE`` (characters a
    branch name cannot hold become ``-``)."""
    suffix = "".join(f"-{key}={value}" for key, value in data.items())
    name = f"template-update/{label}{re.sub(r'[^A-Za-z0-9._=+-]+', '-', suffix)}"
    return name.rstrip(".").removesuffix(".lock")


def title(result: dict[str, Any]) -> str:
    """The commit's and the pull request's title."""
    changed = f" with {describe_data(result['data'])}" if result.get("data") else ""
    return f"Update the service template to {result['target']}{changed}"


def update_all(
    paths: list[Path],
    options: Options,
    template_for: TemplateFor,
    on_step: Callable[[str], None] = lambda name: None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Update every service in waves; return the results and why the run stopped, if it did."""
    results: list[dict[str, Any]] = []
    stopped = None
    for start in range(0, len(paths), max(1, options.wave_size)):
        wave = paths[start : start + max(1, options.wave_size)]
        if stopped:
            results += [_not_attempted(path, stopped) for path in wave]
            continue
        done = _run_wave(wave, options, template_for, on_step)
        results += done
        stopped = _verdict(done, options.max_failure_rate, start // max(1, options.wave_size) + 1)
    return results, stopped


# The templates of the run, for the wave's worker processes (forked, so they inherit it).
_TEMPLATES: list[TemplateFor] = []


def _run_wave(
    wave: list[Path],
    options: Options,
    template_for: TemplateFor,
    on_step: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Update a wave's services, ``options.jobs`` at a time. Worker processes, not threads:
    Copier changes the process's working directory while it works."""
    if options.jobs <= 1 or len(wave) <= 1:
        done = []
        for path in wave:
            on_step(path.name)
            done.append(update_one(path, options, template_for))
        return done
    _TEMPLATES[:] = [template_for]
    with ProcessPoolExecutor(max_workers=options.jobs, mp_context=get_context("fork")) as pool:
        done = []
        for path, result in zip(wave, pool.map(_worker, wave, [options] * len(wave)), strict=True):
            on_step(path.name)
            done.append(result)
        return done


def _worker(path: Path, options: Options) -> dict[str, Any]:
    return update_one(path, options, _TEMPLATES[0])


def _verdict(wave: list[dict[str, Any]], limit: float, number: int) -> str | None:
    """Why the run must stop after this wave, or None. Failed means the update or the service's
    checks failed; conflicts are expected work for the owners, and bad input never reached the
    update, so neither counts."""
    attempted = [r for r in wave if r["outcome"] in ("updated", "conflicts", "failed")]
    failed = [r for r in attempted if r["outcome"] == "failed"]
    if not attempted or len(failed) / len(attempted) <= limit:
        return None
    names = "; ".join(f"{Path(r['path']).name}: {r['error']}" for r in failed)
    return (
        f"wave {number}: {len(failed)} of {len(attempted)} updates failed "
        f"(more than {limit:.0%}): {names}"
    )


def _not_attempted(path: Path, reason: str) -> dict[str, Any]:
    result = empty_result(path)
    result["outcome"] = "skipped"
    result["error"] = f"not attempted, the run stopped after {reason}"
    return result


def update_one(path: Path, options: Options, template_for: TemplateFor) -> dict[str, Any]:
    """Update one service; bad input is refused before anything in it changes. Never raises:
    one service's problem is its result, and the run goes on."""
    try:
        return _update_one(path, options, template_for)
    except Exception as error:
        result = empty_result(path)
        result.update(outcome="failed", error=f"unexpected {type(error).__name__}: {error}")
        return result


def _update_one(path: Path, options: Options, template_for: TemplateFor) -> dict[str, Any]:
    result = empty_result(path)
    result["data"] = dict(options.data)
    try:
        service, template, target, current = prepare(path, options.ref, template_for, options.data)
    except FleetError as error:
        result["error"] = str(error)
        return result
    label = template.label(target)
    branch = branch_name(label, options.data)
    result.update(template_version=template.label(current), target=label, branch=branch)
    if current == target and answers_unchanged(service, options.data):
        answered = f" with {describe_data(options.data)}" if options.data else ""
        result.update(outcome="skipped", branch=None, error=f"already on {label}{answered}")
        return result
    if git(path, "branch", "--list", branch).strip():
        result.update(outcome="skipped", error=f"branch {branch} exists already; delete it to redo")
        return result
    result["migrations"] = migrations(template, current, target)
    original = _current_branch(path)
    try:
        git(path, "switch", "--quiet", "-c", branch)
        try:
            _update_on_branch(path, result, template, service.src_path, current, target, options)
        finally:
            git(path, "reset", "--quiet", "--hard")
            git(path, "clean", "-fdq")
            _switch_back(path, original)
        if result["commit"] is None:
            git(path, "branch", "-D", branch)  # nothing to review: leave no empty branch behind
            result["branch"] = None
    except FleetError as error:
        result.update(outcome="failed", error=str(error))
    if options.open_pr and result["commit"] is not None:
        result["pr"] = open_pull_request(path, result, original, options.pr_tool)
    return result


def _switch_back(path: Path, original: str) -> None:
    """Back to the branch (or the detached commit) the service was on."""
    if _is_branch(path, original):
        git(path, "switch", "--quiet", original)
    else:
        git(path, "switch", "--quiet", "--detach", original)


def _is_branch(path: Path, name: str) -> bool:
    result = git(path, "rev-parse", "--verify", "--quiet", f"refs/heads/{name}", check=False)
    return bool(result.strip())


def _current_branch(path: Path) -> str:
    name = git(path, "symbolic-ref", "--quiet", "--short", "HEAD", check=False).strip()
    return name or git(path, "rev-parse", "HEAD").strip()


def _update_on_branch(
    path: Path,
    result: dict[str, Any],
    template: Template,
    src: str,
    current: str,
    target: str,
    options: Options,
) -> None:
    try:
        apply_update(path, options.ref, options.data)
    except FleetError as error:
        result.update(outcome="failed", error=str(error))
        return
    result["conflicts"] = conflicts(path)
    # Stage the update now: the commit holds exactly what the update did, never what the
    # checks leave behind (caches, reports), which is cleaned away afterwards.
    git(path, "add", "--all")
    failures = _run_checks(path, result, options.check_timeout)
    if result["conflicts"]:
        result["outcome"] = "conflicts"
        result["error"] = f"conflicts in {len(result['conflicts'])} file(s)"
    elif failures:
        result.update(outcome="failed", error="; ".join(failures))
    else:
        result["outcome"] = "updated"
    _commit(path, result, template, src, current, target)


def _run_checks(path: Path, result: dict[str, Any], timeout: float) -> list[str]:
    """`make lint` and `make test`; record each, return why the failed ones failed."""
    env = without_make_variables(os.environ)  # fleet may run under a make of its own
    failures = []
    for target in CHECKS:
        try:
            done = subprocess.run(
                ["make", target],
                cwd=path,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            result["checks"][f"make {target}"] = f"timed out after {timeout:.0f} s"
            failures.append(f"make {target} timed out")
            continue
        if done.returncode == 0:
            result["checks"][f"make {target}"] = "passed"
            continue
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        reason = f"make {target} failed ({done.returncode})" + (
            f": {' | '.join(tail)}" if tail else ""
        )
        result["checks"][f"make {target}"] = "failed"
        failures.append(reason)
    return failures


def _commit(
    path: Path, result: dict[str, Any], template: Template, src: str, current: str, target: str
) -> None:
    """Commit the staged update (conflict markers included, as a reviewable state), with the
    pull-request body as the message, and keep the body in the repository's git directory."""
    stat = git(path, "diff", "--cached", "--stat")
    facts = notes.UpdateFacts(
        src=src,
        current=current,
        target=target,
        outcome=result["outcome"],
        migrations=result["migrations"],
        conflicts=result["conflicts"],
        checks=result["checks"],
        diffstat=stat,
        data=result["data"],
    )
    text = notes.body(template, facts, template.crossed_releases(current, target))
    git_dir = Path(git(path, "rev-parse", "--absolute-git-dir").strip())
    body_file = git_dir / f"{result['branch']}.md"
    body_file.parent.mkdir(parents=True, exist_ok=True)
    body_file.write_text(f"{text}\n")
    git(
        path,
        *_identity(path),
        "commit",
        "--quiet",
        "--no-verify",
        "--allow-empty",
        "-m",
        title(result),
        "-m",
        text,
    )
    result["commit"] = git(path, "rev-parse", "HEAD").strip()
    result["pr_body"] = str(body_file)


def _identity(path: Path) -> list[str]:
    """The committer git is configured with; a neutral one only where none is (CI runners)."""
    if git(path, "config", "user.email", check=False).strip():
        return []
    name, email = COMMIT_IDENTITY
    return ["-c", f"user.name={name}", "-c", f"user.email={email}"]


def open_pull_request(path: Path, result: dict[str, Any], base: str, tool: str) -> dict[str, Any]:
    """Push the branch (when there is an `origin`) and open the pull request with gh or glab.
    Problems are recorded, never raised: the update itself is done and committed."""
    chosen = _pr_tool(tool)
    if chosen is None:
        return {"tool": None, "error": "neither gh nor glab is on PATH"}
    branch, body = result["branch"], Path(result["pr_body"])
    if git(path, "remote").split().count("origin"):
        git(path, "push", "--quiet", "--set-upstream", "origin", branch, check=False)
    if chosen == "gh":
        command = [
            "gh",
            "pr",
            "create",
            "--head",
            branch,
            "--base",
            base,
            "--title",
            title(result),
            "--body-file",
            str(body),
        ]
    else:
        command = [
            "glab",
            "mr",
            "create",
            "--source-branch",
            branch,
            "--target-branch",
            base,
            "--title",
            title(result),
            "--description",
            body.read_text(),
            "--yes",
        ]
    done = subprocess.run(command, cwd=path, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"tool": chosen, "error": (done.stderr or done.stdout).strip()[-500:]}
    printed = done.stdout.strip().splitlines()
    return {"tool": chosen, "url": printed[-1] if printed else None, "error": None}


def _pr_tool(tool: str) -> str | None:
    if tool != "auto":
        return tool if shutil.which(tool) else None
    return next((name for name in ("gh", "glab") if shutil.which(name)), None)
