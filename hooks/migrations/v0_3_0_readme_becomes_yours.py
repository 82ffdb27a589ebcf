"""Copier migration for 0.3.0, run after the update merges (needs --trust).

0.3.0 gives the README to the team: ``README.md`` becomes team-owned (``_skip_if_exists``), a
short page of the service's own, and the platform's text moves to ``docs/platform.md``
(template-owned), which the README links to. Before, the README was shared and the template
appended its own sections at its end, so a section the team added there conflicted on update.

Copier alone would keep the service's README as it was (it exists, so it is skipped), with the
platform's old text in it, or merge the new short README into a README the team edited, which
conflicts. So, after Copier's merge, the README becomes (base = what the release updated from
rendered, ours = the service's committed README, theirs = what 0.3.0 renders):

- ours == base (never edited): the new README;
- ours is base with text added at its end (the team's own sections): the new README, then the
  team's sections;
- otherwise the two-way merge of the team's edits into the new README when it is clean, and the
  service's README as it was when it is not: no conflict either way (the platform's text that
  stays in it is the team's to remove, and docs/platform.md has it current).

Arguments: the template checkout (``_copier_conf.src_path``), the commit updated from and the
commit updated to. It runs in the project's root, never commits, and never touches the network.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from common import answers, committed, merge_file, render, reset_to_committed

README = "README.md"


def carry(ours: bytes, base: bytes, theirs: bytes) -> tuple[bytes, str | None]:
    """The README after the update, and what to tell the owner (None: nothing to say)."""
    if theirs == base:
        return ours, None  # the release did not change the README: nothing to carry
    if ours == base:
        return theirs, "the platform's text moved to docs/platform.md"
    if ours.startswith(base):
        return theirs + ours[len(base) :], "your sections at its end kept, after the new text"
    merged, conflicted = merge_file(ours, base, theirs)
    if not conflicted:
        return merged, "your edits merged into the new text"
    return ours, (
        "kept as it was: your edits and the platform's old text overlap; the platform's text is "
        "now in docs/platform.md, so remove it from README.md when you are ready"
    )


def migrate(src: str, old_ref: str, new_ref: str) -> str | None:
    ours = committed(README)
    if ours is None:
        return None
    with tempfile.TemporaryDirectory(prefix="migration-0.3.0-") as tmp:
        recorded = answers()
        base_file = render(src, old_ref, recorded, Path(tmp, "old")) / README
        theirs_file = render(src, new_ref, recorded, Path(tmp, "new")) / README
        if not (base_file.is_file() and theirs_file.is_file()):
            return None
        result, message = carry(ours, base_file.read_bytes(), theirs_file.read_bytes())
    Path(README).write_bytes(result)
    reset_to_committed(README)
    return message


def main() -> int:
    src, old_ref, new_ref = sys.argv[1:4]
    try:
        message = migrate(src, old_ref, new_ref)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
        print(f"migration 0.3.0: {README}: {error}", file=sys.stderr)
        return 1
    if message:
        print(f"migration 0.3.0: {README} is yours from now on: {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
