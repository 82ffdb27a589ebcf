"""Copier migration for 0.1.0, run before the update merges (needs --trust).

The runbook moved from ``RUNBOOK.md`` at the project root to ``docs/runbook.md``. Without this
script Copier would delete the team's ``RUNBOOK.md`` (the new template no longer renders it) and
render a blank skeleton at the new path, losing every edit.

So, before Copier computes the team's changes, move the file with ``git mv``: Copier reads the
project from the git index, so it then sees the team's runbook already at its new name. As
``docs/runbook.md`` is in ``_skip_if_exists``, the update leaves its content alone.

Cases:
- only ``RUNBOOK.md`` exists: moved to ``docs/runbook.md``, edits included;
- both exist: nothing is moved; the owner is told to merge the two by hand;
- neither, or only the new one: nothing to do.

It runs in the project's root, never commits, and never touches the network.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

OLD = Path("RUNBOOK.md")
NEW = Path("docs/runbook.md")


def _git_mv(old: Path, new: Path) -> None:
    moved = subprocess.run(
        ["git", "mv", "--", str(old), str(new)], capture_output=True, text=True, check=False
    )
    if moved.returncode != 0:
        # Not tracked (Copier refuses to update a dirty project, so this is unexpected): move the
        # file and stage it so that the index, which Copier reads, agrees with the working tree.
        old.rename(new)
        subprocess.run(["git", "add", "--", str(new)], check=True)


def main() -> int:
    # Copier passes the versions crossed, e.g. 0.0.1 -> 0.1.0.
    versions = "{} -> {}".format(
        os.environ.get("VERSION_PEP440_FROM", "?"), os.environ.get("VERSION_PEP440_TO", "?")
    )
    if not OLD.is_file():
        return 0
    if NEW.exists():
        print(
            f"migration 0.1.0 ({versions}): both {OLD} and {NEW} exist; left both in place. "
            f"Merge {OLD} into {NEW} by hand and delete {OLD}.",
            file=sys.stderr,
        )
        return 0
    NEW.parent.mkdir(parents=True, exist_ok=True)
    _git_mv(OLD, NEW)
    print(f"migration 0.1.0 ({versions}): moved {OLD} to {NEW}, with your edits.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
