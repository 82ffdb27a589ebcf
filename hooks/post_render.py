"""Copier task, run in the rendered project after `copier copy` or `copier update` (needs --trust).

copy:   make the project a git repository if it is not inside one yet, because `copier update`
        can only merge template changes into a git working tree.
update: remind the owner to re-sync the environment and to look for conflicts.

Copier also runs tasks in the two scratch renders it makes in temporary directories while
updating (the old and the new template version, rendered to compute the diff). Those are not
git repositories; the script stays silent there.

Copier older than 9.6 has no `_copier_operation` and passes an empty string: the script then does
what is safe for both operations (`git init` only where there is no repository yet).

It never commits, pushes or touches the network.
"""

from __future__ import annotations

import subprocess
import sys


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
        print(
            "Template updated. Review `git status` and `git diff`; resolve any conflict markers "
            "(`make lint` fails while one is left), then `make install` and `make check`."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "copy"))
