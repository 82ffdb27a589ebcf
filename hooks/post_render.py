"""Copier task, run in the rendered project after `copier copy` or `copier update` (needs --trust).

copy:   make the project a git repository if it is not inside one yet, because `copier update`
        can only merge template changes into a git working tree.
update: remind the owner to re-sync the environment, since dependencies may have changed.

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
    if operation == "copy":
        if not _inside_git_work_tree():
            subprocess.run(["git", "init", "--quiet", "--initial-branch=main"], check=True)
            print("Initialised a git repository: commit the rendered files before `make update`.")
    elif operation == "update":
        print("Template updated: run `make install` to sync dependencies, then `make check`.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "copy"))
