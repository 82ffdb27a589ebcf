"""The scheduled template update: when this service is behind its template, update it on a branch,
re-lock, run the checks, and open (or refresh) one pull/merge request with the result.

Run by the CI's scheduled job (``python3 tools/template_update.py --forge github|gitlab``) in a
clean checkout with push access. One branch per release, ``template-update/<version>``: a later
run for the same release replaces the branch and refreshes the request's description, so there is
never more than one request for a release. The forge is reached only through its CLI (``gh`` or
``glab``), which authenticates from the job's token.

Exit status: 0 when up to date or when the request holds a green update; 1 when the request
holds an update whose checks failed (the request says which); 2 when no update could be made.

Standard library only: it runs before the service's environment exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass

# The service's own Copier (a dev dependency, as for `make update`); COPIER overrides it.
DEFAULT_COPIER = "uv run --frozen --quiet copier"
# What the update must pass, in order; TEMPLATE_UPDATE_CHECKS (`;`-separated) overrides it.
DEFAULT_CHECKS = ("make install SYNC_FLAGS=--locked", "make lint", "make typecheck", "make test")
OUTPUT_TAIL_LINES = 40


@dataclass(frozen=True)
class Check:
    command: str
    passed: bool
    output_tail: str


class UpdateError(Exception):
    """No update could be made: the message says which step failed and why."""


def _run(command: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    # The commands are this script's own, with arguments from the template's own report.
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if check and result.returncode != 0:
        raise UpdateError(
            f"`{shlex.join(command)}` failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result


def _copier() -> list[str]:
    return shlex.split(os.environ.get("COPIER") or DEFAULT_COPIER)


def available_update() -> tuple[str, str] | None:
    """``(current, latest)`` when the template has a newer release, else None."""
    result = _run([*_copier(), "check-update", "--output-format", "json"])
    lines = result.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise UpdateError(f"copier check-update printed no JSON report: {result.stdout!r}") from exc
    if not report["update_available"]:
        return None
    return str(report["current_version"]), str(report["latest_version"])


def update_on_branch(branch: str, latest: str) -> None:
    """A fresh branch from the current commit with the template update and a matching lock."""
    _run(["git", "switch", "--force-create", branch])
    _run([*_copier(), "update", "--trust", "--defaults", "--conflict", "inline",
          "--vcs-ref", latest])  # fmt: skip
    # The template's update task has locked again (or failed the update, saying why).


def run_checks(commands: list[str]) -> list[Check]:
    checks = []
    for command in commands:
        # Shell commands from this script or the job's own TEMPLATE_UPDATE_CHECKS variable.
        result = subprocess.run(  # noqa: S602
            command, shell=True, capture_output=True, text=True, check=False
        )
        output = (result.stdout + result.stderr).splitlines()[-OUTPUT_TAIL_LINES:]
        checks.append(Check(command, result.returncode == 0, "\n".join(output)))
        if result.returncode != 0:
            break  # later checks depend on the earlier ones (install before test)
    return checks


def conflicted_files() -> list[str]:
    found = _run(["git", "grep", "-l", "-E", "^(<<<<<<<|>>>>>>>)( |$)"], check=False)
    return found.stdout.split()


def description(current: str, latest: str, checks: list[Check], conflicts: list[str]) -> str:
    lines = [
        f"Updates this service from template {current} to {latest} (`copier update`), "
        "with `uv.lock` locked again.",
        "",
        "Read the template's CHANGELOG for what changed and what to check.",
        "",
        "| Check | Result |",
        "| --- | --- |",
    ]
    lines += [f"| `{c.command}` | {'passed' if c.passed else 'FAILED'} |" for c in checks]
    if conflicts:
        lines += ["", "Conflict markers to resolve (`make lint` fails while one is left):"]
        lines += [f"- `{path}`" for path in conflicts]
    failed = [c for c in checks if not c.passed]
    if failed:
        lines += ["", f"Output of `{failed[0].command}` (last lines):", "", "```"]
        lines += [failed[0].output_tail, "```"]
    return "\n".join(lines) + "\n"


def commit_and_push(branch: str, latest: str) -> None:
    _run(["git", "add", "--all"])
    _run(["git", "commit", "--quiet", "--no-verify", "-m", f"Update the template to {latest}"])
    # The branch is rebuilt from the current commit on every run: replacing it is the refresh.
    _run(["git", "push", "--force", "origin", f"HEAD:refs/heads/{branch}"])


def open_or_refresh(forge: str, branch: str, base: str, title: str, body: str) -> str:
    """Open the request for ``branch``, or refresh the open one; returns what was done."""
    if forge == "github":
        listed = _run(["gh", "pr", "list", "--head", branch, "--state", "open",
                       "--json", "number"])  # fmt: skip
        numbers = [str(pr["number"]) for pr in json.loads(listed.stdout or "[]")]
        if numbers:
            _run(["gh", "pr", "edit", numbers[0], "--title", title, "--body", body])
            return f"refreshed pull request #{numbers[0]}"
        _run(["gh", "pr", "create", "--head", branch, "--base", base, "--title", title,
              "--body", body])  # fmt: skip
        return "opened a pull request"
    listed = _run(["glab", "mr", "list", "--source-branch", branch, "--output", "json"])
    iids = [str(mr["iid"]) for mr in json.loads(listed.stdout or "[]")]
    if iids:
        _run(["glab", "mr", "update", iids[0], "--title", title, "--description", body])
        return f"refreshed merge request !{iids[0]}"
    _run(["glab", "mr", "create", "--source-branch", branch, "--target-branch", base,
          "--title", title, "--description", body, "--yes"])  # fmt: skip
    return "opened a merge request"


def _report(message: str) -> None:
    print(message)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as out:
            out.write(message + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forge", choices=["github", "gitlab"], required=True)
    parser.add_argument("--base", help="the branch to update (default: the checked-out one)")
    args = parser.parse_args(argv)
    checks_env = os.environ.get("TEMPLATE_UPDATE_CHECKS")
    commands = [c.strip() for c in checks_env.split(";")] if checks_env else list(DEFAULT_CHECKS)
    try:
        base = args.base or _run(["git", "branch", "--show-current"]).stdout.strip()
        found = available_update()
        if found is None:
            _report("Up to date with the template.")
            return 0
        current, latest = found
        branch = f"template-update/{latest}"
        update_on_branch(branch, latest)
        conflicts = conflicted_files()
        checks = run_checks(commands)
        commit_and_push(branch, latest)
        title = f"Update the template to {latest}"
        body = description(current, latest, checks, conflicts)
        done = open_or_refresh(args.forge, branch, base, title, body)
    except UpdateError as exc:
        _report(f"The template update could not be made: {exc}")
        return 2
    green = all(c.passed for c in checks) and not conflicts
    _report(f"Template {current} -> {latest}: {done} from {branch}; checks "
            f"{'passed' if green else 'FAILED (see the request)'}.")  # fmt: skip
    return 0 if green else 1


if __name__ == "__main__":
    sys.exit(main())
