"""Copier task, run in the rendered project after `copier copy` or `copier update` (needs --trust).

copy:   make the project a git repository if it is not inside one yet, because `copier update`
        can only merge template changes into a git working tree.
update: lock again (uv.lock must match the updated pyproject.toml, or the update fails saying
        why), and remind the owner to look for conflicts.

Copier also runs tasks in the two scratch renders it makes in temporary directories while
updating (the old and the new template version, rendered to compute the diff). Those are not
git repositories; the script stays silent there.

Copier older than 9.6 has no `_copier_operation` and passes an empty string: the script then does
what is safe for both operations (`git init` only where there is no repository yet).

It never commits or pushes; `uv lock` reads the package index.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def _inside_git_work_tree() -> bool:
    probe = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True, check=False
    )
    return probe.returncode == 0 and probe.stdout.strip() == "true"


def main(operation: str) -> int:
    if operation in ("copy", ""):
        if not _inside_git_work_tree():
            subprocess.run(["git", "init", "--quiet", "--initial-branch=main"], check=True)
            print("Initialised a git repository: commit the rendered files before `make update`.")
    elif operation == "update" and _inside_git_work_tree():
        if not _lock_again():
            return 1
        print(
            "Template updated. Review `git status` and `git diff`; resolve any conflict markers "
            "(`make lint` fails while one is left), then `make install` and `make check`."
        )
    return 0


def _lock_again() -> bool:
    """Lock again after an update, so uv.lock matches the updated pyproject.toml and CI's
    `uv sync --locked` passes. False (the update fails) when it cannot, saying why."""
    if not Path("uv.lock").exists():
        return True  # never locked yet: `make install` locks
    uv = shutil.which("uv")
    if uv is None:
        print("uv.lock may no longer match pyproject.toml and uv is not on PATH to lock it "
              "again: install uv, run `uv lock`, commit uv.lock.", file=sys.stderr)  # fmt: skip
        return False
    locked = subprocess.run([uv, "lock"], capture_output=True, text=True, check=False)
    if locked.returncode != 0:
        print(f"`uv lock` failed after the update, so uv.lock is stale:\n{locked.stderr}",
              file=sys.stderr)  # fmt: skip
        return False
    print("Locked again: uv.lock matches the updated pyproject.toml.")
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "copy"))
